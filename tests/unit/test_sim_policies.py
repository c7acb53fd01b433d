"""Peer policies in the simulator: COBalD through its real controllers, cloudscheduler, Vcycle."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from vocloud.batch.base import PendingJob
from vocloud.elastic.policy import Boot, Drain, Pool, PoolPolicy, PoolVM, Shutdown, SiteCapacity
from vocloud.elastic.policy import PoolVMState as V
from vocloud.errors import InvalidInput
from vocloud.sim import compare
from vocloud.sim.elastic import ElasticKnobs
from vocloud.sim.policies import PEERS
from vocloud.sim.policies.base import (
    FreeSlots,
    PeerContext,
    PeerPolicy,
    Room,
    grant,
    grant_shaped,
    job_vms,
    worker_size,
)
from vocloud.sim.policies.cloudscheduler import CloudScheduler
from vocloud.sim.policies.vcycle import Vcycle
from vocloud.sim.run import SimConfig, load_trace
from vocloud.sim.sites import SiteSpec
from vocloud.sim.synth import bursty, swf_line, swf_text
from vocloud.sim.workload import Workload

cobald_adapter = pytest.importorskip("vocloud.sim.policies.cobald_adapter")

CTX = PeerContext(vo_names=("a", "b"), shares=(3.0, 1.0), cores_per_vm=1, memory_mib_per_vm=1024,
                  max_vms=10, poll_interval=60.0)
SITE = SiteCapacity.from_hosts(max_vms=8, host_free=((2, 2048),) * 4)  # room for 8 VMs


def policy(vo: str) -> PoolPolicy:
    return PoolPolicy(vo=vo, image=f"{vo}-worker", cores_per_vm=1, memory_mib_per_vm=1024, max_vms=10)


def vm(vm_id: int, state: V, *, joined: float | None = 0.0, idle_since: float | None = None) -> PoolVM:
    joined_at = joined if state not in (V.REQUESTED, V.BOOTING) else None
    return PoolVM(vm_id=vm_id, name=f"vc-{vm_id}", state=state, started_at=0.0, joined_at=joined_at,
                  idle_since=idle_since, running_jobs=1 if state is V.JOINED_BUSY else 0)


def job(i: int, vo: str = "a", cores: int = 1) -> PendingJob:
    return PendingJob(id=str(i), vo=vo, cores=cores, memory_mib=512, walltime_s=600, submit_time=0.0)


def boots(plan_actions: tuple[object, ...]) -> dict[str, int]:
    return {a.vo: a.count for a in plan_actions if isinstance(a, Boot)}


# --- shared rules ---------------------------------------------------------------------------------


def test_grant_round_robin_and_free_slots() -> None:
    assert grant({"b": 5, "a": 1, "c": 0}, 4) == {"a": 1, "b": 3}
    assert grant({"a": 2, "b": 2}, 3) == {"a": 2, "b": 1}
    pools = [Pool(policy("a"), (vm(1, V.REQUESTED), vm(2, V.JOINED_BUSY)))]
    # 8 fit on the hosts, one request is still waiting for a host; the site cap counts both VMs
    assert FreeSlots(CTX)(pools, SITE) == 6
    capped = dataclasses.replace(SITE, max_vms=3)
    assert FreeSlots(CTX)(pools, capped) == 1


# --- COBalD ---------------------------------------------------------------------------------------


def test_adapter_presents_cobald_pool_semantics() -> None:
    pool = cobald_adapter.VmPool(1)
    pool.refresh(())
    assert (pool.supply, pool.allocation, pool.utilisation) == (0.0, 1.0, 1.0)  # undefined: good
    pool.refresh((vm(1, V.JOINED_BUSY), vm(2, V.JOINED_IDLE), vm(3, V.BOOTING), vm(4, V.DRAINING)))
    assert pool.supply == 2.0  # booting and draining VMs supply nothing, as TARDIS's drones
    assert pool.allocation == pool.utilisation == 0.5
    pool.demand = 4.2
    assert pool.adjust("a") == (2, [])  # children 1, 2, 3; ceil(4.2 - 3) new ones
    pool.demand = 1.0
    spawn, released = pool.adjust("a")
    # the least used children go first: the booting VM (withdrawn), then the idle one (drained)
    assert spawn == 0
    assert [(type(a), a.vm_id) for a in released] == [(Shutdown, 3), (Drain, 2)]


def test_real_controllers_drive_the_pool() -> None:
    linear = PEERS["cobald-linear"](CTX)
    assert isinstance(linear, cobald_adapter.Cobald)
    assert type(linear.controllers["a"]).__module__ == "cobald.controller.linear"  # the package's own
    plan = linear({}, [], SITE, 0.0)
    # empty pools report allocation 1.0, so the controller raises demand by rate x interval = 60,
    # clamped by the Limiter to the pool maximum of 10; the site has 8 slots for both VOs
    assert boots(plan.actions) == {"a": 4, "b": 4}
    busy = [Pool(policy("a"), tuple(vm(i, V.JOINED_IDLE) for i in range(1, 4)))]
    plan = linear({}, busy, SITE, 60.0)
    # idle pool: utilisation 0 < 0.5, demand falls by 60, clamped at the minimum of one VM
    assert [a.vm_id for a in plan.actions if isinstance(a, Drain)] == [3, 2]
    relative = PEERS["cobald-relative"](CTX)
    pools = [Pool(policy("a"), tuple(vm(i, V.JOINED_BUSY) for i in range(1, 5)))]
    plan = relative({}, pools, SITE, 0.0)
    assert boots(plan.actions)["a"] == 1  # supply 4 x 1.1 = 4.4: one more child


# --- cloudscheduler --------------------------------------------------------------------------------


def test_cloudscheduler_boots_per_waiting_job_and_retires_idle() -> None:
    cs = CloudScheduler(CTX, idle_minutes=5)
    pools = [Pool(policy("a"), (vm(1, V.BOOTING),))]
    plan = cs({"a": [job(i) for i in range(4)] + [job(9, cores=2)]}, pools, SITE, 0.0)
    assert boots(plan.actions) == {"a": 3}  # 4 fitting jobs, one VM already on its way
    idle = [Pool(policy("a"), (vm(1, V.JOINED_IDLE, idle_since=100.0), vm(2, V.DRAINED)))]
    plan = cs({}, idle, SITE, 100.0 + 299)
    assert [type(a) for a in plan.actions] == [Shutdown]  # the drained one only: not idle 5 min yet
    plan = cs({}, idle, SITE, 100.0 + 300)
    assert any(isinstance(a, Drain) and a.vm_id == 1 for a in plan.actions)


# --- Vcycle --------------------------------------------------------------------------------------


def test_vcycle_fills_by_share_and_backs_off_after_an_abort() -> None:
    vc = Vcycle(CTX, backoff_s=600, fizzle_s=600)
    plan = vc({}, [], SITE, 0.0)
    assert boots(plan.actions) == {"a": 6, "b": 2}  # target shares 3:1 of the 8 free slots
    # a VM of "a" joined and found no work (idle since it joined): it ends, and "a" backs off
    pools = [Pool(policy("a"), (vm(1, V.JOINED_IDLE, joined=10.0, idle_since=10.0),))]
    plan = vc({}, pools, SITE, 60.0)
    assert any(isinstance(a, Drain) for a in plan.actions)
    assert "a" not in boots(plan.actions)
    assert "a" not in boots(vc({}, [], SITE, 600.0).actions)  # still backing off
    assert boots(vc({}, [], SITE, 661.0).actions).get("a") == 1  # one probe after the back-off
    assert "a" not in boots(vc({}, [], SITE, 700.0).actions)  # then fizzle_seconds of quiet
    # a VM that did work (idle since after it joined) ends without a back-off
    vc2 = Vcycle(CTX)
    worked = [Pool(policy("b"), (vm(5, V.JOINED_IDLE, joined=10.0, idle_since=500.0),))]
    vc2({}, worked, SITE, 560.0)
    assert boots(vc2({}, [], SITE, 620.0).actions).get("b")


# --- the comparison -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def burst(tmp_path_factory: pytest.TempPathFactory) -> Workload:
    path = tmp_path_factory.mktemp("pol") / "burst.swf"
    path.write_text(bursty(5, n=400, vos=3))
    return load_trace(path).workload


def test_every_policy_replays_the_same_trace_to_the_end(burst: Workload) -> None:
    config = SimConfig(spec=SiteSpec(6, 2, 4096), seed=2, knobs=ElasticKnobs(worker_shape="fixed"))
    results = compare.compare(burst, config, compare.POLICIES)
    assert [r.name for r in results] == list(compare.POLICIES)
    for r in results:
        f = r.figures
        assert f["conservation_ok"] and f["jobs_completed"] == len(burst), r.name
        assert f["vm_hours_per_useful_core_hour"] >= 1.0, r.name
    n_boots = {r.name: r.figures["vm_boots"] for r in results}
    assert len(set(n_boots.values())) == len(n_boots), n_boots  # each policy really decided its own pools
    text = compare.table(results)
    assert all(f"| {n} |" in text for n in compare.POLICIES)
    assert len(compare.verdicts(results)) == len(compare.POLICIES) - 1


def test_cloudscheduler_may_skip_quiet_polls(burst: Workload,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    config = SimConfig(spec=SiteSpec(6, 2, 4096), seed=2)
    skipping = compare.run_policy("cloudscheduler", burst, config).figures
    monkeypatch.setattr(CloudScheduler, "every_poll", True)
    every = compare.run_policy("cloudscheduler", burst, config).figures
    for key in ("wait_mean_s", "vm_boots", "vm_hours_idle", "vm_core_hours"):
        assert skipping[key] == every[key], key


def test_cloudscheduler_may_skip_quiet_polls_with_jobs_spanning_vms(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shaped workers: the rule counts busy VMs' free cores, which a job's end changes; the
    site plans on job ends while jobs wait (it missed them before session 11)."""
    trace = tmp_path / "wide.swf"
    trace.write_text(bursty(3, n=300, vos=3, max_procs=6, span=12 * 3600))
    w = load_trace(trace).workload
    config = SimConfig(spec=SiteSpec(4, 2, 4096), seed=2, knobs=ElasticKnobs(worker_shape="job"))
    skipping = compare.run_policy("cloudscheduler", w, config).figures
    monkeypatch.setattr(CloudScheduler, "every_poll", True)
    every = compare.run_policy("cloudscheduler", w, config).figures
    for key in ("wait_mean_s", "vm_boots", "vm_hours_idle", "vm_core_hours"):
        assert skipping[key] == every[key], key


