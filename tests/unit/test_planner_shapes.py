"""Worker shapes (fixed | job | host): multi-core and whole-host workers, jobs spanning VMs,
and the site reservation that lets the oldest wide job collect its VMs."""

from __future__ import annotations

from typing import Any

import pytest

from vocloud.batch.base import PendingJob, by_vo
from vocloud.elastic.planner import LEND_MARGIN_S, RELEASE_HORIZON_S, plan
from vocloud.elastic.policy import (
    RESERVE_AFTER_S,
    Boot,
    Drain,
    Plan,
    Pool,
    PoolPolicy,
    PoolVM,
    PoolVMState,
    Resume,
    Shutdown,
    SiteCapacity,
)
from vocloud.elastic.shape import shape_for
from vocloud.errors import InvalidInput

V = PoolVMState
NOW = 10_000.0
HOST = (8, 16384)


def pol(vo: str = "atlas", shape: str = "job", **kw: Any) -> PoolPolicy:
    base: dict[str, Any] = dict(image=f"img-{vo}", cores_per_vm=1, memory_mib_per_vm=2048,
                                max_vms=100, max_boots_per_minute=100, worker_shape=shape)
    base.update(kw)
    return PoolPolicy(vo, **base)


def jobs(vo: str, n: int, cores: int = 1, t: float = 0.0) -> list[PendingJob]:
    return [PendingJob(f"{vo}.{cores}.{t}.{i}", vo, cores, 100, 3600, t) for i in range(n)]


def site(hosts: int = 10, free: int | None = None, reserve_after_s: float = 0.0) -> SiteCapacity:
    """A site of 8-core hosts; the oldest wide job holds the reservation at once unless
    ``reserve_after_s`` says otherwise (the production default waits ``RESERVE_AFTER_S``)."""
    per = [(8, 16384)] * hosts if free is None else [(free, free * 2048)] + [(0, 0)] * (hosts - 1)
    return SiteCapacity.from_hosts(1000, tuple(per), host_shape=HOST, reserve_after_s=reserve_after_s)


def boots(p: Plan, vo: str) -> list[Boot]:
    return [a for a in p.actions if isinstance(a, Boot) and a.vo == vo]


def test_fixed_pools_keep_their_size_and_never_boot_for_wider_jobs() -> None:
    p = plan(by_vo(jobs("atlas", 2, cores=4)), [Pool(pol(shape="fixed"))], site(), NOW)
    assert boots(p, "atlas") == []
    assert p.pools[0].unfit_jobs == 2
    assert "need 4 cores, more than a 1-core VM" in p.pools[0].notes[0]


def test_job_shape_sizes_workers_to_the_widest_job_and_spans_wider_ones() -> None:
    # serial jobs: the configured 1-core workers
    [b] = boots(plan(by_vo(jobs("atlas", 3)), [Pool(pol())], site(), NOW), "atlas")
    assert (b.count, b.cores, b.memory_mib) == (3, 1, 2048)
    # 3-core jobs: 3-core workers, memory in proportion
    [b] = boots(plan(by_vo(jobs("atlas", 2, cores=3)), [Pool(pol())], site(), NOW), "atlas")
    assert (b.count, b.cores, b.memory_mib) == (2, 3, 6144)
    # a 20-core job on 8-core hosts: three whole-host workers (8 + 8 + 4 cores)
    [b] = boots(plan(by_vo(jobs("atlas", 1, cores=20)), [Pool(pol())], site(), NOW), "atlas")
    assert (b.count, b.cores, b.memory_mib) == (3, 8, 16384)
    assert plan(by_vo(jobs("atlas", 1, cores=20)), [Pool(pol())], site(), NOW).pools[0].unfit_jobs == 0


def test_host_shape_boots_whole_hosts() -> None:
    [b] = boots(plan(by_vo(jobs("atlas", 5)), [Pool(pol(shape="host"))], site(), NOW), "atlas")
    assert (b.count, b.cores, b.memory_mib) == (1, 8, 16384)  # five serial jobs share one host VM
    assert shape_for(pol(shape="host"), [], (0, 0)) == (1, 2048)  # host size unknown: configured


