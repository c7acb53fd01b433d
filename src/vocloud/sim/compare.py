"""Side by side: vocloud's planner against its peers' pool policies on one trace.

Every policy replays the same workload on the same site (hosts, boot and shutdown times, VM
shape, EASY batch partitions per VO, the real VM scheduler and lifecycle table) with the same
random stream, so only the decision of how many VMs each VO gets differs:

* ``static``: today's static scenario (host-sized VMs split by trace core-seconds), the floor;
* ``vocloud``: the production planner (``vocloud.elastic.planner.plan``), as the elastic scenario;
* the peers of :mod:`vocloud.sim.policies`, each called in place of ``plan`` at every poll.

Figures per policy: mean, median and p95 wait, bounded slowdown, VM boots, idle VM-hours and
VM core-hours per useful core-hour (what the pool cost per hour of work done; 1.05 is the
floor with the 5 % virtualization penalty). A replay in which more than 1 % of the runnable jobs
never ran is marked incomplete, as the scenario table does, and its waits cover only the jobs
that ran.
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import random
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from vocloud.elastic.policy import Plan
from vocloud.errors import InvalidInput
from vocloud.sim.elastic import ElasticSite
from vocloud.sim.engine import Simulation
from vocloud.sim.metrics import ScenarioResult, compute
from vocloud.sim.policies import PEERS
from vocloud.sim.policies.base import PeerContext
from vocloud.sim.report import INCOMPLETE_MARK, _fmt
from vocloud.sim.run import SimConfig, run_scenario, sample_interval_for
from vocloud.sim.workload import Workload

POLICIES: tuple[str, ...] = ("static", "vocloud", *PEERS)
BASE = "vocloud"


def parse_policies(text: str) -> tuple[str, ...]:
    """``all`` or a comma-separated list of policy names (vocloud and static always compared)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names or names == ["all"]:
        return POLICIES
    bad = [n for n in names if n not in POLICIES]
    if bad:
        raise InvalidInput(f"unknown policy {', '.join(bad)}; use all or some of {', '.join(POLICIES)}")
    chosen = {*names, "static", BASE}
    return tuple(n for n in POLICIES if n in chosen)


def context(w: Workload, config: SimConfig, site: ElasticSite) -> PeerContext:
    """The peers' configuration at this site: shares by trace core-seconds, the VM shape."""
    pol = site.policies[0]
    return PeerContext(
        vo_names=tuple(w.vo_names), shares=tuple(w.core_seconds_by_vo()), cores_per_vm=pol.cores_per_vm,
        memory_mib_per_vm=pol.memory_mib_per_vm, max_vms=pol.max_vms, poll_interval=config.poll_interval,
        idle_timeout_s=pol.idle_timeout_s, worker_shape=pol.worker_shape,
        host_shape=(config.spec.cores_per_host, config.spec.mem_per_host),
    )


def run_policy(name: str, w: Workload, config: SimConfig, *, keep_waits: bool = False) -> ScenarioResult:
    """Replay ``w`` under one policy and compute its figures (module docstring).

    ``keep_waits``: keep the per-job waits (``ScenarioResult.waits``, jobs that started) for
    :func:`waits_by_width`; the comparison itself drops them.
    """
    if name == "static":
        r = run_scenario("static", w, config)
        f = r.figures
        f["vm_core_hours"] = config.spec.total_cores * f["span_s"] / 3600.0 if f["span_s"] else 0.0
        return _finish(r, keep_waits)
    if name != BASE and name not in PEERS:
        raise InvalidInput(f"unknown policy {name!r}")
    rng = random.Random(f"{config.seed}:elastic")  # the same stream for every elastic policy
    site = ElasticSite(
        w, config.spec, knobs=config.knobs, penalty=config.penalty, boot=config.boot,
        shutdown=config.shutdown, rng=rng, poll_interval=config.poll_interval,
    )
    sim = Simulation(w, site, sample_interval=sample_interval_for(w, config))
    if name != BASE:
        peer = PEERS[name](context(w, config, site))
        site._plan = Settled(peer, site, w, sim.stall_limit)
        # peers are time-driven: they decide at every poll, unless one says it need not
        site.always_plan = getattr(peer, "every_poll", True)
    st = sim.run()
    site.finish(st.t_last)
    if site.refused_shutdowns:
        raise AssertionError(f"{name}: the policy asked to shut down {site.refused_shutdowns} busy VM(s)")
    r = compute(
        name, w, st, total_cores=site.total_cores, factor=site.factor, boots=site.boots,
        boot_core_seconds=site.boot_core_seconds, idle_vm_seconds=site.idle_node_seconds(st.t_last),
        vm_core_seconds=site.vm_core_seconds, extra={"peak_vms": site.peak_vms},
    )
    r.figures["vm_core_hours"] = site.vm_core_seconds / 3600.0
    r.figures["_started"] = [j for j in range(len(w)) if st.start[j] >= 0] if keep_waits else None
    return _finish(r, keep_waits)


