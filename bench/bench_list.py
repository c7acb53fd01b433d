"""Benchmark: list 20,000 VMs through the REST API (target < 0.25 s).

Starts a real daemon (``vocloud serve`` on a temp SQLite store, loops idle), fills it with VMs
through the service layer, and times ``GET /api/v1/vms`` from a separate client process's view
(vocloud.client.Client: full response read and JSON-decoded). The baseline from the same run is the obvious
implementation: ORM objects, a lookup per row for owner/group/host names, stdlib json — the
shape of OpenNebula's ``vmpool.info`` (2.39 s at 20K VMs in OpenNebula 5.12).

Usage: .venv/bin/python bench/bench_list.py [--vms 20000] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from sqlalchemy import select

from bench.support import bench_daemon, fill_store
from vocloud.client import Client
from vocloud.store.db import Database
from vocloud.store.schema import VM, Group, Host, User

TARGET_S = 0.25
ANCHOR = "OpenNebula 5.12 vmpool.info: 2.39 s at 20K VMs"


def _baseline(data_dir: Path) -> float:
    """The naive listing: ORM rows plus one lookup per row for each name, stdlib json."""
    db = Database(f"sqlite:///{data_dir / 'vocloud.db'}")
    t0 = time.perf_counter()
    with db.read() as s:
        out = []
        for vm in s.scalars(select(VM).order_by(VM.id)):
            user = s.get(User, vm.owner_id)
            group = s.get(Group, vm.group_id)
            host = s.get(Host, vm.host_id) if vm.host_id else None
            out.append({"id": vm.id, "name": vm.name, "user": user.name if user else None,
                        "group": group.name if group else None, "state": vm.state,
                        "cpu": vm.cpu_m / 1000, "memory": vm.memory,
                        "host": host.name if host else None, "template": vm.template})
        json.loads(json.dumps(out))
    dt = time.perf_counter() - t0
    db.dispose()
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vocloud-bench-") as tmp:
        data_dir = Path(tmp)
        t0 = time.perf_counter()
        fill_store(data_dir, args.vms)
        fill_s = time.perf_counter() - t0
        with bench_daemon(data_dir) as d, Client(d.base_url, d.token, timeout=60) as client:
            times = []
            count = 0
            for _ in range(args.repeat):
                t = time.perf_counter()
                count = len(client.get("/vms"))
                times.append(time.perf_counter() - t)
        assert count == args.vms, f"listed {count} VMs, expected {args.vms}"
        base = _baseline(data_dir)
    best, median = min(times), sorted(times)[len(times) // 2]
    result = {
        "figure": f"list {args.vms} VMs over REST", "best_s": round(best, 4), "median_s": round(median, 4),
        "target_s": TARGET_S, "baseline_naive_orm_s": round(base, 4), "anchor": ANCHOR,
        "speedup_vs_baseline": round(base / best, 1), "fill_s": round(fill_s, 2),
        "meets_target": best < TARGET_S,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'figure':40} {'value':>10} {'target':>10} {'baseline':>12}")
    print(f"{result['figure']:40} {best:>9.3f}s {'<' + str(TARGET_S) + 's':>10} {base:>11.3f}s")
    print(f"  median of {args.repeat}: {median:.3f}s; speed-up vs naive ORM listing: {base / best:.1f}x; "
          f"anchor: {ANCHOR}")
    print(f"  (filled {args.vms} VMs through the service layer in {fill_s:.1f}s)")


if __name__ == "__main__":
    main()
