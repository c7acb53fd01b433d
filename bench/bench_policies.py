"""Benchmark: vocloud's planner beside its peers' policies on the full LPC-EGEE and SDSC-SP2 traces.

For each trace, every policy of ``vocloud.sim.compare`` (static, vocloud, cloudscheduler, Vcycle,
COBalD's linear and relative-supply controllers with defaults and a tuned setting) replays the
whole trace on the default site (the header's MaxProcs as 2-core hosts); prints the comparison
table, vocloud's verdict against each peer, and the wall and CPU seconds each policy took. The
baseline in the same run is the static row (the floor) and vocloud's own row. Every policy uses
``--worker-shape`` (default ``job``): the peers size their workers as docs/policies.md, "Worker
shapes", describes.

    .venv/bin/python -m bench.bench_policies [--limit N] [--trace PATH ...] [--policies a,b] [--workers N]
                                             [--plots DIR] [--worker-shape S] [--by-width a,b]
                                             [--idle-by-cause a,b] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vocloud.sim import compare
from vocloud.sim.elastic import ElasticKnobs, ElasticSite
from vocloud.sim.engine import Simulation
from vocloud.sim.report import _clean
from vocloud.sim.run import SimConfig, default_spec, load_trace

# the shared traces sit next to the checkout (/work/shared) for /work/main and /work/wt/<name> alike
TRACES = next((p / "shared" / "traces" for p in Path(__file__).resolve().parents
               if (p / "shared" / "traces").is_dir()), Path("shared/traces"))
DEFAULT_TRACES = (TRACES / "LPC-EGEE-2004-1.2-cln.swf.gz", TRACES / "SDSC-SP2-1998-4.2-cln.swf.gz")


def cpu_with_children() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def one_trace(path: Path, names: tuple[str, ...], limit: int | None, workers: int,
              plots: Path | None, with_frontier: bool, shape: str = "job") -> dict[str, Any]:
    loaded = load_trace(path, limit=limit)
    w = loaded.workload
    config = SimConfig(spec=default_spec(loaded.max_procs, None, None, None),
                       knobs=ElasticKnobs(worker_shape=shape))
    t0, c0 = time.perf_counter(), cpu_with_children()
    results = compare.compare(w, config, names, workers=workers)
    wall, cpu = time.perf_counter() - t0, cpu_with_children() - c0
    points = compare.frontier(w, config) if with_frontier else []
    title = f"{path.name}: {len(w):,} jobs, {config.spec.hosts} hosts x {config.spec.cores_per_host} cores"
    if plots is not None:
        compare.pareto_plot(results, plots / f"policies-{path.name.split('.')[0]}.png", title, points)
    return {"title": title, "table": compare.table(results), "verdicts": compare.verdicts(results),
            "rows": compare.rows(results), "wall_s": wall, "cpu_s": cpu,
            "frontier": [{"headroom": h, "idle_timeout_s": t, **{k: p[k] for k in compare.ROW_KEYS}}
                         for (h, t), p in points],
            "frontier_verdicts": compare.frontier_verdicts(results, points) if points else []}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--trace", type=Path, action="append", help="trace(s) (default: LPC-EGEE and SDSC-SP2)")
    ap.add_argument("--limit", type=int, default=None, help="replay only the first N jobs of each trace")
    ap.add_argument("--policies", default="all")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--plots", type=Path, default=None, help="write the Pareto plots here")
    ap.add_argument("--no-frontier", action="store_true", help="skip vocloud's settings sweep")
    ap.add_argument("--worker-shape", default="job", choices=("fixed", "job", "host"),
                    help="every policy's worker shape (peers: docs/policies.md, 'Worker shapes')")
    ap.add_argument("--by-width", default="",
                    help="also print the mean and median wait by job width for these policies (a,b)")
    ap.add_argument("--idle-by-cause", default="",
                    help="also print these policies' idle VM-hours by what the idle VM's VO was doing (a,b)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    names = compare.parse_policies(args.policies)
    out = [one_trace(p, names, args.limit, args.workers, args.plots, not args.no_frontier, args.worker_shape)
           for p in (args.trace or DEFAULT_TRACES)]
    if args.json:
        sys.stdout.write(json.dumps(_clean(out), indent=2, sort_keys=True) + "\n")
        return 0
    for doc in out:
        print(f"\n## {doc['title']}\n")
        print(doc["table"])
        print()
        for line in doc["verdicts"]:
            print(f"- {line}")
        print(f"\n{len(names)} policies in {doc['wall_s']:.1f} s wall, {doc['cpu_s']:.1f} s CPU "
              f"({args.workers} worker(s))")
        if doc["frontier"]:
            print("\nvocloud's frontier (its headroom and idle timeout):\n")
            print("| headroom | idle timeout (s) | mean wait (s) | p95 wait (s) | idle VM-hours | VM boots |")
            print("|---|---|---|---|---|---|")
            for p in doc["frontier"]:
                print(f"| {p['headroom']:g} | {p['idle_timeout_s']:g} | {p['wait_mean_s']:,.2f} "
                      f"| {p['wait_p95_s']:,.1f} | {p['vm_hours_idle']:,.1f} | {p['vm_boots']:,} |")
            print()
            for line in doc["frontier_verdicts"]:
                print(f"- {line}")
        sys.stdout.flush()
    for path in (args.trace or DEFAULT_TRACES) if args.by_width else ():
        by_width(path, args.by_width.split(","), args.limit, args.worker_shape)
    for path in (args.trace or DEFAULT_TRACES) if args.idle_by_cause else ():
        idle_table(path, args.idle_by_cause.split(","), args.limit, args.worker_shape)
    return 0


def by_width(path: Path, names: list[str], limit: int | None, shape: str) -> None:
    """Mean / median wait by job width (cores) for each policy in ``names`` (docs/policies.md)."""
    loaded = load_trace(path, limit=limit)
    config = SimConfig(spec=default_spec(loaded.max_procs, None, None, None),
                       knobs=ElasticKnobs(worker_shape=shape))
    cols = {n: compare.waits_by_width(n, loaded.workload, config) for n in names}
    print(f"\n## {path.name}: wait by job width, mean / median (s)\n")
    print("| cores | jobs | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for i, ((lo, hi), n, _, _) in enumerate(cols[names[0]]):
        band = str(lo) if lo == hi else f"{lo}-{hi}" if hi < 1 << 30 else f"{lo}+"
        cells = " | ".join(f"{cols[c][i][2]:,.0f} / {cols[c][i][3]:,.0f}" for c in names)
        print(f"| {band} | {n:,} | {cells} |")
    sys.stdout.flush()


#: Why a joined VM with no job stood idle (``idle_by_cause``), in the order printed.
CAUSES = (
    "no job waiting",
    "first waiting job needs more cores than its VMs have free; the VO holds the site's reservation",
    "first waiting job needs more cores than its VMs have free; no reservation",
    "first waiting job fits (starts at the next scheduling pass)",
)


@contextmanager
def _sampling(counts: dict[tuple[str, bool], float]) -> Iterator[None]:
    """Sample every elastic site's idle VMs at each poll, weighted by the time since the last.

    A poll sees the state the events since the previous poll left; the error is at most a poll
    interval per state change (on SDSC-SP2's first 2,000 and 20,000 jobs the sampled totals are
    2-8 % above the replays' own idle VM-hours). The reservation is read from the planner's note, so
    peers (no reservation) never show the second cause.
    """
    real = ElasticSite.poll
    last: dict[int, float] = {}

    def poll(self: ElasticSite, now: float, sim: Simulation) -> bool:
        prev = last.get(id(self))
        last[id(self)] = now
        if prev is not None and now > prev:
            dt = now - prev
            for vo, part in enumerate(self.parts):
                holds = any(n.startswith(f"VO {self.w.vo_names[vo]} holds the site's reservation")
                            for n in self.last_notes)
                if not part.queue:
                    cause = CAUSES[0]
                elif self.w.procs[part.queue[0]] > part.free:
                    cause = CAUSES[1] if holds else CAUSES[2]
                else:
                    cause = CAUSES[3]
                for node in part.nodes.values():
                    if node.jobs == 0:
                        counts[(cause, node.draining)] = counts.get((cause, node.draining), 0.0) + dt
        return real(self, now, sim)

    ElasticSite.poll = poll  # type: ignore[method-assign]
    try:
        yield
    finally:
        ElasticSite.poll = real  # type: ignore[method-assign]


def idle_by_cause(name: str, w: Any, config: SimConfig) -> tuple[float, dict[tuple[str, bool], float]]:
    """Policy ``name``'s idle VM-hours, and the sampled hours by (cause, draining)."""
    counts: dict[tuple[str, bool], float] = {}
    with _sampling(counts):
        r = compare.run_policy(name, w, config)
    return r.figures["vm_hours_idle"], {k: v / 3600.0 for k, v in counts.items()}


def idle_table(path: Path, names: list[str], limit: int | None, shape: str) -> None:
    """Idle VM-hours by cause for each policy in ``names`` (docs/policies.md, SDSC-SP2)."""
    loaded = load_trace(path, limit=limit)
    config = SimConfig(spec=default_spec(loaded.max_procs, None, None, None),
                       knobs=ElasticKnobs(worker_shape=shape))
    cols = {n: idle_by_cause(n, loaded.workload, config) for n in names}
    print(f"\n## {path.name}: idle VM-hours by what the VM's VO was doing (sampled at each poll)\n")
    print("| the idle VM's VO | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for cause in CAUSES:
        for draining in (False, True):
            cells = [cols[n][1].get((cause, draining), 0.0) for n in names]
            if any(cells):
                label = f"{cause}{' (VM draining)' if draining else ''}"
                print(f"| {label} | " + " | ".join(f"{c:,.1f}" for c in cells) + " |")
    print("| sampled total | " + " | ".join(f"{sum(cols[n][1].values()):,.1f}" for n in names) + " |")
    print("| the replay's idle VM-hours | " + " | ".join(f"{cols[n][0]:,.1f}" for n in names) + " |")
    sys.stdout.flush()


if __name__ == "__main__":
    raise SystemExit(main())
