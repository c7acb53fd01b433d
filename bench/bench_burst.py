"""Benchmark: the ``burst`` scenario on LPC-EGEE, next to ``elastic``, on the full site (70 x 2
cores) and on the site cut to half its hosts (35 x 2): what waiting costs, and what the cloud
that takes it away costs (docs/bursting.md, *What bursting buys*).

The baseline is the elastic scenario on the same trace and site, from the same run. The cloud:
``--cloud-cores`` (default 140), boot time ``--cloud-boot`` (default lognormal:120,0.5; the site's
own VMs boot in fixed:60), ``--price`` per core-hour (default 0.05).

    .venv/bin/python -m bench.bench_burst [--limit N] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from vocloud.sim.burst import BurstKnobs
from vocloud.sim.dist import parse_duration
from vocloud.sim.run import SimConfig, load_trace, run_scenario
from vocloud.sim.sites import SiteSpec

TRACE = Path(__file__).resolve().parents[2] / "shared" / "traces" / "LPC-EGEE-2004-1.2-cln.swf.gz"
KEYS = ("wait_mean_s", "wait_median_s", "wait_p95_s", "bounded_slowdown_mean", "utilization")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trace", type=Path, default=TRACE)
    ap.add_argument("--limit", type=int, default=None, help="first N jobs only")
    ap.add_argument("--cloud-cores", type=int, default=140)
    ap.add_argument("--cloud-boot", default="lognormal:120,0.5")
    ap.add_argument("--price", type=float, default=0.05)
    ap.add_argument("--burst-limit", type=int, default=0)
    ap.add_argument("--sites", default="70,35", help="site sizes in 2-core hosts, comma-separated")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    loaded = load_trace(args.trace, limit=args.limit)
    knobs = BurstKnobs(cloud_cores=args.cloud_cores, boot=parse_duration(args.cloud_boot, "--cloud-boot"),
                       price_core_hour=args.price, burst_limit=args.burst_limit)
    rows: list[dict[str, Any]] = []
    for hosts in (int(x) for x in args.sites.split(",")):
        label = f"site {hosts}x2"
        config = SimConfig(spec=SiteSpec(hosts, 2, 4096), scenarios=("elastic", "burst"), burst=knobs)
        for name in ("elastic", "burst"):
            t = time.perf_counter()
            f = run_scenario(name, loaded.workload, config).figures
            rows.append({"site": label, "scenario": name, "wall_s": round(time.perf_counter() - t, 1),
                         **{k: f.get(k) for k in KEYS},
                         "cloud_vms": f.get("cloud_vms_booted", 0),
                         "cloud_peak": f.get("cloud_peak_vms", 0),
                         "cloud_core_hours": f.get("cloud_core_hours", 0.0),
                         "cloud_cost": f.get("cloud_cost", 0.0),
                         "jobs": f.get("jobs_completed")})
    if args.json:
        json.dump({"jobs": len(loaded.workload), "cloud": str(knobs), "rows": rows}, sys.stdout, indent=1)
        print()
        return 0
    print(f"LPC-EGEE, {len(loaded.workload)} jobs; cloud {args.cloud_cores} cores, boot {args.cloud_boot}, "
          f"{args.price:g}/core-hour, burst limit {args.burst_limit or 'none'}; "
          f"total {time.perf_counter() - t0:.0f} s")
    head = ("site", "scenario", "wait mean s", "median s", "p95 s", "bsld", "util", "cloud VMs", "peak",
            "cloud core-h", "cost", "wall s")
    print(" | ".join(head))
    for r in rows:
        print(" | ".join(str(x) for x in (
            r["site"], r["scenario"], _n(r["wait_mean_s"]), _n(r["wait_median_s"]), _n(r["wait_p95_s"]),
            _n(r["bounded_slowdown_mean"], 2), _n(r["utilization"], 3), r["cloud_vms"], r["cloud_peak"],
            r["cloud_core_hours"], r["cloud_cost"], r["wall_s"])))
    return 0


def _n(x: Any, digits: int = 0) -> str:
    return "-" if x is None else f"{float(x):.{digits}f}"


if __name__ == "__main__":
    raise SystemExit(main())
