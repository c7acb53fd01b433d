"""``vocloud simulate --voc-report``: the Virtual Organization Cluster findings, replayed.

Murphy et al. ("Autonomic Clouds on the Grid", J. Grid Computing, 2010) argue for VO clusters
whose pools of VMs grow and shrink with the VO's jobs. Three of their qualitative claims can be
checked on a replay of a grid trace, with this project's planner as the provisioning policy:

1. **the pool tracks the load**: over a 2.5-month window (75 days) of the trace (the window with
   the most submitted core-seconds), the elastic pool's size follows the jobs in the system
   (running plus queued); measured as the correlation of their rolling means and the lag at
   which the cross-correlation peaks;
2. **dynamic provisioning costs no throughput**: the elastic site completes the same jobs in the
   same span as the physical one;
3. **the cost falls on short jobs**: VM boot time is a fixed delay, so the bounded slowdown of
   jobs shorter than a minute grows more, relative to the physical site, than that of long jobs.

Each claim is stated as supported or not by this replay's own figures (thresholds below), with
what the replay cannot say (its model's limits). Pure apart from the plot.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vocloud.sim.metrics import BSLD_THRESHOLD_S, LENGTH_CLASSES, ScenarioResult
from vocloud.sim.workload import Workload

WINDOW_DAYS = 75.0  # "2.5 months"
DAY = 86400.0
#: claim 1 holds if the rolling means correlate at least this well
TRACK_R = 0.8
#: claim 2 holds if the elastic span and completed jobs are within this share of physical's
THROUGHPUT_TOL = 0.01
#: the VOC sample interval (s): fine enough to see a pool follow a burst of jobs
SAMPLE_S = 900.0
ROLLING = 8  # samples (2 hours at 900 s)


def busiest_window(w: Workload, days: float = WINDOW_DAYS) -> tuple[float, float]:
    """``(start, end)`` of the ``days``-long window with the most submitted core-seconds."""
    sub = np.asarray(w.submit, dtype=np.float64)
    if not sub.size:
        return 0.0, 0.0
    work = np.asarray(w.runtime, dtype=np.float64) * np.asarray(w.procs, dtype=np.float64)
    csum = np.concatenate(([0.0], np.cumsum(work)))
    ends = np.searchsorted(sub, sub + days * DAY, side="left")
    totals = csum[ends] - csum[np.arange(sub.size)]
    i = int(np.argmax(totals))
    return float(sub[i]), float(sub[i] + days * DAY)


def slowdown_by_length(w: Workload, r: ScenarioResult) -> dict[str, dict[str, float]]:
    """Mean bounded slowdown and jobs per run-time class, over the jobs that completed."""
    start = np.frombuffer(r.state.start, dtype=np.float64)
    end = np.frombuffer(r.state.end, dtype=np.float64)
    sub = np.asarray(w.submit, dtype=np.float64)
    run = np.asarray(w.runtime, dtype=np.float64)
    done = end >= 0
    bsld = np.maximum(1.0, (end - sub) / np.maximum(end - start, BSLD_THRESHOLD_S))
    bounds = np.asarray([b for _, b in LENGTH_CLASSES if b is not None], dtype=np.float64)
    cls = np.searchsorted(bounds, run, side="right")
    out: dict[str, dict[str, float]] = {}
    for i, (label, _) in enumerate(LENGTH_CLASSES):
        sel = done & (cls == i)
        if sel.any():
            out[label] = {"jobs": int(sel.sum()), "bsld_mean": float(bsld[sel].mean()),
                          "wait_mean_s": float((start - sub)[sel].mean())}
    return out


def _rolling(v: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.float64]:
    from vocloud.sim.report import rolling_mean

    return rolling_mean(v, k)


def tracking(r: ScenarioResult, window: tuple[float, float]) -> dict[str, Any]:
    """Load (busy cores + queued jobs) and pool size in ``window``; their correlation and lag."""
    ss = [s for s in r.state.samples if window[0] <= s.t < window[1]]
    t = np.asarray([s.t for s in ss], dtype=np.float64)
    load = np.asarray([s.busy_cores + sum(s.queued) for s in ss], dtype=np.float64)
    pool = np.asarray([sum(s.pool) for s in ss], dtype=np.float64)
    out: dict[str, Any] = {"samples": int(t.size), "t": t, "load": load, "pool": pool}
    if t.size < 3 or load.std() == 0 or pool.std() == 0:
        out.update(r=0.0, lag_s=0.0, mean_load=float(load.mean()) if t.size else 0.0,
                   mean_pool=float(pool.mean()) if t.size else 0.0)
        return out
    lr, pr = _rolling(load, ROLLING), _rolling(pool, ROLLING)
    rr = float(np.corrcoef(lr, pr)[0, 1])
    step = float(np.median(np.diff(t)))
    a, b = load - load.mean(), pool - pool.mean()
    best, lag = -2.0, 0
    for k in range(0, min(24, t.size - 2)):  # the pool lags the load by k samples
        c = float(np.corrcoef(a[: a.size - k], b[k:])[0, 1])
        if c > best:
            best, lag = c, k
    out.update(r=rr, lag_s=lag * step, mean_load=float(load.mean()), mean_pool=float(pool.mean()))
    return out


def _lag(lag_s: float) -> str:
    if lag_s <= 0:
        return f"within one sample ({SAMPLE_S / 60:.0f} min)"
    return f"about {lag_s / 3600:.1f} h later"


def findings(w: Workload, results: Sequence[ScenarioResult]) -> dict[str, Any]:
    """The three claims' figures and verdicts (module docstring)."""
    by = {r.name: r for r in results}
    window = busiest_window(w)
    out: dict[str, Any] = {"window_start_day": (window[0] - w.start) / DAY,
                           "window_days": WINDOW_DAYS, "claims": []}
    el, ph = by.get("elastic"), by.get("physical")
    if el is not None:
        tr = tracking(el, window)
        out["tracking"] = {k: v for k, v in tr.items() if k not in ("t", "load", "pool")}
        ok = tr["r"] >= TRACK_R
        out["claims"].append((
            "The pool tracks the load",
            f"{'supported' if ok else 'not supported'}: over days {out['window_start_day']:.0f}-"
            f"{out['window_start_day'] + WINDOW_DAYS:.0f}, the elastic pool size and the jobs in the "
            f"system (rolling means of {ROLLING} samples of {SAMPLE_S:g} s) correlate at r = "
            f"{tr['r']:.2f} (threshold {TRACK_R}); the pool follows the load "
            f"{_lag(tr['lag_s'])} (cross-correlation peak); mean load {tr['mean_load']:.1f}, "
            f"mean pool {tr['mean_pool']:.1f} VMs."))
    if el is not None and ph is not None:
        fe, fp = el.figures, ph.figures
        same = (fe["jobs_completed"] >= fp["jobs_completed"] * (1 - THROUGHPUT_TOL)
                and fe["span_s"] <= fp["span_s"] * (1 + THROUGHPUT_TOL))
        out["claims"].append((
            "Dynamic provisioning costs no throughput",
            f"{'supported' if same else 'not supported'}: elastic completed "
            f"{fe['jobs_completed']:,} jobs in {fe['span_s'] / DAY:.2f} days, physical "
            f"{fp['jobs_completed']:,} in {fp['span_s'] / DAY:.2f} days (tolerance "
            f"{THROUGHPUT_TOL:.0%}); useful utilization {fe['useful_utilization']:.3f} against "
            f"{fp['useful_utilization']:.3f}."))
        se, sp = slowdown_by_length(w, el), slowdown_by_length(w, ph)
        short, long_ = LENGTH_CLASSES[0][0], next(
            (lab for lab, _ in reversed(LENGTH_CLASSES) if lab in se and lab in sp), None)
        if short in se and short in sp and long_ is not None and long_ != short:
            rs = se[short]["bsld_mean"] / sp[short]["bsld_mean"]
            rl = se[long_]["bsld_mean"] / sp[long_]["bsld_mean"]
            ok = rs > rl
            out["claims"].append((
                "The cost of provisioning falls on short jobs",
                f"{'supported' if ok else 'not supported'}: elastic/physical bounded slowdown "
                f"{rs:.2f}x for jobs {short} against {rl:.2f}x for jobs {long_}."))
    out["slowdown"] = {r.name: slowdown_by_length(w, r) for r in results}
    return out


