"""What the trace itself recorded: the row the physical scenario is read against.

An SWF trace keeps each job's real wait (field 3) and the machine's size (``MaxProcs``); from them
come the machine's own mean/median/p95/p99 wait and utilization. Printing them beside the
physical scenario shows a user how far the model (FCFS with backfilling on whole hosts, exact run
times as the estimates' ceiling) is from the machine that produced the trace, before they trust
any comparison between scenarios.

The row is left out when it would mislead: a scaled replay (arrivals compressed or replicated: the
recorded waits belong to another load) or a trace where fewer than half the runnable jobs have a
known wait.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vocloud.sim.workload import Workload

MIN_KNOWN_SHARE = 0.5


def recorded_figures(w: Workload, max_procs: int | None) -> dict[str, Any] | None:
    """The trace's own wait and utilization figures, or None when there are none to trust."""
    if w.scale_note or not w.recorded_wait or len(w) == 0:
        return None
    n = len(w)
    runnable = np.ones(n, dtype=bool)
    if w.excluded:
        runnable[np.fromiter(w.excluded, dtype=np.int64)] = False
    wait = np.asarray(w.recorded_wait, dtype=np.float64)
    known = runnable & (wait >= 0)
    if known.sum() < MIN_KNOWN_SHARE * max(int(runnable.sum()), 1):
        return None
    waits = wait[known]
    out: dict[str, Any] = {
        "jobs_with_recorded_wait": int(known.sum()),
        "wait_mean_s": float(waits.mean()),
        "wait_median_s": float(np.percentile(waits, 50)),
        "wait_p95_s": float(np.percentile(waits, 95)),
        "wait_p99_s": float(np.percentile(waits, 99)),
    }
    if max_procs:
        submit = np.asarray(w.submit, dtype=np.float64)
        runtime = np.asarray(w.runtime, dtype=np.float64)
        procs = np.asarray(w.procs, dtype=np.float64)
        end = float((submit + np.maximum(wait, 0) + runtime)[runnable].max())
        span = end - float(submit[0])
        if span > 0:
            out["utilization"] = float((runtime * procs)[runnable].sum()) / (max_procs * span)
    return out