def test_spanning_jobs_use_idle_cores_of_any_size() -> None:
    # four idle 1-core workers and one 2-core: a 6-core job fits on them, nothing is booted
    vms = tuple(PoolVM(i, f"vc-{i}", V.JOINED_IDLE, 0.0, joined_at=0.0, idle_since=NOW - 10,
                       cores=1 if i < 4 else 2, memory_mib=2048) for i in range(5))
    p = plan(by_vo(jobs("atlas", 1, cores=6)), [Pool(pol(), vms)], site(), NOW)
    assert boots(p, "atlas") == [] and not [a for a in p.actions if isinstance(a, Drain)]
    # a 7-core job needs one more worker
    p = plan(by_vo(jobs("atlas", 1, cores=7)), [Pool(pol(), vms)], site(), NOW)
    assert [b.count for b in boots(p, "atlas")] == [1]


def test_the_oldest_wide_job_holds_the_reservation() -> None:
    # two VOs each wait for a 16-core job on a site of 24 cores: only the older one's is booted
    # for; the younger one cannot have all of its VMs, so it collects none
    demand = jobs("atlas", 1, cores=16, t=100.0) + jobs("cms", 1, cores=16, t=50.0)
    p = plan(by_vo(demand), [Pool(pol("atlas")), Pool(pol("cms"))], site(3), NOW)
    assert boots(p, "atlas") == [] and [b.count for b in boots(p, "cms")] == [2]
    # narrow jobs of the other VO are still served by the fair split
    p = plan(by_vo(demand + jobs("atlas", 2, t=200.0)), [Pool(pol("atlas")), Pool(pol("cms"))],
             site(3), NOW)
    assert [(b.count, b.cores) for b in boots(p, "atlas")] == [(1, 8)]  # both on one 8-core VM


def test_younger_wide_jobs_backfill_when_all_their_vms_fit() -> None:
    # 80 cores: room for both 16-core jobs, so the younger one is booted for too (EASY backfill)
    demand = jobs("atlas", 1, cores=16, t=100.0) + jobs("cms", 1, cores=16, t=50.0)
    p = plan(by_vo(demand), [Pool(pol("atlas")), Pool(pol("cms"))], site(), NOW)
    assert [b.count for b in boots(p, "cms")] == [2] and [b.count for b in boots(p, "atlas")] == [2]
    assert any("backfill" in n for n in p.pools[0].notes)
    # the narrow jobs' new VM has 6 cores to spare: the wide job needs 10 more, two VMs in all
    p = plan(by_vo(demand + jobs("atlas", 2, t=200.0)), [Pool(pol("atlas")), Pool(pol("cms"))],
             site(), NOW)
    assert [(b.count, b.cores) for b in boots(p, "atlas")] == [(3, 8)]
    # 40 cores: the reservation (cms, 16) first, then atlas' 16-core job; a third VO's 16-core
    # job does not fit whole any more and books nothing, though 8 cores stand free
    demand += jobs("lhcb", 1, cores=16, t=150.0)
    p = plan(by_vo(demand), [Pool(pol(vo)) for vo in ("atlas", "cms", "lhcb")], site(5), NOW)
    assert [b.count for b in boots(p, "atlas")] == [2] and boots(p, "lhcb") == []
    # the pool's boot rate still holds: one boot a minute, so the 2-VM job's VMs (both fit now)
    # are booted one this minute, one the next
    p = plan(by_vo(demand), [Pool(pol("atlas", max_boots_per_minute=1)), Pool(pol("cms"))], site(), NOW)
    assert [b.count for b in boots(p, "atlas")] == [1]


def test_the_reservation_drains_other_pools_on_a_full_site() -> None:
    # site full of atlas' busy 8-core workers; cms' 16-core job is the oldest wide job
    busy = tuple(PoolVM(i, f"a-{i}", V.JOINED_BUSY, 0.0, joined_at=0.0, running_jobs=8, cores=8,
                        memory_mib=16384) for i in range(4))
    pools = [Pool(pol("atlas", shape="host"), busy), Pool(pol("cms"))]
    demand = jobs("cms", 1, cores=16, t=10.0) + jobs("atlas", 8, t=20.0)
    p = plan(by_vo(demand), pools, site(4, free=0), NOW)
    drains = [a for a in p.actions if isinstance(a, Drain)]
    assert len(drains) == 2 and {d.vo for d in drains} == {"atlas"}
    assert any("reservation" in n for n in p.notes)


def test_a_bad_worker_shape_is_refused() -> None:
    with pytest.raises(InvalidInput, match="worker_shape must be one of fixed, job, host"):
        pol(shape="huge")


