"""Benchmark: one monitor pass over a large sim site (issue 15: < 1 s for 2,000 hosts).

A store with ``--hosts`` sim hosts (8 CPU, 64 GiB) and ``--vms`` VMs (``CPU=1 MEMORY=512``)
brought to RUNNING by a Reconciler's own loops (scheduler, lifecycle, sim boot delay 0), its
guest files on tmpfs as in ``bench_scale``. Then each code under test (this checkout, and
``--baseline-src``: another checkout's ``src``, e.g. main's, the same-run baseline) runs in a
fresh process of its own against that same store and sim directory: a ``first`` forced pass
(cold process: nothing cached) and ``--warm`` more forced passes (their median), wall time and
the process's CPU time (a busy machine stretches the first, not the second; the database
server's own CPU is not counted). The codes take
turns ``--rounds`` times, so a busy machine hurts both alike. ``--profile`` prints the top of a
cProfile of one warm pass of this checkout.

    PYTHONPATH=src .venv/bin/python -m bench.bench_monitor [--db sqlite|postgres|both]
        [--hosts 2000] [--vms 10000] [--baseline-src /work/main/src] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from bench.bench_scale import HOST_CPU, HOST_MEM, TEMPLATE, sim_root
from bench.support import fill_store, store_url
from vocloud.service.auth import Actor
from vocloud.store.db import Database
from vocloud.store.schema import VM, User

ROOT = Path(__file__).resolve().parents[1]


def populate(url: str, shared: Path, n_hosts: int, n_vms: int) -> float:
    """Hosts and VMs, all RUNNING, through the service and the loops; returns the seconds taken."""
    from vocloud.drivers.vmm.sim import SimDriver
    from vocloud.engine.reconcile import LoopSettings, Reconciler
    from vocloud.model.lifecycle import VMState
    from vocloud.service.cloud import Cloud
    from vocloud.service.hosts import HostSpec

    t = time.perf_counter()
    db = Database(url)
    cloud = Cloud(db)
    with db.read() as s:
        u = s.scalars(select(User)).one()
    admin = Actor(u.id, u.name, u.group_id, True)
    cloud.hosts.create_many(admin, [HostSpec(f"h{i:05d}", cpu=HOST_CPU, memory=HOST_MEM)
                                    for i in range(n_hosts)])
    rec = Reconciler(cloud, {"sim": SimDriver(shared / "sim", 0.0, 0.0)}, LoopSettings())
    rec.monitor_once(force=True)
    left = n_vms
    while left:
        k = min(left, 1000)
        cloud.vms.create(admin, TEMPLATE, count=k, name="mon")
        left -= k
    for _ in range(50):
        rec.schedule_once()
        rec.lifecycle_once()
        with db.read() as s:
            running = s.scalar(select(func.count()).select_from(VM)
                               .where(VM.state == VMState.RUNNING.value))
        if running == n_vms:
            break
    else:
        raise SystemExit(f"only {running} of {n_vms} VMs RUNNING")
    db.dispose()
    return time.perf_counter() - t


def measure(url: str, shared: Path, warm: int, profile: bool) -> dict[str, Any]:
    """Runs in the process of the code under test (its PYTHONPATH)."""
    from vocloud.drivers.vmm.sim import SimDriver
    from vocloud.engine.reconcile import LoopSettings, Reconciler
    from vocloud.service.cloud import Cloud

    db = Database(url)
    rec = Reconciler(Cloud(db), {"sim": SimDriver(shared / "sim", 0.0, 0.0)}, LoopSettings())
    t, c = time.perf_counter(), time.process_time()
    rec.monitor_once(force=True)
    first, first_cpu = time.perf_counter() - t, time.process_time() - c
    warms, cpus = [], []
    for _ in range(warm):
        t, c = time.perf_counter(), time.process_time()
        rec.monitor_once(force=True)
        warms.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    out: dict[str, Any] = {"first": first, "warm": statistics.median(warms), "warms": warms,
                           "first_cpu": first_cpu, "warm_cpu": statistics.median(cpus)}
    if profile:
        prof = cProfile.Profile()
        prof.enable()
        rec.monitor_once(force=True)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(35)
        out["profile"] = buf.getvalue()
    db.dispose()
    return out


def run_code(src: str, url: str, shared: Path, warm: int, profile: bool) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, str(ROOT)])}
    cmd = [sys.executable, "-m", "bench.bench_monitor", "--measure", url, str(shared),
           "--warm", str(warm)] + (["--profile"] if profile else [])
    got = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if got.returncode != 0:
        raise SystemExit(f"measuring {src} failed:\n{got.stderr[-4000:]}")
    return dict(json.loads(got.stdout.splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--hosts", type=int, default=2000)
    ap.add_argument("--vms", type=int, default=10_000)
    ap.add_argument("--warm", type=int, default=3, help="warm passes per process (median)")
    ap.add_argument("--rounds", type=int, default=2, help="turns of each code")
    ap.add_argument("--baseline-src", default=None, help="another checkout's src: the baseline")
    ap.add_argument("--profile", action="store_true", help="cProfile one warm pass of this code")
    ap.add_argument("--measure", nargs=2, metavar=("URL", "SIM_DIR"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]), args.warm, args.profile)))
        return 0
    mine = str(ROOT / "src")
    codes = ([("baseline", args.baseline_src)] if args.baseline_src else []) + [("this", mine)]
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    failed = False
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix="vocloud-bench-monitor-") as tmp, \
                store_url(kind, Path(tmp)) as url, sim_root("tmpfs", Path(tmp)) as shared:
            fill_store(Path(tmp), 0, url=url)
            setup = populate(url, shared, args.hosts, args.vms)
            got: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in codes}
            for r in range(args.rounds):
                for name, src in codes:
                    got[name].append(run_code(src, url, shared, args.warm,
                                              args.profile and name == "this" and r == 0))
            print(f"== {kind}: {args.hosts:,} hosts / {args.vms:,} VMs RUNNING (set up in "
                  f"{setup:.1f} s); load {' '.join(Path('/proc/loadavg').read_text().split()[:3])}")
            for name, src in codes:
                firsts = ", ".join(f"{g['first']:.3f}" for g in got[name])
                warms = ", ".join(f"{g['warm']:.3f}" for g in got[name])
                cpus = ", ".join(f"{g['first_cpu']:.2f}/{g['warm_cpu']:.2f}" for g in got[name])
                print(f"  {name:9} first pass {firsts} s; warm (median of {args.warm}) {warms} s;"
                      f" CPU first/warm {cpus} s   [{src}]")
                if name == "this":
                    failed |= min(g["warm"] for g in got[name]) >= 1.0
            for g in got.get("this", []):
                if "profile" in g:
                    print(g["profile"])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
