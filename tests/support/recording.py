"""The sim VMM driver that remembers the context each guest was deployed with: what its seed ISO
would hold, so tests can see which secrets reached which VM."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vocloud.drivers.base import DomainInfo, DomainSpec, HostRef
from vocloud.drivers.vmm.sim import SimDriver
from vocloud.errors import DriverError


class RecordingSimDriver(SimDriver):
    """The sim driver, keeping the context each deploy was given (what a seed ISO would hold)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, boot_delay=0.0, shutdown_delay=0.0)
        self.contexts: dict[int, dict[str, str]] = {}

    def deploy(self, host: HostRef, spec: DomainSpec) -> DomainInfo:
        self.contexts[spec.vm_id] = dict(spec.context)
        return super().deploy(host, spec)

    def deploy_many(self, host: HostRef, specs: Sequence[DomainSpec]) -> list[DomainInfo | DriverError]:
        for spec in specs:  # the lifecycle starts a host's guests in one call (drivers/base.py)
            self.contexts[spec.vm_id] = dict(spec.context)
        return super().deploy_many(host, specs)
