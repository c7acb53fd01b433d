"""PBS Pro adapter on hand-made ``qstat -f -F json`` / ``pbsnodes -a -F json`` (data/batch/README.md)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.support.batch_fakes import FakeRunner, data, failed
from vocloud.batch.base import BatchSystem, NodeState, VOMapper
from vocloud.batch.pbs import (
    PBSBatch,
    classify,
    parse_duration_s,
    parse_jobs,
    parse_nodes,
    parse_size_mib,
    parse_timestamp,
)
from vocloud.errors import DriverError

BY_ACCOUNT = VOMapper("account")


def qstat() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(data("pbs", "qstat.json"))
    return loaded


def pbsnodes() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(data("pbs", "pbsnodes.json"))
    return loaded


def local(text: str) -> float:
    return time.mktime(time.strptime(text, "%a %b %d %H:%M:%S %Y"))


def test_queued_jobs_are_the_demand() -> None:
    jobs = {j.id: j for j in parse_jobs(qstat(), BY_ACCOUNT)}
    # not: 1003 held (user), 1004 held on a dependency, 1005 waiting for its time, 1006 running,
    # 1008 has no account
    assert set(jobs) == {"1001.pbs01", "1002.pbs01", "1007[2].pbs01", "1007[3].pbs01", "1007[4].pbs01"}
    j = jobs["1001.pbs01"]
    assert (j.vo, j.cores, j.memory_mib, j.walltime_s) == ("atlas", 4, 8192, 7200)
    assert j.submit_time == local("Tue Nov 14 22:13:20 2023")
    cms = jobs["1002.pbs01"]  # no job-wide mem: two 3gb chunks
    assert (cms.vo, cms.cores, cms.memory_mib, cms.walltime_s) == ("cms", 8, 6144, 48 * 3600)
    arr = jobs["1007[3].pbs01"]
    assert (arr.vo, arr.cores, arr.memory_mib, arr.walltime_s) == ("lhcb", 1, 2000, 600)


def test_vo_by_queue_and_group() -> None:
    by_queue = VOMapper("queue", table={"workq": "atlas", "cms": "cms"}, identity=False)
    assert {j.vo for j in parse_jobs(qstat(), by_queue)} == {"atlas", "cms"}
    by_group = VOMapper("group", table={"users": "local"}, identity=False)
    assert [j.id for j in parse_jobs(qstat(), by_group)] == ["1008.pbs01"]


def test_empty_queue_has_no_jobs_key() -> None:
    assert parse_jobs({"timestamp": 1, "pbs_version": "2022.1.4", "pbs_server": "pbs01"}, BY_ACCOUNT) == []


@pytest.mark.parametrize(("text", "mib"), [
    ("8gb", 8192), ("4015104kb", 3921), ("512mb", 512), ("1tb", 1048576), ("1048576", 1),
    ("1mw", 8), ("3GB", 3072), (2**20 + 1, 2),
])
def test_sizes(text: Any, mib: int) -> None:
    assert parse_size_mib(text) == mib


@pytest.mark.parametrize(("text", "seconds"), [("02:00:00", 7200), ("90:00", 5400), ("45", 45), (60, 60)])
def test_durations(text: Any, seconds: int) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("bad", ["8 parsecs", "gb", "-1kb"])
def test_bad_sizes(bad: str) -> None:
    with pytest.raises(DriverError, match="not a size"):
        parse_size_mib(bad)


def test_bad_durations_and_times() -> None:
    with pytest.raises(DriverError, match="not a duration"):
        parse_duration_s("1:2:3:4")
    with pytest.raises(DriverError, match="not a time"):
        parse_timestamp("yesterday")
    assert parse_timestamp("1700000000") == 1700000000


def test_nodes() -> None:
    nodes = {n.name: n for n in parse_nodes(pbsnodes(), BY_ACCOUNT)}
    wn01 = nodes["wn01"]
    assert (wn01.state, wn01.running_jobs, wn01.cores, wn01.memory_mib) == (NodeState.BUSY, 1, 2, 3921)
    assert (wn01.free_cores, wn01.idle_since) == (0, None)
    vc11 = nodes["vc-11"]
    assert (vc11.state, vc11.vo, vc11.idle_since, vc11.free_cores) == (NodeState.IDLE, "atlas", 1700000150, 4)
    assert (nodes["vc-12"].state, nodes["vc-12"].reason) == (NodeState.DRAINING, "vocloud: pool shrink")
    assert nodes["vc-13"].state is NodeState.DRAINED
    assert nodes["vc-14"].state is NodeState.DOWN
    assert nodes["vc-15"].state is NodeState.DOWN
    vc16 = nodes["vc-16"]  # "free" but running jobs (shared node): busy
    assert (vc16.state, vc16.running_jobs, vc16.vo, vc16.free_cores, vc16.free_memory_mib) == (
        NodeState.BUSY, 2, None, 1, 2048)
    by_queue = VOMapper("queue", table={"cms": "cms-vo"}, identity=False)
    assert {n.name: n.vo for n in parse_nodes(pbsnodes(), by_queue)}["vc-16"] == "cms-vo"  # its queue


@pytest.mark.parametrize(("states", "running", "expected"), [
    ({"free"}, 0, NodeState.IDLE),
    ({"job-exclusive"}, 1, NodeState.BUSY),
    ({"offline", "job-busy"}, 2, NodeState.DRAINING),
    ({"offline"}, 0, NodeState.DRAINED),
    ({"down", "offline"}, 0, NodeState.DOWN),
    ({"sleep"}, 0, NodeState.DOWN),
    ({"provisioning"}, 0, NodeState.UNKNOWN),
    ({"weird"}, 0, NodeState.UNKNOWN),
])
def test_classify(states: set[str], running: int, expected: NodeState) -> None:
    assert classify(states, running) is expected


@pytest.mark.parametrize(("payload", "match"), [
    ({"Jobs": []}, "'Jobs' is not an object"),
    ({"Jobs": {"1.s": {"queue": "q"}}}, "job 1.s has no job_state"),
    ({"Jobs": {"1.s": {"job_state": "Q", "Account_Name": "a"}}}, "has no qtime"),
    ({"Jobs": {"1.s": {"job_state": "Q", "Account_Name": "a", "qtime": 1,
                       "Resource_List": {"ncpus": "four"}}}}, "ncpus of job 1.s is not a number"),
    ({"Jobs": {"1.s": {"job_state": "Q", "Account_Name": "a", "qtime": 1,
                       "Resource_List": {"mem": "lots"}}}}, "job 1.s mem is not a size"),
])
def test_bad_qstat(payload: dict[str, Any], match: str) -> None:
    with pytest.raises(DriverError, match=match):
        parse_jobs(payload, BY_ACCOUNT)


def test_bad_pbsnodes() -> None:
    with pytest.raises(DriverError, match="node x has no state"):
        parse_nodes({"nodes": {"x": {}}}, BY_ACCOUNT)


def test_adapter_commands() -> None:
    runner = FakeRunner({("qstat",): data("pbs", "qstat.json"), ("qmgr",): "", ("pbsnodes",): "",
                         ("pbsnodes", "-a"): data("pbs", "pbsnodes.json")})
    pb = PBSBatch(BY_ACCOUNT, runner=runner)
    assert isinstance(pb, BatchSystem)
    assert len(pb.pending()) == 5
    assert len(pb.nodes()) == 7
    pb.drain("vc-11", "vocloud: idle")
    pb.resume("vc-11")
    pb.remove("vc-11")
    assert runner.calls == [
        ["qstat", "-f", "-F", "json"],
        ["pbsnodes", "-a", "-F", "json"],
        ["pbsnodes", "-o", "-C", "vocloud: idle", "vc-11"],
        ["pbsnodes", "-r", "-C", "", "vc-11"],
        ["qmgr", "-c", "delete node vc-11"],
    ]


def test_remove_of_unknown_node_is_success_other_errors_are_not() -> None:
    runner = FakeRunner({("qmgr",): failed(["qmgr"], "qmgr obj=vc-99 svr=default: Unknown node")})
    PBSBatch(BY_ACCOUNT, runner=runner).remove("vc-99")
    runner.answers[("qmgr",)] = failed(["qmgr"], "qmgr: Unauthorized Request")
    with pytest.raises(DriverError, match="Unauthorized"):
        PBSBatch(BY_ACCOUNT, runner=runner).remove("vc-99")
    with pytest.raises(DriverError, match="unusual node name"):
        PBSBatch(BY_ACCOUNT, runner=runner).remove("x; delete server")


def test_garbled_qstat() -> None:
    with pytest.raises(DriverError, match="qstat -f -F json: output is not valid JSON"):
        PBSBatch(BY_ACCOUNT, runner=FakeRunner({("qstat",): "{\"Jobs\": {"})).pending()