def _busy(vo: str, n: int, until: float | None, first_id: int = 0) -> tuple[PoolVM, ...]:
    return tuple(PoolVM(first_id + i, f"{vo}-{i}", V.JOINED_BUSY, 0.0, joined_at=0.0, running_jobs=1,
                        cores=8, memory_mib=16384, busy_until=until) for i in range(n))


def test_free_capacity_is_lent_to_jobs_that_end_before_the_reservation() -> None:
    # 3 hosts: atlas holds 2 busy 8-core VMs (ending in 2 h), one host is free. cms' 16-core job
    # holds the reservation and cannot start before atlas' VMs free: the free host is lent to
    # lhcb's 1-hour job, not to its 10-hour one, and not held idle for cms
    pools = [Pool(pol("atlas", shape="host"), _busy("atlas", 2, NOW + 7200)), Pool(pol("cms")),
             Pool(pol("lhcb", shape="host"))]
    demand = (jobs("cms", 1, cores=16, t=10.0) + jobs("lhcb", 1, cores=8, t=20.0)
              + [PendingJob("long", "lhcb", 8, 100, 36000, 30.0)])
    demand = [j if j.vo != "lhcb" or j.id == "long" else PendingJob(j.id, j.vo, 8, 100, 3600, 20.0)
              for j in demand]
    host = SiteCapacity.from_hosts(1000, ((0, 0), (0, 0), (8, 16384)), host_shape=HOST, reserve_after_s=0.0)
    p = plan(by_vo(demand), pools, host, NOW)
    assert boots(p, "cms") == [] and [b.count for b in boots(p, "lhcb")] == [1]
    assert any("lent 1 VMs" in n for n in p.notes)
    # the reservation still drains atlas for its cores
    assert {a.vo for a in p.actions if isinstance(a, Drain)} == {"atlas"}
    # atlas' VMs end in 30 min: the 1-hour job would delay the reservation; nothing is lent, and
    # cms' VMs are not booted yet either (they would stand idle for 30 min)
    pools[0] = Pool(pol("atlas", shape="host"), _busy("atlas", 2, NOW + 1800))
    p = plan(by_vo(demand), pools, host, NOW)
    assert boots(p, "lhcb") == [] and boots(p, "cms") == []
    # ... until the reservation's start is near: then its VMs boot into what is free
    pools[0] = Pool(pol("atlas", shape="host"), _busy("atlas", 2, NOW + 200))
    p = plan(by_vo(demand), pools, host, NOW)
    assert boots(p, "lhcb") == [] and [b.count for b in boots(p, "cms")] == [1]
    # ends unknown (the daemon's batch adapters do not report them): nothing is lent
    pools[0] = Pool(pol("atlas", shape="host"), _busy("atlas", 2, None))
    p = plan(by_vo(demand), pools, host, NOW)
    assert boots(p, "lhcb") == [] and [b.count for b in boots(p, "cms")] == [1]


def test_the_reservation_drains_the_vm_that_frees_soonest() -> None:
    # the site is full of busy VMs of two pools; the one expected to end first is drained
    pools = [Pool(pol("atlas", shape="host"), _busy("atlas", 2, NOW + 9000)),
             Pool(pol("babar", shape="host"), _busy("babar", 2, NOW + 600, first_id=10)), Pool(pol("cms"))]
    p = plan(by_vo(jobs("cms", 1, cores=16, t=5.0)), pools,
             site(4, free=0), NOW)
    drains = [a for a in p.actions if isinstance(a, Drain)]
    assert [d.vo for d in drains] == ["babar", "babar"]


def test_headroom_boots_ahead_of_demand_and_keeps_spares_from_the_idle_timeout() -> None:
    busy = tuple(PoolVM(i, f"a-{i}", V.JOINED_BUSY, 0.0, joined_at=0.0, running_jobs=1, cores=1,
                        memory_mib=2048) for i in range(8))
    # no job waits: without headroom nothing is booted; with 0.25, two spares (8 busy / 4)
    assert boots(plan({}, [Pool(pol(shape="fixed"), busy)], site(), NOW), "atlas") == []
    [b] = boots(plan({}, [Pool(pol(shape="fixed", headroom=0.25), busy)], site(), NOW), "atlas")
    assert b.count == 2
    # two idle VMs long past the idle timeout: kept as the spares, not drained; a third goes
    idle = tuple(PoolVM(10 + i, f"i-{i}", V.JOINED_IDLE, 0.0, joined_at=0.0, idle_since=0.0, cores=1,
                        memory_mib=2048) for i in range(3))
    p = plan({}, [Pool(pol(shape="fixed", headroom=0.25), busy + idle)], site(), NOW)
    assert boots(p, "atlas") == [] and len([a for a in p.actions if isinstance(a, Drain)]) == 1
    p = plan({}, [Pool(pol(shape="fixed"), busy + idle)], site(), NOW)
    assert len([a for a in p.actions if isinstance(a, Drain)]) == 3
    # waiting jobs come first: 3 pending jobs and 2 spares
    [b] = boots(plan(by_vo(jobs("atlas", 3)), [Pool(pol(shape="fixed", headroom=0.25), busy)], site(), NOW),
                "atlas")
    assert b.count == 5
    for bad in (-0.1, 11.0):
        with pytest.raises(InvalidInput, match="headroom"):
            pol(headroom=bad)


