"""Host leases on real Grid Engine (issue 18): execution hosts are namespace hosts running
``sge_execd`` and sshd (tests/support/lease_sge.py).

The twin of test_host_leases_slurm.py, through REST this time: ``POST /host-leases`` with
``batch=gridengine`` takes 2 nodes of queue ``lease`` for two minutes (``qsub -notify -l
h_rt=120,s_rt=60``); each job runs the lease agent, which registers its node as a host; VMs with a
short ``WALLTIME`` land on both, VMs without one (or with a longer one) do not. ``qdel`` of one
job: Grid Engine sends the agent SIGUSR2 (``-notify``) the queue's notify time before its
SIGKILL, the agent reports the end, the host drains (its VMs shut down through ACPI
``SHUTDOWN``, never a hard stop) and leaves, the job ends. The other lease reaches its soft
walltime (``s_rt``): SIGUSR1, the same drain, well before the daemon's own lease-end drain would
start (the drain lead is 25 s of a 120 s lease), and the job ends by itself. Sim VMs on the
leased hosts; SQLite only (the store side is covered on both databases by test_host_leases.py).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_host_leases_slurm import _agent_pids
from tests.support.daemon import Daemon
from tests.support.lease_sge import NOTIFY_S, QUEUE, LeaseSge, missing_reason
from tests.support.netns import LabUnavailable, NetnsLab
from tests.support.ports import free_port
from tests.support.procs import skip_or_fail
from vocloud.batch.lease_jobs import NOTIFY_S as ADAPTER_NOTIFY_S

pytestmark = pytest.mark.slow

DRAIN_LEAD = 25.0  # the daemon's own drain would start 95 s into the 120 s lease
WALLTIME = 120  # h_rt; s_rt (SIGUSR1) is 60 s before it


class Site:
    def __init__(self, lab: NetnsLab, sge: LeaseSge, daemon: Daemon) -> None:
        self.lab, self.sge, self.daemon = lab, sge, daemon


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    reason = missing_reason()
    if reason is not None:
        skip_or_fail(reason)
    lab = NetnsLab(tmp_path_factory.mktemp("geleasens"))
    try:
        lab.start()
        hosts = [lab.add_host(), lab.add_host()]
    except LabUnavailable as exc:
        lab.close()
        skip_or_fail(str(exc))
    sge = LeaseSge(hosts, tmp_path_factory.mktemp("geleasenames") / "hosts")
    daemon: Daemon | None = None
    try:
        sge.start()
        port = free_port()
        data = tmp_path_factory.mktemp("geleased") / "data"
        data.mkdir()
        daemon = Daemon(data, "", port, {
            **sge.client_env, "VOCLOUD_HOST": sge.hub,
            "VOCLOUD_HOST_LEASE_BATCH": "gridengine",
            "VOCLOUD_HOST_LEASE_URL": f"http://{sge.hub}:{port}",
            "VOCLOUD_HOST_LEASE_DRAIN_LEAD": str(DRAIN_LEAD),
        }, wrap=sge.wrap_daemon)
        daemon.start()
        yield Site(lab, sge, daemon)
    finally:
        if daemon is not None and daemon.proc is not None:
            daemon.stop()
        sge.stop()
        lab.close()


def _leases(d: Daemon) -> dict[int, dict[str, Any]]:
    return {r["id"]: r for r in d.api("GET", "/host-leases", params={"all": True})}


def _vm(d: Daemon, vm: int) -> dict[str, Any]:
    out: dict[str, Any] = d.api("GET", f"/vms/{vm}")
    return out


def test_leased_sge_hosts_take_vms_that_fit_and_drain_on_qdel_and_soft_walltime(site: Site) -> None:
    d, sge = site.daemon, site.sge
    assert ADAPTER_NOTIFY_S == NOTIFY_S  # s_rt is the queue's notify time before h_rt
    lease = {"batch": "gridengine", "nodes": 2, "walltime": f"{WALLTIME}s", "partition": QUEUE,
             "vmm": "sim", "cpu": 2, "memory": 1024}
    # bad input: 400 with a message, nothing submitted
    for bad in ({"batch": "pbs"}, {"nodes": 0}, {"nodes": 65}, {"walltime": "soon"},
                {"walltime": "30s"}, {"partition": "a;b"}, {"partition": "-l h_rt=1"},
                {"nodes": "2; qdel -u '*'"}):
        err = d.refused("POST", "/host-leases", json={**lease, **bad})
        assert err.status in (400, 422), (bad, err)
    d.fails("host", "lease", "--batch", "gridengine", "--nodes", "1", "--walltime", "1h",
            "--partition", "a b")
    d.api("POST", "/groups", json={"name": "atlas"})
    user = d.api("POST", "/users", json={"name": "ann", "group": "atlas"})
    assert d.refused("POST", "/host-leases", token=user["token"], json=lease).status == 403
    assert d.api("GET", "/host-leases", params={"all": True}) == []
    assert sge.run("qstat", "-u", "*") == ""

    rows = d.api("POST", "/host-leases", json=lease)
    assert [row["state"] for row in rows] == ["SUBMITTED", "SUBMITTED"] and all(
        row["job_id"] and row["job_id"].isdigit() for row in rows), rows
    ids = [row["id"] for row in rows]
    d.wait_for("both leases to register their nodes",
               lambda: all(_leases(d)[i]["state"] == "RUNNING" for i in ids), 40)
    leases = _leases(d)
    jobs = {i: leases[i]["job_id"] for i in ids}
    hosts = {i: leases[i]["host"] for i in ids}
    # one job per execution host, each named for its lease
    assert sorted(sge.job_host(jobs[i]) for i in ids) == sorted(sge.node(h) for h in sge.hosts)
    for i in ids:
        assert f"vocloud-lease-{i}" in sge.run("qstat", "-j", jobs[i])
    d.wait_for("the leased hosts to be monitored", lambda: all(
        d.api("GET", f"/hosts/{hosts[i]}")["state"] == "MONITORED" for i in ids), 20)
    # each host is a namespace node: its transport is the node's own address
    addrs = {h.address for h in site.lab.hosts}
    transports = {i: d.api("GET", f"/hosts/{hosts[i]}")["transport"] for i in ids}
    assert {t.split("@")[1] for t in transports.values()} == addrs
    netns = {i: next(h.netns for h in site.lab.hosts if h.address in transports[i]) for i in ids}

    # the token reached the agent on stdin: the spooled job script holds it and no
    # administrator token; the agent's argv and environment hold neither
    admin = d.token
    for i in ids:
        script = (sge.spool / "qmaster" / "job_scripts" / jobs[i]).read_text()
        assert "VOCLOUD_LEASE_TOKEN" in script and admin not in script
        token = script.split("<<'VOCLOUD_LEASE_TOKEN'\n")[1].split("\n")[0]
        [pid] = _agent_pids(netns[i])
        for f in ("cmdline", "environ"):
            seen = Path(f"/proc/{pid}/{f}").read_bytes()
            assert token.encode() not in seen and admin.encode() not in seen, f
        err = d.refused("POST", f"/host-leases/{i}/register", token="",
                        json={"token": token, "address": "10.9.9.9", "started": 0})
        assert err.status == 409, err

    fit = [d.api("POST", "/vms", json={"template": "CPU=1\nMEMORY=128\nWALLTIME=20\n"})["ids"][0]
           for _ in range(4)]
    no_end = d.api("POST", "/vms", json={"template": "CPU=1\nMEMORY=128\n"})["ids"][0]
    too_long = d.api("POST", "/vms", json={"template": "CPU=1\nMEMORY=128\nWALLTIME=1h\n"})["ids"][0]
    d.wait_for("the fitting VMs to run", lambda: all(
        _vm(d, v)["state"] == "RUNNING" for v in fit), 30)
    on = {v: _vm(d, v)["host"] for v in fit}
    assert sorted(on.values()) == sorted([hosts[ids[0]]] * 2 + [hosts[ids[1]]] * 2), on
    for v in (no_end, too_long):
        vm = _vm(d, v)
        assert vm["state"] == "PENDING" and "LEASE_END" in vm["sched_message"], vm

    # qdel one lease's job: SIGUSR2 (-notify), the agent reports the end, the host drains, leaves
    first, second = ids
    sge.run("qdel", jobs[first])
    d.wait_for("the deleted lease to end", lambda: _leases(d)[first]["state"] == "ENDED", 40)
    _drained_cleanly(d, [v for v in fit if on[v] == hosts[first]])
    assert _leases(d)[second]["state"] == "RUNNING"
    assert hosts[first] not in {h["name"] for h in d.api("GET", "/hosts")}
    # the agent heard SIGUSR2 and leaves as soon as its host did, well within the notify time
    # before the SIGKILL (without the signal it would sit there until that SIGKILL)
    sge.wait_for(lambda: sge.job_state(jobs[first]) == "GONE", NOTIFY_S - 20,
                 "the deleted job to leave")
    assert not _agent_pids(netns[first])

    # the other lease reaches its soft walltime: SIGUSR1, the same drain, the job ends by itself
    d.wait_for("the second lease to reach s_rt and drain", lambda: _leases(d)[second]["state"]
               == "ENDED", WALLTIME - NOTIFY_S + 20)
    ended = _leases(d)[second]
    assert ended["ending_at"] is not None and ended["ending_at"] < (
        ended["lease_end"] - DRAIN_LEAD), ("the drain must come from Grid Engine's SIGUSR1, "
                                           f"not the daemon's lease end: {ended}")
    _drained_cleanly(d, [v for v in fit if on[v] == hosts[second]])
    assert not [h for h in d.api("GET", "/hosts") if h["name"] in hosts.values()]
    sge.wait_for(lambda: sge.job_state(jobs[second]) == "GONE", 30, "the second job to leave")
    sge.wait_for(lambda: not any(_agent_pids(h.netns) for h in site.lab.hosts), 20,
                 "the agents to exit")  # nothing of the lease is left on the nodes
    assert ended["ended_at"] < ended["lease_end"], "the host must leave before its lease ends"
    for v in (no_end, too_long):
        assert _vm(d, v)["state"] == "PENDING"
    # the adapter itself on this cell: finished jobs are GONE, and qdel of one is no error
    probe = ("import sys; from vocloud.batch.lease_jobs import GridEngineLeaseJobs as G; "
             "g = G(); [g.cancel(j) for j in sys.argv[1:]]; "
             "print(sorted(v.name for v in g.states(sys.argv[1:]).values()))")
    assert sge.run(sys.executable, "-c", probe, *jobs.values()).strip() == "['GONE', 'GONE']"


def _is_done(d: Daemon, vm: int) -> bool:
    return bool(_vm(d, vm)["state"] == "DONE")


def _drained_cleanly(d: Daemon, vms: list[int]) -> None:
    assert len(vms) == 2
    for v in vms:
        d.wait_for(f"VM {v} to be DONE", functools.partial(_is_done, d, v), 20)
        steps = [(e["from"], e["to"]) for e in _vm(d, v)["history"]]
        assert ("RUNNING", "SHUTDOWN") in steps, steps  # an ACPI shutdown first
        assert not any(to == "SHUTDOWN_HARD" for _, to in steps), steps
