"""How vocloud reaches a host: ``local`` (subprocess) or ``ssh://[user@]address[:port]``.

A :class:`Transports` maps a :class:`~vocloud.drivers.base.HostRef` to its transport; every driver
of one daemon shares one (the composition root builds it from the settings ``ssh_key`` and
``ssh_known_hosts``), so all drivers talking to the same host share one SSH connection.
:data:`transport_for` is a default for tools and tests: local, and SSH with the user's own keys.
"""

from __future__ import annotations

import threading

from vocloud.drivers.base import HostRef, Transport
from vocloud.drivers.transport.address import SshAddress, parse_ssh
from vocloud.drivers.transport.local import LocalTransport
from vocloud.drivers.transport.ssh import SshTransport
from vocloud.errors import DriverError

__all__ = ["LocalTransport", "SshAddress", "SshTransport", "Transports", "parse_ssh", "transport_for"]


class Transports:
    """The transports of one daemon: local, and one shared SSH transport built on first use."""

    def __init__(self, ssh_key: str = "", ssh_known_hosts: str = "") -> None:
        self.local = LocalTransport()
        self._ssh_key = ssh_key
        self._known_hosts = ssh_known_hosts
        self._ssh: SshTransport | None = None
        self._lock = threading.Lock()

    def ssh(self) -> SshTransport:
        with self._lock:
            if self._ssh is None:
                self._ssh = SshTransport.from_settings(self._ssh_key, self._known_hosts)
            return self._ssh

    def __call__(self, host: HostRef) -> Transport:
        """The transport for ``host.transport``; an unknown scheme is a clear DriverError."""
        if host.transport == "local":
            return self.local
        if host.transport.startswith("ssh://"):
            parse_ssh(host.transport)  # reject a malformed address before any connection attempt
            return self.ssh()
        raise DriverError(f"host {host.name}: unknown transport {host.transport!r} "
                          "(local or ssh://[user@]address[:port])")


#: For tools and tests without a composition root (the daemon builds its own from its settings).
transport_for = Transports()
