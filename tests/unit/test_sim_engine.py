"""Whole replays on small synthetic traces: conservation, utilization, never-runnable jobs,
determinism, scaling, distributions and the static split."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from vocloud.errors import InvalidInput
from vocloud.sim.dist import parse_duration
from vocloud.sim.elastic import ElasticKnobs
from vocloud.sim.report import dumps, metrics_document
from vocloud.sim.run import SimConfig, load_trace, run_all
from vocloud.sim.sites import SiteSpec, apportion
from vocloud.sim.synth import bursty, swf_line, swf_text


def trace(tmp_path: Path, text: str, name: str = "t.swf") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def config(**kw: object) -> SimConfig:
    base: dict[str, object] = {"spec": SiteSpec(4, 2, 4096), "seed": 7}
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


def test_conservation_and_utilization_on_bursty_trace(tmp_path: Path) -> None:
    w = load_trace(trace(tmp_path, bursty(3, n=400, vos=3, max_procs=3))).workload
    for r in run_all(w, config()):
        f = r.figures
        assert f["conservation_ok"], (r.name, f)
        assert f["jobs_submitted"] == 400
        assert f["jobs_completed"] + f["jobs_never_ran"] + f["jobs_running_at_end"] == 400
        assert 0 < f["utilization"] <= 1
        assert f["useful_utilization"] <= f["utilization"]
        if r.name == "elastic":
            assert f["vm_allocation"] <= 1
            assert f["refused_shutdowns"] == 0


def test_jobs_too_big_or_cancelled_are_reported_with_reasons(tmp_path: Path) -> None:
    lines = [
        swf_line(1, 0, 10),
        swf_line(2, 1, 10, procs=9),  # site has 8 cores
        swf_line(3, 2, -1),  # cancelled in the trace
        swf_line(4, 3, 10, procs=2),  # fits the site, not a 1-core VM
        swf_line(5, 4, 10, procs=5),  # wider than one 2-core host: spans VMs
    ]
    w = load_trace(trace(tmp_path, swf_text(lines))).workload
    res = {r.name: r.figures for r in run_all(w, config())}
    phys = res["physical"]["never_ran_reasons"]
    assert phys == {
        "cancelled in the trace before it started (run time -1 or 0 processors)": 1,
        "never runnable: needs 9 processors, partition all has 8": 1,
    }
    assert res["physical"]["jobs_completed"] == 3
    # default worker shape "job": VMs sized to the jobs, wide jobs span VMs of their VO
    el = res["elastic"]["never_ran_reasons"]
    assert el == {"cancelled in the trace before it started (run time -1 or 0 processors)": 1,
                  "never runnable: needs 9 cores, the site has 8": 1}
    assert res["elastic"]["jobs_completed"] == 3
    fixed = run_all(w, config(scenarios=("elastic",), knobs=ElasticKnobs(worker_shape="fixed")))
    el = fixed[0].figures["never_ran_reasons"]
    assert el["never runnable: needs 9 cores, more than a 1-core VM"] == 1
    assert el["never runnable: needs 2 cores, more than a 1-core VM"] == 1
    assert el["never runnable: needs 5 cores, more than a 1-core VM"] == 1
    assert all(f["conservation_ok"] for f in res.values())


def test_same_seed_same_bytes_different_seed_different(tmp_path: Path) -> None:
    p = trace(tmp_path, bursty(5, n=250, vos=2))
    w = load_trace(p).workload
    cfg = config(boot=parse_duration("lognormal:60,0.6"))

    def doc(c: SimConfig) -> str:
        return dumps(metrics_document(run_all(w, c), c.to_dict(), {"name": p.name}))

    a, b = doc(cfg), doc(cfg)
    assert a == b
    assert doc(config(boot=parse_duration("lognormal:60,0.6"), seed=8)) != a


def test_penalty_stretches_runtime_on_vms_only(tmp_path: Path) -> None:
    w = load_trace(trace(tmp_path, swf_text([swf_line(1, 0, 1000)]))).workload
    res = {r.name: r for r in run_all(w, config(penalty=0.1))}
    run = {n: r.state.end[0] - r.state.start[0] for n, r in res.items()}
    assert run["physical"] == 1000
    assert run["static"] == pytest.approx(1100)
    assert run["elastic"] == pytest.approx(1100)
    assert res["elastic"].figures["penalty_core_hours"] == pytest.approx(100 / 3600)
    # the elastic job waited for a 60 s boot; physical did not wait
    assert res["elastic"].waits[0] == pytest.approx(60)
    assert res["physical"].waits[0] == 0


def test_scaling_compress_and_replicate(tmp_path: Path) -> None:
    p = trace(tmp_path, swf_text([swf_line(i, i * 100, 50) for i in range(1, 11)]))
    base = load_trace(p).workload
    comp = load_trace(p, scale=4, scale_mode="compress").workload
    rep = load_trace(p, scale=3, scale_mode="replicate").workload
    assert len(comp) == 10 and comp.submit[-1] - comp.submit[0] == (base.submit[-1] - base.submit[0]) / 4
    assert len(rep) == 30 and rep.submit[:3] == [base.submit[0]] * 3
    assert rep.runtime == [r for r in base.runtime for _ in range(3)]
    with pytest.raises(InvalidInput):
        load_trace(p, scale=0)
    with pytest.raises(InvalidInput):
        load_trace(p, scale=2, scale_mode="stretch")


def test_empty_or_all_bad_trace_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no valid job records"):
        load_trace(trace(tmp_path, swf_text(["1 2 3"])))


@pytest.mark.parametrize(
    ("spec", "mean"),
    [("fixed:30", 30.0), ("45", 45.0), ("uniform:10,20", 15.0), ("lognormal:60,0", 60.0)],
)
def test_durations(spec: str, mean: float) -> None:
    d = parse_duration(spec)
    assert d.mean == pytest.approx(mean)
    rng = random.Random(1)
    draws = [d.draw(rng) for _ in range(200)]
    assert all(x >= 0 for x in draws)
    assert sum(draws) / len(draws) == pytest.approx(mean, rel=0.1)


@pytest.mark.parametrize(
    "spec", ["", "fixed:", "uniform:5", "uniform:9,3", "lognormal:0,1", "gamma:1,2", "fixed:-1", "fixed:inf"]
)
def test_bad_durations(spec: str) -> None:
    with pytest.raises(InvalidInput):
        parse_duration(spec, "--boot-time")


def test_apportion() -> None:
    assert apportion([3, 1], 4) == [3, 1]
    assert apportion([100, 1, 0], 10) == [9, 1, 0]  # the small VO still gets a host
    assert apportion([1, 1, 1], 2) == [1, 1, 0]  # fewer hosts than VOs: heaviest, then lowest index
    assert sum(apportion([5.5, 2.2, 9.1, 0.3], 70)) == 70
    assert apportion([0, 0], 5) == [0, 0]
    with pytest.raises(ValueError):
        apportion([-1], 3)


def test_static_split_given_and_validated(tmp_path: Path) -> None:
    w = load_trace(trace(tmp_path, bursty(1, n=100, vos=2))).workload
    (r,) = run_all(w, config(scenarios=("static",), static_split={"g1": 3, "g2": 1}))
    assert r.figures["static_hosts_per_vo"] == {"g1": 3, "g2": 1}
    with pytest.raises(InvalidInput, match="not in the trace"):
        run_all(w, config(scenarios=("static",), static_split={"atlas": 1}))
    with pytest.raises(InvalidInput, match="at most 4"):
        run_all(w, config(scenarios=("static",), static_split={"g1": 5}))


def test_bad_config() -> None:
    with pytest.raises(InvalidInput, match="unknown scenario"):
        config(scenarios=("cloudy",))
    with pytest.raises(InvalidInput, match="penalty"):
        config(penalty=-0.1)
    with pytest.raises(InvalidInput, match="poll"):
        config(poll_interval=0)
    with pytest.raises(InvalidInput):
        SiteSpec(0, 2, 100)


def test_elastic_knobs_reach_the_planner(tmp_path: Path) -> None:
    w = load_trace(trace(tmp_path, bursty(2, n=200, vos=2))).workload
    (slow,) = run_all(w, config(scenarios=("elastic",), knobs=ElasticKnobs(max_boots_per_minute=1)))
    (fast,) = run_all(w, config(scenarios=("elastic",), knobs=ElasticKnobs(max_boots_per_minute=50)))
    assert slow.figures["wait_mean_s"] > fast.figures["wait_mean_s"]


def test_parallel_scenarios_give_the_same_bytes(tmp_path: Path) -> None:
    w = load_trace(trace(tmp_path, bursty(6, n=200, vos=2))).workload
    cfg = config(boot=parse_duration("uniform:20,80"))
    seen: list[str] = []
    one = dumps(metrics_document(run_all(w, cfg), cfg.to_dict(), {}))
    parallel = run_all(w, cfg, lambda n, t: seen.append(n), workers=3)
    three = dumps(metrics_document(parallel, cfg.to_dict(), {}))
    assert one == three
    assert set(seen) <= {"physical", "static", "elastic"}


def test_physical_split_by_swf_partition(tmp_path: Path) -> None:
    lines = [swf_line(i, i, 100, partition=1 + (i % 2)) for i in range(1, 21)]
    lines.append(swf_line(21, 30, 100, procs=7, partition=2))  # fits the site, not its partition
    text = swf_text(lines).replace("; Partition: 1 main\n", "; Partition: 1 ce01\n; Partition: 2 ce02\n")
    w = load_trace(trace(tmp_path, text)).workload
    assert w.partition_names == ["ce01", "ce02"]
    (merged,) = run_all(w, config(scenarios=("physical",)))
    (split,) = run_all(w, config(scenarios=("physical",), split_partitions=True))
    assert "hosts_per_partition" not in merged.figures
    assert split.figures["hosts_per_partition"] == {"ce01": 1, "ce02": 3}  # by core-seconds 1000:1700
    assert merged.figures["jobs_never_ran"] == 0
    reasons = split.figures["never_ran_reasons"]
    assert reasons == {"never runnable: needs 7 processors, partition ce02 has 6": 1}
    assert split.figures["conservation_ok"] and split.figures["wait_mean_s"] >= merged.figures["wait_mean_s"]
