"""Honest tables: incomplete scenarios marked, median/p99 and wait by class, the trace's own row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vocloud.sim.elastic import ElasticKnobs
from vocloud.sim.metrics import LENGTH_CLASSES, SIZE_CLASSES, wait_by_class
from vocloud.sim.recorded import recorded_figures
from vocloud.sim.report import (
    INCOMPLETE_MARK,
    RECORDED_ROW,
    metrics_document,
    scenario_table,
    summary_markdown,
    warnings,
)
from vocloud.sim.run import SimConfig, load_trace, run_all
from vocloud.sim.sites import SiteSpec
from vocloud.sim.synth import swf_line, swf_text


def _trace(tmp_path: Path, lines: list[str]) -> Path:
    p = tmp_path / "t.swf"
    p.write_text(swf_text(lines))
    return p


def _config() -> SimConfig:
    return SimConfig(spec=SiteSpec(4, 2, 4096), seed=3)


def _fixed() -> SimConfig:
    """1-core elastic VMs that never grow (worker shape ``fixed``): parallel jobs cannot run."""
    return SimConfig(spec=SiteSpec(4, 2, 4096), seed=3, knobs=ElasticKnobs(worker_shape="fixed"))


def test_wait_by_class_bins_by_upper_bound() -> None:
    procs = np.array([1, 2, 4, 5, 16, 17, 64, 65, 1000], dtype=np.float64)
    waits = np.arange(9, dtype=np.float64)
    got = wait_by_class(procs, waits, SIZE_CLASSES)
    assert {k: v["jobs"] for k, v in got.items()} == {
        "1 core": 1, "2-4 cores": 2, "5-16 cores": 2, "17-64 cores": 2, "65+ cores": 2}
    assert got["2-4 cores"]["wait_mean_s"] == 1.5
    assert got["65+ cores"]["wait_median_s"] == 7.5
    lengths = wait_by_class(np.array([59.0, 60.0, 36000.0]), np.array([1.0, 2.0, 3.0]), LENGTH_CLASSES)
    assert list(lengths) == ["< 1 min", "1-10 min", "10 h+"]  # empty classes are left out


def test_a_scenario_that_cannot_run_parallel_jobs_is_marked(tmp_path: Path) -> None:
    # half the jobs need 2 cores: the physical site runs them, 1-core elastic VMs cannot
    lines = [swf_line(i, i * 10, 30, procs=1 + i % 2) for i in range(1, 41)]
    lines.append(swf_line(99, 5, -1))  # cancelled in the trace: not runnable, never "missing"
    w = load_trace(_trace(tmp_path, lines)).workload
    res = {r.name: r for r in run_all(w, _fixed())}
    phys, el = res["physical"].figures, res["elastic"].figures
    assert phys["jobs_runnable"] == 40 and phys["runnable_never_ran"] == 0
    assert not phys["incomplete"]
    assert el["runnable_never_ran"] == 20 and el["incomplete"]
    assert el["incomplete_reasons"] == {"never runnable: needs 2 cores, more than a 1-core VM": 20}
    table = scenario_table(list(res.values()))
    assert f"| elastic{INCOMPLETE_MARK} |" in table and f"physical{INCOMPLETE_MARK}" not in table
    (line,) = [x for x in warnings(list(res.values())) if x.startswith("elastic")]
    assert "20 of 40 runnable jobs (50.0 %) never ran" in line
    assert "needs 2 cores" in line
    f = el["wait_by_size"]
    assert set(f) == {"1 core"}  # only the serial jobs ran, and the table says so
    assert set(phys["wait_by_size"]) == {"1 core", "2-4 cores"}
    assert phys["wait_p99_s"] >= phys["wait_p95_s"] >= phys["wait_median_s"] >= 0


def test_one_missing_job_in_a_hundred_is_not_incomplete(tmp_path: Path) -> None:
    lines = [swf_line(i, i * 100, 10) for i in range(1, 101)]
    lines.append(swf_line(200, 10050, 10, procs=2))  # 1 of 101 runnable jobs cannot run on 1-core VMs
    w = load_trace(_trace(tmp_path, lines)).workload
    el = {r.name: r.figures for r in run_all(w, _fixed())}["elastic"]
    assert el["runnable_never_ran"] == 1
    assert not el["incomplete"]  # 1 / 101 < 1 %
    lines.append(swf_line(201, 10060, 10, procs=2))
    w = load_trace(_trace(tmp_path, lines)).workload
    el = {r.name: r.figures for r in run_all(w, _fixed())}["elastic"]
    assert el["runnable_never_ran"] == 2 and el["incomplete"]  # 2 / 102 > 1 %


def test_recorded_row_from_the_traces_own_waits(tmp_path: Path) -> None:
    lines = [swf_line(i, i * 10, 100, procs=2, wait=w) for i, w in enumerate([0, 10, 20, 30, 1000], 1)]
    lines.append(swf_line(9, 5, -1, wait=99999))  # cancelled: its recorded wait is not counted
    loaded = load_trace(_trace(tmp_path, lines))
    rec = recorded_figures(loaded.workload, max_procs=8)
    assert rec is not None
    assert rec["jobs_with_recorded_wait"] == 5
    assert rec["wait_mean_s"] == pytest.approx(212.0)
    assert rec["wait_median_s"] == 20.0
    # busy 5 x 100 s x 2 cores over 8 cores from the first submit (10) to the last end (50+1000+100)
    assert rec["utilization"] == pytest.approx(1000 / (8 * (1150 - 10)))
    results = run_all(loaded.workload, _config())
    table = scenario_table(results, rec).splitlines()
    names = [row.split("|")[1].strip() for row in table[2:]]
    assert names[:2] == ["physical", RECORDED_ROW] and len(names) == 4
    doc = metrics_document(results, _config().to_dict(), {"jobs": 6, "recorded": rec})
    assert RECORDED_ROW in summary_markdown(doc, results, [])


def test_no_recorded_row_when_it_would_mislead(tmp_path: Path) -> None:
    unknown = [swf_line(i, i * 10, 100) for i in range(1, 6)]  # waits -1: unknown
    assert recorded_figures(load_trace(_trace(tmp_path, unknown)).workload, 8) is None
    known = [swf_line(i, i * 10, 100, wait=5) for i in range(1, 6)]
    scaled = load_trace(_trace(tmp_path, known), scale=2.0).workload
    assert recorded_figures(scaled, 8) is None  # compressed arrivals: another load
    rec = recorded_figures(load_trace(_trace(tmp_path, known)).workload, None)
    assert rec is not None and "utilization" not in rec  # no machine size, no utilization
    assert scenario_table([], None).count("\n") == 1


def test_rolling_mean_is_trailing_and_same_length() -> None:
    from vocloud.sim.report import rolling_mean

    got = rolling_mean(np.array([0.0, 1.0, 0.0, 1.0, 1.0]), 2)
    assert got.tolist() == [0.0, 0.5, 0.5, 0.5, 1.0]
    assert rolling_mean(np.array([]), 5).size == 0
    assert rolling_mean(np.array([3.0, 4.0]), 1).tolist() == [3.0, 4.0]
