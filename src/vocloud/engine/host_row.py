"""A host as the loops read it: the ORM ``Host`` or just the columns a pass needs.

The monitor pass reads hosts as plain columns (issue 15: loading 2,000 ORM rows per pass cost
more than probing them); the helpers both passes share (``host_ref``, the host's storage and
network drivers, the cloud leak sweep) take either through this protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


class HostLike(Protocol):
    @property
    def id(self) -> int: ...
    @property
    def name(self) -> str: ...
    @property
    def vmm(self) -> str: ...
    @property
    def transport(self) -> str: ...
    @property
    def attrs(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class MonHost:
    """The columns of a host the monitor pass uses."""

    id: int
    name: str
    state: str
    vmm: str
    transport: str
    attrs: dict[str, Any]
    monitor_failures: int
    monitor_failing_since: float | None
