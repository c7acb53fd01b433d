"""``--voc-report`` (vocloud.sim.voc): the window, slowdown by length, the claims' verdicts,
the plot and the summary section, on a small synthetic trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from vocloud.sim.metrics import LENGTH_CLASSES
from vocloud.sim.run import SimConfig, load_trace, run_all
from vocloud.sim.sites import SiteSpec
from vocloud.sim.synth import bursty, swf_line, swf_text
from vocloud.sim.voc import DAY, busiest_window, findings, voc_markdown, voc_plot


def test_busiest_window_is_the_one_with_the_most_work(tmp_path: Path) -> None:
    # little work in the first 100 days, a lot from day 200 on
    lines = [swf_line(i + 1, i * DAY, 60) for i in range(100)]
    lines += [swf_line(200 + i, (200 + i / 10) * DAY, 36000) for i in range(100)]
    p = tmp_path / "w.swf"
    p.write_text(swf_text(lines))
    w = load_trace(p).workload
    start, end = busiest_window(w)
    assert start == pytest.approx(200 * DAY) and end - start == pytest.approx(75 * DAY)


def test_voc_report_states_each_claim_and_plots(tmp_path: Path) -> None:
    p = tmp_path / "b.swf"
    p.write_text(bursty(3, n=400, vos=2, span=4 * DAY))
    w = load_trace(p).workload
    config = SimConfig(spec=SiteSpec(4, 2, 4096), sample_interval=900.0)
    results = run_all(w, config)
    f = findings(w, results)
    names = [c for c, _ in f["claims"]]
    assert names[:2] == ["The pool tracks the load", "Dynamic provisioning costs no throughput"]
    for _, verdict in f["claims"]:
        assert verdict.startswith(("supported", "not supported")), verdict
    assert f["tracking"]["samples"] > 100 and -1 <= f["tracking"]["r"] <= 1
    sd = f["slowdown"]["elastic"]
    assert set(sd) <= {lab for lab, _ in LENGTH_CLASSES}
    assert sum(c["jobs"] for c in sd.values()) == results[2].figures["jobs_completed"]
    assert all(c["bsld_mean"] >= 1 for c in sd.values())
    plot = voc_plot(w, results, tmp_path)
    assert plot == "voc.png" and (tmp_path / "voc.png").stat().st_size > 10_000
    text = voc_markdown(w, results, plot)
    assert "## The VOC findings" in text and "| length | physical | static | elastic |" in text
    assert "does not show" in text and "![voc.png](voc.png)" in text
