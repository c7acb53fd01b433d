"""Wiring of image distribution (docs/image-distribution.md): the service gets a runner that
builds a :class:`~vocloud.drivers.storage.distribute.Distribution` over the daemon's transports
and datastore root, so the service layer never touches a driver's settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from vocloud.config import Settings
from vocloud.drivers.base import HostRef
from vocloud.drivers.registry import DriverRegistry, Role
from vocloud.drivers.storage.distribute import Distribution
from vocloud.service.distribution import DistributionService, Job


def wire(settings: Settings, db: Any, registry: DriverRegistry) -> DistributionService:
    root = str(settings.shared_path / "datastore")  # as the storage drivers' (app/drivers.py)

    def transports(host: HostRef) -> Any:
        return registry.get(Role.TRANSPORT, "local" if host.transport == "local" else "ssh")

    def runner(job: Job, progress: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        dist = Distribution(job.path, job.sha256, job.fmt, job.hosts, transports, root,
                            fanout=job.fanout, on_event=lambda r: progress(asdict(r)))
        return dist.run().as_dict()

    return DistributionService(db, runner)
