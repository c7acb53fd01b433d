"""Per-scenario figures computed from what the event loop recorded.

Kept apart from the loop so the definitions sit in one place, next to why they are defined so:

* **wait** = start - submit, over jobs that started; mean and p95 (linear interpolation).
* **bounded slowdown** = max(1, (wait + run) / max(run, 10 s)), over completed jobs: the usual
  bound keeps a 1-second job that waited a minute from dominating the mean.
* **utilization** = busy core-seconds / (site cores x replay span). Busy includes the
  virtualization penalty (a VM job occupies its cores longer); ``useful_utilization`` counts only
  the trace's own run time. Both are asserted <= 1: a value above 1 is a simulator bug, never a
  result.
* **VM-hours idle**: joined VMs running no job (including draining-empty time until shutdown).
* **virtualization overhead**: boot core-hours (cores x boot time of every VM boot) plus penalty
  core-hours (busy minus useful).
* **conservation**: submitted = completed + never ran + still running at the end; checked and
  reported, so a lost job cannot hide.
* **incomplete**: more than 1 % of the *runnable* jobs (the trace ran them) never ran in this
  scenario. Its wait figures then describe only the jobs that ran, which can make a scenario that
  cannot run parallel jobs look far better than one that can; the table marks such a row and the
  summary says how many and why, so nobody reads it as an improvement.
* **wait by class**: jobs grouped by size (cores) and by length (the trace's run time), because a
  mean over a trace of mostly short serial jobs hides what happens to the long and the wide ones.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from vocloud.sim.engine import RunState
from vocloud.sim.workload import Workload

BSLD_THRESHOLD_S = 10.0
EPS = 1e-9
#: share of runnable jobs that may never run before a scenario's row is marked incomplete
INCOMPLETE_SHARE = 0.01
#: (label, upper bound exclusive) for job size in cores and job length in seconds
SIZE_CLASSES = (("1 core", 2), ("2-4 cores", 5), ("5-16 cores", 17), ("17-64 cores", 65),
                ("65+ cores", None))
LENGTH_CLASSES = (("< 1 min", 60), ("1-10 min", 600), ("10 min-1 h", 3600), ("1-10 h", 36000),
                  ("10 h+", None))


def _pct(values: npt.NDArray[np.float64], q: float) -> float:
    return float(np.percentile(values, q)) if values.size else 0.0


def wait_by_class(
    key: npt.NDArray[np.float64], waits: npt.NDArray[np.float64],
    classes: tuple[tuple[str, int | None], ...],
) -> dict[str, dict[str, float | int]]:
    """Jobs, mean and median wait per class of ``key`` (classes with no started job left out)."""
    bounds = [b for _, b in classes if b is not None]
    idx = np.searchsorted(np.asarray(bounds, dtype=np.float64), key, side="right")
    out: dict[str, dict[str, float | int]] = {}
    for i, (label, _) in enumerate(classes):
        sel = waits[idx == i]
        if sel.size:
            out[label] = {"jobs": int(sel.size), "wait_mean_s": float(sel.mean()),
                          "wait_median_s": _pct(sel, 50)}
    return out


def runnable_never_ran(w: Workload, st: RunState) -> tuple[int, dict[str, int]]:
    """Jobs the trace ran but this scenario never started, with their reasons."""
    reasons = Counter(r for i, r in st.never.items() if i not in w.excluded)
    return sum(reasons.values()), dict(sorted(reasons.items()))


@dataclass(slots=True)
class ScenarioResult:
    """Figures for one scenario plus the raw series the plots need (not written to JSON)."""

    name: str
    figures: dict[str, Any]
    waits: npt.NDArray[np.float64]
    state: RunState


def compute(
    name: str,
    w: Workload,
    st: RunState,
    *,
    total_cores: int,
    factor: float,
    boots: int = 0,
    boot_core_seconds: float = 0.0,
    idle_vm_seconds: float = 0.0,
    vm_core_seconds: float | None = None,
    extra: dict[str, Any] | None = None,
) -> ScenarioResult:
    """Compute the figures of one finished run (see module docstring for definitions)."""
    n = len(w)
    start = np.frombuffer(st.start, dtype=np.float64) if n else np.zeros(0)
    end = np.frombuffer(st.end, dtype=np.float64) if n else np.zeros(0)
    submit = np.asarray(w.submit, dtype=np.float64)
    procs = np.asarray(w.procs, dtype=np.float64)
    started = start >= 0
    done = end >= 0
    running = started & ~done
    completed = int(done.sum())
    never = len(st.never)
    still_running = int(running.sum())
    conserved = n == completed + never + still_running
    waits = (start - submit)[started]
    runs = (end - start)[done]
    waits_done = (start - submit)[done]
    bsld = np.maximum(1.0, (waits_done + runs) / np.maximum(runs, BSLD_THRESHOLD_S))
    span = max(st.t_last - st.t_first, 0.0)
    available = total_cores * span
    busy = st.busy_core_seconds + float((procs[running] * (st.t_last - start[running])).sum())
    useful = busy / factor
    utilization = busy / available if available > 0 else 0.0
    if utilization > 1 + EPS:
        raise AssertionError(f"{name}: utilization {utilization} > 1 (busy {busy}, available {available})")
    figures: dict[str, Any] = {
        "jobs_submitted": n,
        "jobs_completed": completed,
        "jobs_never_ran": never,
        "jobs_running_at_end": still_running,
        "conservation_ok": conserved,
        "never_ran_reasons": dict(sorted(Counter(st.never.values()).items())),
        "wait_mean_s": float(waits.mean()) if waits.size else 0.0,
        "wait_median_s": _pct(waits, 50),
        "wait_p95_s": _pct(waits, 95),
        "wait_p99_s": _pct(waits, 99),
        "wait_max_s": float(waits.max()) if waits.size else 0.0,
        "bounded_slowdown_mean": float(bsld.mean()) if bsld.size else 0.0,
        "utilization": utilization,
        "useful_utilization": useful / available if available > 0 else 0.0,
        "span_s": span,
        "site_cores": total_cores,
        "vm_boots": boots,
        "vm_hours_idle": idle_vm_seconds / 3600.0,
        "boot_core_hours": boot_core_seconds / 3600.0,
        "penalty_core_hours": (busy - useful) / 3600.0,
        "virtualization_overhead_core_hours": (boot_core_seconds + busy - useful) / 3600.0,
        "events": st.events,
        "stalled": st.stalled,
    }
    runnable = n - len(w.excluded)
    missing, missing_reasons = runnable_never_ran(w, st)
    figures["jobs_runnable"] = runnable
    figures["runnable_never_ran"] = missing
    figures["incomplete"] = runnable > 0 and missing > INCOMPLETE_SHARE * runnable
    if figures["incomplete"]:
        figures["incomplete_reasons"] = missing_reasons
    figures["wait_by_size"] = wait_by_class(procs[started], waits, SIZE_CLASSES)
    runtime = np.asarray(w.runtime, dtype=np.float64)
    figures["wait_by_length"] = wait_by_class(runtime[started], waits, LENGTH_CLASSES)
    vo = np.asarray(w.vo, dtype=np.int64)
    nvo = len(w.vo_names)
    done_per_vo = np.bincount(vo[done], minlength=nvo) if n else np.zeros(nvo, dtype=np.int64)
    started_per_vo = np.bincount(vo[started], minlength=nvo) if n else np.zeros(nvo, dtype=np.int64)
    wait_sum = np.bincount(vo[started], weights=waits, minlength=nvo) if n else np.zeros(nvo)
    figures["per_vo"] = {
        name: {
            "completed": int(done_per_vo[i]),
            "wait_mean_s": float(wait_sum[i] / started_per_vo[i]) if started_per_vo[i] else 0.0,
        }
        for i, name in enumerate(w.vo_names)
    }
    if vm_core_seconds is not None:
        alloc = vm_core_seconds / available if available > 0 else 0.0
        if alloc > 1 + EPS:
            raise AssertionError(f"{name}: VM allocation {alloc} > 1")
        figures["vm_allocation"] = alloc
    if extra:
        figures.update(extra)
    if not conserved:
        figures["conservation_error"] = (
            f"submitted {n} != completed {completed} + never ran {never} + running {still_running}"
        )
    return ScenarioResult(name, figures, waits, st)
