"""Every batch adapter keeps the same contract (tests/support/batch_contract.py), here on the
recorded outputs of Slurm, Grid Engine, HTCondor, PBS and LSF; Slurm and Grid Engine are checked
again against their real daemons in tests/integration/test_{slurm,gridengine}_batch.py."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.support.batch_contract import check_drain_resume_are_idempotent, check_reads
from tests.support.batch_fakes import FakeRunner, data, failed
from vocloud.batch.base import BatchSystem, VOMapper
from vocloud.batch.gridengine import GridEngineBatch
from vocloud.batch.htcondor import CondorBatch
from vocloud.batch.lsf import LSFBatch
from vocloud.batch.pbs import PBSBatch
from vocloud.batch.slurm import SlurmBatch
from vocloud.errors import DriverError

#: per adapter: its read commands and the recorded answers; any other command (drain, resume,
#: remove) answers "" as a successful command does
RECORDED: dict[str, dict[tuple[str, ...], str]] = {
    "slurm": {("squeue",): data("slurm", "squeue_busy.json"), ("sinfo",): data("slurm", "sinfo_busy.json")},
    "gridengine": {("qstat", "-u", "*", "-s", "p"): data("gridengine", "qstat_pending.xml"),
                   ("qstat", "-f"): data("gridengine", "qstat_f.xml")},
    "htcondor": {("condor_q",): data("htcondor", "condor_q.json"),
                 ("condor_status",): data("htcondor", "condor_status.json")},
    "pbs": {("qstat",): data("pbs", "qstat.json"), ("pbsnodes",): data("pbs", "pbsnodes.json")},
    "lsf": {("bjobs",): data("lsf", "bjobs.json"), ("bhosts",): data("lsf", "bhosts.json"),
            ("lshosts",): data("lsf", "lshosts.json")},
}

MAKERS: dict[str, Callable[[FakeRunner], BatchSystem]] = {
    "slurm": lambda r: SlurmBatch(VOMapper("account"), runner=r),
    "gridengine": lambda r: GridEngineBatch(VOMapper("project"), runner=r),
    "htcondor": lambda r: CondorBatch(VOMapper("AccountingGroup", prefix_strip="group_", split="."),
                                      runner=r, clock=lambda: 1.7e9),
    "pbs": lambda r: PBSBatch(VOMapper("account"), runner=r),
    "lsf": lambda r: LSFBatch(VOMapper("project"), runner=r),
}

WRITE_COMMANDS = ("scontrol", "qmod", "qconf", "condor_drain", "condor_off", "pbsnodes", "qmgr",
                  "badmin", "lsrmhost")


def recorded(kind: str) -> FakeRunner:
    answers: dict[tuple[str, ...], str | Exception] = {(c,): "" for c in WRITE_COMMANDS}
    answers.update(RECORDED[kind])
    return FakeRunner(answers)


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_reads_keep_the_contract(kind: str) -> None:
    jobs, nodes = check_reads(MAKERS[kind](recorded(kind)))
    assert jobs and nodes, "the recordings hold demand and nodes: an empty read would prove nothing"


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_drain_and_resume_are_idempotent_and_name_the_node(kind: str) -> None:
    runner = recorded(kind)
    batch = MAKERS[kind](runner)
    node = batch.nodes()[0].name
    runner.calls.clear()
    check_drain_resume_are_idempotent(batch, node)
    writes = [c for c in runner.calls if c[0] in WRITE_COMMANDS]
    assert writes and all(any(node.split(".")[0] in part for part in c) for c in writes), runner.calls


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_a_failing_command_is_a_driver_error(kind: str) -> None:
    down = FakeRunner({(c,): failed([c], "cannot connect to the controller")
                       for c in ("squeue", "sinfo", "qstat", "condor_q", "condor_status", "pbsnodes",
                                 "bjobs", "bhosts", "lshosts")})
    batch = MAKERS[kind](down)
    with pytest.raises(DriverError):
        batch.pending()
    with pytest.raises(DriverError):
        batch.nodes()


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_garbled_output_is_a_driver_error_not_a_crash(kind: str) -> None:
    garbled = FakeRunner({(c,): "<<not what the batch system prints>>"
                          for c in ("squeue", "sinfo", "qstat", "condor_q", "condor_status", "pbsnodes",
                                    "bjobs", "bhosts", "lshosts")})
    batch = MAKERS[kind](garbled)
    with pytest.raises(DriverError):
        batch.pending()
    with pytest.raises(DriverError):
        batch.nodes()


def test_the_contract_catches_what_would_mislead_the_planner() -> None:
    from tests.support.batch_contract import check_nodes, check_pending
    from vocloud.batch.base import NodeState, PendingJob, WorkerNode

    ok = WorkerNode("vc-1", NodeState.IDLE, 2, 1024, 0, "atlas", 10.0)
    check_nodes([ok])
    for bad in ([ok, ok],  # listed twice
                [WorkerNode("vc-1", NodeState.IDLE, 2, 1024, 1, "atlas", None)],  # idle yet busy
                [WorkerNode("vc-1", NodeState.DRAINED, 2, 1024, 3, "atlas", None)],  # drained yet busy
                [WorkerNode("vc-1", NodeState.BUSY, 2, 1024, 0, "atlas", None, free_cores=2)]):
        with pytest.raises(AssertionError):
            check_nodes(bad)
    job = PendingJob("1", "atlas", 1, 100, 60, 0.0)
    check_pending([job])
    for bad_jobs in ([job, job], [PendingJob("2", "", 1, 100, 60, 0.0)],
                     [PendingJob("3", "atlas", 0, 100, 60, 0.0)]):
        with pytest.raises(AssertionError):
            check_pending(bad_jobs)
