"""Host leases on real Slurm (issue 18): nodes are namespace hosts running slurmd and sshd.

``vocloud host lease`` takes 2 nodes for one minute; each node's job runs the lease agent, which
registers the node as a host (with the lease's one-time token, read from stdin); VMs with a
short ``WALLTIME`` land on both, VMs without one (or with a longer one) do not. ``scancel`` of one
job drains that host (its VMs shut down through ACPI ``SHUTDOWN``, never a hard stop), the host
leaves and the job ends; the other lease reaches its end and does the same, its job cancelled
by the daemon so the node goes back to Slurm. Sim VMs on the leased hosts (no qemu: what is
under test is the lease, the scheduler and the drain). SQLite only: the store side of leases
is covered on both databases by tests/integration/test_host_leases.py.
"""

from __future__ import annotations

import functools
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon
from tests.support.lease_slurm import LeaseSlurm, missing_reason
from tests.support.netns import LabUnavailable, NetnsLab
from tests.support.ports import free_port
from tests.support.procs import skip_or_fail

DRAIN_LEAD = 25.0  # the lease drains 25 s before its end (one minute after the job started)


class Site:
    def __init__(self, lab: NetnsLab, slurm: LeaseSlurm, daemon: Daemon) -> None:
        self.lab, self.slurm, self.daemon = lab, slurm, daemon


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    reason = missing_reason()
    if reason is not None:
        skip_or_fail(reason)
    lab = NetnsLab(tmp_path_factory.mktemp("leasens"))
    try:
        lab.start()
        hosts = [lab.add_host(), lab.add_host()]
    except LabUnavailable as exc:
        lab.close()
        skip_or_fail(str(exc))
    slurm = LeaseSlurm(hosts)
    daemon: Daemon | None = None
    try:
        slurm.start()
        port = free_port()
        data = tmp_path_factory.mktemp("leased") / "data"
        data.mkdir()
        daemon = Daemon(data, "", port, {
            "VOCLOUD_HOST": slurm.hub, "SLURM_CONF": str(slurm.conf),
            "VOCLOUD_HOST_LEASE_BATCH": "slurm",
            "VOCLOUD_HOST_LEASE_URL": f"http://{slurm.hub}:{port}",
            "VOCLOUD_HOST_LEASE_DRAIN_LEAD": str(DRAIN_LEAD),
        })
        daemon.start()
        yield Site(lab, slurm, daemon)
    finally:
        if daemon is not None and daemon.proc is not None:
            daemon.stop()
        slurm.stop()
        lab.close()


def _leases(d: Daemon) -> dict[int, dict[str, Any]]:
    return {r["id"]: r for r in d.api("GET", "/host-leases", params={"all": True})}


def _vm(d: Daemon, vm: int) -> dict[str, Any]:
    out: dict[str, Any] = d.api("GET", f"/vms/{vm}")
    return out


