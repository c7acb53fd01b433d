"""``vm recover --delete`` goes through the lifecycle table like every other state change: the
VM ends DONE with its host capacity, lease, quota and image use released (both databases)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.support.helpers import admin, converge, reconciler, user_in
from vocloud.errors import Forbidden, IllegalAction
from vocloud.service.cloud import Cloud
from vocloud.store.schema import Event, Host, Image, Lease, Quota


def test_recover_delete_releases_everything_through_the_lifecycle(cloud: Cloud, tmp_path: Path) -> None:
    a = admin(cloud)
    u = user_in(cloud, "rita", "atlas")
    cloud.hosts.create(a, "h1", cpu=4, memory=8192)
    rec, _ = reconciler(cloud, tmp_path / "sim")
    net = cloud.networks.create(a, 'NAME="pub"\nBRIDGE="br9"\nAR=[TYPE="IP4", IP="10.9.0.2", SIZE="4"]\n'
                                   'PUBLIC="YES"\n')
    base = tmp_path / "base.qcow2"
    base.write_bytes(b"QFI\xfb" + b"\0" * 1020)
    with cloud.db.write() as s:  # an image the admin registered; the user may USE it
        s.add(Image(name="std", owner_id=a.user_id, group_id=a.group_id, path=str(base),
                    format="qcow2", size_mib=1, sha256="", persistent=False, public=True,
                    description="", state="READY"))
    [vm] = cloud.vms.create(u, f'CPU=1\nMEMORY=512\nNIC=[NETWORK_ID="{net["id"]}"]\nDISK=[IMAGE="std"]\n')
    converge(rec)
    assert cloud.vms.show(a, vm)["state"] == "RUNNING"
    with pytest.raises(Forbidden):
        cloud.vms.recover(u, vm, "delete")  # administrators only
    cloud.vms.recover(a, vm, "delete")
    shown = cloud.vms.show(a, vm)
    assert shown["state"] == "DONE" and shown["ended_at"] is not None
    assert shown["history"][-1]["action"] == "recover_delete"
    with cloud.db.read() as s:
        host = s.scalars(select(Host).where(Host.name == "h1")).one()
        assert (host.alloc_cpu_m, host.alloc_mem, host.running_vms) == (0, 0, 0)
        assert s.scalar(select(func.count()).select_from(Lease).where(Lease.vm_id == vm)) == 0
        q = s.scalars(select(Quota).where(Quota.scope == "user").where(Quota.scope_id == u.user_id)).one()
        assert (q.vms_used, q.cpu_m_used, q.mem_used) == (0, 0, 0)
        img = s.scalars(select(Image).where(Image.name == "std")).one()
        assert (img.running_vms, img.state) == (0, "READY")
        assert s.scalar(select(func.count()).select_from(Event)
                        .where(Event.obj_id == vm).where(Event.action == "recover_delete")) == 1
    with pytest.raises(IllegalAction, match="DONE"):
        cloud.vms.recover(a, vm, "delete")


def test_what_recover_delete_left_on_the_host_is_swept_when_it_is_monitored(cloud: Cloud,
                                                                               tmp_path: Path) -> None:
    """``recover --delete`` does not touch the host; the next probe of the host removes the
    guest it left, and only that one (a running VM's guest on the same host stays)."""
    a = admin(cloud)
    cloud.hosts.create(a, "h1", cpu=4, memory=8192)
    rec, _ = reconciler(cloud, tmp_path / "sim")
    gone, kept = cloud.vms.create(a, "CPU=1\nMEMORY=256\n", count=2)
    converge(rec)
    deploy = {vm: cloud.vms.show(a, vm)["deploy_id"] for vm in (gone, kept)}
    guests = tmp_path / "sim" / "h1"
    assert all((guests / f"{d}.json").exists() for d in deploy.values())
    cloud.vms.recover(a, gone, "delete")
    assert (guests / f"{deploy[gone]}.json").exists()  # the host was not asked
    rec.monitor_once(force=True)
    assert not (guests / f"{deploy[gone]}.json").exists()
    assert (guests / f"{deploy[kept]}.json").exists()
    assert cloud.vms.show(a, kept)["state"] == "RUNNING"
    rec.monitor_once(force=True)  # nothing left to sweep: a second pass is a no-op
    assert cloud.vms.show(a, kept)["state"] == "RUNNING"
