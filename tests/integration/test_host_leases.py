"""Host leases in the store (both databases): requests, the agent's token, the drain loop.

The batch system is a recording fake here (the real Slurm path is test_host_leases_slurm.py);
what is under test is the service's rules (administrators only, every bad input refused with
nothing changed, the one-time token) and the loop's decisions applied to real rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.support.helpers import admin, user_in
from vocloud.app.host_leases import parse_auto
from vocloud.batch.runner import CommandFailed
from vocloud.engine.host_leases import AutoLease, AutoLeaser, LeaseLoop
from vocloud.errors import Conflict, Forbidden, InvalidInput, VocloudError
from vocloud.model.host_lease import JobView
from vocloud.service.cloud import Cloud
from vocloud.service.host_leases import HostLeaseService
from vocloud.service.vms import transition
from vocloud.store.schema import VM, Event, Host, HostLease


class FakeJobs:
    def __init__(self) -> None:
        self.scripts: dict[str, str] = {}
        self.views: dict[str, JobView] = {}
        self.cancelled: list[str] = []
        self.fail = False

    def submit(self, lease_id: int, script: str, walltime_s: float, partition: str) -> str:
        if self.fail:
            raise CommandFailed(["sbatch"], "sbatch: error: Batch job submission failed")
        job = str(1000 + lease_id)
        self.scripts[job] = script
        self.views[job] = JobView.RUNNING
        return job

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)
        self.views[job_id] = JobView.GONE

    def states(self, job_ids: Sequence[str]) -> dict[str, JobView]:
        return {j: self.views.get(j, JobView.GONE) for j in job_ids}


def _service(cloud: Cloud, jobs: FakeJobs) -> HostLeaseService:
    return HostLeaseService(cloud.db, {"slurm": jobs}, url="http://10.0.0.1:8474",
                            agent=["/usr/bin/python3", "-m", "vocloud.cli.lease_agent"])


def _token(jobs: FakeJobs, job: str) -> str:
    m = re.search(r"<<'VOCLOUD_LEASE_TOKEN'\n(\w+)\n", jobs.scripts[job])
    assert m is not None
    return m.group(1)


def _count(cloud: Cloud, model: Any) -> int:
    with cloud.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_requests_are_for_administrators_and_bad_input_changes_nothing(cloud: Cloud) -> None:
    jobs = FakeJobs()
    svc = _service(cloud, jobs)
    root = admin(cloud)
    cloud.accounts.create_group(root, "atlas")
    member = user_in(cloud, "ann", "atlas")
    bad: list[tuple[Actor_, dict[str, Any], type[VocloudError]]] = [
        (member, {}, Forbidden),
        (root, {"batch": "pbs"}, InvalidInput),
        (root, {"nodes": 0}, InvalidInput),
        (root, {"nodes": 65}, InvalidInput),
        (root, {"nodes": True}, InvalidInput),
        (root, {"walltime": "abc"}, InvalidInput),
        (root, {"walltime": "30"}, InvalidInput),
        (root, {"walltime": "0"}, InvalidInput),
        (root, {"walltime": "9999d"}, InvalidInput),
        (root, {"partition": "a b"}, InvalidInput),
        (root, {"partition": "x;rm -rf /"}, InvalidInput),
        (root, {"vmm": "nope"}, InvalidInput),
        (root, {"vmm": "sim"}, InvalidInput),  # a sim host declares its capacity
        (root, {"cpu": -1.0}, InvalidInput),
    ]
    for actor, change, error in bad:
        args: dict[str, Any] = {"batch": "slurm", "nodes": 2, "walltime": "1h", **change}
        with pytest.raises(error):
            svc.request(actor, **args)
    with pytest.raises(InvalidInput):  # leases off: no URL for the nodes
        HostLeaseService(cloud.db, {"slurm": jobs}).request(root, "slurm", 1, "1h")
    assert _count(cloud, HostLease) == 0 and jobs.scripts == {}
    rows = svc.request(root, "slurm", 2, "1:00:00", partition="cloud", vmm="sim", cpu=4,
                       memory=4096)
    assert [r["state"] for r in rows] == ["SUBMITTED"] * 2 and rows[0]["walltime"] == 3600
    assert all("token" not in r for r in rows) and len(jobs.scripts) == 2
    tokens = {_token(jobs, j) for j in jobs.scripts}
    assert len(tokens) == 2  # one per lease
    with cloud.db.read() as s:  # only the hash is kept
        stored = {r.token_hash for r in s.scalars(select(HostLease))}
    assert not tokens & stored
    with pytest.raises(Forbidden):
        svc.list(member)
    with pytest.raises(Forbidden):
        svc.cancel(member, rows[0]["id"])
    jobs.fail = True
    [failed] = svc.request(root, "slurm", 1, "2h", vmm="sim", cpu=1, memory=512)
    assert failed["state"] == "FAILED" and "submission failed" in failed["message"]


Actor_ = Any


def test_the_token_registers_one_host_once_and_nothing_else(cloud: Cloud) -> None:
    jobs = FakeJobs()
    svc = _service(cloud, jobs)
    root = admin(cloud)
    a, b = svc.request(root, "slurm", 2, "1h", vmm="sim", cpu=2, memory=2048)
    ta, tb = _token(jobs, a["job_id"]), _token(jobs, b["job_id"])
    for lease, token in ((a["id"], tb), (a["id"], "0" * 64), (a["id"], ""), (9999, ta), (0, ta)):
        with pytest.raises(Forbidden):
            svc.register(lease, token, "10.1.2.3", 0)
        with pytest.raises(Forbidden):
            svc.ending(lease, token)
    for addr in ("0.0.0.0", "127.0.0.1", "224.0.0.1", "node1", "10.1.2.3; reboot", ""):
        with pytest.raises(InvalidInput):
            svc.register(a["id"], ta, addr, 0)
    with pytest.raises(InvalidInput):
        svc.register(a["id"], ta, "10.1.2.3", 0, cpu=-2)
    assert _count(cloud, Host) == 0
    got = svc.register(a["id"], ta, "10.1.2.3", started=1e10)  # the future: clamped to now
    assert got["state"] == "RUNNING" and got["host"] == f"lease{a['id']}"
    assert got["lease_end"] <= got["created_at"] + 3600 + 60
    host = cloud.hosts.show(root, got["host"])
    assert host["transport"] == "ssh://root@10.1.2.3" and host["total_cpu"] == 2
    assert host["attrs"]["LEASE_END"] == f"{got['lease_end']:.0f}" and host["cluster"] == "leased"
    with pytest.raises(Conflict):
        svc.register(a["id"], ta, "10.1.2.4", 0)
    early = svc.register(b["id"], tb, "10.1.2.5", started=0)  # before the request: clamped
    assert early["lease_end"] == pytest.approx(early["created_at"] + 3600)
    assert svc.ending(a["id"], ta) == {"id": a["id"], "state": "RUNNING", "done": False}
    first = svc.show(root, a["id"])["ending_at"]
    svc.ending(a["id"], ta)  # idempotent: the first report stands
    assert svc.show(root, a["id"])["ending_at"] == first is not None


def test_the_loop_drains_a_leased_host_and_lets_it_leave(cloud: Cloud) -> None:
    jobs = FakeJobs()
    svc = _service(cloud, jobs)
    root = admin(cloud)
    now = [0.0]
    loop = LeaseLoop(cloud.db, {"slurm": jobs}, drain_lead=100, clock=lambda: now[0])
    a, b = svc.request(root, "slurm", 2, "1h", vmm="sim", cpu=2, memory=2048)
    ha = svc.register(a["id"], _token(jobs, a["job_id"]), "10.1.2.3", 0)
    hb = svc.register(b["id"], _token(jobs, b["job_id"]), "10.1.2.4", 0)
    vms = cloud.vms.create(root, "CPU=1\nMEMORY=64\nWALLTIME=60\n", count=2)
    with cloud.db.write() as s:  # as the scheduler and lifecycle would: one VM on each host
        for vm_id, host in zip(vms, (ha, hb), strict=True):
            vm = s.get(VM, vm_id)
            assert vm is not None
            vm.host_id = host["host_id"]
            for step in ("scheduled", "prolog_ok", "boot_ok"):
                transition(s, vm, step)
    now[0] = ha["created_at"] + 10
    loop.reconcile_once()
    assert [svc.show(root, x["id"])["state"] for x in (a, b)] == ["RUNNING", "RUNNING"]
    jobs.views[a["job_id"]] = JobView.GONE  # scancel: the job is gone
    loop.reconcile_once()
    assert svc.show(root, a["id"])["state"] == "DRAINING"
    assert cloud.hosts.show(root, ha["host"])["state"] == "DISABLED"
    assert cloud.vms.show(root, vms[0])["state"] == "SHUTDOWN"  # ACPI first, not hard
    assert cloud.vms.show(root, vms[1])["state"] == "RUNNING"
    loop.reconcile_once()  # still draining while the VM holds the host
    assert svc.show(root, a["id"])["state"] == "DRAINING"
    _finish(cloud, vms[0])
    loop.reconcile_once()
    assert svc.show(root, a["id"])["state"] == "ENDED"
    assert ha["host"] not in {h["name"] for h in cloud.hosts.list(root)}
    assert jobs.cancelled == []  # the job was already gone
    # lease b reaches its end (minus the drain lead): drained, then its job is cancelled
    now[0] = hb["lease_end"] - 99
    loop.reconcile_once()
    assert svc.show(root, b["id"])["state"] == "DRAINING"
    _finish(cloud, vms[1])
    loop.reconcile_once()
    assert svc.show(root, b["id"])["state"] == "ENDED" and jobs.cancelled == [b["job_id"]]
    with pytest.raises(Forbidden):  # an ended lease's token is worth nothing
        svc.register(b["id"], _token(jobs, b["job_id"]), "10.1.2.9", 0)
    assert svc.ending(b["id"], _token(jobs, b["job_id"]))["done"] is True
    with pytest.raises(Conflict):
        svc.cancel(root, b["id"])
    with cloud.db.read() as s:
        kinds = {e.action for e in s.scalars(select(Event).where(Event.kind == "lease"))}
    assert {"request", "submitted", "register", "draining", "ended"} <= kinds


def _finish(cloud: Cloud, vm_id: int) -> None:
    with cloud.db.write() as s:
        vm = s.get(VM, vm_id)
        assert vm is not None
        transition(s, vm, "shutdown_ok")
        transition(s, vm, "epilog_ok")


def test_a_cancelled_lease_drains_and_a_lease_without_a_node_ends(cloud: Cloud) -> None:
    jobs = FakeJobs()
    svc = _service(cloud, jobs)
    root = admin(cloud)
    loop = LeaseLoop(cloud.db, {"slurm": jobs}, drain_lead=100)
    a, b = svc.request(root, "slurm", 2, "1h", vmm="sim", cpu=2, memory=2048)
    svc.register(a["id"], _token(jobs, a["job_id"]), "10.1.2.3", 0)
    assert svc.cancel(root, a["id"])["ending_at"] is not None and jobs.cancelled == [a["job_id"]]
    jobs.views[b["job_id"]] = JobView.GONE  # never started, then gone (e.g. cancelled by hand)
    loop.reconcile_once()  # a: no VMs, drained at once; b: never registered, ends
    assert [svc.show(root, x["id"])["state"] for x in (a, b)] == ["ENDED", "ENDED"]
    assert svc.list(root) == [] and len(svc.list(root, all_=True)) == 2
    assert _count(cloud, Host) == 0


def test_auto_lease_asks_one_node_at_a_time_for_vms_that_wait(cloud: Cloud) -> None:
    jobs = FakeJobs()
    svc = _service(cloud, jobs)
    root = admin(cloud)
    now = [1e10]
    auto = AutoLease("slurm", nodes=2, walltime=3600, vmm="sim", cpu=2, memory=2048, grace=30)
    leaser = AutoLeaser(cloud.db, svc, auto, drain_lead=100, clock=lambda: now[0])
    cloud.vms.create(root, "CPU=1\nMEMORY=64\n", count=3)  # no known end: never a reason
    cloud.vms.create(root, "CPU=1\nMEMORY=64\nWALLTIME=4h\n")  # longer than any auto lease
    assert leaser.once() == 0
    cloud.vms.create(root, "CPU=1\nMEMORY=64\nWALLTIME=10m\n", count=3)
    now[0] = 0.0  # just created: within the grace
    assert leaser.once() == 0
    now[0] = 1e10
    assert leaser.once() == 1 and leaser.once() == 0  # the first is still queued
    [first] = svc.list(root)
    svc.register(first["id"], _token(jobs, first["job_id"]), "10.1.2.3", 0)
    assert leaser.once() == 1 and len(svc.list(root)) == 2
    svc.register(svc.list(root)[1]["id"], _token(jobs, svc.list(root)[1]["job_id"]), "10.1.2.4", 0)
    assert leaser.once() == 0  # at the limit of 2 live leases


@pytest.mark.parametrize("text", ["pbs nodes=1 walltime=1h", "slurm nodes=0 walltime=1h",
                                  "slurm nodes=2", "slurm nodes=x walltime=1h",
                                  "slurm nodes=1 walltime=1h colour=red", "slurm walltime=never"])
def test_auto_lease_setting_is_checked(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_auto(text, ["slurm"])
    assert parse_auto("", ["slurm"]) is None
    got = parse_auto("slurm nodes=3 walltime=2h partition=cloud vmm=sim cpu=4 memory=8192", ["slurm"])
    assert got == AutoLease("slurm", 3, 7200.0, "cloud", "sim", 4.0, 8192)


def test_a_lease_being_submitted_is_not_taken_for_gone(cloud: Cloud) -> None:
    """The loop may see a lease between its row and its job id (sbatch still running)."""
    now = [0.0]
    loop = LeaseLoop(cloud.db, {"slurm": FakeJobs()}, drain_lead=100, clock=lambda: now[0])
    with cloud.db.write() as s:
        s.add(HostLease(batch="slurm", walltime=3600.0, token_hash="0" * 64, created_at=0.0))
    loop.reconcile_once()
    svc = _service(cloud, FakeJobs())
    assert svc.list(admin(cloud))[0]["state"] == "SUBMITTED"
    now[0] = 301.0  # never submitted (the daemon stopped between the row and sbatch)
    loop.reconcile_once()
    assert svc.list(admin(cloud), all_=True)[0]["state"] == "ENDED"
