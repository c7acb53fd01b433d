"""Many concurrent clients never overcommit a host, exceed a quota or share a lease.

Each test runs on SQLite and on a real PostgreSQL server, with threads that each hold their own
connection, so the guarantees come from the transactions, not from a lock in Python.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from tests.support.helpers import admin, reconciler, user_in
from tests.support.race import race
from vocloud.errors import NoCapacity, QuotaExceeded
from vocloud.service import capacity
from vocloud.service.cloud import Cloud
from vocloud.store.schema import VM, Host, Lease, Quota

SMALL = "CPU=1\nMEMORY=256\n"




def test_quota_never_exceeded(cloud: Cloud) -> None:
    a = admin(cloud)
    u = user_in(cloud, "alice", "atlas")
    cloud.accounts.set_quota(a, "group", "atlas", vms=20)
    ok, errors = race(16, lambda i: cloud.vms.create(u, SMALL, count=2))
    assert all(isinstance(e, QuotaExceeded) for e in errors), errors
    assert len(ok) == 10 and len(errors) == 6
    with cloud.db.read() as s:
        assert s.scalar(select(func.count()).select_from(VM)) == 20
        q = s.scalars(select(Quota).where(Quota.scope == "group").where(Quota.scope_id == u.group_id)).one()
        assert (q.vms_used, q.cpu_m_used, q.mem_used) == (20, 20_000, 20 * 256)


def test_host_capacity_never_overcommitted(cloud: Cloud) -> None:
    a = admin(cloud)
    cloud.hosts.create(a, "h1", cpu=8, memory=4096)
    with cloud.db.read() as s:
        host_id = s.scalar(select(Host.id))
    assert host_id is not None

    def grab(_i: int) -> bool:
        with cloud.db.write() as s:
            return capacity.acquire_host(s, host_id, 1000, 256)

    results, errors = race(24, grab)
    assert not errors
    assert results.count(True) == 8 and results.count(False) == 16
    with cloud.db.read() as s:
        h = s.get(Host, host_id)
        assert h is not None and (h.alloc_cpu_m, h.running_vms) == (8000, 8)


def test_two_schedulers_racing(cloud: Cloud, tmp_path: Path) -> None:
    """Two front-ends scheduling the same pending VMs onto one host: each VM placed once, the
    host never above its 8 CPUs, the losers stay PENDING with a reason."""
    a = admin(cloud)
    cloud.hosts.create(a, "h1", cpu=8, memory=16384)
    cloud.vms.create(a, SMALL, count=20)
    recs = [reconciler(cloud, tmp_path / "sim")[0] for _ in range(4)]
    recs[0].monitor_once(force=True)
    _, errors = race(4, lambda i: recs[i].schedule_once())
    assert not errors, errors
    with cloud.db.read() as s:
        h = s.scalars(select(Host)).one()
        assert h.alloc_cpu_m <= h.total_cpu_m == 8000
        placed = s.scalar(select(func.count()).select_from(VM).where(VM.state == "PROLOG"))
        assert placed == h.running_vms == h.alloc_cpu_m // 1000
        assert s.scalar(select(func.count()).select_from(VM).where(VM.state == "PENDING")) == 20 - placed


def test_leases_never_shared(cloud: Cloud) -> None:
    a = admin(cloud)
    cloud.networks.create(a, 'NAME="priv"\nAR=[IP="10.9.0.1", SIZE="10"]\n')
    ok, errors = race(20, lambda i: cloud.vms.create(a, SMALL + 'NIC=[NETWORK="priv"]\n'))
    assert all(isinstance(e, NoCapacity) for e in errors), errors
    assert len(ok) == 10
    with cloud.db.read() as s:
        ips = list(s.scalars(select(Lease.ip)))
        assert len(ips) == len(set(ips)) == 10
        assert s.scalar(select(func.count()).select_from(VM)) == 10
