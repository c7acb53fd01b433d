"""The service layer and the reconcile loops against a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from tests.support.helpers import admin, converge, reconciler, states, user_in
from vocloud.core.placement import PolicyKind, SchedPolicy
from vocloud.drivers.base import HostRef
from vocloud.drivers.registry import BUILTIN_INFOS, Cap, DriverCatalog, Role
from vocloud.errors import (
    Conflict,
    Forbidden,
    IllegalAction,
    InvalidInput,
    NoCapacity,
    NotFound,
    ParseError,
    QuotaExceeded,
    Unauthorized,
)
from vocloud.service.cloud import Cloud
from vocloud.store.schema import VM, Event, Host, Lease, Quota

SMALL = "CPU=1\nMEMORY=512\n"


def _hosts(cloud: Cloud, n: int = 3, cpu: float = 8, mem: int = 16384) -> None:
    a = admin(cloud)
    for i in range(1, n + 1):
        cloud.hosts.create(a, f"h{i}", cpu=cpu, memory=mem)


def _usage(cloud: Cloud, scope: str, scope_id: int) -> tuple[int, int, int]:
    with cloud.db.read() as s:
        q = s.scalars(select(Quota).where(Quota.scope == scope).where(Quota.scope_id == scope_id)).one()
        return q.vms_used, q.cpu_m_used, q.mem_used


def test_thirty_vms_pack_three_hosts_then_terminate(cloud: Cloud, tmp_path: Path) -> None:
    a = admin(cloud)
    _hosts(cloud)
    rec, _drv = reconciler(cloud, tmp_path / "sim")
    ids = cloud.vms.create(a, SMALL, count=30, name="w")
    assert len(ids) == 30
    converge(rec)
    assert states(cloud) == Counter({"RUNNING": 24, "PENDING": 6})
    hosts = {h["name"]: h for h in cloud.hosts.list(a)}
    for h in hosts.values():
        assert h["alloc_cpu"] <= h["total_cpu"] == 8
        assert h["running_vms"] == 8
    # packing fills hosts in rank order: the first 8 VMs on h1, next 8 on h2, next 8 on h3
    rows = {r["id"]: r for r in cloud.vms.list(a)}
    assert [rows[i]["host"] for i in ids[:24]] == ["h1"] * 8 + ["h2"] * 8 + ["h3"] * 8
    pending = cloud.vms.show(a, ids[-1])
    assert pending["state"] == "PENDING"
    assert "no host has 1 CPU" in pending["sched_message"]
    # exactly one guest per running VM, on the host the store says
    for i in ids[:24]:
        host = rows[i]["host"]
        assert (tmp_path / "sim" / host / f"{cloud.vms.show(a, i)['deploy_id']}.json").exists()
    for i in ids:
        cloud.vms.action(a, i, "terminate")
    converge(rec)
    assert states(cloud) == Counter({"DONE": 30})
    assert all(h["running_vms"] == 0 and h["alloc_cpu"] == 0 for h in cloud.hosts.list(a))
    assert _usage(cloud, "user", a.user_id) == (0, 0, 0)
    assert not list((tmp_path / "sim").glob("*/*.json"))


def test_striping_spreads(cloud: Cloud, tmp_path: Path) -> None:
    a = admin(cloud)
    _hosts(cloud)
    rec, _ = reconciler(cloud, tmp_path / "sim", SchedPolicy(kind=PolicyKind.STRIPING))
    cloud.vms.create(a, SMALL, count=6)
    converge(rec)
    assert sorted(h["running_vms"] for h in cloud.hosts.list(a)) == [2, 2, 2]


def test_dispatch_limit_per_cycle(cloud: Cloud, tmp_path: Path) -> None:
    a = admin(cloud)
    _hosts(cloud, 1)
    rec, _ = reconciler(cloud, tmp_path / "sim", SchedPolicy(max_dispatch=3))
    cloud.vms.create(a, SMALL, count=5)
    rec.monitor_once(force=True)
    result = rec.schedule_once()
    assert len(result.placements) == 3
    assert states(cloud)["PENDING"] == 2
    assert "dispatch limit" in cloud.vms.show(a, 5)["sched_message"]


def test_requirements_and_unplaceable_reason(cloud: Cloud, tmp_path: Path) -> None:
    a = admin(cloud)
    _hosts(cloud, 2)
    rec, _ = reconciler(cloud, tmp_path / "sim")
    [vm] = cloud.vms.create(a, SMALL + 'SCHED_REQUIREMENTS="NAME = \\"h2\\""\n')
    [big] = cloud.vms.create(a, "CPU=16\nMEMORY=512\n")
    converge(rec)
    assert cloud.vms.show(a, vm)["host"] == "h2"
    msg = cloud.vms.show(a, big)["sched_message"]
    assert cloud.vms.show(a, big)["state"] == "PENDING" and "16 CPU" in msg


def test_bad_template_changes_nothing(cloud: Cloud) -> None:
    a = admin(cloud)
    with pytest.raises(ParseError) as exc:
        cloud.vms.create(a, 'CPU=1\nMEMORY=512\nNAME="broken\n', count=3)
    assert exc.value.line == 3
    with pytest.raises(InvalidInput, match="CPU"):
        cloud.vms.create(a, "CPU=abc\n")
    with pytest.raises(InvalidInput, match="SCHED_REQUIREMENTS"):
        cloud.vms.create(a, SMALL + 'SCHED_REQUIREMENTS="FREE_CPU >"\n')
    with pytest.raises(NotFound, match="image nope"):
        cloud.vms.create(a, SMALL + 'DISK=[IMAGE="nope"]\n')
    with pytest.raises(InvalidInput):
        cloud.vms.create(a, SMALL, count=0)
    with cloud.db.read() as s:
        assert s.scalar(select(func.count()).select_from(VM)) == 0
    assert _usage(cloud, "user", a.user_id) == (0, 0, 0)


def test_quota_exceeded_changes_nothing(cloud: Cloud) -> None:
    a = admin(cloud)
    u = user_in(cloud, "alice", "atlas")
    cloud.accounts.set_quota(a, "group", "atlas", vms=3, cpu=2.5)
    cloud.vms.create(u, SMALL, count=2)
    with pytest.raises(QuotaExceeded, match=r"group atlas quota exceeded: CPU 2\+1 > 2.5"):
        cloud.vms.create(u, SMALL)
    cloud.accounts.set_quota(a, "group", "atlas", cpu=-1)
    cloud.vms.create(u, SMALL)
    with pytest.raises(QuotaExceeded, match=r"VMs 3\+1 > 3"):
        cloud.vms.create(u, SMALL)
    assert _usage(cloud, "group", u.group_id) == (3, 3000, 1536)
    with pytest.raises(Forbidden):
        cloud.accounts.set_quota(u, "group", "atlas", vms=100)
    with pytest.raises(InvalidInput):
        cloud.accounts.set_quota(a, "user", "alice", vms=-5)


def test_vo_isolation_and_acl_grants(cloud: Cloud) -> None:
    a = admin(cloud)
    alice = user_in(cloud, "alice", "atlas")
    bob = user_in(cloud, "bob", "cms")
    carol = user_in(cloud, "carol", "atlas")
    [vm] = cloud.vms.create(alice, SMALL)
    assert [r["id"] for r in cloud.vms.list(carol)] == [vm]  # same VO sees it
    assert cloud.vms.list(bob) == []
    with pytest.raises(Forbidden):
        cloud.vms.show(bob, vm)
    with pytest.raises(Forbidden):
        cloud.vms.action(bob, vm, "hold")
    assert cloud.vms.show(a, vm)["state"] == "PENDING"
    # grant cms USE (not MANAGE) on atlas VMs
    cloud.accounts.create_acl(a, f"@{bob.group_id}", "VM", f"@{alice.group_id}", "USE")
    assert [r["id"] for r in cloud.vms.list(bob)] == [vm]
    assert cloud.vms.show(bob, vm)["id"] == vm
    with pytest.raises(Forbidden):
        cloud.vms.action(bob, vm, "terminate")
    cloud.vms.action(carol, vm, "hold")
    assert cloud.vms.show(a, vm)["state"] == "HOLD"
    with pytest.raises(Forbidden):
        cloud.hosts.create(alice, "sneaky", cpu=1, memory=1)
    with pytest.raises(InvalidInput):
        cloud.accounts.create_acl(a, "bob", "VM", "*", "USE")


def test_admin_creates_vms_for_a_vo(cloud: Cloud) -> None:
    """Pool and power-save VMs belong to the VO: its quota, its members see them."""
    a = admin(cloud)
    alice = user_in(cloud, "alice", "atlas")
    cloud.accounts.set_quota(a, "group", "atlas", vms=1)
    [vm] = cloud.vms.create(a, SMALL, group="atlas")
    assert cloud.vms.show(alice, vm)["group"] == "atlas"
    assert _usage(cloud, "group", alice.group_id)[0] == 1
    with pytest.raises(QuotaExceeded):
        cloud.vms.create(a, SMALL, group="atlas")
    with pytest.raises(Forbidden, match="only an administrator"):
        cloud.vms.create(alice, SMALL, group="admin")
    with pytest.raises(NotFound, match="group nope"):
        cloud.vms.create(a, SMALL, group="nope")


def test_tokens(cloud: Cloud) -> None:
    a = admin(cloud)
    cloud.accounts.create_group(a, "atlas")
    info = cloud.accounts.create_user(a, "alice", "atlas")
    assert cloud.authenticate(info["token"]).name == "alice"
    for bad in (None, "", "vc_wrong"):
        with pytest.raises(Unauthorized):
            cloud.authenticate(bad)
    new = cloud.accounts.new_token(a, "alice")["token"]
    with pytest.raises(Unauthorized):
        cloud.authenticate(info["token"])
    cloud.accounts.set_enabled(a, "alice", False)
    with pytest.raises(Unauthorized, match="disabled"):
        cloud.authenticate(new)


def test_wrong_state_action_changes_nothing(cloud: Cloud, tmp_path: Path) -> None:
    a = admin(cloud)
    _hosts(cloud, 1)
    rec, _ = reconciler(cloud, tmp_path / "sim")
    [vm] = cloud.vms.create(a, SMALL)
    with pytest.raises(IllegalAction, match=r"cannot suspend VM \d+: it is PENDING"):
        cloud.vms.action(a, vm, "suspend")
    converge(rec)
    with pytest.raises(IllegalAction, match=r"cannot resume VM \d+: it is RUNNING"):
        cloud.vms.action(a, vm, "resume")
    with pytest.raises(InvalidInput, match="unknown VM action"):
        cloud.vms.action(a, vm, "explode")
    with pytest.raises(NotFound):
        cloud.vms.action(a, 9999, "terminate")
    assert cloud.vms.show(a, vm)["state"] == "RUNNING"


def test_full_lifecycle_actions(cloud: Cloud, tmp_path: Path) -> None:
    a = admin(cloud)
    _hosts(cloud, 2)
    rec, _drv = reconciler(cloud, tmp_path / "sim")
    [vm] = cloud.vms.create(a, SMALL, hold=True)
    assert cloud.vms.show(a, vm)["state"] == "HOLD"
    cloud.vms.action(a, vm, "release")
    converge(rec)
    assert cloud.vms.show(a, vm)["state"] == "RUNNING"
    for action, _middle, final in [("poweroff", None, "POWEROFF"), ("resume", None, "RUNNING"),
                                  ("suspend", None, "SUSPENDED"), ("resume", None, "RUNNING"),
                                  ("reboot", None, "RUNNING"), ("stop", None, "STOPPED"),
                                  ("resume", None, "RUNNING"), ("undeploy", None, "UNDEPLOYED"),
                                  ("resume", None, "RUNNING")]:
        cloud.vms.action(a, vm, action)
        converge(rec)
        assert cloud.vms.show(a, vm)["state"] == final, action
    src = cloud.vms.show(a, vm)["host"]
    dst = "h2" if src == "h1" else "h1"
    cloud.vms.action(a, vm, "migrate", host=dst)
    converge(rec)
    info = cloud.vms.show(a, vm)
    assert info["state"] == "RUNNING" and info["host"] == dst
    hosts = {h["name"]: h for h in cloud.hosts.list(a)}
    assert hosts[src]["running_vms"] == 0 and hosts[dst]["running_vms"] == 1
    assert (tmp_path / "sim" / dst / f"{info['deploy_id']}.json").exists()
    assert not (tmp_path / "sim" / src / f"{info['deploy_id']}.json").exists()
    with pytest.raises(InvalidInput, match="already runs"):
        cloud.vms.action(a, vm, "migrate", host=dst)
    cloud.vms.action(a, vm, "terminate-hard")
    converge(rec)
    assert cloud.vms.show(a, vm)["state"] == "DONE"
    history = [h["action"] for h in cloud.vms.show(a, vm)["history"]]
    assert history[0] == "create" and history[-1] == "epilog_ok"
    cloud.vms.delete(a, vm)
    with pytest.raises(NotFound):
        cloud.vms.show(a, vm)


def test_boot_failure_and_timeout(cloud: Cloud, tmp_path: Path) -> None:
    a = admin(cloud)
    _hosts(cloud, 1)
    rec, _ = reconciler(cloud, tmp_path / "sim", boot_timeout=0.3)
    [bad] = cloud.vms.create(a, SMALL + "SIM_BOOT=fail\n")
    [hang] = cloud.vms.create(a, SMALL + "SIM_BOOT=hang\n")
    converge(rec, 3)
    assert cloud.vms.show(a, bad)["state"] == "BOOT_FAILURE"
    assert "crashed" in cloud.vms.show(a, bad)["error"]
    assert cloud.vms.show(a, hang)["state"] == "BOOT"
    time.sleep(0.4)
    converge(rec, 2)
    info = cloud.vms.show(a, hang)
    assert info["state"] == "BOOT_FAILURE" and "did not come up within" in info["error"]
    # the console's last lines are kept in the error: the run dir goes at cleanup
    assert "console ends:" in info["error"] and "mode hang" in info["error"], info["error"]
    # both still hold their host until terminated; terminating frees it and leaves no guest
    for vm in (bad, hang):
        cloud.vms.action(a, vm, "terminate")
    converge(rec)
    assert states(cloud) == Counter({"DONE": 2})
    assert not list((tmp_path / "sim").glob("*/*.json"))
    assert cloud.hosts.list(a)[0]["running_vms"] == 0


def test_host_error_unknown_and_back(cloud: Cloud, tmp_path: Path) -> None:
    a = admin(cloud)
    _hosts(cloud, 1)
    rec, drv = reconciler(cloud, tmp_path / "sim")
    [vm] = cloud.vms.create(a, SMALL)
    converge(rec)
    href = HostRef(id=1, name="h1")
    drv.set_reachable(href, False)
    converge(rec, 2)
    assert cloud.hosts.show(a, "h1")["state"] == "ERROR"
    assert "does not answer" in cloud.hosts.show(a, "h1")["error"]
    assert cloud.vms.show(a, vm)["state"] == "UNKNOWN"
    drv.set_reachable(href, True)
    converge(rec, 2)
    assert cloud.hosts.show(a, "h1")["state"] == "MONITORED"
    assert cloud.vms.show(a, vm)["state"] == "RUNNING"
    # a guest that vanishes behind our back is seen as powered off
    (tmp_path / "sim" / "h1" / f"{cloud.vms.show(a, vm)['deploy_id']}.json").unlink()
    converge(rec, 1)
    assert cloud.vms.show(a, vm)["state"] == "POWEROFF"


def test_host_actions_and_bad_input(cloud: Cloud, tmp_path: Path) -> None:
    a = admin(cloud)
    _hosts(cloud, 1)
    with pytest.raises(Conflict, match="already exists"):
        cloud.hosts.create(a, "h1", cpu=1, memory=1)
    with pytest.raises(InvalidInput, match="needs --cpu"):
        cloud.hosts.create(a, "h9")
    with pytest.raises(InvalidInput, match="transport"):
        cloud.hosts.create(a, "h9", cpu=1, memory=1, transport="ftp://x")
    with pytest.raises(InvalidInput, match="driver"):
        cloud.hosts.create(a, "h9", vmm="xen", cpu=1, memory=1)
    with pytest.raises(InvalidInput):
        cloud.hosts.create(a, "bad name", cpu=1, memory=1)
    with pytest.raises(NotFound, match="host nope"):
        cloud.hosts.show(a, "nope")
    rec, _ = reconciler(cloud, tmp_path / "sim")
    cloud.hosts.action(a, "h1", "disable")
    cloud.vms.create(a, SMALL)
    converge(rec)
    assert states(cloud) == Counter({"PENDING": 1})
    cloud.hosts.action(a, "h1", "enable")
    converge(rec)
    assert states(cloud) == Counter({"RUNNING": 1})
    with pytest.raises(Conflict, match="holds 1 VMs"):
        cloud.hosts.delete(a, "h1")
    with pytest.raises(Conflict, match="holds 1 VMs"):
        cloud.hosts.action(a, "h1", "offline")
    assert cloud.hosts.show(a, "h1")["state"] == "MONITORED"


def test_leases_distinct_and_returned(cloud: Cloud, tmp_path: Path) -> None:
    a = admin(cloud)
    _hosts(cloud, 1)
    rec, _ = reconciler(cloud, tmp_path / "sim")
    net = cloud.networks.create(a, 'NAME="priv"\nBRIDGE="br0"\nAR=[TYPE="IP4", IP="10.1.0.10", SIZE="3"]\n')
    assert net["size"] == 3
    ids = cloud.vms.create(a, SMALL + 'NIC=[NETWORK="priv"]\nCONTEXT=[IP="$IP", VO="atlas"]\n', count=3)
    leases = [cloud.vms.show(a, i)["leases"][0] for i in ids]
    assert [x["ip"] for x in leases] == ["10.1.0.10", "10.1.0.11", "10.1.0.12"]
    assert leases[0]["mac"] == "02:00:0a:01:00:0a"
    with pytest.raises(NoCapacity, match="no free lease"):
        cloud.vms.create(a, SMALL + 'NIC=[NETWORK="priv"]\n')
    assert len(cloud.vms.list(a)) == 3
    assert _usage(cloud, "user", a.user_id)[0] == 3
    shown = cloud.networks.show(a, "priv")
    assert [(x["ip"], x["vm_id"]) for x in shown["leases"]] == list(zip(
        ["10.1.0.10", "10.1.0.11", "10.1.0.12"], ids, strict=True))
    converge(rec)
    cloud.vms.action(a, ids[1], "terminate")
    converge(rec)
    with cloud.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Lease)) == 2
    [again] = cloud.vms.create(a, SMALL + 'NIC=[NETWORK="priv"]\n')
    assert cloud.vms.show(a, again)["leases"][0]["ip"] == "10.1.0.11"
    # fixed leases, holds
    cloud.networks.create(a, 'NAME="fixed"\nLEASES=[IP="192.168.5.7", MAC="02:aa:00:00:00:07"]\n')
    with pytest.raises(InvalidInput, match="not in any address range"):
        cloud.networks.hold(a, "fixed", "192.168.5.8")
    cloud.networks.hold(a, "fixed", "192.168.5.7")
    with pytest.raises(NoCapacity):
        cloud.vms.create(a, SMALL + 'NIC=[NETWORK="fixed"]\n')
    cloud.networks.hold(a, "fixed", "192.168.5.7", release=True)
    [f] = cloud.vms.create(a, SMALL + 'NIC=[NETWORK="fixed"]\n')
    assert cloud.vms.show(a, f)["leases"][0]["mac"] == "02:aa:00:00:00:07"
    with pytest.raises(InvalidInput, match="overlap"):
        cloud.networks.create(a, 'NAME="x"\nAR=[IP="10.0.0.1",SIZE="10"]\nAR=[IP="10.0.0.5",SIZE="2"]\n')
    with pytest.raises(InvalidInput, match="IPv4"):
        cloud.networks.create(a, 'NAME="y"\nAR=[IP="10.0.0.300",SIZE="10"]\n')
    with pytest.raises(Conflict, match="in use"):
        cloud.networks.delete(a, "priv")


def test_images_and_templates(cloud: Cloud, tmp_path: Path) -> None:
    a = admin(cloud)
    u = user_in(cloud, "alice", "atlas")
    store = tmp_path / "ds"  # registration by path: administrators, inside a datastore only
    store.mkdir()
    cloud.datastores.create(a, "ds", str(store))
    img_file = store / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(img_file), "1M"], check=True)
    img = cloud.images.create(a, "base", str(img_file), public=True)
    assert img["format"] == "qcow2" and len(img["sha256"]) == 64
    raw = store / "disk.raw"
    raw.write_bytes(b"\0" * 10)
    with pytest.raises(InvalidInput, match="declared qcow2 but qemu-img reads it as raw"):
        cloud.images.create(a, "x", str(raw), fmt="qcow2")
    with pytest.raises(InvalidInput, match="does not exist"):
        cloud.images.create(a, "x", str(store / "missing.img"))
    cloud.images.create(a, "pers", str(raw), persistent=True)
    t = cloud.templates.create(u, SMALL + 'NAME="worker"\nDISK=[IMAGE="base", TARGET="vda"]\n')
    ids = cloud.instantiate(u, "worker", count=2)
    assert cloud.images.show(a, "base")["running_vms"] == 2
    assert cloud.images.show(a, "base")["state"] == "USED"
    assert "SOURCE" in cloud.vms.show(u, ids[0])["template"]
    with pytest.raises(Conflict, match="persistent"):
        cloud.vms.create(a, SMALL + 'DISK=[IMAGE="pers"]\n', count=2)
    [p] = cloud.vms.create(a, SMALL + 'DISK=[IMAGE="pers"]\n')
    with pytest.raises(Conflict, match="persistent"):
        cloud.vms.create(a, SMALL + 'DISK=[IMAGE="pers"]\n')
    cloud.vms.action(a, p, "terminate")
    assert cloud.images.show(a, "pers")["running_vms"] == 0
    with pytest.raises(Conflict, match="used by 2 VMs"):
        cloud.images.delete(a, "base")
    with pytest.raises(IllegalAction, match="cannot disable image base: it is USED"):
        cloud.images.action(a, "base", "disable")
    for vm in ids:
        cloud.vms.action(u, vm, "terminate")
    assert cloud.images.show(a, "base")["state"] == "READY"
    with pytest.raises(Forbidden):
        cloud.images.delete(u, "base")  # public means USE, not MANAGE
    assert t["name"] == "worker"


def test_restart_mid_boot_creates_no_duplicates(cloud: Cloud, db_url: str, tmp_path: Path) -> None:
    """A daemon killed between deploy and boot_ok: a fresh one finds the guests, starts none."""
    a = admin(cloud)
    _hosts(cloud, 2)
    rec, _drv = reconciler(cloud, tmp_path / "sim", boot_delay=0.3)
    ids = cloud.vms.create(a, SMALL, count=10)
    converge(rec, 3)  # deployed, still booting (delay 0.3 s)
    assert states(cloud)["BOOT"] == 10
    # "restart": new store connection, new cloud, new reconciler, new driver on the same dirs
    from vocloud.store.db import Database

    db2 = Database(db_url)
    cloud2 = Cloud(db2)
    rec2, _ = reconciler(cloud2, tmp_path / "sim", boot_delay=0.3)
    time.sleep(0.35)
    converge(rec2, 3)
    assert states(cloud2) == Counter({"RUNNING": 10})
    import json

    boots = [json.loads(p.read_text())["boots"] for p in (tmp_path / "sim").glob("*/*.json")]
    assert sorted(boots) == [1] * 10  # each guest started exactly once
    with db2.read() as s:
        deploys = s.scalar(select(func.count()).select_from(Event).where(Event.action == "boot_ok"))
        assert deploys == 10
        assert s.scalar(select(func.sum(Host.running_vms))) == 10
    db2.dispose()
    assert len(ids) == 10


def test_reserved_capacity_holds_back_or_overcommits(cloud: Cloud, tmp_path: Path) -> None:
    """RESERVED_CPU/RESERVED_MEM take capacity from what is measured; negative values add to it."""
    a = admin(cloud)
    over = cloud.hosts.create(a, "over", cpu=2, memory=4096,
                              attrs={"reserved_cpu": "-2", "RESERVED_MEM": "1024"})
    assert (over["total_cpu"], over["total_mem"]) == (4.0, 3072)
    rec, _drv = reconciler(cloud, tmp_path / "sim")
    ids = cloud.vms.create(a, SMALL, count=5, name="o")
    converge(rec)
    # the monitor's probe (2 CPU, 4096 MiB declared) gets the same reservation, not the raw figure
    h = cloud.hosts.show(a, "over")
    assert (h["total_cpu"], h["total_mem"], h["running_vms"]) == (4.0, 3072, 4), h
    assert states(cloud) == Counter({"RUNNING": 4, "PENDING": 1})
    # taking the overcommit back shrinks the host at once; running VMs stay (alloc > total)
    h = cloud.hosts.update_attrs(a, "over", {"RESERVED_CPU": ""})
    assert h["total_cpu"] == 2.0 and h["alloc_cpu"] == 4.0 and "RESERVED_CPU" not in h["attrs"]
    converge(rec)
    assert cloud.hosts.show(a, "over")["total_cpu"] == 2.0
    assert states(cloud) == Counter({"RUNNING": 4, "PENDING": 1})
    cloud.vms.action(a, ids[0], "terminate-hard")
    converge(rec)
    assert states(cloud) == Counter({"RUNNING": 3, "PENDING": 1, "DONE": 1})  # still full: 3 > 2

    for bad, why in (({"RESERVED_CPU": "lots"}, "must be a number"),
                     ({"RESERVED_CPU": "5000"}, "between"),
                     ({"RESERVED_MEM": "1.5"}, "whole MiB"),
                     ({"RESERVED_MEM": "nan"}, "between")):
        with pytest.raises(InvalidInput, match=why):
            cloud.hosts.create(a, "bad", cpu=2, memory=4096, attrs=bad)
        with pytest.raises(InvalidInput, match=why):
            cloud.hosts.update_attrs(a, "over", bad)
    assert cloud.hosts.show(a, "over")["total_cpu"] == 2.0  # a refused update changed nothing
    assert [h["name"] for h in cloud.hosts.list(a)] == ["over"]
    with pytest.raises(InvalidInput, match="at least one"):
        cloud.hosts.update_attrs(a, "over", {})
    user = user_in(cloud, "alice", "physics")
    with pytest.raises(Forbidden):
        cloud.hosts.update_attrs(user, "over", {"RESERVED_CPU": "-8"})


def test_only_an_administrator_chooses_a_vms_host(cloud: Cloud, tmp_path: Path) -> None:
    """``migrate`` and ``enforce=False`` pick a host past the scheduler's rules (a leased host's
    end, requirements, a disabled host): the VM's own user gets a 403 and nothing moves."""
    a = admin(cloud)
    _hosts(cloud, 2)
    cloud.hosts.action(a, "h2", "disable")
    rec, _drv = reconciler(cloud, tmp_path / "sim")
    owner = user_in(cloud, "olga", "vo-o")
    [vm] = cloud.vms.create(owner, SMALL)
    converge(rec)
    info = cloud.vms.show(owner, vm)
    assert info["state"] == "RUNNING" and "migrate" not in info["allowed_actions"]
    other = "h2" if info["host"] == "h1" else "h1"
    for kwargs in ({"host": other}, {"host": other, "enforce": False}):
        with pytest.raises(Forbidden, match="only an administrator chooses a VM's host"):
            cloud.vms.action(owner, vm, "migrate", **kwargs)
    with pytest.raises(Forbidden, match="skip the host checks"):
        cloud.vms.action(owner, vm, "poweroff", enforce=False)
    after = cloud.vms.show(a, vm)
    assert (after["state"], after["host"]) == ("RUNNING", info["host"])
    assert "migrate" in after["allowed_actions"]  # the administrator may


