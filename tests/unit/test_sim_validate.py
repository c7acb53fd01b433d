"""The pure half of ``simulate --validate`` (vocloud.sim.validate): slicing, the simulator's
side, the comparison and its table, with bad input refused."""

from __future__ import annotations

import pytest

from vocloud.errors import InvalidInput
from vocloud.sim.validate import ValSite, compare, report_text, simulate, slice_jobs, workload_of


def _w(n: int = 20):  # type: ignore[no-untyped-def]
    jobs = [("a" if i % 3 else "b", float(i * 60), 600.0 if i != 5 else 99999.0) for i in range(n)]
    return workload_of(jobs)


def test_slice_compresses_caps_and_refuses_bad_input() -> None:
    sl = slice_jobs(_w(), 10, 60.0, 3600.0, start=0)
    assert len(sl.jobs) == 10 and sl.jobs[1][1] == 1.0 and sl.jobs[0][2] == 10.0
    assert sl.capped == 1 and sl.jobs[5][2] == 60.0 and "cut" in sl.notes[0]
    for bad in ({"n": 0}, {"compress": 0.5}, {"compress": float("nan")}, {"max_runtime_s": 0.0},
                {"start": 15}, {"n": 50}):
        args = {"n": 10, "compress": 60.0, "max_runtime_s": 3600.0, "start": 0} | bad
        with pytest.raises(InvalidInput):
            slice_jobs(_w(), **args)
    with pytest.raises(InvalidInput, match="real time"):
        slice_jobs(_w(), 10, 1.0, 10.0**6, start=0)  # a 28-hour run is refused up front


def _real(jobs: list[tuple[str, float, float]], waits: list[float], boots: int) -> dict[str, object]:
    return {
        "jobs": [{"vo": vo, "planned_s": s, "submit_s": s, "runtime_s": r, "start_s": s + w,
                  "end_s": s + w + r + 0.01} for (vo, s, r), w in zip(jobs, waits, strict=True)],
        "workers": {"a-wn1": {"seen_s": 0.5, "running_s": 1.7, "joined_s": 2.2, "left_s": None}},
        "vm_boots": boots, "peak_workers": 2, "samples": [(0.0, 0, 0, 0), (3.0, 1, 1, 1), (9.0, 1, 1, 0)],
        "errors": [],
    }


def test_compare_gives_rows_verdicts_and_causes() -> None:
    site = ValSite(hosts=1, cores_per_host=2, poll_s=1.0, boot_s=1.0)
    jobs = [("a", 0.0, 2.0), ("a", 0.5, 2.0), ("b", 1.0, 1.0)]
    sim = simulate(jobs, site)
    assert sim["never_ran"] == 0 and sim["vm_boots"] >= 2 and all(w >= 0 for w in sim["waits"])
    same = compare(_real(jobs, sim["waits"], sim["vm_boots"]), sim, site, 60.0)
    assert same["verdict"] and all(r["diff"] in (0.0, None) for r in same["rows"][:2])
    slow = compare(_real(jobs, [w + 3 for w in sim["waits"]], sim["vm_boots"] * 2), sim, site, 60.0,
                   calibrated=simulate(jobs, site, extra_boot_s=1.0))
    assert not slow["verdict"]
    rows = {r["metric"]: r for r in slow["rows"]}
    assert rows["wait_mean_s"]["verdict"] == rows["vm_boots"]["verdict"] == "MISSED"
    assert rows["vm_boots"]["diff"] == pytest.approx(-0.5)
    assert slow["latencies"]["registration"]["mean"] == pytest.approx(0.5)
    assert slow["latencies"]["vm_create"]["mean"] == pytest.approx(0.2)
    assert slow["per_job"]["diff_median_s"] == pytest.approx(3.0)
    text = report_text(slow)
    assert "MISSED" in text and "| wait_mean_s |" in text and "sim + measured latencies" in text
    assert "slurmd registration" in text and "Poll phase" in text
