"""Benchmark: replay the whole LPC-EGEE trace (234,889 jobs, 238 days) through the physical,
static and elastic scenarios (targets: < 60 s wall, < 2 GiB peak RSS; no anchor ships a replay).

Prints the wall time and CPU time of each phase (CPU time too because this machine is shared,
and wall time under load says more about the neighbours than about the code), events per
second, peak RSS from ``resource.getrusage`` and the scenario table. ``--scaled`` replays the
same trace on 2,000 hosts x 8 cores with arrivals compressed by 16,000/140 (docs/simulator.md).

    .venv/bin/python bench/bench_replay.py [--scaled] [--limit N] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from vocloud.sim.elastic import ElasticKnobs
from vocloud.sim.report import scenario_table
from vocloud.sim.run import (
    DEFAULT_SCENARIOS,
    SCENARIOS,
    SimConfig,
    default_spec,
    load_trace,
    run_all,
    run_scenario,
)
from vocloud.sim.sites import SiteSpec

TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "LPC-EGEE-2004-1.2-cln.swf.gz"
TARGET_WALL_S = 60.0
TARGET_RSS_MIB = 2048.0


def peak_rss_mib() -> float:
    """Largest resident set of this process or any scenario worker (Linux reports KiB)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def cpu_with_children() -> float:
    """CPU seconds of this process plus its finished workers."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--scaled", action="store_true", help="2,000 hosts x 8 cores, arrivals compressed")
    ap.add_argument("--hosts", type=int, default=2000, help="hosts for --scaled")
    ap.add_argument("--cores", type=int, default=8, help="cores per host for --scaled")
    ap.add_argument("--vm-cores", type=int, default=1)
    ap.add_argument("--scale-mode", default="compress", choices=("compress", "replicate"))
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--scenario", action="append", choices=SCENARIOS)
    ap.add_argument("--workers", type=int, default=3,
                    help="scenarios run in parallel processes (1: one after the other, timed each)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    t0, c0 = time.perf_counter(), cpu_with_children()
    loaded = load_trace(args.trace, vo_map="group", limit=args.limit)
    spec = default_spec(loaded.max_procs, None, None, None)
    if args.scaled:
        base = spec.total_cores
        spec = SiteSpec(args.hosts, args.cores, 2048 * args.cores)
        loaded = load_trace(args.trace, vo_map="group", limit=args.limit,
                            scale=spec.total_cores / base, scale_mode=args.scale_mode)
    load_wall, load_cpu = time.perf_counter() - t0, time.process_time() - c0
    config = SimConfig(spec=spec, scenarios=tuple(args.scenario or DEFAULT_SCENARIOS), seed=args.seed,
                       knobs=ElasticKnobs(cores_per_vm=args.vm_cores))
    phases: dict[str, dict[str, float]] = {"load": {"wall_s": load_wall, "cpu_s": load_cpu}}
    results = []
    if args.workers > 1:
        t, c = time.perf_counter(), cpu_with_children()
        results = run_all(loaded.workload, config, workers=args.workers)
        wall = time.perf_counter() - t
        ev = sum(r.figures["events"] for r in results)
        phases[f"replay x{len(results)} (parallel)"] = {
            "wall_s": wall, "cpu_s": cpu_with_children() - c, "events": ev, "events_per_s": ev / wall,
        }
    else:
        for name in config.scenarios:
            t, c = time.perf_counter(), time.process_time()
            r = run_scenario(name, loaded.workload, config)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            phases[name] = {"wall_s": wall, "cpu_s": cpu, "events": r.figures["events"],
                            "events_per_s": r.figures["events"] / wall if wall else 0.0}
            results.append(r)
    total_wall = time.perf_counter() - t0
    total_cpu = cpu_with_children() - c0
    events = sum(r.figures["events"] for r in results)
    rss = peak_rss_mib()
    out: dict[str, Any] = {
        "trace": args.trace.name,
        "jobs": len(loaded.workload),
        "site": f"{spec.hosts} hosts x {spec.cores_per_host} cores",
        "scale": loaded.workload.scale_note or "none",
        "wall_s": total_wall,
        "cpu_s": total_cpu,
        "events": events,
        "events_per_s": events / total_wall,
        "peak_rss_mib": rss,
        "workers": args.workers,
        "target_wall_s": TARGET_WALL_S,
        "target_rss_mib": TARGET_RSS_MIB,
        "phases": phases,
        "scenarios": {r.name: r.figures for r in results},
    }
    if args.json:
        json.dump(out, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
        return 0
    print(f"replay {out['trace']}: {out['jobs']:,} jobs on {out['site']} (scale: {out['scale']})")
    for name, ph in phases.items():
        extra = f", {ph['events']:,.0f} events, {ph['events_per_s']:,.0f} events/s" if "events" in ph else ""
        print(f"  {name:<9} wall {ph['wall_s']:7.2f} s   cpu {ph['cpu_s']:7.2f} s{extra}")
    ok_wall = "OK" if total_wall < TARGET_WALL_S else "MISSED"
    ok_rss = "OK" if rss < TARGET_RSS_MIB else "MISSED"
    print(f"total wall {total_wall:.1f} s (target < {TARGET_WALL_S:.0f} s: {ok_wall}); cpu {total_cpu:.1f} s")
    print(f"events {events:,} -> {events / total_wall:,.0f} events/s (wall)")
    print(f"peak RSS {rss:,.0f} MiB (target < {TARGET_RSS_MIB:,.0f} MiB: {ok_rss})")
    print()
    print(scenario_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