class Settled:
    """A peer that is stopped once it can no longer start a job, so its replay ends.

    A queue-blind peer (COBalD, Vcycle) may never grow a pool enough for a job wider than its
    workers, yet keep booting and draining VMs at every poll: the engine ends a replay only when
    nothing acts for its stall limit, so such a replay would run for ever. After the last
    arrival, once no job runs and none has started for ``limit`` seconds of virtual time, the
    peer's plans are replaced by doing nothing; the engine then ends the replay after another
    ``limit`` and the jobs left are reported as never run (the row is marked incomplete).
    Until then the peer decides exactly as it would unwrapped.
    """

    def __init__(self, peer: Any, site: ElasticSite, w: Workload, limit: float) -> None:
        self.peer, self.site, self.limit = peer, site, limit
        self.last_submit = max(w.submit) if len(w) else 0.0
        self.started = -1
        self.since = 0.0
        self.stopped = False

    def __call__(self, demand: Any, pools: Any, cap: Any, now: float) -> Any:
        if self.stopped:
            return Plan((), ())
        if now >= self.last_submit:
            started = sum(c.started for c in self.site.parts)
            if started != self.started or any(c.alloc for c in self.site.parts):
                self.started, self.since = started, now
            elif now - self.since >= self.limit:
                self.stopped = True
                return Plan((), ())
        return self.peer(demand, pools, cap, now)


def _finish(r: ScenarioResult, keep_waits: bool = False) -> ScenarioResult:
    f = r.figures
    useful = f["useful_utilization"] * f["site_cores"] * f["span_s"] / 3600.0
    f["useful_core_hours"] = useful
    f["vm_hours_per_useful_core_hour"] = f["vm_core_hours"] / useful if useful > 0 else 0.0
    if not keep_waits:
        r.waits = r.waits[:0]  # the comparison needs no per-job series; keeps results small to pass back
        f.pop("_started", None)
    return r


#: Job widths (cores) ``waits_by_width`` groups by.
WIDTHS: tuple[tuple[int, int], ...] = ((1, 1), (2, 2), (3, 16), (17, 64), (65, 1 << 30))


def waits_by_width(name: str, w: Workload, config: SimConfig, widths: Sequence[tuple[int, int]] = WIDTHS,
                   ) -> list[tuple[tuple[int, int], int, float, float]]:
    """Mean and median wait of the jobs that started under ``name``, by job width in cores:
    ((lowest, highest cores), jobs, mean wait s, median wait s) per band (docs/policies.md)."""
    import numpy as np

    r = run_policy(name, w, config, keep_waits=True)
    started = r.figures.pop("_started", None)
    if started is None:  # static: its replay keeps no start list here
        raise InvalidInput("waits by width need an elastic policy (vocloud or a peer)")
    procs = np.asarray([w.procs[j] for j in started])
    waits = np.asarray(r.waits)
    out = []
    for lo, hi in widths:
        m = (procs >= lo) & (procs <= hi)
        n = int(m.sum())
        mean = float(waits[m].mean()) if n else 0.0
        out.append(((lo, hi), n, mean, float(np.median(waits[m])) if n else 0.0))
    return out