def test_migrate_refused_before_acceptance_when_a_driver_cannot(cloud: Cloud, tmp_path: Path) -> None:
    """A VMM that does not declare ``migrate`` (here: one this daemon does not offer) makes
    ``migrate`` a refusal up front, not a command that says yes and a VM quietly back where it was."""
    a = admin(cloud)
    _hosts(cloud, 2)
    rec, _drv = reconciler(cloud, tmp_path / "sim")
    [vm] = cloud.vms.create(a, SMALL)
    converge(rec)
    info = cloud.vms.show(a, vm)
    assert info["state"] == "RUNNING" and "migrate" in info["allowed_actions"]
    src = info["host"]
    dst = "h2" if src == "h1" else "h1"
    with cloud.db.write() as s:  # no guest needed for the check
        s.execute(update(Host).where(Host.name == src).values(vmm="xen"))
    assert "migrate" not in cloud.vms.show(a, vm)["allowed_actions"]
    with pytest.raises(Conflict, match=rf"host {src}'s VMM driver 'xen' cannot migrate"):
        cloud.vms.action(a, vm, "migrate", host=dst)
    after = cloud.vms.show(a, vm)
    assert after["state"] == "RUNNING" and after["host"] == src
    hosts = {h["name"]: h for h in cloud.hosts.list(a)}
    assert hosts[dst]["running_vms"] == 0 and hosts[dst]["used_cpu"] == 0  # nothing reserved


