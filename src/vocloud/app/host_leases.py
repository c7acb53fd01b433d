"""Wiring of host leases (docs/host-leases.md): settings -> batch adapters, service, loop."""

from __future__ import annotations

import os
import sys

from vocloud.batch.lease_jobs import LeaseJobs, SlurmLeaseJobs
from vocloud.config import Settings
from vocloud.engine.host_leases import LeaseLoop
from vocloud.errors import InvalidInput
from vocloud.service.cloud import Cloud
from vocloud.service.host_leases import HostLeaseService

#: batch systems a lease can be asked from (the Grid Engine adapter is not written yet)
ADAPTERS = {"slurm": SlurmLeaseJobs}


def wire(settings: Settings, cloud: Cloud) -> tuple[HostLeaseService, LeaseLoop | None]:
    """The service (always: it refuses requests when leases are off) and the loop (or None)."""
    names = [n.strip().lower() for n in settings.host_lease_batch.split(",") if n.strip()]
    unknown = [n for n in names if n not in ADAPTERS]
    if unknown:
        raise InvalidInput(f"host_lease_batch: unknown batch system {unknown[0]!r}; one of: "
                           f"{', '.join(sorted(ADAPTERS))}")
    jobs: dict[str, LeaseJobs] = {n: ADAPTERS[n]() for n in names}
    # the agent runs this Python and this vocloud on the node (a shared install); nothing else
    # of the daemon's environment reaches the job
    path = os.pathsep.join(os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(
        os.pathsep) if p)
    env = {"PYTHONPATH": path} if path else {}
    service = HostLeaseService(cloud.db, jobs, url=settings.host_lease_url,
                               agent=[sys.executable, "-m", "vocloud.cli.lease_agent"],
                               agent_env=env, catalog=cloud.hosts.catalog)
    loop = LeaseLoop(cloud.db, jobs, settings.host_lease_drain_lead) if jobs else None
    return service, loop
