"""HTCondor adapter on hand-made ``condor_q``/``condor_status`` JSON (see data/batch/README.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.batch_fakes import FakeRunner, data, failed
from vocloud.batch.base import BatchSystem, NodeState, VOMapper
from vocloud.batch.htcondor import CondorBatch, parse_jobs, parse_slots
from vocloud.batch.runner import CommandRunner
from vocloud.errors import DriverError

NOW = 1700001000.0
BY_GROUP = VOMapper("AccountingGroup", prefix_strip="group_", split=".", identity=True)
BY_VONAME = VOMapper("x509UserProxyVOName")


def jobs_payload() -> Any:
    return json.loads(data("htcondor", "condor_q.json"))


def slots_payload() -> Any:
    return json.loads(data("htcondor", "condor_status.json"))


def test_idle_jobs_are_the_demand() -> None:
    jobs = {j.id: j for j in parse_jobs(jobs_payload(), BY_GROUP, NOW)}
    # not: 103.0 held, 104.0 running, 106.0 scheduler universe (DAGMan), 107.0 deferred,
    # 108.0 has no accounting group
    assert set(jobs) == {"101.0", "101.1", "102.0", "105.0"}
    assert (jobs["101.0"].vo, jobs["101.0"].cores, jobs["101.0"].memory_mib) == ("atlas", 1, 2000)
    assert jobs["101.0"].walltime_s == 7200  # MaxRuntime, seconds
    assert (jobs["102.0"].vo, jobs["102.0"].cores, jobs["102.0"].memory_mib) == ("cms", 8, 16000)
    assert jobs["102.0"].walltime_s == 2880 * 60  # MaxWallTimeMins
    assert jobs["105.0"].walltime_s == 3600  # BatchRuntime
    assert jobs["101.0"].submit_time == 1700000101  # QDate


def test_expression_requests_fall_back_to_defaults() -> None:
    jobs = {j.id: j for j in parse_jobs(jobs_payload(), BY_GROUP, NOW, default_memory_mib=2048)}
    assert jobs["105.0"].memory_mib == 2048  # RequestMemory is an ifThenElse(...) expression


def test_deferred_job_counts_once_its_time_has_come() -> None:
    later = {j.id for j in parse_jobs(jobs_payload(), BY_GROUP, 1700090001)}
    assert "107.0" in later


def test_vo_from_proxy_vo_name_and_owner() -> None:
    assert {j.vo for j in parse_jobs(jobs_payload(), BY_VONAME, NOW)} == {"atlas", "cms", "lhcb"}
    by_owner = VOMapper("Owner", table={"localuser": "local"}, identity=False)
    assert [j.id for j in parse_jobs(jobs_payload(), by_owner, NOW)] == ["108.0"]


def test_machines_from_slots() -> None:
    nodes = {n.name: n for n in parse_slots(slots_payload(), BY_GROUP, NOW)}
    vc1 = nodes["vc-1.example.org"]  # partitionable, two dynamic slots busy
    assert (vc1.state, vc1.running_jobs, vc1.cores, vc1.memory_mib) == (NodeState.BUSY, 2, 8, 16000)
    assert (vc1.free_cores, vc1.free_memory_mib, vc1.vo) == (2, 4000, "atlas")
    vc2 = nodes["vc-2.example.org"]
    assert (vc2.state, vc2.idle_since, vc2.vo, vc2.free_cores) == (NodeState.IDLE, 1700000500, "cms", 8)
    vc3 = nodes["vc-3.example.org"]
    assert (vc3.state, vc3.running_jobs, vc3.reason) == (NodeState.DRAINING, 1, "vocloud: pool shrink")
    assert nodes["vc-4.example.org"].state is NodeState.DRAINED
    assert nodes["vc-4.example.org"].idle_since == 1700000700
    static = nodes["wn-static.example.org"]
    assert (static.state, static.cores, static.running_jobs, static.free_cores) == (NodeState.BUSY, 2, 1, 1)
    assert static.vo is None
    assert nodes["vc-5.example.org"].state is NodeState.DOWN  # no update for 11000 s
    assert nodes["vc-6.example.org"].state is NodeState.UNKNOWN  # Owner state: START is false


@pytest.mark.parametrize(("payload", "match"), [
    ({"ClusterId": 1}, "array of ClassAds"),
    ([1, 2], "array of ClassAds"),
    ([{"ClusterId": 1, "ProcId": 0}], "job 1.0 has no JobStatus"),
    ([{"ClusterId": 1, "JobStatus": 1, "AccountingGroup": "group_atlas"}], "has no QDate"),
    ([{"ClusterId": 1, "JobStatus": 1, "QDate": 1, "AccountingGroup": "group_atlas", "RequestCpus": "lots"}],
     "RequestCpus of job 1.0 is not a number"),
])
def test_bad_job_ads(payload: Any, match: str) -> None:
    with pytest.raises(DriverError, match=match):
        parse_jobs(payload, BY_GROUP, NOW)


def test_bad_slot_ads() -> None:
    with pytest.raises(DriverError, match="has no State"):
        parse_slots([{"Name": "slot1@x", "Machine": "x"}], BY_GROUP, NOW)
    with pytest.raises(DriverError, match="without Machine"):
        parse_slots([{"State": "Unclaimed"}], BY_GROUP, NOW)


# -- CondorBatch with a fake runner -------------------------------------------------------------

def one_machine(name: str) -> str:
    return json.dumps([s for s in slots_payload() if s["Machine"] == name])


def adapter(runner: FakeRunner, **kw: Any) -> CondorBatch:
    return CondorBatch(BY_GROUP, runner=runner, clock=lambda: NOW, **kw)


def test_adapter_commands_for_pending_and_nodes() -> None:
    runner = FakeRunner({("condor_q",): data("htcondor", "condor_q.json"),
                         ("condor_status",): data("htcondor", "condor_status.json")})
    cb = adapter(runner, schedd="ce01.example.org", pool="cm.example.org:9618")
    assert isinstance(cb, BatchSystem)
    assert len(cb.pending()) == 4
    assert len(cb.nodes()) == 7
    assert runner.calls == [
        ["condor_q", "-allusers", "-pool", "cm.example.org:9618", "-name", "ce01.example.org",
         "-constraint", "JobStatus == 1", "-json"],
        ["condor_status", "-startd", "-pool", "cm.example.org:9618", "-json"],
    ]


def test_empty_queue_prints_nothing_and_is_no_demand() -> None:
    assert adapter(FakeRunner({("condor_q",): ""})).pending() == []


def test_drain_only_machines_not_yet_draining() -> None:
    runner = FakeRunner({("condor_status",): one_machine("vc-2.example.org"), ("condor_drain",): ""})
    adapter(runner).drain("vc-2.example.org", "vocloud: idle")
    assert runner.calls[0] == ["condor_status", "-startd", "-constraint",
                               'Machine == "vc-2.example.org"', "-json"]
    assert runner.calls[1] == ["condor_drain", "-graceful", "-reason", "vocloud: idle", "vc-2.example.org"]
    runner = FakeRunner({("condor_status",): one_machine("vc-3.example.org")})
    adapter(runner).drain("vc-3.example.org", "again")  # already draining: no condor_drain
    assert [c[0] for c in runner.calls] == ["condor_status"]


def test_drain_of_unknown_machine_is_an_error() -> None:
    with pytest.raises(DriverError, match="no startd advertises machine vc-9"):
        adapter(FakeRunner({("condor_status",): ""})).drain("vc-9", "x")


def test_resume_cancels_only_a_drain() -> None:
    runner = FakeRunner({("condor_status",): one_machine("vc-4.example.org"), ("condor_drain",): ""})
    adapter(runner).resume("vc-4.example.org")
    assert runner.calls[-1] == ["condor_drain", "-cancel", "vc-4.example.org"]
    runner = FakeRunner({("condor_status",): one_machine("vc-2.example.org")})
    adapter(runner).resume("vc-2.example.org")  # not draining: nothing to cancel
    adapter(FakeRunner({("condor_status",): ""})).resume("gone")


def test_remove_turns_the_startd_off_and_tolerates_a_dead_vm() -> None:
    runner = FakeRunner({("condor_status",): one_machine("vc-4.example.org"), ("condor_off",): ""})
    adapter(runner).remove("vc-4.example.org")
    assert runner.calls[-1] == ["condor_off", "-startd", "-peaceful", "vc-4.example.org"]
    runner.answers[("condor_off",)] = failed(["condor_off"], "Can't find address for startd vc-4")
    adapter(runner).remove("vc-4.example.org")
    runner.answers[("condor_off",)] = failed(["condor_off"], "Permission denied")
    with pytest.raises(DriverError, match="Permission denied"):
        adapter(runner).remove("vc-4.example.org")
    gone = FakeRunner({("condor_status",): ""})
    adapter(gone).remove("vc-4.example.org")
    assert [c[0] for c in gone.calls] == ["condor_status"]


def test_odd_machine_names_are_refused_not_injected() -> None:
    with pytest.raises(DriverError, match="unusual machine name"):
        adapter(FakeRunner()).drain('x" || true || "', "r")


def test_garbled_output_and_missing_tools() -> None:
    with pytest.raises(DriverError, match="condor_q -allusers: output is not valid JSON"):
        adapter(FakeRunner({("condor_q",): "[{\"ClusterId\": "})).pending()
    no_tools = CondorBatch(BY_GROUP, runner=CommandRunner(env={"PATH": "/nonexistent"}))
    with pytest.raises(DriverError, match="condor_status: command not found"):
        no_tools.nodes()