def test_wide_jobs_that_end_before_the_reservation_backfill_while_it_waits() -> None:
    # 4 hosts: atlas holds 2 busy 8-core VMs (ending in 2 h), 2 hosts are free. cms' 24-core job
    # holds the reservation and cannot start before atlas' VMs free. lhcb's 16-core job spans two
    # VMs: with a 1-hour limit it ends before the reservation's start and gets both VMs now (EASY
    # backfill); with a 10-hour limit it would delay the reservation and waits. Before this, no
    # wide job but the reservation's got a VM while the reservation waited: on the whole SDSC-SP2
    # the queue diverged (docs/simulator.md).
    pools = [Pool(pol("atlas", shape="host"), _busy("atlas", 2, NOW + 7200)), Pool(pol("cms")),
             Pool(pol("lhcb"))]
    host = SiteCapacity.from_hosts(1000, ((0, 0), (0, 0), (8, 16384), (8, 16384)), host_shape=HOST,
                                   reserve_after_s=0.0)
    short = [PendingJob("short", "lhcb", 16, 100, 3600, 20.0)]
    p = plan(by_vo(jobs("cms", 1, cores=24, t=10.0) + short), pools, host, NOW)
    assert boots(p, "cms") == [] and [(b.count, b.cores) for b in boots(p, "lhcb")] == [(2, 8)]
    assert any("reservation" in n for n in p.notes)
    long = [PendingJob("long", "lhcb", 16, 100, 36000, 20.0)]
    p = plan(by_vo(jobs("cms", 1, cores=24, t=10.0) + long), pools, host, NOW)
    assert boots(p, "lhcb") == [] and boots(p, "cms") == []
    # the reservation's start unknown (busy_until not reported): no backfill, as for lending
    pools[0] = Pool(pol("atlas", shape="host"), _busy("atlas", 2, None))
    p = plan(by_vo(jobs("cms", 1, cores=24, t=10.0) + short), pools, host, NOW)
    assert boots(p, "lhcb") == []


def _drains(p: Plan, vo: str) -> list[int]:
    return sorted(a.vm_id for a in p.actions if isinstance(a, Drain) and a.vo == vo)


def test_vms_lent_to_jobs_that_end_before_the_reservation_are_not_drained_for_it() -> None:
    # a full site: atlas' VM 0 ends in 30 min, VM 1 in 2 h. cms' 16-core job needs both hosts'
    # cores and cannot start before VM 1 frees: VM 0 frees its cores before then anyway, so only
    # VM 1 is drained (draining VM 0 would shut it down at its job's end and boot a new VM for
    # the next short job lent those cores, a boot per job)
    atlas = (*_busy("atlas", 1, NOW + 1800), *_busy("atlas", 1, NOW + 7200, first_id=1))
    pools = [Pool(pol("atlas", shape="host"), atlas), Pool(pol("cms"))]
    full = SiteCapacity.from_hosts(1000, ((0, 0), (0, 0)), host_shape=HOST, reserve_after_s=0.0)
    p = plan(by_vo(jobs("cms", 1, cores=16, t=10.0)), pools, full, NOW)
    assert _drains(p, "atlas") == [1] and boots(p, "cms") == []
    # the reservation is due (both end within the lending margin): both are drained, as before
    atlas = (*_busy("atlas", 1, NOW + 100), *_busy("atlas", 1, NOW + 200, first_id=1))
    pools[0] = Pool(pol("atlas", shape="host"), atlas)
    p = plan(by_vo(jobs("cms", 1, cores=16, t=10.0)), pools, full, NOW)
    assert _drains(p, "atlas") == [0, 1]
    # ends unknown: no lending, both drained
    pools[0] = Pool(pol("atlas", shape="host"), _busy("atlas", 2, None))
    p = plan(by_vo(jobs("cms", 1, cores=16, t=10.0)), pools, full, NOW)
    assert _drains(p, "atlas") == [0, 1]


