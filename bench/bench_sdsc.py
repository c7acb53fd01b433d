"""Benchmark: replay the whole SDSC-SP2 trace (59,715 jobs, 128 processors, jobs up to the whole
machine wide) through the physical, static and elastic scenarios with default options, and print
the table with the trace's own recorded row beside the physical one.

Checks what issue 17 asks of a parallel trace: every runnable job runs in every scenario (the
count of runnable jobs that never ran is printed per scenario and must be 0), the recorded row is
there, and the model's known differences (``sim/differences.py``) are listed. Prints the wall and
CPU time of each scenario (CPU too because this machine is shared) and the peak RSS.

    .venv/bin/python -m bench.bench_sdsc [--limit N] [--workers 1] [--report DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

from vocloud.sim.differences import known_differences
from vocloud.sim.metrics import ScenarioResult
from vocloud.sim.recorded import recorded_figures
from vocloud.sim.report import metrics_document, scenario_table, warnings, write_report
from vocloud.sim.run import (
    DEFAULT_SCENARIOS,
    SimConfig,
    default_spec,
    load_trace,
    run_all,
    run_scenario,
    trace_summary,
)

TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "SDSC-SP2-1998-4.2-cln.swf.gz"
if not TRACE.exists():
    TRACE = Path("/work/shared/traces/SDSC-SP2-1998-4.2-cln.swf.gz")


def _rss_mib() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def _cpu() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--limit", type=int, default=None, help="replay only the first N jobs")
    ap.add_argument("--workers", type=int, default=1,
                    help="scenarios in parallel processes (1: one after the other, timed each)")
    ap.add_argument("--report", type=Path, default=None, help="also write metrics.json, summary.md, PNGs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    t0, c0 = time.perf_counter(), _cpu()
    loaded = load_trace(args.trace, limit=args.limit)
    w = loaded.workload
    config = SimConfig(spec=default_spec(loaded.max_procs, None, None, None), scenarios=DEFAULT_SCENARIOS)
    phases: dict[str, dict[str, float]] = {
        "load": {"wall_s": time.perf_counter() - t0, "cpu_s": _cpu() - c0}}
    results: list[ScenarioResult] = []
    if args.workers > 1:
        t, c = time.perf_counter(), _cpu()
        results = run_all(w, config, workers=args.workers)
        phases["replay x3 (parallel)"] = {"wall_s": time.perf_counter() - t, "cpu_s": _cpu() - c}
    else:
        for name in config.scenarios:
            t, c = time.perf_counter(), time.process_time()
            results.append(run_scenario(name, w, config))
            phases[name] = {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c}
    recorded = recorded_figures(w, loaded.max_procs)
    trace_info: dict[str, Any] = {"name": args.trace.name, "vo_map": "group", "header": loaded.header,
                                  **trace_summary(w)}
    if recorded is not None:
        trace_info["recorded"] = recorded
    doc = metrics_document(results, config.to_dict(), trace_info)
    if args.report is not None:
        write_report(args.report, results, doc, w.vo_names)
    never = {r.name: int(r.figures["runnable_never_ran"]) for r in results}
    out: dict[str, Any] = {
        "trace": args.trace.name, "jobs": len(w), "runnable": len(w) - len(w.excluded),
        "site": f"{config.spec.hosts} hosts x {config.spec.cores_per_host} cores",
        "wall_s": time.perf_counter() - t0, "cpu_s": _cpu() - c0, "peak_rss_mib": _rss_mib(),
        "phases": phases, "runnable_never_ran": never, "recorded": recorded,
        "scenarios": {r.name: r.figures for r in results},
    }
    if args.json:
        json.dump(out, sys.stdout, indent=2, sort_keys=True, default=str)
        sys.stdout.write("\n")
        return 0 if not any(never.values()) else 1
    print(f"replay {out['trace']}: {out['jobs']:,} jobs ({out['runnable']:,} runnable) on {out['site']}")
    for name, ph in phases.items():
        print(f"  {name:<9} wall {ph['wall_s']:8.2f} s   cpu {ph['cpu_s']:8.2f} s")
    print(f"total wall {out['wall_s']:.1f} s, cpu {out['cpu_s']:.1f} s, "
          f"peak RSS {out['peak_rss_mib']:,.0f} MiB")
    for r in results:
        f = r.figures
        extra = (f", {f['vm_boots']:,} VM boots, peak {f.get('peak_vms', '-')} VMs"
                 if r.name == "elastic" else "")
        print(f"  {r.name:<9} runnable jobs that never ran: {never[r.name]:,}{extra}")
    print()
    print(scenario_table(results, recorded))
    for line in warnings(results):
        print(f"\nWARNING {line}")
    print("\nKnown differences of the model:")
    for line in known_differences(doc, results):
        print(line)
    if args.report is not None:
        print(f"\nreport written to {args.report}")
    return 0 if not any(never.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