class _NeverQuiet(dict[str, tuple[PoolVM, ...]]):
    def __setitem__(self, key: str, value: tuple[PoolVM, ...]) -> None:
        pass


@pytest.mark.parametrize("name", ["cobald-linear-tuned", "cobald-relative"])
def test_cobald_fixed_point_skip_changes_nothing(burst: Workload, monkeypatch: pytest.MonkeyPatch,
                                                 name: str) -> None:
    config = SimConfig(spec=SiteSpec(6, 2, 4096), seed=2)
    skipping = compare.run_policy(name, burst, config).figures
    make = PEERS[name]

    def every_vo_every_poll(ctx: PeerContext) -> PeerPolicy:
        c = make(ctx)
        vars(c)["_quiet"] = _NeverQuiet()  # never at a fixed point: every VO, every poll
        return c

    monkeypatch.setitem(PEERS, name, every_vo_every_poll)
    every = compare.run_policy(name, burst, config).figures
    for key in ("wait_mean_s", "vm_boots", "vm_hours_idle", "vm_core_hours"):
        assert skipping[key] == every[key], key


def test_parse_policies() -> None:
    assert compare.parse_policies("all") == compare.POLICIES
    assert compare.parse_policies("vcycle") == ("static", "vocloud", "vcycle")
    with pytest.raises(InvalidInput, match="unknown policy nope"):
        compare.parse_policies("vcycle,nope")