_SHARED: tuple[Workload, SimConfig] | None = None  # inherited by forked workers


def _child(name: str) -> ScenarioResult:
    assert _SHARED is not None
    return run_policy(name, *_SHARED)


def compare(w: Workload, config: SimConfig, names: Sequence[str], workers: int = 1) -> list[ScenarioResult]:
    """Run every policy in ``names`` (in that order); ``workers > 1``: in forked processes."""
    global _SHARED
    if workers <= 1 or len(names) == 1:
        return [run_policy(n, w, config) for n in names]
    _SHARED = (w, config)
    try:
        ctx = mp.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(workers, len(names)), mp_context=ctx) as pool:
            return list(pool.map(_child, names))
    finally:
        _SHARED = None


COLUMNS = (
    ("policy", None),
    ("mean wait (s)", "wait_mean_s"),
    ("median wait (s)", "wait_median_s"),
    ("p95 wait (s)", "wait_p95_s"),
    ("bounded slowdown", "bounded_slowdown_mean"),
    ("VM boots", "vm_boots"),
    ("idle VM-hours", "vm_hours_idle"),
    ("VM-h / useful core-h", "vm_hours_per_useful_core_hour"),
    ("never ran", "runnable_never_ran"),
)
ROW_KEYS = tuple(k for _, k in COLUMNS if k is not None)


def rows(results: Sequence[ScenarioResult]) -> list[dict[str, Any]]:
    """The table's figures per policy (what ``--json`` prints)."""
    out = []
    for r in results:
        row: dict[str, Any] = {"policy": r.name, "incomplete": bool(r.figures.get("incomplete"))}
        row.update({k: r.figures.get(k) for k in ROW_KEYS})
        if row["incomplete"]:
            row["incomplete_reasons"] = r.figures.get("incomplete_reasons", {})
        out.append(row)
    return out


def table(results: Sequence[ScenarioResult]) -> str:
    """The comparison as a Markdown table, incomplete replays marked as the scenario table does."""
    head = "| " + " | ".join(c for c, _ in COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in COLUMNS) + "|"
    lines = [head, rule]
    for row in rows(results):
        name = row["policy"] + (INCOMPLETE_MARK if row["incomplete"] else "")
        lines.append("| " + " | ".join(name if k is None else _fmt(row[k]) for _, k in COLUMNS) + " |")
    return "\n".join(lines)


def verdicts(results: Sequence[ScenarioResult]) -> list[str]:
    """vocloud's planner against each other policy: better, worse, or a trade-off (and how)."""
    by = {r.name: r.figures for r in results}
    if BASE not in by:
        return []
    v = by[BASE]
    out = []
    for name, f in by.items():
        if name == BASE:
            continue
        dw = v["wait_mean_s"] - f["wait_mean_s"]
        di = v["vm_hours_idle"] - f["vm_hours_idle"]
        if dw <= 0 and di <= 0 and (dw < 0 or di < 0):
            word = "vocloud better"
        elif dw >= 0 and di >= 0 and (dw > 0 or di > 0):
            word = "vocloud WORSE"
        elif dw == 0 and di == 0:
            word = "tie"
        else:
            word = "trade-off"
        note = " (incomplete replay)" if f.get("incomplete") or v.get("incomplete") else ""
        out.append(f"vs {name}: {word}: mean wait {v['wait_mean_s']:,.1f} s vs {f['wait_mean_s']:,.1f} s, "
                   f"idle VM-hours {v['vm_hours_idle']:,.1f} vs {f['vm_hours_idle']:,.1f}{note}")
    return out


