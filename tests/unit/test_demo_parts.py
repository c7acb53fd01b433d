"""The demo's pure parts (vocloud/demo/summary.py, views.py, site.py's template text), without a
daemon: the arithmetic its summary claims and what its live view shows."""

from __future__ import annotations

from typing import Any

from vocloud.demo.jobs import Job, slurm_time
from vocloud.demo.site import template_text
from vocloud.demo.summary import Watch, summarize, summary_lines
from vocloud.demo.views import event_text, job_counts, pool_sizes, pool_table


def _jobs() -> list[Job]:
    return [Job("1", "atlas", "COMPLETED", 100.0, 110.0, 120.0, "atlas-wn1"),
            Job("2", "atlas", "COMPLETED", 100.0, 130.0, 140.0, "atlas-wn2"),
            Job("3", "cms", "COMPLETED", 101.0, 105.0, 115.0, "n1"),  # not on its own VO's worker
            Job("4", "cms", "RUNNING", 101.0, 107.0, None, "cms-wn1"),
            Job("5", "cms", "PENDING", 102.0, None, None, "")]


def _vms() -> list[dict[str, Any]]:
    return [{"name": "atlas-wn1", "state": "DONE", "started_at": 1.0},
            {"name": "atlas-wn2", "state": "DONE", "started_at": 2.0},
            {"name": "cms-wn1", "state": "RUNNING", "started_at": 3.0},
            {"name": "cms-wn2", "state": "DONE", "started_at": None},  # never booted
            {"name": "other", "state": "DONE", "started_at": 4.0}]  # not a pool worker


def test_summary_arithmetic() -> None:
    w = Watch(peak={"atlas": 2, "cms": 1}, jobs_done_at=150.0)
    s = summarize(_jobs(), _vms(), w, t0=90.0, t_submit=100.0, mode="m", simulated=["x"], now=160.0)
    assert s["jobs_submitted"] == {"atlas": 2, "cms": 3}
    assert s["jobs_run"] == {"atlas": 2, "cms": 1}
    assert s["jobs_on_own_vo_worker"] == 3
    assert s["vms_booted"] == {"atlas": 2, "cms": 1} and s["vms_booted_total"] == 3
    assert s["vms_done"] == 3  # the three pool workers DONE, "other" is not one
    assert s["wait_mean_s"] == round((10 + 30 + 4 + 6) / 4, 1) and s["wait_max_s"] == 30.0
    assert (s["jobs_done_after_s"], s["pools_back_to_zero_after_s"], s["total_s"]) == (50.0, 60.0, 70.0)
    lines = summary_lines(s)
    assert lines[0] == "jobs run: atlas 2/2, cms 1/3 (3 on a worker of their own VO)"
    assert lines[1].startswith("VMs booted: 3 (atlas 2, cms 1); peak workers atlas 2, cms 1")
    assert "mean 12.5 s, max 30.0 s" in lines[2] and "(m)" in lines[3]


def test_summary_without_waits_or_done_time() -> None:
    s = summarize([], [], Watch(), t0=0.0, t_submit=5.0, mode="m", simulated=[], now=9.0)
    assert s["wait_mean_s"] is None and s["wait_max_s"] is None
    assert s["jobs_done_after_s"] == 4.0  # not done yet: measured to now


def test_views() -> None:
    assert job_counts(_jobs(), "cms") == "1/1/1" and job_counts(_jobs(), "atlas") == "0/0/2"
    pool = {"vo": "cms", "image": "-", "pending_jobs": 1, "desired": 2, "booting": 1, "running": 1,
            "draining": 0, "idle": 0, "min": 0, "max": 2}
    assert pool_sizes([pool]) == "cms: 1 booting, 1 running, 0 draining, 0 idle"
    table = pool_table([pool], _jobs(), {"cms": "boot 1: x"}, 12.4)
    assert table.title == "VO pools, 12 s" and table.row_count == 1
    assert event_text({"action": "boot", "count": 2, "reason": "6 jobs"}) == "boot 2: 6 jobs"
    assert event_text({"action": "drain", "count": 0, "reason": "idle"}) == "drain: idle"


def test_template_text_and_slurm_time() -> None:
    text = template_text("w", {"CPU": "1"}, "img", True, {"A": "b"})
    assert text == ('NAME="w"\nCPU="1"\nDISK=[IMAGE="img", TARGET="vda"]\nNIC=[NETWORK="vo"]\n'
                    'CONTEXT=[A="b"]\n')
    assert template_text("w", {}, None, False, None) == 'NAME="w"\n'
    assert slurm_time("Unknown") is None and slurm_time("garbage") is None and slurm_time(None) is None
    assert isinstance(slurm_time("2026-01-02T03:04:05"), float)
