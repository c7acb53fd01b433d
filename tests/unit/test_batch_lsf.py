"""LSF adapter on hand-made ``bjobs``/``bhosts``/``lshosts`` JSON (see data/batch/README.md)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.support.batch_fakes import FakeRunner, data, failed
from vocloud.batch.base import BatchSystem, NodeState, VOMapper
from vocloud.batch.lsf import (
    HOST_FIELDS,
    JOB_FIELDS,
    LSHOST_FIELDS,
    LSFBatch,
    classify,
    parse_hosts,
    parse_jobs,
    parse_runlimit_s,
    parse_size_mib,
    parse_submit_time,
)
from vocloud.errors import DriverError

BY_PROJECT = VOMapper("project", table={"default": "local"})


def local(text: str) -> float:
    return time.mktime(time.strptime(text, "%b %d %H:%M:%S %Y"))


NOW = local("Nov 15 00:00:00 2023")


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(data("lsf", name))
    return loaded


def test_pending_demand() -> None:
    jobs = {j.id: j for j in parse_jobs(load("bjobs.json"), BY_PROJECT, NOW)}
    # not: 2003 PSUSP (held), 2004 IPEND (dependency), 2005 start time, 2006 dependency (no PENDSTATE)
    assert set(jobs) == {"2001", "2002", "2007[3]", "2007[4]", "2008"}
    a = jobs["2001"]
    assert (a.vo, a.cores, a.memory_mib, a.walltime_s) == ("atlas", 4, 8192, 7200)
    assert a.submit_time == local("Nov 14 22:13:00 2023")  # no year printed: this year's
    c = jobs["2002"]
    assert (c.vo, c.cores, c.memory_mib, c.walltime_s) == ("cms", 8, 16384, 2880 * 60)  # bare KB
    assert c.submit_time == local("Nov 14 22:14:05 2023")
    assert (jobs["2007[4]"].vo, jobs["2007[4]"].memory_mib, jobs["2007[4]"].walltime_s) == ("lhcb", 2000, 600)
    local_job = jobs["2008"]  # NREQ_SLOT "-": SLOTS; runlimit hour:minute
    assert (local_job.vo, local_job.cores, local_job.walltime_s) == ("local", 2, 5400)


def test_vo_by_user_group_skips_blank_groups() -> None:
    jobs = parse_jobs(load("bjobs.json"), VOMapper("group", identity=True), NOW)
    assert {j.vo for j in jobs} == {"atlas", "cms", "lhcb"}  # bob's USER_GROUP is "-"


def test_no_pending_jobs_is_an_error_record() -> None:
    payload = {"COMMAND": "bjobs", "JOBS": 0, "ERROR": "No pending job found"}
    assert parse_jobs(payload, BY_PROJECT, NOW) == []


def test_submit_time_without_year_is_never_in_the_future() -> None:
    jan = local("Jan 02 10:00:00 2024")
    assert parse_submit_time("Dec 31 23:00", jan) == local("Dec 31 23:00:00 2023")
    assert parse_submit_time("Jan 02 09:00 L", jan) == local("Jan 02 09:00:00 2024")


@pytest.mark.parametrize(("text", "unit", "mib"), [
    ("8 G", "K", 8192), ("4096 M", "K", 4096), ("2097152", "K", 2048), ("2048", "M", 2048),
    ("15.6G", "M", 15975), ("1.5 GB", "K", 1536),
])
def test_sizes(text: str, unit: str, mib: int) -> None:
    assert parse_size_mib(text, unit) == mib


@pytest.mark.parametrize(("text", "seconds"), [("120.0/host", 7200), ("2880.0 min", 172800), ("10", 600),
                                               ("1:30", 5400)])
def test_run_limits(text: str, seconds: int) -> None:
    assert parse_runlimit_s(text) == seconds


def test_bad_values() -> None:
    with pytest.raises(DriverError, match="not a size"):
        parse_size_mib("lots")
    with pytest.raises(DriverError, match="not a run limit"):
        parse_runlimit_s("forever")
    with pytest.raises(DriverError, match="not a time"):
        parse_submit_time("yesterday", NOW)


def test_hosts() -> None:
    nodes = {n.name: n for n in parse_hosts(load("bhosts.json"), load("lshosts.json"))}
    assert nodes["lsfmaster"].state is NodeState.DRAINED and nodes["lsfmaster"].cores == 4
    vc21 = nodes["vc-21"]
    assert (vc21.state, vc21.cores, vc21.memory_mib, vc21.vo, vc21.free_cores) == (
        NodeState.IDLE, 8, 15975, "atlas", 8)
    vc22 = nodes["vc-22"]
    assert (vc22.state, vc22.running_jobs, vc22.free_cores) == (NodeState.BUSY, 6, 2)
    vc23 = nodes["vc-23"]
    assert (vc23.state, vc23.memory_mib, vc23.vo) == (NodeState.BUSY, 16000, "cms")
    assert (nodes["vc-24"].state, nodes["vc-24"].reason) == (NodeState.DRAINING, "vocloud: pool shrink")
    assert nodes["vc-25"].state is NodeState.DRAINED
    assert nodes["vc-26"].state is NodeState.DOWN
    assert nodes["vc-27"].state is NodeState.UNKNOWN  # outside its dispatch window


@pytest.mark.parametrize(("status", "njobs", "expected"), [
    ("ok", 0, NodeState.IDLE), ("ok", 1, NodeState.BUSY), ("closed_Full", 8, NodeState.BUSY),
    ("closed_Adm", 1, NodeState.DRAINING), ("closed_Adm", 0, NodeState.DRAINED),
    ("unreach", 0, NodeState.DOWN), ("closed_LIM", 2, NodeState.DOWN), ("closed_Lock", 0, NodeState.UNKNOWN),
])
def test_classify(status: str, njobs: int, expected: NodeState) -> None:
    assert classify(status, njobs) is expected


@pytest.mark.parametrize(("payload", "match"), [
    ({"COMMAND": "bjobs"}, "no RECORDS"),
    ({"RECORDS": [{"JOBID": "1"}]}, "record without JOBID/STAT"),
    ({"RECORDS": [{"JOBID": "1", "STAT": "PEND", "PROJ_NAME": "a", "NREQ_SLOT": "x"}]}, "slots of job 1"),
    ({"RECORDS": [{"JOBID": "1", "STAT": "PEND", "PROJ_NAME": "a"}]}, "job 1 has no SUBMIT_TIME"),
])
def test_bad_bjobs(payload: dict[str, Any], match: str) -> None:
    with pytest.raises(DriverError, match=match):
        parse_jobs(payload, BY_PROJECT, NOW)


def test_bad_bhosts() -> None:
    with pytest.raises(DriverError, match="record without HOST_NAME/STATUS"):
        parse_hosts({"RECORDS": [{"HOST_NAME": "x"}]}, {"RECORDS": []})


def runner() -> FakeRunner:
    return FakeRunner({("bjobs",): data("lsf", "bjobs.json"), ("bhosts",): data("lsf", "bhosts.json"),
                       ("lshosts",): data("lsf", "lshosts.json"), ("badmin",): "", ("lsrmhost",): ""})


def test_adapter_commands() -> None:
    fake = runner()
    lsf = LSFBatch(BY_PROJECT, runner=fake, clock=lambda: NOW)
    assert isinstance(lsf, BatchSystem)
    assert len(lsf.pending()) == 5
    assert len(lsf.nodes()) == 8
    lsf.drain("vc-21", "vocloud: idle")
    lsf.resume("vc-21")
    lsf.remove("vc-21")
    lsf.remove("vc-99")  # unknown to LSF: nothing to do
    assert fake.calls == [
        ["bjobs", "-u", "all", "-p", "-o", JOB_FIELDS, "-json"],
        ["lshosts", "-o", LSHOST_FIELDS, "-json"],
        ["bhosts", "-o", HOST_FIELDS, "-json"],
        ["badmin", "hclose", "-C", "vocloud: idle", "vc-21"],
        ["badmin", "hopen", "vc-21"],
        ["bhosts", "-o", HOST_FIELDS, "-json"],
        ["lsrmhost", "vc-21"],
        ["bhosts", "-o", HOST_FIELDS, "-json"],
    ]


def test_repeated_close_and_open_are_success_other_failures_are_not() -> None:
    fake = runner()
    fake.answers[("badmin",)] = failed(["badmin"], "Host <vc-25> is already closed")
    LSFBatch(BY_PROJECT, runner=fake).drain("vc-25", "x")
    fake.answers[("badmin",)] = failed(["badmin"], "vc-99: Host name is not used by the batch system")
    with pytest.raises(DriverError, match="not used by the batch system"):
        LSFBatch(BY_PROJECT, runner=fake).resume("vc-99")


def test_garbled_bjobs() -> None:
    fake = runner()
    fake.answers[("bjobs",)] = "{\"COMMAND\": \"bjobs\", \"RECORDS\": [ {"
    with pytest.raises(DriverError, match="bjobs -json: output is not valid JSON"):
        LSFBatch(BY_PROJECT, runner=fake).pending()