def _agent_pids(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
    pids = []
    for p in out.split():
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "vocloud.cli.lease_agent" in cmd:
            pids.append(int(p))
    return pids


def test_leased_hosts_take_vms_that_fit_and_drain_on_scancel_and_walltime(site: Site) -> None:
    d, slurm = site.daemon, site.slurm
    # bad input: a clear message, exit 2, nothing submitted
    for bad in (["--batch", "pbs", "--nodes", "1", "--walltime", "1h"],
                ["--batch", "slurm", "--nodes", "0", "--walltime", "1h"],
                ["--batch", "slurm", "--nodes", "1", "--walltime", "soon"],
                ["--batch", "slurm", "--nodes", "1", "--walltime", "1h", "--partition", "a;b"]):
        d.fails("host", "lease", *bad)
    d.api("POST", "/groups", json={"name": "atlas"})
    user = d.api("POST", "/users", json={"name": "ann", "group": "atlas"})
    assert d.refused("POST", "/host-leases", token=user["token"],
                     json={"batch": "slurm", "nodes": 1, "walltime": "1h"}).status == 403
    assert d.refused("POST", "/host-leases/1/register", token="",
                     json={"address": "10.1.1.1", "started": 0}).status == 400
    assert d.api("GET", "/host-leases", params={"all": True}) == []
    assert slurm.try_run("squeue", "-h") == ""
    r = d.ok("host", "lease", "--batch", "slurm", "--nodes", "2", "--walltime", "1m",
             "--vmm", "sim", "--cpu", "2", "--memory", "1024", "--json")
    rows = json.loads(r.out)
    assert [row["state"] for row in rows] == ["SUBMITTED", "SUBMITTED"] and all(
        row["job_id"] for row in rows), rows
    ids = [row["id"] for row in rows]
    d.wait_for("both leases to register their nodes",
               lambda: all(_leases(d)[i]["state"] == "RUNNING" for i in ids), 40)
    leases = _leases(d)
    hosts = {i: leases[i]["host"] for i in ids}
    d.wait_for("the leased hosts to be monitored", lambda: all(
        d.api("GET", f"/hosts/{hosts[i]}")["state"] == "MONITORED" for i in ids), 20)
    # each host is a namespace node: its transport is the node's own address
    addrs = {h.address for h in site.lab.hosts}
    assert {d.api("GET", f"/hosts/{hosts[i]}")["transport"].split("@")[1] for i in ids} == addrs

    # the token reached the agent on stdin: neither its argv nor its environment holds it, and
    # the job script holds no administrator token
    admin = d.token
    for i in ids:
        script = slurm.run("scontrol", "write", "batch_script", leases[i]["job_id"], "-")
        assert "VOCLOUD_LEASE_TOKEN" in script and admin not in script
        token = script.split("<<'VOCLOUD_LEASE_TOKEN'\n")[1].split("\n")[0]
        [pid] = _agent_pids(next(h.netns for h in site.lab.hosts
                                 if h.address in d.api("GET", f"/hosts/{hosts[i]}")["transport"]))
        assert token.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
        assert token.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
        assert admin.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
        # the one-time token cannot register a second host
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

    # scancel one lease's job: its node's agent reports the end, the host drains and leaves
    first, second = ids
    slurm.run("scancel", leases[first]["job_id"])
    d.wait_for("the cancelled lease to end", lambda: _leases(d)[first]["state"] == "ENDED", 40)
    _drained_cleanly(d, [v for v in fit if on[v] == hosts[first]])
    assert _leases(d)[second]["state"] == "RUNNING"
    assert hosts[first] not in {h["name"] for h in d.api("GET", "/hosts")}
    slurm.wait_for(lambda: slurm.job_state(leases[first]["job_id"]) in ("GONE", "CANCELLED",
                                                                         "COMPLETED"),
                   40, "the cancelled job to leave")





    # the other lease reaches its end: the same drain, then the daemon gives the node back
    d.wait_for("the second lease to reach its end and drain", lambda: _leases(d)[second]["state"]
               == "ENDED", 75)
    _drained_cleanly(d, [v for v in fit if on[v] == hosts[second]])
    assert not [h for h in d.api("GET", "/hosts") if h["name"] in hosts.values()]
    slurm.wait_for(lambda: slurm.job_state(leases[second]["job_id"]) in ("GONE", "CANCELLED",
                                                                          "COMPLETED"),
                   40, "the second job to leave")
    slurm.wait_for(lambda: not any(_agent_pids(h.netns) for h in site.lab.hosts), 20,
                   "the agents to exit")  # nothing of the lease is left on the nodes
    ended = _leases(d)
    assert ended[second]["lease_end"] is not None and ended[second]["ended_at"] < (
        ended[second]["lease_end"]), "the host must leave before its lease ends"
    for v in (no_end, too_long):
        assert _vm(d, v)["state"] == "PENDING"


def _is_done(d: Daemon, vm: int) -> bool:
    return bool(_vm(d, vm)["state"] == "DONE")


def _drained_cleanly(d: Daemon, vms: list[int]) -> None:
    assert len(vms) == 2
    for v in vms:
        d.wait_for(f"VM {v} to be DONE", functools.partial(_is_done, d, v), 20)
        steps = [(e["from"], e["to"]) for e in _vm(d, v)["history"]]
        assert ("RUNNING", "SHUTDOWN") in steps, steps  # an ACPI shutdown first
        assert not any(to == "SHUTDOWN_HARD" for _, to in steps), steps
