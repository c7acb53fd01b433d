"""GridEngineBatch against a real Grid Engine 8.1.9 (see ``sge_harness`` for the topology).

The cell is started once per module; the ``clean`` fixture deletes every job, re-enables the
host's queues and restarts its execd if a test stopped it, so tests do not depend on order.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator

import pytest

from tests.support.batch_contract import check_drain_resume_are_idempotent, check_reads
from tests.support.sge_harness import (
    SLOTS,
    VO_SLOTS,
    SgeCell,
    processes_with_marker,
    sge_cell_fixture,
)
from vocloud.batch.base import BatchSystem, NodeState, VOMapper, WorkerNode
from vocloud.batch.gridengine import GridEngineBatch
from vocloud.batch.runner import CommandRunner
from vocloud.errors import DriverError

pytestmark = pytest.mark.slow

PROJECTS = VOMapper("project", table={"atlas": "atlas", "cms": "cms", "lhcb": "lhcb"}, identity=False)


@pytest.fixture(scope="module")
def sge() -> Iterator[SgeCell]:
    yield from sge_cell_fixture()


@pytest.fixture
def clean(sge: SgeCell) -> Iterator[SgeCell]:
    yield sge
    sge.delete_all()
    if sge.host not in sge.exec_hosts():
        sge.add_exec_host(sge.host)
    if sge.host not in sge.run("qconf", "-shgrp", "@allhosts").split():
        sge.run("qconf", "-aattr", "hostgroup", "hostlist", sge.host, "@allhosts")
    if not sge.execd_up():
        sge.start_execd()
    sge.run("qmod", "-e", f"*@{sge.host}")


def batch(sge: SgeCell, mapper: VOMapper = PROJECTS, prefix: str = "",
          hostgroup: str = "@allhosts") -> GridEngineBatch:
    return GridEngineBatch(mapper, runner=CommandRunner(env=sge.client_env), hostgroup=hostgroup,
                           vo_queue_prefix=prefix)


def _node(sge: SgeCell, gb: GridEngineBatch) -> WorkerNode:
    return next(n for n in gb.nodes() if n.name == sge.host)


def _fill(sge: SgeCell) -> list[str]:
    """Occupy every slot of the host: all.q with one 2-slot job, vo-cms with a cms job."""
    ids = [sge.qsub("-P", "atlas", "-q", "all.q", "-pe", "smp", str(SLOTS)),
           sge.qsub("-P", "cms", "-q", "vo-cms")]
    sge.wait_for(lambda: sge.running() == set(ids), 30, "the filler jobs to run")
    return ids


def test_the_adapter_keeps_the_batch_contract_on_a_real_grid_engine(clean: SgeCell) -> None:
    """The conformance suite every adapter passes (tests/support/batch_contract.py), on a real
    qmaster and execd: a full host, pending demand, drain/resume twice."""
    _fill(clean)
    clean.qsub("-P", "cms", "-q", "vo-cms")
    gb = batch(clean)
    clean.wait_for(lambda: len(gb.pending()) == 1, 30, "the cms job to wait")
    jobs, nodes = check_reads(gb)
    assert [j.vo for j in jobs] == ["cms"] and clean.host in {n.name for n in nodes}
    check_drain_resume_are_idempotent(gb, clean.host)


def test_adapter_satisfies_the_protocol(sge: SgeCell) -> None:
    assert isinstance(batch(sge), BatchSystem)


def test_pending_is_exactly_the_runnable_demand(clean: SgeCell) -> None:
    sge = clean
    _fill(sge)
    t0 = time.time()
    a = sge.qsub("-P", "atlas", "-pe", "smp", "2", "-l", "h_vmem=1G,h_rt=2:00:00")
    b = sge.qsub("-P", "cms", "-q", "vo-cms", "-l", "mem_free=1500M,h_rt=30")
    arr = sge.qsub("-P", "lhcb", "-t", "1-3", "-l", "h_vmem=2000m,h_rt=0:10:00")
    sge.qsub("-P", "atlas", "-h")  # held: no demand
    sge.qsub("-P", "atlas", "-hold_jid", a)  # blocked on a dependency: shown as a hold (hqw)
    sge.qsub("-P", "alice")  # project outside the mapping
    sge.qsub()  # no project at all

    jobs = batch(sge).pending()
    got = {(j.id, j.vo, j.cores, j.memory_mib, j.walltime_s) for j in jobs}
    assert got == {
        (a, "atlas", 2, 2048, 7200),  # h_vmem is per slot
        (b, "cms", 1, 1500, 30),
        (f"{arr}.1", "lhcb", 1, 1908, 600),  # 2000m: lower case is powers of 1000
        (f"{arr}.2", "lhcb", 1, 1908, 600),
        (f"{arr}.3", "lhcb", 1, 1908, 600),
    }
    assert all(int(t0) - 2 <= j.submit_time <= time.time() + 1 for j in jobs)

    by_queue = VOMapper("queue", table={"vo-cms": "cms-grid"}, identity=False)
    assert {(j.id, j.vo) for j in batch(sge, mapper=by_queue).pending()} == {(b, "cms-grid")}


def test_pending_counts_only_the_tasks_still_waiting(clean: SgeCell) -> None:
    sge = clean
    arr = sge.qsub("-P", "lhcb", "-q", "all.q", "-t", "1-5")  # all.q has 2 slots: 3 tasks wait
    sge.wait_for(lambda: len(batch(sge).pending()) == 3, 30, "two tasks to start")
    assert {j.id for j in batch(sge).pending()} == {f"{arr}.3", f"{arr}.4", f"{arr}.5"}
    node = _node(sge, batch(sge))
    assert (node.state, node.running_jobs) == (NodeState.BUSY, 2)  # two tasks of one array job


def test_nodes_report_idle_then_busy(clean: SgeCell) -> None:
    sge = clean
    idle = _node(sge, batch(sge))
    assert (idle.state, idle.cores, idle.running_jobs, idle.free_cores) == (
        NodeState.IDLE, SLOTS + VO_SLOTS, 0, SLOTS + VO_SLOTS)
    assert idle.vo is None and idle.memory_mib == 0 and idle.idle_since is None
    assert _node(sge, batch(sge, prefix="vo-")).vo == "cms"  # from its vo-cms queue instance

    _fill(sge)
    busy = _node(sge, batch(sge))
    assert (busy.state, busy.running_jobs, busy.free_cores) == (NodeState.BUSY, 2, 0)


def test_drain_resume_cycle_is_idempotent(clean: SgeCell) -> None:
    sge = clean
    fillers = _fill(sge)
    gb = batch(sge)
    gb.drain(sge.host, "vocloud: pool shrink")
    gb.drain(sge.host, "vocloud: pool shrink")  # twice: "already in the specified state", rc 0
    node = _node(sge, gb)
    assert (node.state, node.running_jobs, node.reason) == (NodeState.DRAINING, 2, "disabled")

    sge.run("qdel", *fillers)  # the jobs end: draining -> drained
    drained = sge.wait_for(lambda: n if (n := _node(sge, gb)).state is NodeState.DRAINED else None,
                           30, "the host to become DRAINED")
    assert drained.running_jobs == 0

    waiting = sge.qsub("-P", "atlas")
    time.sleep(3)  # three scheduler runs: a disabled host takes no job
    assert [j.id for j in gb.pending()] == [waiting]

    gb.resume(sge.host)
    gb.resume(sge.host)  # already enabled: success
    assert _node(sge, gb).state in (NodeState.IDLE, NodeState.BUSY)
    sge.wait_for(lambda: waiting in sge.running(), 30, "the waiting job to start after resume")


def test_drain_of_unknown_node_is_a_clear_error(sge: SgeCell) -> None:
    with pytest.raises(DriverError, match="invalid queue"):
        batch(sge).drain("nosuchnode", "x")


def test_a_dead_execd_makes_the_node_down(clean: SgeCell) -> None:
    sge = clean
    sge.stop_execd()
    node = _node(sge, batch(sge))
    assert node.state is NodeState.DOWN
    sge.start_execd()
    assert _node(sge, batch(sge)).state is NodeState.IDLE


def test_remove_deletes_the_execution_host(clean: SgeCell) -> None:
    sge = clean
    gb = batch(sge)
    sge.stop_execd()  # the VM is gone; then vocloud removes the node
    gb.remove(sge.host)
    assert sge.host not in {n.name for n in gb.nodes()}
    assert sge.host not in sge.exec_hosts()
    gb.remove(sge.host)  # already gone: no-op
    gb.remove("no-such-host.invalid")  # name no longer resolves (VM and DNS entry gone): no-op


def test_remove_refuses_what_it_cannot_undo(clean: SgeCell) -> None:
    sge = clean
    with pytest.raises(DriverError, match="does not exist"):  # a typo in the host group is an error
        batch(sge, hostgroup="@nosuchgroup").remove(sge.host)
    assert sge.host in sge.exec_hosts()


def test_controller_down_is_a_driver_error(sge: SgeCell) -> None:
    """A qmaster that does not answer is a DriverError naming qstat."""
    env = {**sge.client_env, "SGE_QMASTER_PORT": "1"}
    broken = GridEngineBatch(PROJECTS, runner=CommandRunner(env=env, timeout_s=20))
    with pytest.raises(DriverError, match="qstat"):
        broken.pending()


def test_teardown_leaves_no_process_and_no_files(sge: SgeCell) -> None:
    """A second cell with a running job: stop() reaps daemons, shepherd and job."""
    other = SgeCell()
    other.start()
    root = other.root
    try:
        job = other.qsub("-P", "atlas")
        other.wait_for(lambda: job in other.running(), 30, "the job to run")
        other.wait_for(lambda: len(processes_with_marker(str(root))) >= 4, 10,
                       "qmaster, execd, shepherd and job")
    finally:
        other.stop()
    assert processes_with_marker(str(root)) == []
    assert not root.exists()


def test_harness_skips_or_fails_without_gridengine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("VOCLOUD_REQUIRE_SGE", raising=False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install gridengine-master"):
        next(sge_cell_fixture())
    monkeypatch.setenv("VOCLOUD_REQUIRE_SGE", "1")
    with pytest.raises(pytest.fail.Exception, match="Grid Engine not installed"):
        next(sge_cell_fixture())