def test_the_reserving_pool_releases_its_idle_vms_while_its_start_is_far() -> None:
    # cms' 24-core job holds the reservation with two idle 8-core VMs; the third VM's cores are
    # atlas', busy for 30 h: cms' idle VMs are drained (released) rather than held idle 30 h
    idle = tuple(PoolVM(20 + i, f"cms-{i}", V.JOINED_IDLE, 0.0, joined_at=0.0, idle_since=0.0,
                        cores=8, memory_mib=16384) for i in range(2))
    full = SiteCapacity.from_hosts(1000, ((0, 0),) * 4, host_shape=HOST, reserve_after_s=0.0)
    demand = by_vo(jobs("cms", 1, cores=24, t=10.0))
    far = Pool(pol("atlas", shape="host"), _busy("atlas", 2, NOW + 30 * 3600))
    p = plan(demand, [far, Pool(pol("cms"), idle)], full, NOW)
    assert _drains(p, "cms") == [20, 21] and boots(p, "cms") == []
    assert any("released 2 VMs of VO cms" in n for n in p.notes)
    # its start 2 h away: held (a release would be booted again at once)
    near = Pool(pol("atlas", shape="host"), _busy("atlas", 2, NOW + 7200))
    p = plan(demand, [near, Pool(pol("cms"), idle)], full, NOW)
    assert _drains(p, "cms") == [] and not any("released" in n for n in p.notes)
    # idle only 100 s (under the idle timeout): not released yet
    fresh = tuple(PoolVM(v.vm_id, v.name, V.JOINED_IDLE, 0.0, joined_at=0.0, idle_since=NOW - 100,
                         cores=8, memory_mib=16384) for v in idle)
    p = plan(demand, [far, Pool(pol("cms"), fresh)], full, NOW)
    assert _drains(p, "cms") == []
    # a released (drained, empty) VM is shut down while the start is far, resumed once near
    drained = (PoolVM(20, "cms-0", V.DRAINED, 0.0, joined_at=0.0, cores=8, memory_mib=16384), idle[1])
    p = plan(demand, [far, Pool(pol("cms"), drained)], full, NOW)
    assert [a.vm_id for a in p.actions if isinstance(a, Shutdown)] == [20]
    assert not [a for a in p.actions if isinstance(a, Resume)]
    p = plan(demand, [near, Pool(pol("cms"), drained)], full, NOW)
    assert [a.vm_id for a in p.actions if isinstance(a, Resume)] == [20]


def test_the_plan_says_when_time_alone_changes_it() -> None:
    # cms' 24-core job waits for atlas' busy VMs. While it is not due the plan names the time it
    # becomes due (its expected start less the lending margin); while its pool's VMs are
    # released, the end of that window first. A caller that plans only on events (the
    # simulator) wakes the planner then; nothing in the inputs marks those instants.
    idle = tuple(PoolVM(20 + i, f"cms-{i}", V.JOINED_IDLE, 0.0, joined_at=0.0, idle_since=0.0,
                        cores=8, memory_mib=16384) for i in range(2))
    full = SiteCapacity.from_hosts(1000, ((0, 0),) * 4, host_shape=HOST, reserve_after_s=0.0)
    demand = by_vo(jobs("cms", 1, cores=24, t=10.0))
    start = NOW + 7200
    p = plan(demand, [Pool(pol("atlas", shape="host"), _busy("atlas", 2, start)), Pool(pol("cms"), idle)],
             full, NOW)
    assert p.recheck_at == start - LEND_MARGIN_S
    start = NOW + 30 * 3600
    p = plan(demand, [Pool(pol("atlas", shape="host"), _busy("atlas", 2, start)), Pool(pol("cms"), idle)],
             full, NOW)
    assert any("released" in n for n in p.notes)
    assert p.recheck_at == start - LEND_MARGIN_S - RELEASE_HORIZON_S
    # due (the start within the margin), unknown (ends not reported), or no reservation: none
    for until in (NOW + 100, None):
        p = plan(demand, [Pool(pol("atlas", shape="host"), _busy("atlas", 2, until)), Pool(pol("cms"), idle)],
                 full, NOW)
        assert p.recheck_at is None
    assert plan(by_vo(jobs("cms", 3)), [Pool(pol("cms"))], site(), NOW).recheck_at is None