#: vocloud's settings for its own frontier (``frontier``), (headroom, idle timeout s): the two
#: knobs a site turns to trade idle VM-hours for wait (``PoolPolicy.headroom`` keeps spare
#: workers ready; the idle timeout keeps idle ones longer).
FRONTIER: tuple[tuple[float, float], ...] = (
    (0.0, 300.0), (0.0, 1800.0), (0.0, 3600.0), (0.0, 7200.0), (0.25, 3600.0), (0.25, 14400.0))

Setting = tuple[float, float]


def setting_label(s: Setting) -> str:
    return f"--headroom {s[0]:g} --idle-timeout {s[1]:g}"


def _at(setting: Setting, w: Workload, config: SimConfig) -> dict[str, Any]:
    knobs = dataclasses.replace(config.knobs, headroom=setting[0], idle_timeout_s=setting[1])
    return run_policy(BASE, w, dataclasses.replace(config, knobs=knobs)).figures


def _frontier_child(setting: Setting) -> dict[str, Any]:
    assert _SHARED is not None
    return _at(setting, *_SHARED)


def frontier(w: Workload, config: SimConfig, settings: Sequence[Setting] = FRONTIER,
             workers: int = 1) -> list[tuple[Setting, dict[str, Any]]]:
    """vocloud's planner at several (headroom, idle timeout) settings: (setting, figures) each;
    ``workers > 1``: in forked processes, as :func:`compare`."""
    global _SHARED
    if workers <= 1 or len(settings) == 1:
        return [(s, _at(s, w, config)) for s in settings]
    _SHARED = (w, config)
    try:
        ctx = mp.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(workers, len(settings)), mp_context=ctx) as pool:
            return list(zip(settings, pool.map(_frontier_child, settings), strict=True))
    finally:
        _SHARED = None


def frontier_verdicts(results: Sequence[ScenarioResult], points: Sequence[tuple[Setting, dict[str, Any]]],
                      ) -> list[str]:
    """For each other policy: the vocloud setting that is at least as good on both axes, if any."""
    out = []
    for r in results:
        if r.name == BASE:
            continue
        f = r.figures
        wins = [(t, p) for t, p in points
                if p["wait_mean_s"] <= f["wait_mean_s"] and p["vm_hours_idle"] <= f["vm_hours_idle"]]
        if wins:
            t, p = wins[0]
            out.append(f"{r.name}: matched or beaten on both axes by vocloud at {setting_label(t)} "
                       f"({p['wait_mean_s']:,.1f} s, {p['vm_hours_idle']:,.1f} idle VM-h)")
        else:
            out.append(f"{r.name}: no vocloud setting tried is at least as good on both axes")
    return out


def pareto_plot(results: Sequence[ScenarioResult], path: Path, title: str,
                points: Sequence[tuple[Setting, dict[str, Any]]] = ()) -> Path:
    """Mean wait against idle VM-hours, one point per policy (lower left is better).

    ``points``: vocloud's frontier (``frontier``), drawn as a line through its settings.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for i, r in enumerate(results):
        x, y = r.figures["vm_hours_idle"], r.figures["wait_mean_s"]
        marker = "*" if r.name == BASE else ("s" if r.name == "static" else "o")
        ax.scatter([x], [y], s=120 if r.name == BASE else 50, marker=marker)
        label = r.name + (" (incomplete)" if r.figures.get("incomplete") else "")
        # staggered, so that near-identical policies (vocloud, cloudscheduler) stay readable
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 4 - 10 * (i % 3)), fontsize=8)
    if points:
        label = "vocloud, (headroom, idle timeout s): " + ", ".join(f"({h:g}, {t:g})" for (h, t), _ in points)
        ax.plot([p["vm_hours_idle"] for _, p in points], [p["wait_mean_s"] for _, p in points], "--",
                color="gray", linewidth=1, label=label)
        ax.legend(fontsize=7)
    ax.set_yscale("symlog", linthresh=1.0)  # waits span seconds to many minutes
    ax.set_xlabel("idle VM-hours")
    ax.set_ylabel("mean wait (s)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
