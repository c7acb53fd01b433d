"""Slurm parsers on outputs recorded from a real Slurm 22.05, and SlurmBatch with a fake runner.

The ``*.json`` files in data/batch/slurm were printed by Debian 12's Slurm 22.05.8 under the
integration harness (``python -m tests.support.slurm_harness record DIR``): see its docstring
for the scenario. The v0.0.39-style payloads below are built by hand from Slurm's OpenAPI schema.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.batch_fakes import FakeRunner, data, failed
from vocloud.batch.base import BatchSystem, NodeState, VOMapper
from vocloud.batch.slurm import (
    SlurmBatch,
    classify,
    expand_hostlist,
    parse_nodes,
    parse_pending,
    parse_running,
)
from vocloud.errors import DriverError

ACCOUNTS = VOMapper("account", table={"atlas": "atlas", "cms": "cms", "lhcb": "lhcb"}, identity=False)
SUBMIT = 1795481296.0  # when the recorded pending jobs were submitted


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(data("slurm", name))
    return loaded


def test_pending_from_recorded_queue() -> None:
    jobs = parse_pending(load("squeue_busy.json"), ACCOUNTS)
    got = {(j.id, j.vo, j.cores, j.memory_mib, j.walltime_s) for j in jobs}
    assert got == {
        ("3", "atlas", 2, 500, 1800),  # -n1 -c2 --mem=500 -t 30
        ("4", "cms", 2, 600, 3600),  # -n2 --mem-per-cpu=300: per-CPU memory becomes a total
        ("5", "cms", 1, 100, 300),  # -p grid
        ("6_0", "lhcb", 1, 50, 120),  # array 0-4%2: throttled to two at a time
        ("6_1", "lhcb", 1, 50, 120),
    }  # not: running 1-2, held 7, dependency 8, begin time 9, unmapped account 10 (alice)
    assert {j.submit_time for j in jobs} == {SUBMIT}


def test_pending_identity_mapping_keeps_every_account() -> None:
    jobs = parse_pending(load("squeue_busy.json"), VOMapper("account"))
    assert {j.vo for j in jobs} == {"atlas", "cms", "lhcb", "alice"}


def test_pending_by_partition_and_partition_filter() -> None:
    by_part = VOMapper("partition", table={"grid": "cms-grid"}, identity=False)
    assert [(j.id, j.vo) for j in parse_pending(load("squeue_busy.json"), by_part)] == [("5", "cms-grid")]
    assert [j.id for j in parse_pending(load("squeue_busy.json"), ACCOUNTS, partition="grid")] == ["5"]


def test_custom_demand_reasons() -> None:
    jobs = parse_pending(load("squeue_busy.json"), ACCOUNTS, reasons={"Resources"})
    assert sorted(j.id for j in jobs) == ["3", "5"]


def test_finished_jobs_are_no_demand_and_occupy_nothing() -> None:
    assert parse_pending(load("squeue_cancelled.json"), ACCOUNTS) == []
    assert parse_running(load("squeue_cancelled.json")) == {}


def test_running_jobs_per_node() -> None:
    assert parse_running(load("squeue_busy.json")) == {"n1": 1, "n2": 1}


def test_nodes_from_recorded_sinfo() -> None:
    nodes = {n.name: n for n in parse_nodes(load("sinfo_busy.json"), parse_running(load("squeue_busy.json")),
                                            ACCOUNTS)}
    assert set(nodes) == {"c1", "n1", "n2"}  # c2 is powered down: 22.05 hides it
    n1, n2, c1 = nodes["n1"], nodes["n2"], nodes["c1"]
    assert (n1.state, n1.running_jobs, n1.cores, n1.memory_mib) == (NodeState.BUSY, 1, 2, 1000)
    assert (n1.free_cores, n1.free_memory_mib, n1.idle_since) == (0, 0, None)
    assert (n2.state, n2.reason) == (NodeState.DRAINING, "vocloud: pool shrink")
    assert (n2.free_cores, n2.free_memory_mib) == (1, 600)
    assert (c1.state, c1.vo, c1.running_jobs) == (NodeState.IDLE, "lhcb", 0)  # vo_lhcb feature
    assert c1.idle_since is not None and c1.idle_since > 1.7e9


def test_nodes_after_the_jobs_are_gone() -> None:
    nodes = {n.name: n for n in parse_nodes(load("sinfo_idle.json"), {}, ACCOUNTS)}
    assert nodes["n1"].state is NodeState.IDLE
    assert nodes["n2"].state is NodeState.DRAINED  # drained and empty: safe to shut down
    assert nodes["c1"].state is NodeState.DOWN  # power down requested
    assert nodes["n2"].idle_since is not None


def test_partition_filter_and_partition_vo_for_nodes() -> None:
    by_part = VOMapper("partition", table={"cloud": "lhcb-cloud", "grid": "cms"}, identity=False)
    nodes = parse_nodes(load("sinfo_busy.json"), {}, by_part, partition="grid", vo_feature_prefix="")
    assert [(n.name, n.vo) for n in nodes] == [("n1", "cms"), ("n2", "cms")]


@pytest.mark.parametrize(("base", "flags", "busy", "expected"), [
    ("IDLE", set(), False, NodeState.IDLE),
    ("IDLE", {"NOT_RESPONDING"}, False, NodeState.IDLE),  # set briefly after every RESUME
    ("MIXED", set(), True, NodeState.BUSY),
    ("ALLOCATED", {"COMPLETING"}, True, NodeState.BUSY),
    ("IDLE", {"COMPLETING"}, True, NodeState.BUSY),
    ("MIXED", {"DRAIN"}, True, NodeState.DRAINING),
    ("IDLE", {"DRAIN"}, False, NodeState.DRAINED),
    ("DOWN", {"DRAIN"}, False, NodeState.DOWN),
    ("DOWN", {"NOT_RESPONDING"}, False, NodeState.DOWN),
    ("IDLE", {"CLOUD", "POWERED_DOWN"}, False, NodeState.DOWN),
    ("MIXED", {"CLOUD", "NOT_RESPONDING", "POWERING_UP"}, False, NodeState.UNKNOWN),
    ("FUTURE", set(), False, NodeState.UNKNOWN),
    ("WEIRD", set(), False, NodeState.UNKNOWN),
])
def test_classify(base: str, flags: set[str], busy: bool, expected: NodeState) -> None:
    assert classify(base, flags, busy) is expected


@pytest.mark.parametrize(("expr", "names"), [
    ("", []),
    ("n1", ["n1"]),
    ("n[1-3]", ["n1", "n2", "n3"]),
    ("n[01-03,7],gpu1", ["n01", "n02", "n03", "n7", "gpu1"]),
    ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
    ("vc-[9-10]-x", ["vc-9-x", "vc-10-x"]),
])
def test_expand_hostlist(expr: str, names: list[str]) -> None:
    assert expand_hostlist(expr) == names


@pytest.mark.parametrize("expr", ["n[1-", "n[a-b]", "n]1["])
def test_bad_hostlist(expr: str) -> None:
    with pytest.raises(DriverError, match="hostlist"):
        expand_hostlist(expr)


# -- newer Slurm (OpenAPI v0.0.39+): numbers as {"set","number"}, states as lists -------------

def _n(v: int) -> dict[str, Any]:
    return {"set": True, "infinite": False, "number": v}


NEW_QUEUE = {
    "jobs": [
        {"job_id": 41, "account": "atlas", "partition": "batch", "qos": "normal", "job_state": ["PENDING"],
         "state_reason": "Resources", "cpus": _n(8), "tasks": _n(4), "cpus_per_task": _n(2),
         "node_count": _n(2), "memory_per_node": _n(4000), "memory_per_cpu": {"set": False, "number": 0},
         "time_limit": _n(90), "submit_time": _n(1700000000), "array_job_id": _n(0),
         "array_task_id": {"set": False, "number": 0}, "array_task_string": ""},
        {"job_id": 42, "account": "cms", "partition": "batch", "job_state": ["PENDING"],
         "state_reason": "Priority", "cpus": {"set": False, "number": 0}, "tasks": _n(3),
         "cpus_per_task": _n(2), "memory_per_node": {"set": False, "number": 0},
         "memory_per_cpu": _n(100), "time_limit": {"set": True, "infinite": True, "number": 0},
         "submit_time": _n(1700000100)},
        {"job_id": 43, "account": "cms", "partition": "batch", "job_state": ["RUNNING"],
         "state_reason": "None", "nodes": "vc-[7-8]", "submit_time": _n(1700000000)},
    ],
    "errors": [], "warnings": [],
}


def test_pending_in_the_newer_json_shape() -> None:
    jobs = {j.id: j for j in parse_pending(NEW_QUEUE, ACCOUNTS)}
    assert (jobs["41"].cores, jobs["41"].memory_mib, jobs["41"].walltime_s) == (8, 8000, 5400)
    assert (jobs["42"].cores, jobs["42"].memory_mib, jobs["42"].walltime_s) == (6, 600, 0)
    assert jobs["42"].submit_time == 1700000100
    assert parse_running(NEW_QUEUE) == {"vc-7": 1, "vc-8": 1}


def test_nodes_in_the_newer_json_shape() -> None:
    payload = {"nodes": [
        {"name": "vc-7", "state": ["MIXED", "DRAIN"], "cpus": 8, "real_memory": 16000,
         "alloc_cpus": 4, "alloc_memory": 8000, "last_busy": _n(1700000000), "features": ["vo_atlas"],
         "partitions": ["batch"], "reason": "shrink"},
        {"name": "vc-9", "state": ["IDLE", "CLOUD", "POWERED_DOWN"], "cpus": 8, "real_memory": 16000,
         "partitions": ["batch"]},
    ]}
    nodes = {n.name: n for n in parse_nodes(payload, {"vc-7": 1}, ACCOUNTS)}
    vc7 = nodes["vc-7"]
    assert (vc7.state, vc7.vo, vc7.free_cores, vc7.free_memory_mib) == (NodeState.DRAINING, "atlas", 4, 8000)
    assert nodes["vc-9"].state is NodeState.DOWN


# -- bad input: a clear DriverError, never a KeyError --------------------------------------------

@pytest.mark.parametrize(("payload", "match"), [
    ({"meta": {}}, "no 'jobs' list"),
    ({"jobs": "x"}, "no 'jobs' list"),
    ({"jobs": [1]}, "non-object"),
    ({"jobs": [{"job_id": 1}]}, "has no 'job_state'"),
    ({"jobs": [{"job_id": 1, "job_state": "PENDING", "state_reason": "None", "account": "atlas"}]},
     "has no 'submit_time'"),
    ({"jobs": [{"job_id": 1, "job_state": "PENDING", "state_reason": "None", "account": "atlas",
                "submit_time": 1, "cpus": "many"}]}, "cpus is not a number"),
    ({"jobs": [], "errors": [{"error": "Unable to contact slurm controller"}]}, "Unable to contact"),
])
def test_bad_queue_payloads(payload: dict[str, Any], match: str) -> None:
    with pytest.raises(DriverError, match=match):
        parse_pending(payload, ACCOUNTS)


def test_bad_node_payload() -> None:
    with pytest.raises(DriverError, match="has no 'state'"):
        parse_nodes({"nodes": [{"name": "n1"}]}, {}, ACCOUNTS)


# -- SlurmBatch with a fake runner: real adapter code, canned command output ----------------------

def fake() -> FakeRunner:
    answers: dict[tuple[str, ...], str | Exception] = {
        ("squeue", "--all", "--json"): data("slurm", "squeue_busy.json"),
        ("sinfo", "--all", "--json"): data("slurm", "sinfo_busy.json"),
        ("scontrol", "update"): "",
    }
    return FakeRunner(answers)


def test_adapter_is_a_batch_system() -> None:
    assert isinstance(SlurmBatch(ACCOUNTS, runner=fake()), BatchSystem)


def test_adapter_pending_and_nodes() -> None:
    runner = fake()
    sb = SlurmBatch(ACCOUNTS, runner=runner)
    assert len(sb.pending()) == 5
    assert {n.name: n.state for n in sb.nodes()}["n2"] is NodeState.DRAINING
    assert runner.calls == [["squeue", "--all", "--json"], ["sinfo", "--all", "--json"],
                            ["squeue", "--all", "--json"]]


def test_adapter_falls_back_to_scontrol_for_grouped_sinfo() -> None:
    runner = fake()
    runner.answers[("sinfo", "--all", "--json")] = json.dumps({"sinfo": [], "errors": []})
    runner.answers[("scontrol", "show", "nodes", "--json")] = json.dumps(
        {"nodes": [{"name": "vc-1", "state": ["IDLE"], "cpus": 4, "real_memory": 8000}]})
    nodes = SlurmBatch(ACCOUNTS, runner=runner).nodes()
    assert [(n.name, n.state) for n in nodes] == [("vc-1", NodeState.IDLE)]


def test_drain_and_resume_commands() -> None:
    runner = fake()
    sb = SlurmBatch(ACCOUNTS, runner=runner)
    sb.drain("vc-3", "vocloud: idle 600 s")
    sb.drain("vc-3", "")
    sb.resume("vc-3")
    assert runner.calls == [
        ["scontrol", "update", "NodeName=vc-3", "State=DRAIN", "Reason=vocloud: idle 600 s"],
        ["scontrol", "update", "NodeName=vc-3", "State=DRAIN", "Reason=vocloud: drain"],
        ["scontrol", "update", "NodeName=vc-3", "State=RESUME"],
    ]


def test_resume_of_a_node_in_service_is_success_but_other_failures_are_not() -> None:
    argv = ["scontrol", "update", "NodeName=n1", "State=RESUME"]
    runner = fake()
    runner.answers[("scontrol", "update")] = failed(argv, "slurm_update error: Invalid node state specified")
    SlurmBatch(ACCOUNTS, runner=runner).resume("n1")
    runner.answers[("scontrol", "update")] = failed(argv, "slurm_update error: Invalid node name specified")
    with pytest.raises(DriverError, match="Invalid node name"):
        SlurmBatch(ACCOUNTS, runner=runner).resume("n1")


def test_remove_marks_static_nodes_down_and_powers_cloud_nodes_down() -> None:
    runner = fake()
    sb = SlurmBatch(ACCOUNTS, runner=runner)
    sb.remove("n1")
    sb.remove("c1")
    sb.remove("c2")  # hidden (powered down) or gone: nothing to do
    updates = [c for c in runner.calls if c[0] == "scontrol"]
    assert updates == [
        ["scontrol", "update", "NodeName=n1", "State=DOWN", "Reason=vocloud: node removed"],
        ["scontrol", "update", "NodeName=c1", "State=POWER_DOWN", "Reason=vocloud: node removed"],
    ]


def test_remove_is_idempotent_on_down_and_powering_down_nodes() -> None:
    runner = fake()
    runner.answers[("sinfo", "--all", "--json")] = data("slurm", "sinfo_idle.json")
    sb = SlurmBatch(ACCOUNTS, runner=runner)
    sb.remove("c1")  # POWER_DOWN already requested
    assert not [c for c in runner.calls if c[0] == "scontrol"]
    down = json.dumps({"nodes": [{"name": "n9", "state": "down", "state_flags": []}]})
    runner.answers[("sinfo", "--all", "--json")] = down
    sb.remove("n9")
    assert not [c for c in runner.calls if c[0] == "scontrol"]


def test_remove_deletes_dynamic_nodes() -> None:
    runner = fake()
    runner.answers[("sinfo", "--all", "--json")] = json.dumps(
        {"nodes": [{"name": "dyn1", "state": "idle", "state_flags": ["DYNAMIC_NORM"]}]})
    runner.answers[("scontrol", "delete")] = ""
    SlurmBatch(ACCOUNTS, runner=runner).remove("dyn1")
    assert runner.calls[-1] == ["scontrol", "delete", "NodeName=dyn1"]


def test_garbled_and_failing_commands_are_driver_errors() -> None:
    runner = fake()
    runner.answers[("squeue", "--all", "--json")] = '{"jobs": [ {"job_id": 1,'
    with pytest.raises(DriverError, match="squeue --all --json: output is not valid JSON"):
        SlurmBatch(ACCOUNTS, runner=runner).pending()
    runner.answers[("squeue", "--all", "--json")] = failed(
        ["squeue"], "slurm_load_jobs error: Unable to contact slurm controller (connect failure)")
    with pytest.raises(DriverError, match="Unable to contact slurm controller"):
        SlurmBatch(ACCOUNTS, runner=runner).pending()