def voc_plot(w: Workload, results: Sequence[ScenarioResult], out: Path) -> str | None:
    """``voc.png``: load vs pool size in the window (top), slowdown by length class (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {r.name: r for r in results}
    window = busiest_window(w)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7))
    el = by.get("elastic")
    if el is not None:
        tr = tracking(el, window)
        if tr["samples"]:
            days = (tr["t"] - w.start) / DAY
            ax1.plot(days, _rolling(tr["load"], ROLLING), lw=0.9,
                     label="jobs in the system (running + queued)")
            ax1.plot(days, _rolling(tr["pool"], ROLLING), lw=0.9, label="elastic pool size (VMs)")
            st = by.get("static")
            if st is not None:
                ax1.axhline(st.figures["site_cores"], color="grey", ls="--", lw=0.8,
                            label="static: every core a VM, always")
            ax1.set_yscale("symlog", linthresh=10)
            top = max(float(tr["load"].max()), float(tr["pool"].max()), 1.0)
            ax1.set_ylim(0, top * 8)  # room above the lines for the legend
            ax1.legend(fontsize="small", loc="upper center", ncol=3)
    ax1.set_xlabel("days since the trace's first submit")
    ax1.set_title(f"pool size tracking job load, {WINDOW_DAYS:.0f}-day window "
                  f"(rolling mean of {ROLLING} x {SAMPLE_S / 60:.0f} min)")
    labels = [lab for lab, _ in LENGTH_CLASSES]
    names = [n for n in ("physical", "static", "elastic") if n in by]
    width = 0.8 / max(len(names), 1)
    for k, name in enumerate(names):
        sd = slowdown_by_length(w, by[name])
        ax2.bar(np.arange(len(labels)) + k * width, [sd.get(lab, {}).get("bsld_mean", 0.0)
                                                     for lab in labels], width, label=name)
    ax2.set_xticks(np.arange(len(labels)) + width * (len(names) - 1) / 2, labels)
    ax2.set_yscale("log")
    ax2.set_ylabel("mean bounded slowdown (log)")
    ax2.set_title("slowdown by job length (the trace's run time)")
    ax2.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "voc.png", dpi=90)
    plt.close(fig)
    return "voc.png"


def voc_markdown(w: Workload, results: Sequence[ScenarioResult], plot: str | None) -> str:
    """The summary.md section: the claims with verdicts, the slowdown table, the limits."""
    f = findings(w, results)
    lines = ["", "## The VOC findings (Murphy et al., 2010), replayed", ""]
    for claim, verdict in f["claims"]:
        lines.append(f"- **{claim}** - {verdict}")
    names = [n for n in ("physical", "static", "elastic") if n in f["slowdown"]]
    lines += ["", "Mean bounded slowdown by job length:", "",
              "| length | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for lab, _ in LENGTH_CLASSES:
        cells = [f["slowdown"][n].get(lab) for n in names]
        if any(cells):
            lines.append(f"| {lab} | " + " | ".join(
                f"{c['bsld_mean']:,.2f} ({c['jobs']:,})" if c else "-" for c in cells) + " |")
    lines += [
        "", "What this replay does not show:", "",
        "- the paper's own testbed figures (its VM boot and contextualization times, its grid "
        "middleware, its Condor overlay): boot time here is the `--boot-time` distribution and "
        "every job runs `--penalty` slower in a VM, both assumptions, not measurements;",
        "- user behaviour under a different site (a trace's arrivals are replayed as recorded, "
        "whatever the waits), failures, and the batch system's own latencies (see "
        "`vocloud simulate --validate` for those, against real Slurm);",
        "- anything about parallel jobs: LPC-EGEE is serial.",
    ]
    if plot:
        lines += ["", f"![{plot}]({plot})"]
    return "\n".join(lines) + "\n"
