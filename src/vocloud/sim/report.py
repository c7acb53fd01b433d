"""Writing a simulation's results: ``metrics.json``, ``summary.md`` and PNG plots.

``metrics.json`` is the reproducible artefact: sorted keys, floats rounded to 4 decimals, no
timestamps, host names or absolute paths, so the same trace, options and seed give a
byte-identical file on any machine (the determinism test compares bytes). The Markdown summary
and the plots are for people; the plots use matplotlib's Agg backend, so no display is needed,
and they read the time series the loop sampled at a fixed interval rather than per event, which
keeps memory flat however long the trace.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vocloud.sim.differences import known_differences
from vocloud.sim.metrics import ScenarioResult

FLOAT_DIGITS = 4


def _clean(value: Any) -> Any:
    """Round floats and make every container JSON-stable (sorted keys, lists)."""
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        r = round(value, FLOAT_DIGITS)
        return 0.0 if r == 0 else r
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return str(value)


def metrics_document(
    results: Sequence[ScenarioResult], config: dict[str, Any], trace: dict[str, Any]
) -> dict[str, Any]:
    """The content of metrics.json (also what ``--json`` prints)."""
    doc: dict[str, Any] = _clean({
        "config": config,
        "trace": trace,
        "scenarios": {r.name: r.figures for r in results},
    })
    return doc


def dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=True) + "\n"


TABLE_COLUMNS = (
    ("scenario", None),
    ("completed", "jobs_completed"),
    ("never ran", "jobs_never_ran"),
    ("mean wait (s)", "wait_mean_s"),
    ("median wait (s)", "wait_median_s"),
    ("p95 wait (s)", "wait_p95_s"),
    ("p99 wait (s)", "wait_p99_s"),
    ("bounded slowdown", "bounded_slowdown_mean"),
    ("utilization", "utilization"),
    ("VM boots", "vm_boots"),
    ("idle VM-hours", "vm_hours_idle"),
    ("virt. overhead (core-h)", "virtualization_overhead_core_hours"),
    ("conserved", "conservation_ok"),
)


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:,.1f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


INCOMPLETE_MARK = " (incomplete!)"
TOP_REASONS = 3
RECORDED_ROW = "recorded (trace)"


def _row_name(r: ScenarioResult) -> str:
    return r.name + (INCOMPLETE_MARK if r.figures.get("incomplete") else "")


def scenario_table(results: Sequence[ScenarioResult], recorded: dict[str, Any] | None = None) -> str:
    """The Markdown scenario table (also printed by the CLI and the benchmark).

    ``recorded`` (the trace's own figures, ``sim.recorded``) becomes a row of its own right after
    the physical scenario, blank where the trace says nothing.
    """
    head = "| " + " | ".join(c for c, _ in TABLE_COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in TABLE_COLUMNS) + "|"
    rows = []
    for r in results:
        rows.append("| " + " | ".join(_row_name(r) if key is None else _fmt(r.figures.get(key, ""))
                                      for _, key in TABLE_COLUMNS) + " |")
        if r.name == "physical" and recorded:
            rows.append("| " + " | ".join(RECORDED_ROW if key is None else _fmt(recorded.get(key, ""))
                                          for _, key in TABLE_COLUMNS) + " |")
    return "\n".join([head, rule, *rows])


def warnings(results: Sequence[ScenarioResult]) -> list[str]:
    """One sentence per incomplete scenario: how many runnable jobs never ran, and why."""
    out = []
    for r in results:
        f = r.figures
        if not f.get("incomplete"):
            continue
        runnable = max(int(f["jobs_runnable"]), 1)
        ranked = sorted(f.get("incomplete_reasons", {}).items(), key=lambda kv: (-kv[1], kv[0]))
        reasons = "; ".join(f"{n:,} x {why}" for why, n in ranked[:TOP_REASONS])
        if len(ranked) > TOP_REASONS:
            rest = sum(n for _, n in ranked[TOP_REASONS:])
            reasons += f"; {rest:,} more for {len(ranked) - TOP_REASONS:,} other reasons (metrics.json)"
        out.append(f"{r.name}: {f['runnable_never_ran']:,} of {runnable:,} runnable jobs "
                   f"({100 * f['runnable_never_ran'] / runnable:.1f} %) never ran ({reasons}); its wait "
                   "figures cover only the jobs that ran and are not comparable with the other rows.")
    return out


def class_table(results: Sequence[ScenarioResult], key: str, title: str) -> list[str]:
    """Rows of a class x scenario table of mean waits (``wait_by_size`` or ``wait_by_length``)."""
    labels: list[str] = []
    for r in results:
        labels += [c for c in r.figures.get(key, {}) if c not in labels]
    if not labels:
        return []
    rows = [f"| {title} | " + " | ".join(f"{_row_name(r)} (jobs / mean s)" for r in results) + " |",
            "|---|" + "|".join("---" for _ in results) + "|"]
    for label in labels:
        cells = []
        for r in results:
            c = r.figures.get(key, {}).get(label)
            cells.append(f"{c['jobs']:,} / {_fmt(float(c['wait_mean_s']))}" if c else "-")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return rows


def per_vo_table(results: Sequence[ScenarioResult]) -> list[str]:
    """Rows of a VO x scenario table of mean waits, busiest VOs first."""
    if not results:
        return []
    first = results[0].figures.get("per_vo", {})
    vos = sorted(first, key=lambda v: (-first[v]["completed"], v))
    rows = ["| VO | jobs completed | " + " | ".join(r.name for r in results) + " |",
            "|---|---|" + "|".join("---" for _ in results) + "|"]
    for vo in vos:
        waits = [_fmt(float(r.figures.get("per_vo", {}).get(vo, {}).get("wait_mean_s", 0.0)))
                 for r in results]
        rows.append(f"| {vo} | {first[vo]['completed']:,} | " + " | ".join(waits) + " |")
    return rows


def summary_markdown(doc: dict[str, Any], results: Sequence[ScenarioResult], plots: Sequence[str]) -> str:
    trace, config = doc["trace"], doc["config"]
    lines = [
        "# vocloud simulation summary",
        "",
        f"Trace `{trace.get('name', '?')}`: {trace['jobs']:,} jobs, VO map `{trace.get('vo_map', '?')}`, "
        f"scale {trace.get('scale', 'none')}.",
        f"Site: {config['hosts']} hosts x {config['cores_per_host']} cores, "
        f"{config['mem_per_host_mib']} MiB per host; seed {config['seed']}; "
        f"poll {config['poll_interval_s']} s; "
        f"boot {config['boot_time']}; penalty {config['penalty']}.",
        "",
        scenario_table(results, trace.get("recorded")),
        "",
        *[f"**Warning** - {line}" for line in warnings(results)],
        "",
        "## Known differences of the model",
        "",
        *known_differences(doc, results),
        "",
        "## Mean wait per VO (s)",
        "",
        *per_vo_table(results),
        "",
        "## Wait by job size",
        "",
        *class_table(results, "wait_by_size", "cores"),
        "",
        "## Wait by job length (the trace's run time)",
        "",
        *class_table(results, "wait_by_length", "length"),
        "",
        "## Jobs that never ran",
        "",
    ]
    for r in results:
        for reason, n in r.figures["never_ran_reasons"].items():
            lines.append(f"- {r.name}: {n:,} x {reason}")
    read = trace.get("read", {})
    lines += ["", "## Input", "", f"- lines read: {read.get('lines_read', 0):,}, "
              f"malformed lines skipped: {read.get('skipped_total', 0):,} {read.get('skipped', {})}"]
    for ex in read.get("examples", [])[:5]:
        lines.append(f"  - line {ex['line']}: {ex['reason']}")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


#: samples per rolling-mean window in the time plots: about a fiftieth of a replay's ~1,000
#: samples, so a machine that swings between empty and full every hour reads as a line, not a band
ROLLING_SAMPLES = 20


def rolling_mean(values: npt.NDArray[np.float64], window: int) -> npt.NDArray[np.float64]:
    """Trailing mean over ``window`` samples (shorter at the start), same length as ``values``."""
    if values.size == 0 or window <= 1:
        return values
    csum = np.cumsum(np.insert(values.astype(float), 0, 0.0))
    idx = np.arange(1, values.size + 1)
    lo = np.maximum(idx - window, 0)
    out: npt.NDArray[np.float64] = (csum[idx] - csum[lo]) / (idx - lo)
    return out


def write_plots(results: Sequence[ScenarioResult], vo_names: Sequence[str], out: Path) -> list[str]:
    """Write the three PNGs; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []
    day = 86400.0

    # 1. queue length vs pool size per VO (elastic, else the last scenario that has pools)
    src = next((r for r in results if r.name == "elastic"), results[-1])
    samples = src.state.samples
    if samples:
        t0 = samples[0].t
        t = np.array([(s.t - t0) / day for s in samples])
        queued = np.array([s.queued for s in samples], dtype=float)
        pool = np.array([s.pool for s in samples], dtype=float)
        busy_vos = [i for i in np.argsort(-(queued.sum(0) + pool.sum(0)), kind="stable") if
                    queued[:, i].any() or pool[:, i].any()][:6]
        if not busy_vos:
            busy_vos = [0]
        fig, axes = plt.subplots(
            len(busy_vos), 1, figsize=(10, 2.2 * len(busy_vos)), sharex=True, squeeze=False
        )
        for ax, i in zip(axes[:, 0], busy_vos, strict=True):
            # the pool as a shaded area under the queue's line, both as trailing means: a pool
            # drawn as a line on top hid every queue shorter than it (issue 17)
            ax.fill_between(t, rolling_mean(pool[:, i], ROLLING_SAMPLES), step="post", alpha=0.35,
                            color="tab:orange", lw=0, label="pool size (VMs)")
            ax.plot(t, rolling_mean(queued[:, i], ROLLING_SAMPLES), lw=0.9, color="tab:blue",
                    label="queued jobs")
            ax.set_ylabel(vo_names[i])
        axes[0, 0].legend(loc="upper right", fontsize="small")
        axes[0, 0].set_title(f"{src.name}: queue length vs pool size per VO "
                             f"(rolling mean of {ROLLING_SAMPLES} samples)")
        axes[-1, 0].set_xlabel("days since first submit")
        fig.tight_layout()
        fig.savefig(out / "queue_vs_pool.png", dpi=90)
        plt.close(fig)
        written.append("queue_vs_pool.png")

    # 2. utilization over time
    fig, ax = plt.subplots(figsize=(10, 3.5))
    for r in results:
        ss = r.state.samples
        if ss:
            cores = max(int(r.figures["site_cores"]), 1)
            busy = np.array([s.busy_cores / cores for s in ss], dtype=float)
            ax.plot([(s.t - ss[0].t) / day for s in ss], rolling_mean(busy, ROLLING_SAMPLES), lw=1.0,
                    label=r.name)
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("days since first submit")
    ax.set_ylabel("busy cores / site cores")
    ax.set_title(f"utilization over time (rolling mean of {ROLLING_SAMPLES} samples)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "utilization.png", dpi=90)
    plt.close(fig)
    written.append("utilization.png")

    # 3. wait-time CDF
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        if r.waits.size:
            w = np.sort(r.waits)
            ax.plot(w + 1.0, np.arange(1, w.size + 1) / w.size, lw=1, label=r.name)
    ax.set_xscale("log")
    ax.set_xlabel("wait + 1 s (log)")
    ax.set_ylabel("fraction of started jobs")
    ax.set_title("wait-time CDF")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out / "wait_cdf.png", dpi=90)
    plt.close(fig)
    written.append("wait_cdf.png")
    return written


def write_report(
    out: Path, results: Sequence[ScenarioResult], doc: dict[str, Any], vo_names: Sequence[str],
    *, plots: bool = True,
) -> list[Path]:
    """Write metrics.json, summary.md and (unless ``plots`` is false) the PNGs into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(dumps(doc), encoding="utf-8")
    names = write_plots(results, vo_names, out) if plots else []
    (out / "summary.md").write_text(summary_markdown(doc, results, names), encoding="utf-8")
    return [out / "metrics.json", out / "summary.md", *(out / n for n in names)]
