"""Wiring of host leases (docs/host-leases.md): settings -> batch adapters, service, loop."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from vocloud.batch.lease_jobs import GridEngineLeaseJobs, LeaseJobs, SlurmLeaseJobs
from vocloud.config import Settings
from vocloud.engine.host_leases import AutoLease, AutoLeaser, LeaseLoop
from vocloud.errors import InvalidInput
from vocloud.model.walltime import parse_walltime
from vocloud.service.cloud import Cloud
from vocloud.service.host_leases import HostLeaseService

#: batch systems a lease can be asked from
ADAPTERS: dict[str, type[SlurmLeaseJobs] | type[GridEngineLeaseJobs]] = {
    "slurm": SlurmLeaseJobs, "gridengine": GridEngineLeaseJobs}


def parse_auto(text: str, batches: list[str]) -> AutoLease | None:
    """``host_lease_auto``: ``"slurm nodes=4 walltime=4h [partition=P] [vmm=qemu] [cpu=N]
    [memory=MiB] [grace=30]"``, or ``""`` (off)."""
    words = text.split()
    if not words:
        return None
    batch, opts = words[0].lower(), {}
    if batch not in batches:
        raise InvalidInput(f"host_lease_auto: {batch!r} is not in host_lease_batch")
    for w in words[1:]:
        key, eq, value = w.partition("=")
        if not eq or key not in ("nodes", "walltime", "partition", "vmm", "cpu", "memory", "grace"):
            raise InvalidInput(f"host_lease_auto: bad option {w!r} (nodes=, walltime=, partition=, "
                               "vmm=, cpu=, memory=, grace=)")
        opts[key] = value
    try:
        nodes = int(opts.get("nodes", "1"))
        cpu = float(opts["cpu"]) if "cpu" in opts else None
        memory = int(opts["memory"]) if "memory" in opts else None
        grace = float(opts.get("grace", "30"))
    except ValueError as exc:
        raise InvalidInput(f"host_lease_auto: {exc}") from None
    if not 1 <= nodes <= 64 or "walltime" not in opts:
        raise InvalidInput("host_lease_auto needs walltime= and nodes= between 1 and 64")
    return AutoLease(batch, nodes, parse_walltime(opts["walltime"], "host_lease_auto walltime"),
                     opts.get("partition", ""), opts.get("vmm", "qemu"), cpu, memory, grace)


def wire(settings: Settings, cloud: Cloud) -> tuple[HostLeaseService, Callable[[], None] | None]:
    """The service (always: it refuses requests when leases are off) and the loop's pass (or
    None): follow the leases, then lease more if ``host_lease_auto`` says so."""
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
    if not jobs:
        return service, None
    loop = LeaseLoop(cloud.db, jobs, settings.host_lease_drain_lead)
    auto = parse_auto(settings.host_lease_auto, names)
    leaser = (AutoLeaser(cloud.db, service, auto, settings.host_lease_drain_lead)
              if auto is not None else None)

    def lease_pass() -> None:
        loop.reconcile_once()
        if leaser is not None:
            leaser.once()

    return service, lease_pass
