"""SimBatch: the in-memory batch system the pool tests and the demo run jobs on."""

from __future__ import annotations

from pathlib import Path

import pytest

from vocloud.batch.base import BatchSystem, NodeState
from vocloud.batch.sim import SimBatch
from vocloud.errors import DriverError, InvalidInput


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _states(sim: SimBatch) -> dict[str, NodeState]:
    return {n.name: n.state for n in sim.nodes()}


def test_is_a_batch_system() -> None:
    assert isinstance(SimBatch(), BatchSystem)


def test_jobs_wait_for_a_node_of_their_vo_and_finish_on_the_clock() -> None:
    clock = Clock()
    sim = SimBatch(clock)
    a = [sim.submit("atlas", cores=1, runtime=10) for _ in range(3)]
    c = sim.submit("cms", cores=1, runtime=5)
    assert [j.id for j in sim.pending()] == [*a, c]
    sim.node_up("w1", "atlas", cores=2, memory=1024)
    pending = sim.pending()
    assert [j.id for j in pending] == [a[2], c]  # w1 holds two 1-core atlas jobs, never cms
    assert pending[0].vo == "atlas" and pending[0].walltime_s == 10
    [node] = sim.nodes()
    assert node.state is NodeState.BUSY and node.running_jobs == 2 and node.free_cores == 0
    clock.t += 10
    # both end at t=10; the third starts then and ends at t=20
    assert [j.id for j in sim.pending()] == [c]
    assert sim.finished == a[:2]
    clock.t += 10
    [node] = sim.nodes()
    assert node.state is NodeState.IDLE and node.idle_since == 1020.0
    assert sim.finished == a and sim.killed == []


def test_memory_limits_what_starts() -> None:
    sim = SimBatch(Clock())
    big = sim.submit("atlas", cores=1, memory=2048, runtime=1)
    sim.node_up("w1", "atlas", cores=4, memory=1024)
    assert [j.id for j in sim.pending()] == [big]


def test_drain_resume_remove_are_idempotent_and_drain_lets_jobs_finish() -> None:
    clock = Clock()
    sim = SimBatch(clock)
    sim.node_up("w1", "atlas", 1, 512)
    sim.submit("atlas", runtime=10)
    sim.drain("w1", "test")
    sim.drain("w1", "test")
    assert _states(sim) == {"w1": NodeState.DRAINING}
    sim.submit("atlas", runtime=10)
    clock.t += 10
    assert _states(sim) == {"w1": NodeState.DRAINED}
    assert len(sim.pending()) == 1  # a drained node takes no new job
    sim.resume("w1")
    sim.resume("w1")
    assert _states(sim) == {"w1": NodeState.BUSY} and sim.pending() == []
    clock.t += 10
    sim.remove("w1")
    sim.remove("w1")  # a missing node is success
    assert sim.nodes() == [] and sim.killed == [] and len(sim.finished) == 2
    with pytest.raises(DriverError, match="invalid node name"):
        sim.drain("nope", "x")


def test_a_node_going_away_kills_its_jobs_and_says_so() -> None:
    clock = Clock()
    sim = SimBatch(clock)
    sim.sync_nodes({"w1": ("atlas", 1, 512), "w2": ("atlas", 1, 512)})
    j1, _j2 = sim.submit("atlas", runtime=50), sim.submit("atlas", runtime=50)
    sim.sync_nodes({"w2": ("atlas", 1, 512)})
    assert _states(sim) == {"w1": NodeState.DOWN, "w2": NodeState.BUSY}
    assert sim.killed == [j1]
    sim.node_up("w1", "atlas", 1, 512)
    assert _states(sim)["w1"] is NodeState.IDLE
    sim.remove("w2")
    assert len(sim.killed) == 2


def test_bad_jobs_are_refused() -> None:
    sim = SimBatch(Clock())
    with pytest.raises(InvalidInput):
        sim.submit("atlas", cores=0)
    with pytest.raises(InvalidInput):
        sim.submit("")


def test_file_backed_state_is_shared(tmp_path: Path) -> None:
    clock = Clock()
    one = SimBatch(clock, tmp_path / "q.json")
    two = SimBatch(clock, tmp_path / "q.json")
    job = one.submit("atlas", runtime=5)
    assert [j.id for j in two.pending()] == [job]
    two.node_up("w1", "atlas", 1, 512)
    assert one.pending() == [] and one.nodes()[0].state is NodeState.BUSY
    clock.t += 5
    assert one.finished == [job]
