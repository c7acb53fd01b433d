"""Parse a host's ``transport`` string once, so every driver agrees on what it means."""

from __future__ import annotations

import getpass
from dataclasses import dataclass

from vocloud.errors import DriverError

DEFAULT_SSH_PORT = 22


@dataclass(frozen=True, slots=True)
class SshAddress:
    """Where an ``ssh://[user@]address[:port]`` host lives; also the connection-cache key."""

    user: str
    address: str
    port: int = DEFAULT_SSH_PORT

    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        port = "" if self.port == DEFAULT_SSH_PORT else f":{self.port}"
        return f"ssh://{self.user}@{host}{port}"


def parse_ssh(transport: str) -> SshAddress:
    """``ssh://root@10.0.0.2:2222`` -> SshAddress; no user means the local user, as ``ssh`` does.

    IPv6 addresses are written in brackets (``ssh://root@[fd00::2]:22``), as in URLs.
    """
    if not transport.startswith("ssh://"):
        raise DriverError(f"not an ssh transport: {transport!r}")
    rest = transport[len("ssh://"):].rstrip("/")
    user, _, hostport = rest.rpartition("@")
    user = user or getpass.getuser()
    port_text = ""
    if hostport.startswith("["):
        address, _, tail = hostport[1:].partition("]")
        port_text = tail.removeprefix(":")
    else:
        address, _, port_text = hostport.partition(":")
    if not address:
        raise DriverError(f"ssh transport {transport!r} names no address")
    try:
        port = int(port_text) if port_text else DEFAULT_SSH_PORT
    except ValueError:
        raise DriverError(f"ssh transport {transport!r}: bad port {port_text!r}") from None
    if not 0 < port < 65536:
        raise DriverError(f"ssh transport {transport!r}: port {port} out of range")
    return SshAddress(user, address, port)
