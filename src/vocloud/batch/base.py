"""The batch-system interface: what the elastic pools need to know about a site's queue.

Every adapter (slurm, gridengine, htcondor, pbs, lsf, sim) implements :class:`BatchSystem` and
returns only the plain, frozen data types below, so the planner (``vocloud.elastic.planner``) and
the simulator see exactly the same shapes whatever the batch system is. The interface is small on
purpose: the elastic controller needs the *demand* (pending jobs, with the resources they ask for)
and the *supply* (worker nodes, with what runs on them), plus three idempotent node operations.

Units, everywhere in this module:

* ``cores``: whole CPU cores (slots) a job asks for / a node offers.
* ``memory_mib``: MiB (2**20 bytes). A job that states no memory reports ``0``; adapters convert
  per-core requests (Slurm ``--mem-per-cpu``, SGE ``h_vmem``) to the job's total.
* ``walltime_s``: the requested wall-clock limit in seconds; ``0`` when the job states none.
* ``submit_time`` / ``idle_since``: seconds since the Unix epoch in production, seconds on the
  virtual clock in the simulator. Decision code only ever *subtracts* them from ``now``, so both
  work the same.

Rules every adapter keeps, because the controller loop depends on them:

* **Idempotent operations.** ``drain`` of a draining node, ``resume`` of a node that is not
  draining, ``remove`` of a node the batch system no longer knows: all succeed silently. The
  controller is level-triggered and retries freely after a crash.
* **Only the elastic pools' jobs.** ``pending`` returns jobs that are waiting for resources (not
  held, not blocked on a dependency, not waiting for a start time): a held job is no demand for a
  new VM, and booting for it would only make an idle VM.
* **Errors** are :class:`~vocloud.errors.DriverError` with a message a site admin can act on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class PendingJob:
    """One job waiting in the queue, with the resources it asks for (units: module docstring).

    ``vo`` is already mapped (see :class:`VOMapper`); a job the mapping does not cover is not
    returned at all, since no pool could ever run it.
    """

    id: str
    vo: str
    cores: int
    memory_mib: int
    walltime_s: int
    submit_time: float


class NodeState(StrEnum):
    """A worker node as the batch system sees it, reduced to what pool decisions need."""

    IDLE = "IDLE"  # up, accepts jobs, runs none
    BUSY = "BUSY"  # up, runs at least one job (fully or partly allocated)
    DRAINING = "DRAINING"  # no new jobs, still runs some
    DRAINED = "DRAINED"  # draining and empty: safe to shut down
    DOWN = "DOWN"  # not responding / marked down (reaped by the failure handling)
    UNKNOWN = "UNKNOWN"  # any state the adapter cannot classify; never acted on


@dataclass(frozen=True, slots=True)
class WorkerNode:
    """One worker node (for elastic pools: one VM, node name = VM name).

    ``vo`` is the pool the node belongs to when the adapter can tell (a node feature, partition or
    the ``vc-`` naming convention), else ``None``. ``idle_since`` is when the node last became idle
    (``None`` while it runs jobs or when the batch system does not say); ``reason`` is the batch
    system's own drain/down reason, shown to operators verbatim. ``free_cores`` and
    ``free_memory_mib``: what a BUSY or DRAINING node still has unallocated (Slurm
    ``alloc_cpus``/``alloc_memory``, SGE slots used), so the planner counts a half-empty node as
    capacity; ``0`` when the batch system does not say, and a busy node is then taken as full.
    """

    name: str
    state: NodeState
    cores: int
    memory_mib: int
    running_jobs: int
    vo: str | None
    idle_since: float | None
    reason: str = ""
    free_cores: int = 0
    free_memory_mib: int = 0


@runtime_checkable
class BatchSystem(Protocol):
    """One batch system. Implementations: slurm, gridengine, htcondor, pbs, lsf, sim."""

    name: str

    def pending(self) -> list[PendingJob]:
        """Jobs waiting for resources now, any order (the planner does not rely on order)."""
        ...

    def nodes(self) -> list[WorkerNode]:
        """Every worker node the batch system knows, including down ones."""
        ...

    def drain(self, node: str, reason: str) -> None:
        """Stop scheduling new jobs on ``node``; running jobs finish. Idempotent."""
        ...

    def resume(self, node: str) -> None:
        """Undo a drain: the node takes new jobs again. Idempotent."""
        ...

    def remove(self, node: str) -> None:
        """Forget ``node`` (after its VM is gone). Idempotent; a missing node is success."""
        ...


@runtime_checkable
class RegistersNodes(Protocol):
    """Optional: a batch system that must be told about a worker before its daemon can join.

    Slurm dynamic nodes register themselves; Grid Engine accepts an execd only from a host that
    is already an execution host (and checks its name against its address). The pool controller
    calls ``register`` for every worker whose VM has an address and whose node the batch system
    does not list yet, every pass until it does; ``remove`` (above) undoes it. Idempotent.
    """

    def register(self, node: str, address: str, vo: str) -> None:
        """Let ``node`` (the VM name), reachable at ``address``, join as a worker of ``vo``."""
        ...


@dataclass(frozen=True, slots=True)
class VOMapper:
    """How a job's batch-system attributes map to a VO; configured per batch system.

    ``attribute`` names the job attribute the adapter looks at (Slurm ``account``, ``partition``
    or ``qos``; SGE ``project`` or ``queue``; HTCondor ``AccountingGroup`` or
    ``x509UserProxyVOName``; ``group`` for the Unix group). ``table`` maps a value to a VO; a
    value missing from the table maps to itself when ``identity`` is true (the common case:
    account name = VO name), else to ``default`` (``None``: the job belongs to no pool).
    HTCondor accounting groups look like ``group_atlas.prod.user``: ``prefix_strip`` and
    ``split`` let the rule keep only ``atlas``.
    """

    attribute: str
    table: Mapping[str, str] = field(default_factory=dict)
    identity: bool = True
    default: str | None = None
    prefix_strip: str = ""
    split: str = ""

    def vo_for(self, attrs: Mapping[str, str]) -> str | None:
        """The VO of a job with batch attributes ``attrs``, or ``None`` if it belongs to none."""
        raw = attrs.get(self.attribute)
        if not raw:
            return self.default
        value = raw.removeprefix(self.prefix_strip) if self.prefix_strip else raw
        if self.split:
            value = value.split(self.split, 1)[0]
        if value in self.table:
            return self.table[value]
        return value if self.identity else self.default


def by_vo(jobs: Iterable[PendingJob]) -> dict[str, list[PendingJob]]:
    """Group pending jobs by VO: the shape :func:`vocloud.elastic.planner.plan` takes as demand."""
    out: dict[str, list[PendingJob]] = {}
    for job in jobs:
        out.setdefault(job.vo, []).append(job)
    return out