def test_incomplete_replay_is_marked(tmp_path: Path) -> None:
    lines = [swf_line(i, i * 10, 300, procs=2) for i in range(1, 30)]
    p = tmp_path / "par.swf"
    p.write_text(swf_text(lines))
    w = load_trace(p).workload
    # 2-core jobs, 1-core VMs that never grow (worker shape ``fixed``)
    fixed = SimConfig(spec=SiteSpec(4, 2, 4096), knobs=ElasticKnobs(worker_shape="fixed"))
    results = compare.compare(w, fixed, ("static", "vocloud"))
    assert "| vocloud (incomplete!) |" in compare.table(results)


# --- worker shapes ---------------------------------------------------------------------------------

SHAPED = dataclasses.replace(CTX, worker_shape="job", host_shape=(2, 2048))
HOSTS = dataclasses.replace(SHAPED, worker_shape="host")


def pvm(vm_id: int, state: V, cores: int, free: int = 0) -> PoolVM:
    joined = None if state in (V.REQUESTED, V.BOOTING) else 0.0
    return PoolVM(vm_id=vm_id, name=f"vc-{vm_id}", state=state, started_at=0.0, joined_at=joined,
                  idle_since=None, running_jobs=1 if state is V.JOINED_BUSY else 0, free_cores=free,
                  cores=cores, memory_mib=1024 * cores)


