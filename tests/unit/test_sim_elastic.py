"""The elastic scenario: the real planner and scheduler driven on a virtual clock."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from vocloud.elastic.policy import Shutdown, ShutdownCause
from vocloud.sim.dist import Duration, parse_duration
from vocloud.sim.elastic import ElasticKnobs, ElasticSite
from vocloud.sim.engine import Simulation
from vocloud.sim.metrics import compute
from vocloud.sim.run import load_trace
from vocloud.sim.sites import SiteSpec
from vocloud.sim.synth import bursty, swf_line, swf_text
from vocloud.sim.workload import Workload


def workload(tmp_path: Path, text: str) -> Workload:
    p = tmp_path / "t.swf"
    p.write_text(text)
    return load_trace(p).workload


def run(w: Workload, *, spec: SiteSpec = SiteSpec(3, 2, 4096), knobs: ElasticKnobs = ElasticKnobs(),
        boot: Duration = Duration("fixed", 60), always: bool = False, seed: int = 1,
        penalty: float = 0.05) -> tuple[ElasticSite, dict[str, Any], Simulation]:
    site = ElasticSite(w, spec, knobs=knobs, penalty=penalty, boot=boot, shutdown=Duration("fixed", 10),
                       rng=random.Random(seed), poll_interval=60, always_plan=always)
    sim = Simulation(w, site, sample_interval=600)
    st = sim.run()
    site.finish(st.t_last)
    r = compute("elastic", w, st, total_cores=spec.total_cores, factor=site.factor, boots=site.boots,
                boot_core_seconds=site.boot_core_seconds, idle_vm_seconds=site.idle_node_seconds(st.t_last),
                vm_core_seconds=site.vm_core_seconds)
    return site, r.figures, sim


@pytest.mark.parametrize(
    ("seed", "boot", "idle"),
    [(1, "fixed:60", 300.0), (2, "lognormal:200,1.2", 0.0), (3, "uniform:0,900", 120.0),
     (4, "fixed:0", 30.0)],
)
def test_skipping_quiet_polls_changes_nothing(tmp_path: Path, seed: int, boot: str, idle: float) -> None:
    """The shell calls the planner only when its answer can change; prove it against every poll."""
    w = workload(tmp_path, bursty(seed, n=300, vos=3, span=6 * 3600))
    knobs = ElasticKnobs(idle_timeout_s=idle, max_boots_per_minute=4, boot_timeout_s=400)
    fast_site, fast, _ = run(w, knobs=knobs, boot=parse_duration(boot), seed=seed)
    slow_site, slow, _ = run(w, knobs=knobs, boot=parse_duration(boot), seed=seed, always=True)
    assert fast == slow
    assert fast_site.plans < slow_site.plans  # and it did skip some


@pytest.mark.parametrize(("seed", "headroom", "idle"), [(8, 0.25, 300.0), (9, 1.0, 3600.0)])
def test_skipping_is_exact_with_headroom(tmp_path: Path, seed: int, headroom: float, idle: float) -> None:
    """With headroom the plan follows the busy VMs and held spares: the site plans every poll."""
    w = workload(tmp_path, bursty(seed, n=300, vos=3, span=6 * 3600))
    knobs = ElasticKnobs(idle_timeout_s=idle, headroom=headroom)
    fast_site, fast, _ = run(w, spec=SiteSpec(6, 2, 4096), knobs=knobs, seed=seed)
    slow_site, slow, _ = run(w, spec=SiteSpec(6, 2, 4096), knobs=knobs, seed=seed, always=True)
    assert fast == slow and fast_site.plans == slow_site.plans
    assert fast_site.plan_reasons.get("every poll")


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_skipping_is_exact_on_a_full_site_shared_by_weight(tmp_path: Path, seed: int) -> None:
    """A full site: pools compete, the planner drains and resumes to keep the fair split."""
    w = workload(tmp_path, bursty(seed, n=500, vos=3, span=2 * 3600))
    spec = SiteSpec(3, 2, 4096)
    knobs = ElasticKnobs(idle_timeout_s=60, scale_down_delay_s=30, max_boots_per_minute=6)
    fast_site, fast, _ = run(w, spec=spec, knobs=knobs, seed=seed)
    slow_site, slow, _ = run(w, spec=spec, knobs=knobs, seed=seed, always=True)
    assert fast == slow
    assert fast_site.plans < slow_site.plans


@pytest.mark.parametrize("seed", [5, 6])
def test_skipping_is_exact_with_jobs_spanning_vms(tmp_path: Path, seed: int) -> None:
    """Wide jobs: the oldest holds the site's reservation, whose start moves when any job ends
    (its cores absorb demand, ``_shadow``) and which becomes due with time alone
    (``Plan.recheck_at``). Both were missed before: the replay planned less often than the
    daemon, whose controller plans every cycle."""
    w = workload(tmp_path, bursty(seed, n=300, vos=3, max_procs=6, span=12 * 3600))
    knobs = ElasticKnobs(idle_timeout_s=300)
    fast_site, fast, _ = run(w, spec=SiteSpec(4, 2, 4096), knobs=knobs, seed=seed)
    slow_site, slow, _ = run(w, spec=SiteSpec(4, 2, 4096), knobs=knobs, seed=seed, always=True)
    assert fast == slow
    assert fast_site.plans < slow_site.plans


def test_shrinking_never_kills_a_running_job(tmp_path: Path) -> None:
    # idle timeout 0 and a pool cap: the planner shrinks as hard as it can while jobs run
    w = workload(tmp_path, bursty(9, n=300, vos=3, span=4 * 3600))
    site, f, sim = run(w, knobs=ElasticKnobs(idle_timeout_s=0, scale_down_delay_s=0, max_vms=3),
                       penalty=0.0)
    assert f["conservation_ok"] and f["jobs_running_at_end"] == 0
    assert site.refused_shutdowns == 0
    st = sim.state
    for j in range(len(w)):
        if st.start[j] >= 0:  # every started job ran its full trace runtime
            assert st.end[j] - st.start[j] == pytest.approx(w.runtime[j])
    assert f["vm_boots"] > 3  # the pools really did shrink and grow again


def test_shutdown_of_a_busy_vm_is_refused_by_the_lifecycle_table(tmp_path: Path) -> None:
    w = workload(tmp_path, swf_text([swf_line(1, 0, 5000)]))
    site = ElasticSite(w, SiteSpec(1, 1, 1024), knobs=ElasticKnobs(), penalty=0.0,
                       boot=Duration("fixed", 1), shutdown=Duration("fixed", 1), rng=random.Random(1),
                       poll_interval=60)
    sim = Simulation(w, site, sample_interval=600)
    original_poll = site.poll
    attacked: list[int] = []

    def poll(now: float, s: Simulation) -> bool:
        acted = original_poll(now, s)
        for vm_id, vm in list(site.vms.items()):
            node = site.parts[vm.vo].nodes.get(vm_id)
            if node is not None and node.jobs:
                site._apply(Shutdown("g1", vm_id, "test", cause=ShutdownCause.SURPLUS), now, s)
                attacked.append(vm_id)
        return acted

    site.poll = poll  # type: ignore[method-assign,assignment]
    st = sim.run()
    assert attacked and site.refused_shutdowns == len(attacked)
    assert st.end[0] - st.start[0] == 5000


def test_slow_boots_time_out_and_are_replaced(tmp_path: Path) -> None:
    w = workload(tmp_path, bursty(4, n=60, vos=1, span=3600))
    boot = parse_duration("uniform:50,150")
    _, f, _ = run(w, knobs=ElasticKnobs(boot_timeout_s=100), boot=boot)
    _, patient, _ = run(w, knobs=ElasticKnobs(boot_timeout_s=1000), boot=boot)
    assert f["conservation_ok"] and f["jobs_completed"] == 60 - f["jobs_never_ran"]
    assert f["vm_boots"] > patient["vm_boots"]  # timed-out boots were replaced


def test_stockout_waits_for_capacity(tmp_path: Path) -> None:
    # one 1-core host, three VOs with simultaneous jobs: the pools take turns, all jobs finish
    lines = [swf_line(i, 0, 100, group=g) for i, g in enumerate([1, 2, 3, 1, 2, 3], start=1)]
    w = workload(tmp_path, swf_text(lines))
    site, f, _ = run(w, spec=SiteSpec(1, 1, 1024))
    assert f["jobs_completed"] == 6
    assert site.peak_vms == 1  # the planner never asks for a VM no host can hold
    assert f["vm_allocation"] <= 1 and f["utilization"] <= 1


def test_a_job_no_pool_can_ever_run_is_reported_not_lost(tmp_path: Path) -> None:
    # two 1-core hosts, three VOs each with min_vms=1: the two first pools hold the site forever
    lines = [swf_line(1, 0, 100, group=1), swf_line(2, 10, 100, group=2), swf_line(3, 20, 100, group=3)]
    w = workload(tmp_path, swf_text(lines))
    _, f, sim = run(w, spec=SiteSpec(2, 1, 1024), knobs=ElasticKnobs(min_vms=1))
    assert f["jobs_completed"] == 2 and f["conservation_ok"]
    (reason,) = f["never_ran_reasons"]
    assert reason.startswith("still queued at end: no VM of its VO became available")
    assert "site VM cap reached" in reason
    assert sim.state.stalled.startswith("no progress for")
