"""Grid Engine adapter on ``qstat -xml`` output: captured from a real SoGE 8.1.9 (``pending.xml``,
``hosts_*.xml``) and hand-made (``qstat_pending.xml``, ``qstat_f.xml``); see data/batch/README.md."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.batch_fakes import FakeRunner, data, failed
from vocloud.batch.base import BatchSystem, NodeState, RegistersNodes, VOMapper
from vocloud.batch.gridengine import (
    GridEngineBatch,
    classify,
    drop_host_entry,
    parse_hosts,
    parse_memory_mib,
    parse_pending,
    parse_time_s,
    set_host_entry,
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
        ["qstat", "-u", "*", "-s", "p", "-r", "-ext", "-urg", "-xml"],
        ["qstat", "-f", "-u", "*", "-xml"],
        ["qmod", "-d", "*@vc-31.example.org"],
        ["qmod", "-e", "*@vc-31.example.org"],
        ["qconf", "-dattr", "hostgroup", "hostlist", "vc-31.example.org", "@allhosts"],
        ["qconf", "-de", "vc-31.example.org"],
    ]


def test_remove_tolerates_a_host_already_gone() -> None:
    # what qconf 8.1.9 really prints (the -dattr one with exit code 0, the others with 1)
    runner = FakeRunner({
        ("qconf", "-dattr"): '"vc-9" does not exist in "hostlist" of "hostgroup"\n',
        ("qconf", "-de"): failed(["qconf"], 'denied: execution host "vc-9" does not exist'),
    })
    GridEngineBatch(BY_PROJECT, runner=runner).remove("vc-9")
    runner.answers[("qconf", "-de")] = failed(["qconf"], 'can\'t resolve hostname "vc-9"')
    GridEngineBatch(BY_PROJECT, runner=runner).remove("vc-9")  # VM and its DNS entry gone
    runner.answers[("qconf", "-de")] = failed(
        ["qconf"], 'Host object "vc-9" is still referenced in cluster queue "all.q".')
    with pytest.raises(DriverError, match="still referenced"):
        GridEngineBatch(BY_PROJECT, runner=runner).remove("vc-9")


def test_remove_does_not_hide_a_wrong_host_group() -> None:
    runner = FakeRunner({("qconf", "-dattr"): failed(["qconf"], 'denied: host group "@vms" does not exist')})
    with pytest.raises(DriverError, match="host group"):
        GridEngineBatch(BY_PROJECT, runner=runner, hostgroup="@vms").remove("vc-9")
    runner.answers[("qconf", "-dattr")] = ""
    runner.answers[("qconf", "-de")] = failed(["qconf"], 'denied: execution host "vc-10" does not exist')
    with pytest.raises(DriverError, match="vc-10"):  # another host's "does not exist" is no answer
        GridEngineBatch(BY_PROJECT, runner=runner).remove("vc-9")


# -- captured from a real Grid Engine 8.1.9 (tests/support/sge_harness.py record) ----------

PROJECTS = VOMapper("project", table={"atlas": "atlas", "cms": "cms", "lhcb": "lhcb"}, identity=False)


def test_real_pending() -> None:
    text = data("gridengine", "pending.xml")
    jobs = {j.id: j for j in parse_pending(text, PROJECTS)}
    # not: 1 Eqw (its -wd is missing), 6 held, 7 -hold_jid (hqw), 8 project alice, 9 no project;
    # 2.1 and 2.2 run, so only tasks 3-5 of array 2 wait
    assert {(j.id, j.vo, j.cores, j.memory_mib, j.walltime_s) for j in jobs.values()} == {
        ("4", "atlas", 2, 2048, 7200),  # -pe smp 2 -l h_vmem=1G,h_rt=2:00:00
        ("2.3", "lhcb", 1, 0, 0), ("2.4", "lhcb", 1, 0, 0), ("2.5", "lhcb", 1, 0, 0),
        ("5", "cms", 1, 1500, 30),  # -q vo-cms -l mem_free=1500M,h_rt=30
        ("10", "lhcb", 1, 512, 90),  # -l s_vmem=512M,s_rt=0:1:30: qstat prints seconds
    }
    stamp = text.split("<JB_submission_time>")[1].split("<")[0]
    assert jobs["4"].submit_time == datetime.fromisoformat(stamp).timestamp()
    by_queue = VOMapper("queue", table={"vo-cms": "cms", "all.q": "lhcb"}, identity=False)
    assert {j.id for j in parse_pending(text, by_queue)} == {"2.3", "2.4", "2.5", "5"}
    assert parse_pending(data("gridengine", "pending_empty.xml"), PROJECTS) == []


def test_real_qstat_drops_the_submission_time_without_urg() -> None:
    """Why ``pending`` asks for ``-urg``: the real ``-ext`` listing has no JB_submission_time."""
    with pytest.raises(DriverError, match="without -urg"):
        parse_pending(data("gridengine", "pending_ext_without_urg.xml"), PROJECTS)


@pytest.mark.parametrize(("name", "state", "running", "free", "reason"), [
    ("hosts_idle.xml", NodeState.IDLE, 0, 3, ""),
    ("hosts_busy.xml", NodeState.BUSY, 3, 0, ""),  # array tasks 2.1 + 2.2 count as two jobs
    ("hosts_draining.xml", NodeState.DRAINING, 3, 0, "disabled"),
    ("hosts_drained.xml", NodeState.DRAINED, 0, 3, "disabled"),
    ("hosts_down.xml", NodeState.DOWN, 0, 3, ""),  # execd shut down: both queues "u"
])
def test_real_hosts(name: str, state: NodeState, running: int, free: int, reason: str) -> None:
    (node,) = parse_hosts(data("gridengine", name), vo_queue_prefix="vo-")
    assert (node.state, node.cores, node.running_jobs, node.free_cores, node.reason, node.vo) == (
        state, 3, running, free, reason, "cms")  # all.q (2 slots) + vo-cms (1 slot)


# -- elastic workers: register / remove an execution host (docs/batch.md, Grid Engine workers) --


class ExecHostRunner(FakeRunner):
    """Also keeps the exec host template ``qconf -Ae`` was given (its file is gone afterwards)."""

    def __init__(self, answers: dict[tuple[str, ...], str | Exception]) -> None:
        super().__init__(answers)
        self.templates: list[str] = []

    def run(self, argv: Sequence[str]) -> str:
        if list(argv[:2]) == ["qconf", "-Ae"]:
            self.templates.append(Path(argv[2]).read_text())
        return super().run(argv)


def test_register_adds_exec_host_of_the_vo_then_joins_the_host_group(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n10.0.0.5 stale-name\n10.0.0.6 atlas-wn3 # old lease\n")
    runner = ExecHostRunner({("qconf", "-Ae"): "added", ("qconf", "-aattr"): "modified"})
    ge = GridEngineBatch(BY_PROJECT, runner=runner, hostgroup="@vms", hosts_file=hosts)
    assert isinstance(ge, RegistersNodes) and isinstance(ge, BatchSystem)
    ge.register("atlas-wn3", "10.0.0.5", "atlas")
    # the address's old name and the name's old address are both replaced
    assert hosts.read_text() == "127.0.0.1 localhost\n10.0.0.5 atlas-wn3\n"
    assert runner.calls[0][:2] == ["qconf", "-Ae"]
    assert runner.calls[1] == ["qconf", "-aattr", "hostgroup", "hostlist", "atlas-wn3", "@vms"]
    template = dict(line.split(None, 1) for line in runner.templates[0].splitlines())
    assert template["hostname"] == "atlas-wn3" and template["projects"] == "atlas"
    # again (a retried pass): "already exists" (exit 1) and the no-op -aattr (exit 0) are fine
    runner.answers[("qconf", "-Ae")] = failed(["qconf"], 'exechost "atlas-wn3" already exists')
    runner.answers[("qconf", "-aattr")] = ('No modification because "atlas-wn3" already exists in '
                                           '"hostlist" of "hostgroup"\n')
    ge.register("atlas-wn3", "10.0.0.5", "atlas")
    assert hosts.read_text() == "127.0.0.1 localhost\n10.0.0.5 atlas-wn3\n"


def test_register_restricts_to_the_vo_only_when_vos_are_projects() -> None:
    runner = ExecHostRunner({("qconf",): ""})
    GridEngineBatch(VOMapper("queue"), runner=runner, hosts_file="").register("wn1", "10.0.0.7", "cms")
    assert "projects NONE\n" in runner.templates[0]


def test_register_refuses_what_is_not_a_host_name_or_address_and_reports_errors(tmp_path: Path) -> None:
    runner = FakeRunner({("qconf",): ""})
    ge = GridEngineBatch(BY_PROJECT, runner=runner, hosts_file="")
    for node, address in (("a b", "10.0.0.1"), ("-x", "10.0.0.1"), ("wn1", "10.0.0.1\n1.2.3.4 evil")):
        with pytest.raises(DriverError, match="cannot register"):
            ge.register(node, address, "atlas")
    assert runner.calls == []
    runner.answers[("qconf", "-Ae")] = failed(["qconf"], 'can\'t resolve hostname "wn1"')
    with pytest.raises(DriverError, match="resolve"):  # no DNS entry: the site must fix it
        ge.register("wn1", "10.0.0.1", "atlas")
    blocked = GridEngineBatch(BY_PROJECT, runner=runner, hosts_file=tmp_path / "no" / "hosts")
    with pytest.raises(DriverError, match="cannot write"):
        blocked.register("wn1", "10.0.0.1", "atlas")


def test_hosts_file_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from vocloud.app.drivers import batch_from, build_registry
    from vocloud.config import load_settings

    monkeypatch.setenv("VOCLOUD_SGE_HOSTS_FILE", str(tmp_path / "h"))
    settings = load_settings(tmp_path, batch_system="gridengine")
    batch = batch_from(build_registry(settings), settings)
    assert isinstance(batch, GridEngineBatch) and batch.hosts_file == tmp_path / "h"
    monkeypatch.delenv("VOCLOUD_SGE_HOSTS_FILE")
    assert GridEngineBatch(BY_PROJECT, runner=FakeRunner()).hosts_file is None


def test_remove_drops_the_hosts_line_in_place(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n10.0.0.5 atlas-wn3\n10.0.0.6 cms-wn4\n")
    inode = hosts.stat().st_ino
    runner = FakeRunner({("qconf",): ""})
    ge = GridEngineBatch(BY_PROJECT, runner=runner, hosts_file=hosts)
    ge.remove("atlas-wn3")
    ge.remove("atlas-wn3")  # idempotent
    assert hosts.read_text() == "127.0.0.1 localhost\n10.0.0.6 cms-wn4\n"
    assert hosts.stat().st_ino == inode  # rewritten in place: a bind mount over /etc/hosts holds
    assert runner.calls[:2] == [["qconf", "-dattr", "hostgroup", "hostlist", "atlas-wn3", "@allhosts"],
                                ["qconf", "-de", "atlas-wn3"]]


def test_host_entries_keep_other_lines_and_a_missing_newline(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    set_host_entry(hosts, "10.0.0.1", "wn1")  # created
    assert hosts.read_text() == "10.0.0.1 wn1\n"
    hosts.write_text("# comment\n\n10.0.0.9 wn9 wn9.example")  # no final newline
    set_host_entry(hosts, "10.0.0.1", "wn1")
    assert hosts.read_text() == "# comment\n\n10.0.0.9 wn9 wn9.example\n10.0.0.1 wn1\n"
    drop_host_entry(hosts, "wn9.example")
    assert hosts.read_text() == "# comment\n\n10.0.0.1 wn1\n"
    drop_host_entry(tmp_path / "absent", "wn1")  # nothing to do
