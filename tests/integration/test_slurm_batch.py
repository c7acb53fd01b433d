"""SlurmBatch against a real Slurm 22.05 (see ``slurm_harness`` for the topology).

The cluster is started once per module; the ``clean`` fixture cancels every job and resumes
every static node after each test, so tests do not depend on each other's order.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

from tests.support.batch_contract import check_drain_resume_are_idempotent, check_reads
from tests.support.slurm_harness import (
    NODE_CPUS,
    NODE_MEM_MIB,
    SlurmCluster,
    processes_with_marker,
    slurm_cluster_fixture,
)
from vocloud.batch.base import BatchSystem, NodeState, VOMapper, WorkerNode
from vocloud.batch.runner import CommandRunner
from vocloud.batch.slurm import SlurmBatch
from vocloud.errors import DriverError

pytestmark = pytest.mark.slow

ACCOUNTS = VOMapper("account", table={"atlas": "atlas", "cms": "cms", "lhcb": "lhcb"}, identity=False)


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmCluster]:
    yield from slurm_cluster_fixture()


@pytest.fixture
def clean(slurm: SlurmCluster) -> Iterator[SlurmCluster]:
    yield slurm
    slurm.cancel_all()
    for node in ("n1", "n2"):
        if _flagged(slurm, node):
            slurm.run("scontrol", "update", f"NodeName={node}", "State=RESUME")
    slurm.wait_for(lambda: _sinfo_states(slurm).get("n1") == "idle"
                   and _sinfo_states(slurm).get("n2") == "idle", 30, "n1, n2 idle again")


def _sinfo_states(slurm: SlurmCluster) -> dict[str, str]:
    out = slurm.run("sinfo", "-h", "-N", "-o", "%N %t", "-n", "n1,n2")
    return dict(line.split() for line in out.splitlines() if line.strip())


def _flagged(slurm: SlurmCluster, node: str) -> bool:
    return _sinfo_states(slurm).get(node, "idle").rstrip("*~#") not in ("idle", "alloc", "mix")


def batch(slurm: SlurmCluster, mapper: VOMapper = ACCOUNTS, partition: str | None = None) -> SlurmBatch:
    return SlurmBatch(mapper, runner=CommandRunner(env={"SLURM_CONF": str(slurm.conf)}),
                      partition=partition)


def _fill(slurm: SlurmCluster) -> list[str]:
    """Occupy both static nodes completely (all CPUs, all memory) with running jobs."""
    ids = [slurm.sbatch("-A", "atlas", "-w", node, "-n1", f"-c{NODE_CPUS}", f"--mem={NODE_MEM_MIB}")
           for node in ("n1", "n2")]
    slurm.wait_for(lambda: sorted(slurm.run("squeue", "-h", "-t", "R", "-o", "%i").split()) == sorted(ids),
                   30, "the filler jobs to run")
    return ids


def _settled(slurm: SlurmCluster) -> bool:
    """True once the scheduler has looked at every pending job (no reason 'None' left)."""
    out = slurm.run("squeue", "-h", "-t", "PD", "-o", "%r")
    return bool(out.strip()) and "None" not in out.split()


def _node(nodes: list[WorkerNode], name: str) -> WorkerNode:
    return next(n for n in nodes if n.name == name)


def test_the_adapter_keeps_the_batch_contract_on_a_real_slurm(clean: SlurmCluster) -> None:
    """The conformance suite every adapter passes (tests/support/batch_contract.py), on real
    slurmctld: busy nodes, pending demand, drain/resume twice."""
    _fill(clean)
    clean.sbatch("-A", "cms", "-n1")
    sb = batch(clean)
    clean.wait_for(lambda: len(sb.pending()) == 1, 30, "the cms job to wait")
    jobs, nodes = check_reads(sb)
    assert [j.vo for j in jobs] == ["cms"] and {"n1", "n2"} <= {n.name for n in nodes}
    check_drain_resume_are_idempotent(sb, "n1")


def test_adapter_satisfies_the_protocol(slurm: SlurmCluster) -> None:
    assert isinstance(batch(slurm), BatchSystem)


def test_pending_is_exactly_the_runnable_demand(clean: SlurmCluster) -> None:
    slurm = clean
    _fill(slurm)
    t0 = time.time()
    a = slurm.sbatch("-A", "atlas", "-n1", "-c2", "--mem=500", "-t", "30")
    b = slurm.sbatch("-A", "cms", "-n2", "--mem-per-cpu=300", "-t", "1:00:00")
    c = slurm.sbatch("-A", "cms", "-p", "grid", "-n1", "--mem=100", "-t", "5")
    arr = slurm.sbatch("-A", "lhcb", "-a", "0-4%2", "-n1", "--mem=50", "-t", "2")
    slurm.sbatch("-A", "atlas", "-H")  # held: no demand
    slurm.sbatch("-A", "atlas", "-d", f"afterok:{a}")  # blocked on a dependency
    slurm.sbatch("-A", "atlas", "--begin=now+1hour")  # waiting for its start time
    slurm.sbatch("-A", "alice", "-n1")  # account outside the mapping
    slurm.wait_for(lambda: _settled(slurm), 30, "pending reasons to settle")

    jobs = batch(slurm).pending()
    got = {(j.id, j.vo, j.cores, j.memory_mib, j.walltime_s) for j in jobs}
    assert got == {
        (a, "atlas", 2, 500, 1800),
        (b, "cms", 2, 600, 3600),
        (c, "cms", 1, 100, 300),
        (f"{arr}_0", "lhcb", 1, 50, 120),  # an array throttled to %2 is demand for two
        (f"{arr}_1", "lhcb", 1, 50, 120),
    }
    assert all(t0 - 5 <= j.submit_time <= time.time() + 1 for j in jobs)

    # restricted to one partition, and VOs from partitions instead of accounts
    assert [j.id for j in batch(slurm, partition="grid").pending()] == [c]
    by_part = VOMapper("partition", table={"grid": "cms-grid"}, identity=False)
    assert {(j.id, j.vo) for j in batch(slurm, mapper=by_part).pending()} == {(c, "cms-grid")}


def test_nodes_report_busy_then_idle(clean: SlurmCluster) -> None:
    slurm = clean
    idle = {n.name: n for n in batch(slurm).nodes()}
    for name in ("n1", "n2"):
        assert idle[name].state is NodeState.IDLE
        assert (idle[name].cores, idle[name].memory_mib, idle[name].running_jobs) == (2, 1000, 0)
        assert idle[name].idle_since is not None
    # powered-down cloud nodes are either hidden by Slurm or reported as not usable
    assert all(idle[c].state is NodeState.DOWN for c in ("c1", "c2") if c in idle)

    _fill(slurm)
    busy = {n.name: n for n in batch(slurm).nodes()}
    assert busy["n1"].state is NodeState.BUSY and busy["n1"].running_jobs == 1
    assert busy["n1"].idle_since is None
    assert (busy["n1"].free_cores, busy["n1"].free_memory_mib) == (0, 0)
    assert [n.name for n in batch(slurm, partition="grid").nodes()] == ["n1", "n2"]


def test_drain_resume_cycle_is_idempotent(clean: SlurmCluster) -> None:
    slurm = clean
    fillers = _fill(slurm)
    sb = batch(slurm)
    sb.drain("n1", "vocloud: pool shrink")
    sb.drain("n1", "vocloud: pool shrink")  # twice: still fine
    n1 = _node(sb.nodes(), "n1")
    assert n1.state is NodeState.DRAINING and n1.running_jobs == 1
    assert n1.reason == "vocloud: pool shrink"

    slurm.run("scancel", fillers[0])  # the job on n1 ends: draining -> drained
    drained = slurm.wait_for(lambda: n if (n := _node(sb.nodes(), "n1")).state is NodeState.DRAINED
                             else None, 30, "n1 to become DRAINED")
    assert drained.running_jobs == 0
    assert _node(sb.nodes(), "n2").state is NodeState.BUSY  # untouched

    sb.resume("n1")
    sb.resume("n1")  # already resumed: success
    # Slurm flags a resumed node NOT_RESPONDING until its next ping; it is IDLE throughout
    assert _node(sb.nodes(), "n1").state is NodeState.IDLE
    sb.resume("n2")  # never drained: success


def test_drain_of_unknown_node_is_a_clear_error(slurm: SlurmCluster) -> None:
    with pytest.raises(DriverError, match="Invalid node name"):
        batch(slurm).drain("nosuchnode", "x")


def test_remove_static_and_cloud_nodes(clean: SlurmCluster) -> None:
    slurm = clean
    sb = batch(slurm)
    sb.remove("nosuchnode")  # unknown: nothing to forget

    sb.remove("n2")
    n2 = _node(sb.nodes(), "n2")
    assert n2.state is NodeState.DOWN and "removed" in n2.reason
    sb.remove("n2")  # already down: no-op

    # a cloud node "boots" (the ResumeProgram starts its slurmd) and then is removed
    slurm.run("scontrol", "update", "NodeName=c1", "State=POWER_UP")
    c1 = slurm.wait_for(lambda: next((n for n in sb.nodes() if n.name == "c1"
                                      and n.state is NodeState.IDLE), None), 60, "c1 to register")
    assert c1.vo == "lhcb"  # from its vo_lhcb feature
    sb.remove("c1")
    after = {n.name: n for n in sb.nodes()}
    assert "c1" not in after or after["c1"].state is NodeState.DOWN
    sb.remove("c1")  # powering down already: no-op
    state_flags = slurm.run("sinfo", "-h", "-N", "-n", "c1", "-o", "%t")
    # Slurm's suffixes: "!" power down pending, "%" powering down, "~" powered down
    assert state_flags.strip()[-1] in "!%~"


def test_remove_deletes_a_dynamic_node(clean: SlurmCluster) -> None:
    slurm = clean
    sb = batch(slurm)
    slurm.add_dynamic_node("dyn1")
    dyn = slurm.wait_for(lambda: next((n for n in sb.nodes() if n.name == "dyn1"), None), 30,
                         "dyn1 to register")
    assert (dyn.state, dyn.cores, dyn.memory_mib) == (NodeState.IDLE, 2, 500)
    slurm.kill_slurmd("dyn1")  # the VM is gone; then vocloud removes the node
    sb.remove("dyn1")  # scontrol delete: gone from Slurm altogether
    assert "dyn1" not in {n.name for n in sb.nodes()}
    sb.remove("dyn1")  # already gone: no-op


def test_controller_down_is_a_driver_error(slurm: SlurmCluster) -> None:
    """A missing slurm.conf (or a controller that never answers) is a DriverError naming squeue."""
    broken = SlurmBatch(ACCOUNTS, runner=CommandRunner(env={"SLURM_CONF": "/nonexistent/slurm.conf"},
                                                       timeout_s=3))
    with pytest.raises(DriverError, match="squeue"):
        broken.pending()


def test_teardown_leaves_no_process_and_no_files(slurm: SlurmCluster) -> None:
    """A second cluster with a running job and a powered-up cloud node: stop() reaps it all."""
    other = SlurmCluster()
    other.start()
    root = other.root
    try:
        other.sbatch("-A", "atlas", "-n1")
        other.run("scontrol", "update", "NodeName=c2", "State=POWER_UP")
        other.wait_for(lambda: "idle" in other.run("sinfo", "-h", "-N", "-n", "c2", "-o", "%t"), 60,
                       "c2 to register")
        other.wait_for(lambda: other.run("squeue", "-h", "-t", "R", "-o", "%i").strip(), 30, "the job to run")
        assert len(processes_with_marker(str(root))) >= 6  # munged, slurmctld, 3 slurmd, stepd, job
    finally:
        other.stop()
    assert processes_with_marker(str(root)) == []
    assert not root.exists()


def test_harness_skips_or_fails_without_slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("VOCLOUD_REQUIRE_SLURM", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install slurm-wlm munge"):
        next(slurm_cluster_fixture())
    monkeypatch.setenv("VOCLOUD_REQUIRE_SLURM", "1")
    with pytest.raises(pytest.fail.Exception, match="Slurm not installed"):
        next(slurm_cluster_fixture())