def test_cold_migration_refused_or_chosen_by_the_declared_capabilities(cloud: Cloud,
                                                                        tmp_path: Path) -> None:
    """``--cold`` needs ``cold-migrate`` on both hosts' drivers (the sim declares live only:
    refused up front, nothing reserved); a driver that declares only ``cold-migrate`` makes
    every migrate a cold one, which the loop carries out (shut down, booted on the target)."""
    a = admin(cloud)
    _hosts(cloud, 2)
    rec, _drv = reconciler(cloud, tmp_path / "sim")
    [vm] = cloud.vms.create(a, SMALL)
    converge(rec)
    src = cloud.vms.show(a, vm)["host"]
    dst = "h2" if src == "h1" else "h1"
    with pytest.raises(Conflict, match=r"'sim' cannot migrate a VM cold .*without --cold"):
        cloud.vms.action(a, vm, "migrate", host=dst, cold=True)
    with pytest.raises(InvalidInput, match="apply to migrate only"):
        cloud.vms.action(a, vm, "reboot", cold=True)
    hosts = {h["name"]: h for h in cloud.hosts.list(a)}
    assert hosts[dst]["running_vms"] == 0 and cloud.vms.show(a, vm)["state"] == "RUNNING"
    cloud.vms.action(a, vm, "migrate", host=dst, cold_if_able=True)  # XML-RPC live=false: live here
    with cloud.db.read() as s:
        row = s.get(VM, vm)
        assert row is not None and row.state == "MIGRATE" and not row.hard
    converge(rec)
    src, dst = dst, src

    cold_only = tuple(replace(i, capabilities=frozenset({Cap.DECLARED_CAPACITY, Cap.COLD_MIGRATE}))
                      if (i.role, i.name) == (Role.VMM, "sim") else i for i in BUILTIN_INFOS)
    cloud.vms.catalog = DriverCatalog(cold_only)
    assert "migrate" in cloud.vms.show(a, vm)["allowed_actions"]
    cloud.vms.action(a, vm, "migrate", host=dst)
    with cloud.db.read() as s:
        row = s.get(VM, vm)
        assert row is not None and row.state == "MIGRATE" and row.hard  # the engine's "cold"
    for _ in range(50):  # to the phase where the guest boots on the target
        with cloud.db.read() as s:
            row = s.get(VM, vm)
            assert row is not None
            if row.step_attempts >= 2:
                break
        rec.lifecycle_once()
        time.sleep(0.05)
    with pytest.raises(Conflict, match="booting on its cold migration's target"):
        cloud.vms.action(a, vm, "terminate-hard")
    converge(rec)
    info = cloud.vms.show(a, vm)
    assert (info["state"], info["host"]) == ("RUNNING", dst), info["history"][-4:]
    assert "migrated cold" in info["history"][-1]["message"], info["history"][-1]
    assert not (tmp_path / "sim" / src / f"{info['deploy_id']}.json").exists()
