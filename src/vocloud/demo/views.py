"""What the demo shows while it runs, built from what the API and the batch system said: the
pools table, one line of pool sizes, one line per pool decision. Pure: no I/O, no clock."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from vocloud.demo.jobs import Job


def job_counts(jobs: list[Job], vo: str) -> str:
    """``queued/running/done`` of one VO's demo jobs."""
    mine = [j for j in jobs if j.vo == vo]
    queued = sum(1 for j in mine if j.state == "PENDING")
    running = sum(1 for j in mine if j.state in ("RUNNING", "COMPLETING", "CONFIGURING"))
    done = sum(1 for j in mine if j.state == "COMPLETED")
    return f"{queued}/{running}/{done}"


def pool_table(pools: list[dict[str, Any]], jobs: list[Job], last: dict[str, str],
               elapsed: float) -> Table:
    """The pools as ``vocloud pool list`` shows them, plus the demo's jobs and last decision."""
    t = Table(title=f"VO pools, {elapsed:.0f} s", title_justify="left")
    for col in ("VO", "IMAGE", "PENDING", "DESIRED", "BOOTING", "RUNNING", "DRAINING", "IDLE",
                "MIN", "MAX", "JOBS Q/R/D", "LAST DECISION"):
        t.add_column(col, overflow="fold")
    for p in pools:
        t.add_row(p["vo"], p["image"], str(p["pending_jobs"]), str(p["desired"]), str(p["booting"]),
                  str(p["running"]), str(p["draining"]), str(p["idle"]), str(p["min"]),
                  str(p["max"]), job_counts(jobs, p["vo"]), last.get(p["vo"], ""))
    return t


def pool_sizes(pools: list[dict[str, Any]]) -> str:
    """One line of every pool's worker counts (the log's view, when not on a terminal)."""
    return " | ".join(f"{p['vo']}: {p['booting']} booting, {p['running']} running, "
                      f"{p['draining']} draining, {p['idle']} idle" for p in pools)


def event_text(e: dict[str, Any]) -> str:
    """A pool decision (``GET /pools/<vo>/events``) as one line: ``grow 2: 6 jobs pending``."""
    return f"{e['action']}" + (f" {e['count']}" if e.get("count") else "") + f": {e['reason']}"
