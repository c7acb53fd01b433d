"""The VO-pool planner: sizing, limits, fairness, hysteresis, safety, determinism."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vocloud.batch.base import BatchSystem, NodeState, PendingJob, VOMapper, WorkerNode, by_vo
from vocloud.elastic.failures import record_failure
from vocloud.elastic.planner import plan
from vocloud.elastic.policy import (
    BackoffState,
    Boot,
    Drain,
    DrainCause,
    Plan,
    Pool,
    PoolPolicy,
    PoolVM,
    PoolVMState,
    Resume,
    Shutdown,
    ShutdownCause,
    SiteCapacity,
)
from vocloud.errors import InvalidInput

V = PoolVMState
BIG = SiteCapacity(max_vms=10_000, free_cores=1_000_000, free_memory_mib=10**9)
NOW = 10_000.0


def pol(vo: str = "atlas", **kw: Any) -> PoolPolicy:
    base: dict[str, Any] = dict(image=f"img-{vo}", cores_per_vm=4, memory_mib_per_vm=8192,
                                max_vms=100, max_boots_per_minute=100)
    base.update(kw)
    return PoolPolicy(vo, **base)


def jobs(vo: str, n: int, cores: int = 1, mem: int = 1000, t: float = 0.0) -> list[PendingJob]:
    return [PendingJob(f"{vo}.{cores}.{mem}.{i}", vo, cores, mem, 3600, t) for i in range(n)]


def vm(i: int, state: V, **kw: Any) -> PoolVM:
    kw.setdefault("started_at", 0.0)
    return PoolVM(i, f"vc-{i}", state, **kw)


def run(demand: list[PendingJob], *pools: Pool, site: SiteCapacity = BIG, now: float = NOW) -> Plan:
    return plan(by_vo(demand), list(pools), site, now)


def kinds(p: Plan, kind: type) -> list[Any]:
    return [a for a in p.actions if isinstance(a, kind)]


# --- sizing from pending jobs -------------------------------------------------------------------


def test_scale_up_from_zero_with_one_core_jobs() -> None:
    p = run(jobs("atlas", 12), Pool(pol()))
    assert p.boots("atlas") == 3
    [boot] = kinds(p, Boot)
    assert boot.reason == "boot 3: 12 pending 1-core jobs"
    assert boot.image == "img-atlas"
    st_ = p.for_vo("atlas")
    assert st_ is not None
    assert (st_.pending_jobs, st_.pending_cores, st_.fitting_jobs, st_.desired) == (12, 12, 12, 3)


def test_multi_core_jobs_are_bin_packed_not_summed() -> None:
    # 5 three-core jobs: 15 cores would be 4 VMs by summing; only one 3-core job fits a 4-core VM.
    assert run(jobs("atlas", 5, cores=3), Pool(pol())).boots("atlas") == 5
    # 3+1, 3+1, 2+2: first-fit decreasing packs these into 3 VMs.
    mix = jobs("atlas", 2, cores=3) + jobs("atlas", 2, cores=2) + jobs("atlas", 2, cores=1)
    assert run(mix, Pool(pol())).boots("atlas") == 3


def test_memory_bound_jobs() -> None:
    # 8 cores / 16000 MiB VMs, 1-core jobs of 6000 MiB: memory allows 2 per VM, not 8.
    p = run(jobs("atlas", 10, mem=6000), Pool(pol(cores_per_vm=8, memory_mib_per_vm=16000)))
    assert p.boots("atlas") == 5


def test_jobs_that_fit_no_vm_are_reported_not_booted_for() -> None:
    p = run(jobs("atlas", 2, cores=16) + jobs("atlas", 1, mem=50_000), Pool(pol(cores_per_vm=8)))
    assert p.actions == ()
    st_ = p.for_vo("atlas")
    assert st_ is not None and st_.unfit_jobs == 3 and st_.fitting_jobs == 0
    assert "2 jobs need 16 cores, more than a 8-core VM: not booted for" in st_.notes
    assert any("50000 MiB" in n for n in st_.notes)


def test_booting_vms_count_as_capacity_on_the_way() -> None:
    booting = Pool(pol(), vms=(vm(1, V.BOOTING, started_at=NOW - 10),
                               vm(2, V.REQUESTED, started_at=NOW - 10)))
    p = run(jobs("atlas", 12), booting)
    assert p.boots("atlas") == 1
    [boot] = kinds(p, Boot)
    assert boot.reason == "boot 1: 12 pending 1-core jobs, 8 cores already booting"


def test_never_boots_again_for_demand_already_covered() -> None:
    first = run(jobs("atlas", 12), Pool(pol()))
    vms = tuple(vm(i, V.BOOTING, started_at=NOW) for i in range(first.boots("atlas")))
    again = run(jobs("atlas", 12), Pool(pol(), vms=vms), now=NOW + 30)
    assert again.actions == ()


def test_idle_and_partly_busy_vms_absorb_demand() -> None:
    vms = (vm(1, V.JOINED_IDLE, idle_since=NOW), vm(2, V.JOINED_BUSY, running_jobs=1,
                                                    free_cores=3, free_memory_mib=6000))
    assert run(jobs("atlas", 7), Pool(pol(), vms=vms)).actions == ()
    assert run(jobs("atlas", 8), Pool(pol(), vms=vms)).boots("atlas") == 1


def test_min_pending_time_ignores_jobs_the_batch_system_is_about_to_start() -> None:
    fresh = jobs("atlas", 4, t=NOW - 5)
    assert run(fresh, Pool(pol(min_pending_s=30))).actions == ()
    assert run(fresh, Pool(pol(min_pending_s=30)), now=NOW + 30).boots("atlas") == 1


# --- pool and site limits -----------------------------------------------------------------------


def test_min_vms_without_demand() -> None:
    p = run([], Pool(pol(min_vms=2)))
    [boot] = kinds(p, Boot)
    assert boot.count == 2 and "below min 2" in boot.reason


def test_max_vms_caps_boots_and_says_so() -> None:
    p = run(jobs("atlas", 400), Pool(pol(max_vms=5), vms=(vm(1, V.JOINED_BUSY, running_jobs=4),)))
    assert p.boots("atlas") == 4
    st_ = p.for_vo("atlas")
    assert st_ is not None and st_.desired == 5
    assert any("exceeds max 5" in n for n in st_.notes)


def test_site_vm_cap_counts_every_pool_vm() -> None:
    other = Pool(pol("cms"), vms=(vm(9, V.JOINED_BUSY, running_jobs=4), vm(10, V.DRAINING)))
    p = run(jobs("atlas", 40), Pool(pol()), other, site=replace(BIG, max_vms=5))
    assert p.boots("atlas") == 3
    st_ = p.for_vo("atlas")
    assert st_ is not None and any("site VM cap" in n for n in st_.notes)


def test_site_free_cores_and_memory() -> None:
    site = SiteCapacity(max_vms=100, free_cores=10, free_memory_mib=100_000)
    assert run(jobs("atlas", 40), Pool(pol()), site=site).boots("atlas") == 2
    site = SiteCapacity(max_vms=100, free_cores=100, free_memory_mib=20_000)
    assert run(jobs("atlas", 40), Pool(pol()), site=site).boots("atlas") == 2


def test_requested_vms_not_yet_placed_are_subtracted_from_free_capacity() -> None:
    site = SiteCapacity(max_vms=100, free_cores=8, free_memory_mib=100_000)
    pool = Pool(pol(), vms=(vm(1, V.REQUESTED, started_at=NOW),))
    assert run(jobs("atlas", 12), pool, site=site).boots("atlas") == 1


def test_requested_vms_count_once_against_the_site_cap() -> None:
    pool = Pool(pol(), vms=(vm(1, V.REQUESTED, started_at=NOW),))
    assert run(jobs("atlas", 40), pool, site=replace(BIG, max_vms=3)).boots("atlas") == 2


def test_memory_fit_is_exact_at_the_vm_boundary() -> None:
    # Rounding job memory for grouping must never turn a job that fits into an unfit one.
    odd = pol(cores_per_vm=2, memory_mib_per_vm=3900)
    p = run(jobs("atlas", 2, mem=3900) + jobs("atlas", 1, mem=3901), Pool(odd))
    st_ = p.for_vo("atlas")
    assert st_ is not None and (st_.fitting_jobs, st_.unfit_jobs) == (2, 1)
    assert p.boots("atlas") == 2
    assert any("3901 MiB, more than a 3900 MiB VM" in n for n in st_.notes)


def test_busy_vm_free_memory_limits_what_it_absorbs() -> None:
    # 3 free cores but memory for only two 1000 MiB jobs (memory is rounded up to 64 MiB).
    busy = vm(1, V.JOINED_BUSY, running_jobs=1, free_cores=3, free_memory_mib=2100)
    assert run(jobs("atlas", 2, mem=1000), Pool(pol(), vms=(busy,))).actions == ()
    assert run(jobs("atlas", 3, mem=1000), Pool(pol(), vms=(busy,))).boots("atlas") == 1


def test_no_vm_is_asked_for_that_no_host_can_hold() -> None:
    # 12 free cores in total, but spread 6 + 6: an 8-core VM fits nowhere.
    site = SiteCapacity.from_hosts(100, ((6, 64_000), (6, 64_000)))
    p = run(jobs("atlas", 8), Pool(pol(cores_per_vm=8)), site=site)
    assert p.actions == ()
    st_ = p.for_vo("atlas")
    assert st_ is not None and any("no host has 8 cores" in n for n in st_.notes)
    # Smaller VMs of another pool still fit the same hosts.
    p = run(jobs("atlas", 8) + jobs("cms", 8), Pool(pol(cores_per_vm=8)), Pool(pol("cms")),
            site=site)
    assert (p.boots("atlas"), p.boots("cms")) == (0, 2)


def test_weights_split_scarce_capacity() -> None:
    site = replace(BIG, max_vms=9)
    a, b = Pool(pol("a", weight=2)), Pool(pol("b", weight=1))
    p = run(jobs("a", 80) + jobs("b", 80), a, b, site=site)
    assert (p.boots("a"), p.boots("b")) == (6, 3)
    assert any("split by weight" in n for n in p.notes)


def test_fair_share_counts_vms_a_pool_already_has() -> None:
    a = Pool(pol("a"), vms=tuple(vm(i, V.JOINED_BUSY, running_jobs=4) for i in range(4)))
    p = run(jobs("a", 80) + jobs("b", 80), a, Pool(pol("b")), site=replace(BIG, max_vms=10))
    assert (p.boots("a"), p.boots("b")) == (1, 5)


def test_a_pool_that_wants_little_leaves_the_rest_to_others() -> None:
    p = run(jobs("a", 4) + jobs("b", 80), Pool(pol("a", weight=5)), Pool(pol("b")),
            site=replace(BIG, max_vms=9))
    assert (p.boots("a"), p.boots("b")) == (1, 8)


def test_minimums_are_served_before_fair_share() -> None:
    p = run(jobs("a", 80), Pool(pol("a", weight=10)), Pool(pol("b", min_vms=2)),
            site=replace(BIG, max_vms=4))
    assert (p.boots("a"), p.boots("b")) == (2, 2)


def test_rate_limit_counts_boots_of_the_last_minute() -> None:
    pool = Pool(pol(max_boots_per_minute=5), recent_boots=(NOW - 100, NOW - 30, NOW - 10, NOW - 1))
    p = run(jobs("atlas", 40), pool)
    assert p.boots("atlas") == 2
    st_ = p.for_vo("atlas")
    assert st_ is not None and any("rate limit" in n for n in st_.notes)
    assert run(jobs("atlas", 40), pool, now=NOW + 60).boots("atlas") == 5


def test_rate_limit_holds_even_without_boot_history() -> None:
    vms = tuple(vm(i, V.BOOTING, started_at=NOW - 5) for i in range(5))
    assert run(jobs("atlas", 400), Pool(pol(max_boots_per_minute=5), vms=vms)).boots("atlas") == 0


# --- scale down, safety, hysteresis -------------------------------------------------------------


def test_idle_timeout_then_drain_then_shutdown() -> None:
    pool = Pool(pol(idle_timeout_s=300), vms=(vm(17, V.JOINED_IDLE, idle_since=NOW - 200),))
    assert run([], pool).actions == ()
    later = run([], pool, now=NOW + 101)
    assert later.actions == (Drain("atlas", 17, "drain vm 17: idle 301 s > idle timeout 300 s, "
                                   "0 pending jobs", "vc-17", DrainCause.IDLE),)
    drained = Pool(pol(), vms=(vm(17, V.DRAINED, running_jobs=0),))
    assert run([], drained).actions == (Shutdown("atlas", 17, "shutdown vm 17: drained and empty",
                                                 "vc-17"),)


def test_idle_drain_respects_min() -> None:
    vms = tuple(vm(i, V.JOINED_IDLE, idle_since=0.0) for i in range(3))
    p = run([], Pool(pol(min_vms=2), vms=vms))
    assert [a.vm_id for a in kinds(p, Drain)] == [0]


def test_busy_vms_are_never_drained_for_idleness() -> None:
    vms = tuple(vm(i, V.JOINED_BUSY, running_jobs=1, idle_since=None) for i in range(3))
    assert run([], Pool(pol(), vms=vms)).actions == ()


def test_draining_vm_with_jobs_is_not_shut_down() -> None:
    vms = (vm(1, V.DRAINING, running_jobs=2), vm(2, V.DRAINED, running_jobs=1))
    assert kinds(run([], Pool(pol(), vms=vms)), Shutdown) == []


def test_lowering_max_while_busy_kills_nothing() -> None:
    vms = tuple(vm(i, V.JOINED_BUSY, running_jobs=i + 1) for i in range(4))
    p = run(jobs("atlas", 10), Pool(pol(max_vms=2), vms=vms))
    assert kinds(p, Shutdown) == [] and kinds(p, Boot) == []
    drains = kinds(p, Drain)
    assert [d.vm_id for d in drains] == [0, 1]  # fewest running jobs first
    assert all(d.cause is DrainCause.SURPLUS for d in drains)
    assert "2 running jobs finish first" in drains[1].reason


def test_lowering_max_prefers_idle_and_unplaced_vms() -> None:
    vms = (vm(1, V.JOINED_BUSY, running_jobs=1), vm(2, V.JOINED_IDLE, idle_since=NOW),
           vm(3, V.REQUESTED, started_at=NOW), vm(4, V.JOINED_BUSY, running_jobs=3))
    p = run([], Pool(pol(max_vms=2), vms=vms))
    assert [(type(a).__name__, getattr(a, "vm_id", None)) for a in p.actions] == [
        ("Shutdown", 3), ("Drain", 2)]


def test_resume_a_draining_vm_instead_of_booting() -> None:
    vms = (vm(1, V.DRAINED), vm(2, V.DRAINING, running_jobs=3))
    p = run(jobs("atlas", 4), Pool(pol(), vms=vms))
    assert [a.vm_id for a in kinds(p, Resume)] == [1]
    assert kinds(p, Boot) == [] and kinds(p, Shutdown) == []
    p = run(jobs("atlas", 12), Pool(pol(), vms=vms))
    assert [a.vm_id for a in kinds(p, Resume)] == [1, 2] and p.boots("atlas") == 1


def test_vm_past_lifetime_is_drained_not_resumed_and_replaced() -> None:
    vms = (vm(1, V.JOINED_BUSY, running_jobs=2, started_at=0.0), vm(2, V.DRAINED, started_at=0.0))
    p = run(jobs("atlas", 4), Pool(pol(max_lifetime_s=3600), vms=vms))
    [drain] = kinds(p, Drain)
    assert drain.vm_id == 1 and drain.cause is DrainCause.LIFETIME
    assert kinds(p, Resume) == []
    assert [a.vm_id for a in kinds(p, Shutdown)] == [2]
    assert p.boots("atlas") == 1


def test_no_idle_drain_right_after_a_boot() -> None:
    pool = Pool(pol(idle_timeout_s=60, scale_down_delay_s=300),
                vms=(vm(1, V.JOINED_IDLE, idle_since=NOW - 100, started_at=NOW - 200),))
    assert run([], pool).actions == ()
    assert len(kinds(run([], pool, now=NOW + 101), Drain)) == 1


# --- failures -----------------------------------------------------------------------------------


def test_boot_timeout_is_shut_down_and_replaced() -> None:
    pool = Pool(pol(boot_timeout_s=300), vms=(vm(5, V.BOOTING, started_at=NOW - 301),))
    p = run(jobs("atlas", 4), pool)
    [sd] = kinds(p, Shutdown)
    assert sd.vm_id == 5 and sd.cause is ShutdownCause.BOOT_TIMEOUT
    assert p.boots("atlas") == 1


def test_failing_image_backs_off_and_other_vos_are_unaffected() -> None:
    bad = record_failure(BackoffState(key="img-a"), NOW - 10)
    a = Pool(pol("a"), backoff=bad)
    p = run(jobs("a", 40) + jobs("b", 40), a, Pool(pol("b")), site=replace(BIG, max_vms=12))
    assert (p.boots("a"), p.boots("b")) == (0, 10)
    st_ = p.for_vo("a")
    assert st_ is not None and any("backing off" in n for n in st_.notes)
    # After the backoff: one probe VM at a time, until one joins.
    assert run(jobs("a", 40), a, now=NOW + 60).boots("a") == 1
    probing = replace(a, vms=(vm(1, V.BOOTING, started_at=NOW + 60),))
    assert run(jobs("a", 40), probing, now=NOW + 70).boots("a") == 0


def test_down_node_is_reaped() -> None:
    pool = Pool(pol(down_grace_s=60), vms=(vm(3, V.DOWN, state_since=NOW - 61),))
    [sd] = kinds(run([], pool), Shutdown)
    assert sd.cause is ShutdownCause.DOWN


def test_stockout_waits_without_failing() -> None:
    pool = Pool(pol(), vms=(vm(3, V.REQUESTED, started_at=0.0),))
    p = run(jobs("atlas", 4), pool, site=SiteCapacity(100, 0, 0))
    assert p.actions == ()


# --- inputs, determinism ------------------------------------------------------------------------


def test_jobs_of_a_vo_without_pool_are_reported() -> None:
    p = run(jobs("nobody", 3), Pool(pol()))
    assert p.notes == ("3 pending jobs of VO nobody: no pool, not booted for",)


def test_bad_policy_and_duplicate_pools_are_refused() -> None:
    with pytest.raises(InvalidInput, match="max_vms must be >= min_vms"):
        pol(min_vms=3, max_vms=2)
    with pytest.raises(InvalidInput, match="weight"):
        pol(weight=0)
    with pytest.raises(InvalidInput, match="same VO"):
        run([], Pool(pol()), Pool(pol()))


def test_plan_is_deterministic_whatever_the_input_order() -> None:
    demand = jobs("a", 30, cores=2) + jobs("b", 50) + jobs("c", 7, cores=4, mem=3000)
    vms = tuple(vm(i, random.Random(i).choice(list(V)), running_jobs=i % 2, started_at=NOW - i)
                for i in range(30))
    pools = [Pool(pol("a", weight=2), vms=vms[:10]), Pool(pol("b"), vms=vms[10:20]),
             Pool(pol("c"), vms=vms[20:])]
    site = replace(BIG, max_vms=45)
    ref = run(demand, *pools, site=site)
    rng = random.Random(7)
    for _ in range(5):
        shuffled_jobs = demand[:]
        rng.shuffle(shuffled_jobs)
        shuffled_pools = [replace(p, vms=tuple(rng.sample(p.vms, len(p.vms)))) for p in pools]
        rng.shuffle(shuffled_pools)
        assert run(shuffled_jobs, *shuffled_pools, site=site) == ref


def test_tiny_vm_memory_still_packs_by_memory() -> None:
    # A 32 MiB VM (a test guest): memory is still measured finely enough to pack 4 x 8 MiB.
    p = run(jobs("atlas", 8, mem=8), Pool(pol(cores_per_vm=4, memory_mib_per_vm=32)))
    assert p.boots("atlas") == 2


# --- the batch interface the planner's callers use ----------------------------------------------


def test_vo_mapper_rules() -> None:
    slurm = VOMapper("account", table={"atlasprd": "atlas"})
    assert slurm.vo_for({"account": "atlasprd"}) == "atlas"
    assert slurm.vo_for({"account": "cms"}) == "cms"
    assert slurm.vo_for({}) is None
    strict = VOMapper("project", table={"p1": "lhcb"}, identity=False, default="ops")
    assert strict.vo_for({"project": "other"}) == "ops"
    condor = VOMapper("AccountingGroup", prefix_strip="group_", split=".")
    assert condor.vo_for({"AccountingGroup": "group_atlas.prod.alice"}) == "atlas"


def test_by_vo_and_the_protocol() -> None:
    grouped = by_vo(jobs("a", 2) + jobs("b", 1) + jobs("a", 1, cores=2))
    assert {vo: len(js) for vo, js in grouped.items()} == {"a": 3, "b": 1}

    class Fake:
        name = "fake"

        def pending(self) -> list[PendingJob]:
            return []

        def nodes(self) -> list[WorkerNode]:
            return [WorkerNode("vc-1", NodeState.DRAINED, 4, 8192, 0, "a", 10.0)]

        def drain(self, node: str, reason: str) -> None: ...

        def resume(self, node: str) -> None: ...

        def remove(self, node: str) -> None: ...

    assert isinstance(Fake(), BatchSystem)
    assert not isinstance(object(), BatchSystem)


# --- a tiny fake world: the planner in a loop ---------------------------------------------------


@dataclass
class _WVM:
    id: int
    vo: str
    state: V
    started: float
    joined: float | None = None
    idle_since: float | None = None
    jobs: list[float] = field(default_factory=list)  # end times


@dataclass
class World:
    """Boots take ``boot_s``; 1-core jobs run ``run_s`` on the first VM of their VO with a free
    core. ``site_vms`` caps the VMs of all pools, as a full site does."""

    policies: list[PoolPolicy]
    boot_s: float = 60.0
    run_s: float = 250.0
    site_vms: int = 10_000
    vms: dict[int, _WVM] = field(default_factory=dict)
    queue: list[PendingJob] = field(default_factory=list)
    boots: dict[str, list[float]] = field(default_factory=dict)
    log: list[tuple[float, Any]] = field(default_factory=list)
    next_id: int = 0

    def step(self, now: float) -> Plan:
        self._advance(now)
        p = plan(by_vo(self.queue), self._pools(), replace(BIG, max_vms=self.site_vms), now)
        for a in p.actions:
            self._apply(a, now)
        return p

    def size(self, vo: str) -> int:
        return sum(1 for v in self.vms.values() if v.vo == vo and v.state is not V.DRAINING)

    def _advance(self, now: float) -> None:
        for v in self.vms.values():
            if v.state is V.BOOTING and now - v.started >= self.boot_s:
                v.state, v.joined, v.idle_since = V.JOINED_IDLE, now, now
            v.jobs = [t for t in v.jobs if t > now]
            if not v.jobs and v.state is V.JOINED_BUSY:
                v.state, v.idle_since = V.JOINED_IDLE, now
            if not v.jobs and v.state is V.DRAINING:
                v.state = V.DRAINED
        cores = {p.vo: p.cores_per_vm for p in self.policies}
        for v in sorted(self.vms.values(), key=lambda v: v.id):
            mine = [j for j in self.queue if j.vo == v.vo]
            while mine and v.state in (V.JOINED_IDLE, V.JOINED_BUSY) and len(v.jobs) < cores[v.vo]:
                self.queue.remove(mine.pop(0))
                v.jobs.append(now + self.run_s)
                v.state, v.idle_since = V.JOINED_BUSY, None

    def _pools(self) -> list[Pool]:
        return [Pool(p, vms=tuple(
            PoolVM(v.id, f"vc-{v.id}", v.state, v.started, v.joined, v.idle_since, len(v.jobs))
            for v in self.vms.values() if v.vo == p.vo), recent_boots=tuple(self.boots.get(p.vo, [])))
            for p in self.policies]

    def _apply(self, a: Any, now: float) -> None:
        self.log.append((now, a))
        if isinstance(a, Boot):
            for _ in range(a.count):
                self.vms[self.next_id] = _WVM(self.next_id, a.vo, V.BOOTING, now)
                self.next_id += 1
                self.boots.setdefault(a.vo, []).append(now)
            return
        v = self.vms[a.vm_id]
        if isinstance(a, Drain):
            v.state = V.DRAINING if v.jobs else V.DRAINED
        elif isinstance(a, Resume):
            v.state = V.JOINED_BUSY if v.jobs else V.JOINED_IDLE
            v.idle_since = None if v.jobs else now
        elif isinstance(a, Shutdown):
            assert not v.jobs, f"shut down vm {v.id} with running jobs"
            del self.vms[a.vm_id]


def test_bursty_queue_does_not_flap() -> None:
    # A burst of 8 short jobs every 400 s; the idle timeout (600 s) outlasts the gaps, so the
    # pool should boot 2 VMs once, keep them through the bursts, and drain them at the end.
    w = World([pol(idle_timeout_s=600, scale_down_delay_s=120)])
    t = 0.0
    while t < 6000:
        if t % 400 == 0 and t < 3000:
            w.queue.extend(jobs("atlas", 8, t=t))
        w.step(t)
        t += 20
    booted = [a for _, a in w.log if isinstance(a, Boot)]
    drained = [(ts, a) for ts, a in w.log if isinstance(a, Drain)]
    assert sum(b.count for b in booted) == 2
    assert all(ts > 3000 for ts, _ in drained)  # nothing drained while bursts keep coming
    assert w.vms == {} and w.queue == []  # back to min 0, every job ran
    cycles: dict[float, set[str]] = {}
    for ts, a in w.log:
        cycles.setdefault(ts, set()).add(type(a).__name__)
    assert not any({"Boot", "Drain"} <= kinds_ for kinds_ in cycles.values())


def test_demand_returning_resumes_instead_of_booting() -> None:
    w = World([pol(idle_timeout_s=100, scale_down_delay_s=0)], run_s=100)
    w.queue.extend(jobs("atlas", 4))
    t = 0.0
    while not any(isinstance(a, Drain) for _, a in w.log):
        w.step(t)
        t += 20
    # Demand comes back in the cycle after the drain, before the drained VM is shut down.
    w.queue.extend(jobs("atlas", 2, t=t))
    p = w.step(t)
    assert kinds(p, Resume) and not kinds(p, Boot) and not kinds(p, Shutdown)
    assert sum(b.count for _, b in w.log if isinstance(b, Boot)) == 1


def test_a_full_site_moves_to_the_weights_as_jobs_end() -> None:
    # VO a fills a 9-VM site first; then b (weight 2) queues as much. With rebalancing the site
    # converges to 3/6 by draining a's VMs as their jobs end; no job is killed; and it then holds
    # still (no VM drained or booted in the last cycles while both queues stay deep).
    w = World([pol("a", cores_per_vm=1, max_boots_per_minute=5),
               pol("b", cores_per_vm=1, weight=2, max_boots_per_minute=5)],
              site_vms=9, run_s=300)
    w.queue.extend(jobs("a", 400))
    t = 0.0
    for _ in range(30):
        w.step(t)
        t += 20
    assert w.size("a") == 9
    w.queue.extend(jobs("b", 400, t=t))
    for _ in range(120):
        w.step(t)
        t += 20
    assert (w.size("a"), w.size("b")) == (3, 6)
    late = [a for ts, a in w.log if ts > t - 600 and not isinstance(a, Shutdown)]
    assert late == []
    causes = {a.cause for _, a in w.log if isinstance(a, Drain)}
    assert causes == {DrainCause.REBALANCE}


def test_rebalance_drains_the_pool_above_its_share_fewest_jobs_first() -> None:
    a = Pool(pol("a", cores_per_vm=1), vms=tuple(vm(i, V.JOINED_BUSY, running_jobs=1 + i % 3)
                                                 for i in range(10)))
    p = run(jobs("a", 50) + jobs("b", 50), a, Pool(pol("b", cores_per_vm=1)),
            site=replace(BIG, max_vms=10))
    drains = kinds(p, Drain)
    assert len(drains) == 5 and {d.cause for d in drains} == {DrainCause.REBALANCE}
    assert sorted(d.vm_id for d in drains) == [0, 1, 3, 6, 9]  # 1 running job each, then 2
    assert kinds(p, Shutdown) == [] and p.boots("b") == 0
    # Next cycle: the drained VMs are capacity in transit; a's demand does not resume them and
    # nothing more is drained.
    again = Pool(pol("a", cores_per_vm=1), vms=tuple(
        replace(v, state=V.DRAINING) if v.vm_id in {d.vm_id for d in drains} else v for v in a.vms))
    p2 = run(jobs("a", 50) + jobs("b", 50), again, Pool(pol("b", cores_per_vm=1)),
             site=replace(BIG, max_vms=10))
    assert p2.actions == ()


def test_rebalance_off_leaves_running_pools_alone() -> None:
    a = Pool(pol("a"), vms=tuple(vm(i, V.JOINED_BUSY, running_jobs=4) for i in range(10)))
    p = run(jobs("a", 50) + jobs("b", 50), a, Pool(pol("b")),
            site=replace(BIG, max_vms=10, rebalance=False))
    assert p.actions == ()


def test_rebalance_respects_the_donor_min() -> None:
    a = Pool(pol("a", min_vms=9), vms=tuple(vm(i, V.JOINED_BUSY, running_jobs=4) for i in range(10)))
    p = run(jobs("b", 50), a, Pool(pol("b")), site=replace(BIG, max_vms=10))
    assert [d.vm_id for d in kinds(p, Drain)] == [0]


# --- properties ---------------------------------------------------------------------------------

_states = st.sampled_from(list(V))


@st.composite
def _scenario(draw: st.DrawFn) -> tuple[list[PendingJob], list[Pool], SiteCapacity, float]:
    now = 100_000.0
    pools, demand, vid = [], [], 0
    for i in range(draw(st.integers(1, 4))):
        vo = f"vo{i}"
        lo = draw(st.integers(0, 3))
        policy = pol(vo, min_vms=lo, max_vms=draw(st.integers(lo, 12)),
                     weight=draw(st.sampled_from([0.5, 1.0, 3.0])),
                     cores_per_vm=draw(st.sampled_from([1, 4, 8])),
                     max_boots_per_minute=draw(st.integers(1, 6)),
                     max_lifetime_s=draw(st.sampled_from([None, 5000.0])))
        vms = []
        for _ in range(draw(st.integers(0, 8))):
            state = draw(_states)
            running = draw(st.integers(0, 3)) if state in (V.JOINED_BUSY, V.DRAINING,
                                                              V.DRAINED, V.DOWN) else 0
            vms.append(vm(vid, state, running_jobs=running,
                          started_at=now - draw(st.integers(0, 9000)),
                          idle_since=now - draw(st.integers(0, 900))))
            vid += 1
        pools.append(Pool(policy, vms=tuple(vms)))
        demand += jobs(vo, draw(st.integers(0, 60)), cores=draw(st.sampled_from([1, 2, 4, 16])))
    site = SiteCapacity(draw(st.integers(0, 60)), draw(st.integers(0, 300)), 10**7)
    return demand, pools, site, now


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_scenario())
def test_property_safe_and_within_caps(s: tuple[list[PendingJob], list[Pool], SiteCapacity, float]) -> None:
    demand, pools, site, now = s
    p = plan(by_vo(demand), pools, site, now)
    vms = {v.vm_id: v for pool in pools for v in pool.vms}
    for a in kinds(p, Shutdown):
        v = vms[a.vm_id]
        assert v.running_jobs == 0 or v.state is V.DOWN, a
        assert v.state not in (V.JOINED_IDLE, V.JOINED_BUSY, V.DRAINING), a
    for a in kinds(p, Resume):
        assert vms[a.vm_id].state in (V.DRAINING, V.DRAINED)
    for a in kinds(p, Drain):
        assert vms[a.vm_id].state in (V.JOINED_IDLE, V.JOINED_BUSY)
    held = sum(1 for v in vms.values() if v.state is not V.GONE)
    boots = sum(b.count for b in kinds(p, Boot))
    assert boots == 0 or held + boots <= site.max_vms
    requested_cores = sum(pool.policy.cores_per_vm for pool in pools for v in pool.vms
                          if v.state is V.REQUESTED)
    boot_cores = sum(b.count * next(x.policy.cores_per_vm for x in pools if x.policy.vo == b.vo)
                     for b in kinds(p, Boot))
    assert boots == 0 or requested_cores + boot_cores <= site.free_cores
    for pool in pools:
        status = p.for_vo(pool.policy.vo)
        assert status is not None
        assert p.boots(pool.policy.vo) <= pool.policy.max_boots_per_minute
        if p.boots(pool.policy.vo):
            assert status.desired <= pool.policy.max_vms
    ids = [a.vm_id for a in p.actions if not isinstance(a, Boot)]
    assert len(ids) == len(set(ids)), "one action per VM per plan"
    for pool in pools:
        vo = pool.policy.vo
        shrink = [a for a in kinds(p, Drain) if a.vo == vo and a.cause in (DrainCause.IDLE,
                                                                          DrainCause.REBALANCE)]
        assert not (shrink and p.boots(vo)), "boot and drain the same pool in one plan"
        if any(a.cause is DrainCause.REBALANCE for a in shrink):
            live = sum(1 for v in pool.vms if v.state in (V.REQUESTED, V.BOOTING, V.JOINED_IDLE,
                                                          V.JOINED_BUSY))
            assert live - len(shrink) >= pool.policy.min_vms
