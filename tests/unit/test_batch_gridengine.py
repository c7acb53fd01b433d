"""Grid Engine adapter on hand-made ``qstat -xml`` output (see data/batch/README.md)."""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.unit.test_batch_runner import FakeRunner, data, failed
from vocloud.batch.base import BatchSystem, NodeState, VOMapper
from vocloud.batch.gridengine import (
    GridEngineBatch,
    classify,
    parse_hosts,
    parse_memory_mib,
    parse_pending,
    parse_time_s,
)
from vocloud.errors import DriverError

BY_PROJECT = VOMapper("project")


def test_pending_demand() -> None:
    jobs = {j.id: j for j in parse_pending(data("gridengine", "qstat_pending.xml"), BY_PROJECT)}
    # not: 303 held, 304 held on a dependency (-hold_jid), 305 error state, 307 has no project
    assert set(jobs) == {"301", "302", "306.3", "306.4", "306.5"}
    a = jobs["301"]  # 4 slots x h_vmem 2G (per slot)
    assert (a.vo, a.cores, a.memory_mib, a.walltime_s) == ("atlas", 4, 8192, 7200)
    assert a.submit_time == datetime(2023, 11, 14, 22, 13, 20).timestamp()
    c = jobs["302"]
    assert (c.vo, c.cores, c.memory_mib, c.walltime_s) == ("cms", 1, 1500, 48 * 3600)
    arr = jobs["306.4"]  # 2000m: lower case is powers of 1000
    assert (arr.vo, arr.memory_mib, arr.walltime_s) == ("lhcb", 1908, 600)


def test_vo_by_queue_and_owner() -> None:
    by_queue = VOMapper("queue", table={"grid.q": "cms"}, identity=False)
    assert [j.id for j in parse_pending(data("gridengine", "qstat_pending.xml"), by_queue)] == ["302"]
    by_user = VOMapper("user", table={"bob": "local"}, identity=False)
    assert [j.id for j in parse_pending(data("gridengine", "qstat_pending.xml"), by_user)] == ["307"]


@pytest.mark.parametrize(("text", "mib"), [("2G", 2048), ("512M", 512), ("1g", 954), ("1048576", 1),
                                           ("1.5G", 1536)])
def test_memory(text: str, mib: int) -> None:
    assert parse_memory_mib(text) == mib


@pytest.mark.parametrize(("text", "seconds"), [("3600", 3600), ("1:00:00", 3600), ("INFINITY", 0)])
def test_times(text: str, seconds: int) -> None:
    assert parse_time_s(text) == seconds


def test_hosts() -> None:
    nodes = {n.name: n for n in parse_hosts(data("gridengine", "qstat_f.xml"), vo_queue_prefix="vo-")}
    assert (nodes["vc-31.example.org"].state, nodes["vc-31.example.org"].cores) == (NodeState.IDLE, 4)
    vc32 = nodes["vc-32.example.org"]
    assert (vc32.state, vc32.running_jobs, vc32.free_cores) == (NodeState.BUSY, 2, 1)
    assert nodes["vc-33.example.org"].state is NodeState.DRAINING
    assert nodes["vc-34.example.org"].state is NodeState.DRAINED
    assert nodes["vc-35.example.org"].state is NodeState.DOWN  # "au": execd unreachable
    vc36 = nodes["vc-36.example.org"]  # two queue instances folded; one suspended
    assert (vc36.state, vc36.cores, vc36.free_cores, vc36.vo) == (NodeState.UNKNOWN, 4, 3, "lhcb")


@pytest.mark.parametrize(("states", "used", "expected"), [
    (set(), 0, NodeState.IDLE), ({"a"}, 0, NodeState.IDLE), (set(), 2, NodeState.BUSY),
    ({"d"}, 1, NodeState.DRAINING), ({"d"}, 0, NodeState.DRAINED), ({"u", "d"}, 0, NodeState.DOWN),
    ({"E"}, 0, NodeState.DOWN), ({"s"}, 0, NodeState.UNKNOWN),
])
def test_classify(states: set[str], used: int, expected: NodeState) -> None:
    assert classify(states, used) is expected


@pytest.mark.parametrize(("text", "match"), [
    ("<job_info><job_list", "not valid XML"),
    ("<job_info><job_list><state>qw</state></job_list></job_info>", "without JB_job_number"),
    ("<job_info><job_list><JB_job_number>1</JB_job_number><state>qw</state><JB_project>a</JB_project>"
     "<slots>x</slots></job_list></job_info>", "slots of job 1"),
    ("<job_info><job_list><JB_job_number>1</JB_job_number><state>qw</state><JB_project>a</JB_project>"
     "</job_list></job_info>", "job 1 has no JB_submission_time"),
    ("<job_info><job_list><JB_job_number>1</JB_job_number><state>qw</state><JB_project>a</JB_project>"
     "<JB_submission_time>now</JB_submission_time></job_list></job_info>", "JB_submission_time of job 1"),
    ("<job_info><job_list><JB_job_number>1</JB_job_number><state>qw</state><JB_project>a</JB_project>"
     "<JB_submission_time>2023-11-14T22:13:20</JB_submission_time>"
     "<hard_request name='h_vmem'>lots</hard_request></job_list></job_info>", "h_vmem of job 1"),
])
def test_bad_pending(text: str, match: str) -> None:
    with pytest.raises(DriverError, match=match):
        parse_pending(text, BY_PROJECT)


def test_bad_hosts() -> None:
    with pytest.raises(DriverError, match="queue@host"):
        parse_hosts("<job_info><queue_info><Queue-List><name>all.q</name></Queue-List></queue_info></job_info>")


def test_adapter_commands() -> None:
    runner = FakeRunner({("qstat", "-u"): data("gridengine", "qstat_pending.xml"),
                         ("qstat", "-f"): data("gridengine", "qstat_f.xml"), ("qmod",): "", ("qconf",): ""})
    ge = GridEngineBatch(BY_PROJECT, runner=runner)
    assert isinstance(ge, BatchSystem)
    assert len(ge.pending()) == 5
    assert len(ge.nodes()) == 6
    ge.drain("vc-31.example.org", "ignored")
    ge.resume("vc-31.example.org")
    ge.remove("vc-31.example.org")
    assert runner.calls == [
        ["qstat", "-u", "*", "-s", "p", "-r", "-ext", "-xml"],
        ["qstat", "-f", "-u", "*", "-xml"],
        ["qmod", "-d", "*@vc-31.example.org"],
        ["qmod", "-e", "*@vc-31.example.org"],
        ["qconf", "-dattr", "hostgroup", "hostlist", "vc-31.example.org", "@allhosts"],
        ["qconf", "-de", "vc-31.example.org"],
    ]


def test_remove_tolerates_a_host_already_gone() -> None:
    runner = FakeRunner({
        ("qconf", "-dattr"): failed(["qconf"], 'denied: "vc-9" is not a member of "@allhosts"'),
        ("qconf", "-de"): failed(["qconf"], 'denied: "vc-9" is not an execution host'),
    })
    GridEngineBatch(BY_PROJECT, runner=runner).remove("vc-9")
    runner.answers[("qconf", "-de")] = failed(["qconf"], "denied: host vc-9 has running jobs")
    with pytest.raises(DriverError, match="has running jobs"):
        GridEngineBatch(BY_PROJECT, runner=runner).remove("vc-9")
