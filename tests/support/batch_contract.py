"""The batch-adapter conformance suite: what every ``BatchSystem`` promises, checked the same way
on every adapter — Slurm and Grid Engine against their real daemons, HTCondor, PBS and LSF against
recorded outputs (tests/unit/test_batch_conformance.py and the real-daemon tests).

The planner and the pool controller rely on exactly these properties; an adapter that breaks one
would make the pools boot for phantom demand or drain a node that runs jobs.
"""

from __future__ import annotations

from vocloud.batch.base import BatchSystem, NodeState, PendingJob, WorkerNode

#: Node states that promise no job is running (the controller shuts such a node down).
EMPTY_STATES = frozenset({NodeState.IDLE, NodeState.DRAINED})


def check_pending(jobs: list[PendingJob]) -> None:
    """Demand: one row per waiting job (array tasks each), every field usable by the planner."""
    assert isinstance(jobs, list)
    ids = [j.id for j in jobs]
    assert len(ids) == len(set(ids)), f"a job listed twice: {ids}"
    for j in jobs:
        assert isinstance(j, PendingJob), j
        assert j.id and isinstance(j.id, str), j
        assert j.vo and isinstance(j.vo, str), f"a job of no VO is not demand: {j}"
        assert isinstance(j.cores, int) and j.cores >= 1, j
        assert isinstance(j.memory_mib, int) and j.memory_mib >= 0, j
        assert isinstance(j.walltime_s, int) and j.walltime_s >= 0, j
        assert j.submit_time >= 0, j


def check_nodes(nodes: list[WorkerNode]) -> None:
    """Nodes: unique names, a known state, and counts that agree with the state."""
    assert isinstance(nodes, list)
    names = [n.name for n in nodes]
    assert len(names) == len(set(names)), f"a node listed twice: {names}"
    for n in nodes:
        assert isinstance(n, WorkerNode), n
        assert n.name and isinstance(n.name, str), n
        assert isinstance(n.state, NodeState), n
        assert n.cores >= 0 and n.memory_mib >= 0 and n.running_jobs >= 0, n
        assert 0 <= n.free_cores <= max(n.cores, n.free_cores) and n.free_memory_mib >= 0, n
        if n.state in EMPTY_STATES:
            assert n.running_jobs == 0, f"{n.state} must mean no job runs: {n}"
        if n.state in (NodeState.BUSY, NodeState.DRAINING):
            assert n.running_jobs > 0 or n.free_cores < n.cores or n.cores == 0, n
        if n.idle_since is not None:
            assert n.idle_since >= 0 and n.running_jobs == 0, f"idle since, yet runs jobs: {n}"


def check_reads(batch: BatchSystem) -> tuple[list[PendingJob], list[WorkerNode]]:
    """The adapter is a BatchSystem and its two reads keep the contract; returns what it read."""
    assert isinstance(batch, BatchSystem), f"{batch!r} does not implement BatchSystem"
    assert batch.name and isinstance(batch.name, str)
    jobs = batch.pending()
    check_pending(jobs)
    nodes = batch.nodes()
    check_nodes(nodes)
    return jobs, nodes


def check_drain_resume_are_idempotent(batch: BatchSystem, node: str) -> None:
    """Drain twice, resume twice: no error (the controller repeats any step after a crash)."""
    batch.drain(node, "vocloud: conformance")
    batch.drain(node, "vocloud: conformance")
    batch.resume(node)
    batch.resume(node)
