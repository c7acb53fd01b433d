"""The burst scenario: the elastic site overflowing into a priced cloud, site first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vocloud.sim.burst import BurstKnobs
from vocloud.sim.dist import Duration
from vocloud.sim.run import SimConfig, load_trace, run_scenario
from vocloud.sim.sites import SiteSpec
from vocloud.sim.synth import bursty
from vocloud.sim.workload import Workload


def workload(tmp_path: Path, seed: int = 3, n: int = 400) -> Workload:
    p = tmp_path / "t.swf"
    p.write_text(bursty(seed, n=n, vos=2, span=3 * 3600))
    return load_trace(p).workload


def figures(w: Workload, hosts: int, burst: BurstKnobs, name: str = "burst") -> dict[str, Any]:
    cfg = SimConfig(spec=SiteSpec(hosts, 2, 4096), scenarios=(name,), burst=burst)
    return run_scenario(name, w, cfg).figures


def test_a_small_site_bursts_waits_less_and_pays(tmp_path: Path) -> None:
    w = workload(tmp_path)
    cloud = BurstKnobs(cloud_cores=16, boot=Duration("fixed", 120), price_core_hour=0.1)
    elastic = figures(w, 2, cloud, "elastic")
    burst = figures(w, 2, cloud)
    assert burst["jobs_completed"] == elastic["jobs_completed"] == len(w)
    assert burst["refused_shutdowns"] == 0
    assert int(burst["cloud_vms_booted"]) > 0
    assert int(burst["cloud_peak_vms"]) <= 16
    assert float(burst["wait_mean_s"]) < float(elastic["wait_mean_s"])
    hours = float(burst["cloud_core_hours"])
    assert hours > 0 and abs(float(burst["cloud_cost"]) - round(hours * 0.1, 2)) <= 0.01


def test_no_cloud_is_the_elastic_scenario_and_a_big_site_never_bursts(tmp_path: Path) -> None:
    w = workload(tmp_path, seed=4, n=200)
    none = figures(w, 2, BurstKnobs(cloud_cores=0))
    elastic = figures(w, 2, BurstKnobs(), "elastic")
    for key in ("wait_mean_s", "wait_p95_s", "jobs_completed", "vm_boots"):
        assert none[key] == elastic[key], key
    assert none["cloud_vms_booted"] == 0
    big = figures(w, 64, BurstKnobs(cloud_cores=64))
    assert big["cloud_vms_booted"] == 0 and big["cloud_cost"] == 0


def test_the_burst_limit_caps_each_pools_cloud_vms(tmp_path: Path) -> None:
    w = workload(tmp_path)
    f = figures(w, 2, BurstKnobs(cloud_cores=64, boot=Duration("fixed", 60), burst_limit=2))
    assert 0 < int(f["cloud_peak_vms"]) <= 2 * 2  # two pools x 2
