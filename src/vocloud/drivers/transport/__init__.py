"""How vocloud reaches a host: ``local`` (subprocess) or ``ssh://[user@]address[:port]``.

:func:`transport_for` maps a :class:`~vocloud.drivers.base.HostRef` to a shared transport, so
every driver talking to the same host shares one SSH connection.
"""

from __future__ import annotations

import threading

from vocloud.drivers.base import HostRef, Transport
from vocloud.drivers.transport.address import SshAddress, parse_ssh
from vocloud.drivers.transport.local import LocalTransport
from vocloud.drivers.transport.ssh import SshTransport
from vocloud.errors import DriverError

__all__ = ["LocalTransport", "SshAddress", "SshTransport", "parse_ssh", "set_default_ssh",
           "transport_for"]

_LOCAL = LocalTransport()
_ssh: SshTransport | None = None
_ssh_lock = threading.Lock()


def set_default_ssh(transport: SshTransport | None) -> SshTransport | None:
    """Replace the shared SSH transport (the daemon's keys, a test's known_hosts); returns the old."""
    global _ssh
    with _ssh_lock:
        old, _ssh = _ssh, transport
    return old


def default_ssh() -> SshTransport:
    """The shared SSH transport, configured from the environment on first use."""
    global _ssh
    with _ssh_lock:
        if _ssh is None:
            _ssh = SshTransport.from_env()
        return _ssh


def transport_for(host: HostRef) -> Transport:
    """The transport for ``host.transport``; an unknown scheme is a clear DriverError."""
    if host.transport == "local":
        return _LOCAL
    if host.transport.startswith("ssh://"):
        parse_ssh(host.transport)  # reject a malformed address before any connection attempt
        return default_ssh()
    raise DriverError(f"host {host.name}: unknown transport {host.transport!r} "
                      "(local or ssh://[user@]address[:port])")