def test_the_oldest_wide_job_holds_the_reservation_only_once_it_has_waited() -> None:
    # the site's default: a wide job starts when all its VMs fit, as on a cloud; only one that
    # has waited RESERVE_AFTER_S holds the reservation (drains other pools, served first)
    busy = tuple(PoolVM(i, f"a-{i}", V.JOINED_BUSY, 0.0, joined_at=0.0, running_jobs=8, cores=8,
                        memory_mib=16384) for i in range(4))
    pools = [Pool(pol("atlas", shape="host"), busy), Pool(pol("cms"))]
    full = site(4, free=0, reserve_after_s=RESERVE_AFTER_S)
    assert SiteCapacity.from_hosts(1, ()).reserve_after_s == RESERVE_AFTER_S  # the default
    young = by_vo(jobs("cms", 1, cores=16, t=NOW - RESERVE_AFTER_S + 60))
    p = plan(young, pools, full, NOW)
    assert not [a for a in p.actions if isinstance(a, Drain)]
    assert not any("reservation" in n for n in p.notes)
    old = by_vo(jobs("cms", 1, cores=16, t=NOW - RESERVE_AFTER_S))
    p = plan(old, pools, full, NOW)
    assert {a.vo for a in p.actions if isinstance(a, Drain)} == {"atlas"}
    assert any("VO cms holds the site's reservation" in n for n in p.notes)


def test_a_wide_job_needing_more_vms_than_the_boot_rate_is_booted_over_several_minutes() -> None:
    # cms' 48-core job needs six 8-core VMs, all of which fit now; 4 boots a minute: four now
    # (before, it was never booted for by backfill and waited for the reservation)
    demand = by_vo(jobs("cms", 1, cores=48, t=NOW - 100))
    p = plan(demand, [Pool(pol("cms", max_boots_per_minute=4))], site(reserve_after_s=RESERVE_AFTER_S), NOW)
    assert [(b.count, b.cores) for b in boots(p, "cms")] == [(4, 8)]
    # a minute later, the four VMs joined: the other two
    joined = tuple(PoolVM(i, f"c-{i}", V.JOINED_IDLE, NOW - 60, joined_at=NOW, idle_since=NOW, cores=8,
                          memory_mib=16384) for i in range(4))
    p = plan(demand, [Pool(pol("cms", max_boots_per_minute=4), joined, (NOW - 60,) * 4)],
             site(6, reserve_after_s=RESERVE_AFTER_S), NOW + 1)
    assert [(b.count, b.cores) for b in boots(p, "cms")] == [(2, 8)]
    # not all of them fit the site now: none is booted (a job never collects part of its VMs)
    p = plan(demand, [Pool(pol("cms", max_boots_per_minute=4))], site(5, reserve_after_s=RESERVE_AFTER_S),
             NOW)
    assert boots(p, "cms") == []


def test_a_younger_wide_job_is_not_booted_for_when_an_older_one_of_its_pool_would_take_the_vms() -> None:
    # atlas waits with a 32-core job (older) and a 16-core one; 16 cores of it are busy and the
    # site has room for the 16-core job's VMs but not the 32-core job's. Its batch partition
    # is FCFS with EASY backfill: with 32 cores of nodes the older job holds them, so VMs booted
    # for the younger job would only stand idle; nothing is booted
    busy = tuple(PoolVM(i, f"a-{i}", V.JOINED_BUSY, 0.0, joined_at=0.0, running_jobs=1, cores=8,
                        memory_mib=16384, busy_until=NOW + 3600) for i in range(2))
    demand = by_vo(jobs("atlas", 1, cores=32, t=NOW - 200) + jobs("atlas", 1, cores=16, t=NOW - 100))
    host = SiteCapacity.from_hosts(1000, ((0, 0), (0, 0), (8, 16384), (8, 16384)), host_shape=HOST)
    p = plan(demand, [Pool(pol("atlas"), busy)], host, NOW)
    assert boots(p, "atlas") == []
    # a younger job that the older one cannot take even with the new VMs (it needs more than the
    # pool would have) is booted for: the partition starts it at once
    demand = by_vo(jobs("atlas", 1, cores=64, t=NOW - 200) + jobs("atlas", 1, cores=16, t=NOW - 100))
    p = plan(demand, [Pool(pol("atlas"), busy)], host, NOW)
    assert [(b.count, b.cores) for b in boots(p, "atlas")] == [(2, 8)]