def sized_boots(actions: tuple[object, ...]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for a in actions:
        if isinstance(a, Boot):
            out[(a.vo, a.cores)] = out.get((a.vo, a.cores), 0) + a.count
    return out


def test_job_vms_follow_the_worker_shape() -> None:
    assert job_vms(CTX, 1, 512) == [(1, 1024)]
    assert job_vms(CTX, 2, 512) == []  # fixed 1-core workers: a 2-core job cannot run
    assert job_vms(SHAPED, 1, 512) == [(1, 1024)]
    assert job_vms(SHAPED, 2, 512) == [(2, 2048)]
    assert job_vms(SHAPED, 5, 512) == [(2, 2048)] * 3  # wider than a host: whole hosts it spans
    assert job_vms(HOSTS, 1, 512) == [(2, 2048)]
    # queue-blind peers have one machine type: whole hosts with ``host``, else cores_per_vm
    assert worker_size(CTX) == worker_size(SHAPED) == (1, 1024)
    assert worker_size(HOSTS) == (2, 2048)
    assert not dataclasses.replace(SHAPED, host_shape=(0, 0)).shaped  # no host shape known: fixed


def test_room_packs_mixed_sizes_first_fit() -> None:
    site = SiteCapacity.from_hosts(max_vms=5, host_free=((2, 2048), (1, 1024)))
    pools = [Pool(policy("a"), (pvm(1, V.REQUESTED, 1),))]  # takes a core of the first host
    room = Room(pools, site)
    assert not room.take(2, 2048)  # no host has two free cores any more
    one, two = (1, 1024), (2, 2048)
    got = grant_shaped({"a": [[two], [one]], "b": [[one], [one]]}, Room(pools, site))
    assert got == {"a": [one], "b": [one]}  # a's 2-core VM refused, then one each
    # a job's VMs are granted whole or not at all
    assert grant_shaped({"a": [[one, one, one], [one]]}, Room(pools, site)) == {"a": [one]}
    capped = SiteCapacity.from_hosts(max_vms=2, host_free=((2, 2048),) * 3)
    assert grant_shaped({"a": [[one]] * 3}, Room(pools, capped)) == {"a": [one]}


def test_cloudscheduler_boots_vms_to_suit_the_jobs() -> None:
    cs = CloudScheduler(SHAPED)
    site = SiteCapacity.from_hosts(max_vms=8, host_free=((2, 2048),) * 4)
    # a busy 2-core VM with a free core takes the 1-core job; the 2-core job gets a 2-core VM;
    # the 3-core one two whole hosts (it spans them)
    pools = [Pool(policy("a"), (pvm(1, V.JOINED_BUSY, 2, free=1),)), Pool(policy("b"), ())]
    demand = {"a": [job(1), job(2, cores=2), job(3, cores=3)], "b": [job(4, "b")]}
    plan = cs(demand, pools, site, 0.0)
    assert sized_boots(plan.actions) == {("a", 2): 3, ("b", 1): 1}
    # the same with 1-core fixed workers: only the 1-core jobs are served
    plan = CloudScheduler(CTX)(demand, [Pool(policy("a"), ()), Pool(policy("b"), ())], site, 0.0)
    assert boots(plan.actions) == {"a": 1, "b": 1}


def test_cobald_drones_are_whole_hosts_and_demand_is_in_cores() -> None:
    tuned = PEERS["cobald-relative-tuned"](HOSTS)
    assert isinstance(tuned, cobald_adapter.Cobald)
    site = SiteCapacity.from_hosts(max_vms=8, host_free=((2, 2048),) * 4)
    pools = [Pool(policy("a"), tuple(pvm(i, V.JOINED_BUSY, 2) for i in range(1, 5)))]
    plan = tuned({}, pools, site, 0.0)
    # supply 4 drones x 2 cores = 8; x 1.5 = 12 cores, limited to the pool's maximum of 10 cores
    # (10 1-core VMs = 5 drones): one more 2-core drone; "b" gets its minimum, one drone
    assert sized_boots(plan.actions) == {("a", 2): 1, ("b", 2): 1}
    pool = tuned.pools["a"]
    assert (pool.supply, pool.unit) == (8.0, 2)
    # the defaults' 8 x 1.1 = 8.8 cores is floored to the granularity (cobald's Standardiser,
    # granularity = the drone's cores as TARDIS sets it): 8, no new drone
    assert ("a", 2) not in sized_boots(PEERS["cobald-relative"](HOSTS)({}, pools, site, 0.0).actions)
    # with ``job`` the drones are 1-core (granularity one core): 8 x 1.1 = 8.8, one more 1-core VM
    one_core = [Pool(policy("a"), tuple(pvm(i, V.JOINED_BUSY, 1) for i in range(1, 9)))]
    roomy = SiteCapacity.from_hosts(max_vms=16, host_free=((2, 2048),) * 4)
    assert sized_boots(PEERS["cobald-relative"](SHAPED)({}, one_core, roomy, 0.0).actions)[("a", 1)] == 1


@pytest.mark.parametrize("name", [n for n in compare.POLICIES if n != "static"])
def test_shaped_peers_run_parallel_jobs(name: str, tmp_path: Path) -> None:
    # 2- and 3-core jobs on 2-core hosts: with fixed 1-core workers no elastic policy runs them
    lines = [swf_line(i, i * 60, 300, procs=2 + i % 2) for i in range(1, 25)]
    p = tmp_path / "par.swf"
    p.write_text(swf_text(lines))
    w = load_trace(p).workload
    config = SimConfig(spec=SiteSpec(4, 2, 4096), knobs=ElasticKnobs(worker_shape="job"))
    f = compare.run_policy(name, w, config).figures
    assert f["conservation_ok"], name
    if name in ("vocloud", "cloudscheduler"):  # both read the queue: every job runs
        assert f["jobs_completed"] == len(w) and not f["incomplete"], name
    else:
        # queue-blind peers (COBalD, Vcycle) with whole-host workers run jobs that fit one
        # (with ``job``, 1-core workers: an idle pool never grows for a wider job)
        hosts = SimConfig(spec=SiteSpec(4, 2, 4096), knobs=ElasticKnobs(worker_shape="host"))
        assert compare.run_policy(name, w, hosts).figures["jobs_completed"] > 0, name
    fixed = SimConfig(spec=SiteSpec(4, 2, 4096), knobs=ElasticKnobs(worker_shape="fixed"))
    assert compare.run_policy(name, w, fixed).figures["jobs_completed"] == 0, name


def test_waits_by_width(tmp_path: Path) -> None:
    lines = [swf_line(i, i * 60, 300, procs=1 + i % 3) for i in range(1, 31)]
    p = tmp_path / "mixed.swf"
    p.write_text(swf_text(lines))
    w = load_trace(p).workload
    config = SimConfig(spec=SiteSpec(4, 2, 4096), knobs=ElasticKnobs(worker_shape="job"))
    rows = compare.waits_by_width("cloudscheduler", w, config)
    assert [band for band, *_ in rows] == list(compare.WIDTHS)
    assert [n for _, n, _, _ in rows] == [10, 10, 10, 0, 0]  # 1, 2 and 3 cores, ten of each
    assert all(mean >= 0 and median >= 0 for _, _, mean, median in rows)
    with pytest.raises(InvalidInput, match="elastic policy"):
        compare.waits_by_width("static", w, config)
