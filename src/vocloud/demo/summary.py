"""The numbers the demo ends with (also its ``--json``), and their lines. Pure: the caller
passes the clock's reading."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vocloud.demo.base import VOS, WORKER
from vocloud.demo.jobs import Job


@dataclass
class Watch:
    """What the live loop observed, for the summary."""

    peak: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VOS, 0))
    jobs_done_at: float | None = None
    events: dict[str, list[str]] = field(default_factory=lambda: {vo: [] for vo in VOS})


def summarize(jobs: list[Job], vms: list[dict[str, Any]], w: Watch, t0: float, t_submit: float,
              mode: str, simulated: list[str], now: float) -> dict[str, Any]:
    """The summary of a run that started at ``t0``, burst its jobs at ``t_submit`` and ended at
    ``now`` (epoch seconds); ``vms`` is ``GET /vms?all=true``."""
    waits = [j.start - j.submit for j in jobs if j.start is not None and j.submit is not None]
    workers = [v for v in vms if WORKER.match(v["name"])]
    booted = {vo: sum(1 for v in workers if v["name"].startswith(f"{vo}-wn") and v.get("started_at"))
              for vo in VOS}
    return {
        "mode": mode,
        "simulated": simulated,
        "jobs_submitted": {vo: sum(1 for j in jobs if j.vo == vo) for vo in VOS},
        "jobs_run": {vo: sum(1 for j in jobs if j.vo == vo and j.state == "COMPLETED") for vo in VOS},
        "jobs_on_own_vo_worker": sum(1 for j in jobs if j.node.startswith(f"{j.vo}-wn")),
        "vms_booted": booted,
        "vms_booted_total": sum(booted.values()),
        "vms_done": sum(1 for v in workers if v["state"] == "DONE"),
        "peak_workers": dict(w.peak),
        "wait_mean_s": round(sum(waits) / len(waits), 1) if waits else None,
        "wait_max_s": round(max(waits), 1) if waits else None,
        "jobs_done_after_s": round((w.jobs_done_at or now) - t_submit, 1),
        "pools_back_to_zero_after_s": round(now - t_submit, 1),
        "total_s": round(now - t0, 1),
    }


def summary_lines(s: dict[str, Any]) -> list[str]:
    """The summary as the demo prints it (Rich markup-free lines)."""
    run = ", ".join(f"{vo} {s['jobs_run'][vo]}/{s['jobs_submitted'][vo]}" for vo in VOS)
    vms = ", ".join(f"{vo} {s['vms_booted'][vo]}" for vo in VOS)
    return [
        f"jobs run: {run} ({s['jobs_on_own_vo_worker']} on a worker of their own VO)",
        f"VMs booted: {s['vms_booted_total']} ({vms}); peak workers "
        + ", ".join(f"{vo} {n}" for vo, n in s["peak_workers"].items())
        + f"; all {s['vms_done']} DONE, pools back to 0",
        f"job wait (submit -> start): mean {s['wait_mean_s']} s, max {s['wait_max_s']} s",
        f"all jobs done {s['jobs_done_after_s']} s after the burst, pools empty after "
        f"{s['pools_back_to_zero_after_s']} s; demo total {s['total_s']} s ({s['mode']})",
    ]
