"""Profile of the VM create path (issue 15), in one process, on SQLite or PostgreSQL.

``--count`` VMs (``CPU=1 MEMORY=512``) created through ``VMService.create`` in batches of
``--batch`` (what ``POST /api/v1/vms`` with a count calls), no daemon and no loops, timed (wall
and CPU) and optionally profiled; with ``--hosts N`` the VMs are then brought to RUNNING on N sim
hosts by the scheduler and lifecycle passes called directly. Run the same command with
``PYTHONPATH=/work/main/src`` for the baseline::

    PYTHONPATH=src:. .venv/bin/python -m bench.profile_create --db postgres [--profile] [--hosts 2000]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select
from tests.support.helpers import reconciler

from bench.support import store_url
from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.service.hosts import HostSpec
from vocloud.store import migrate
from vocloud.store.db import Database
from vocloud.store.schema import VM, User

TEMPLATE = "CPU=1\nMEMORY=512\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--hosts", type=int, default=0, help="then run the loops to all RUNNING")
    ap.add_argument("--profile", action="store_true", help="print the cProfile of the timed part")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="vocloud-profile-create-") as d, \
            store_url(args.db, Path(d), "profile_create") as url:
        db = Database(url)
        migrate.upgrade(db)
        cloud = Cloud(db)
        cloud.accounts.bootstrap()
        with db.read() as s:
            u = s.scalars(select(User)).one()
        admin = Actor(u.id, u.name, u.group_id, True)
        if args.hosts:
            cloud.hosts.create_many(admin, [HostSpec(f"h{i}", vmm="sim", cpu=8, memory=65536)
                                            for i in range(args.hosts)])
        rec, _ = reconciler(cloud, Path(d) / "sim")
        rec.monitor_once(force=True)
        cloud.vms.create(admin, TEMPLATE, count=1, name="warm")
        prof = cProfile.Profile()
        t, c = time.perf_counter(), time.process_time()
        if args.profile:
            prof.enable()
        left = args.count
        while left:
            k = min(args.batch, left)
            cloud.vms.create(admin, TEMPLATE, count=k, name="scale")
            left -= k
        print(f"{args.db}: {args.count:,} VMs created in batches of {args.batch}: "
              f"{time.perf_counter() - t:.2f} s wall, {time.process_time() - c:.2f} s CPU")
        if args.hosts:
            t, c = time.perf_counter(), time.process_time()
            passes, running = 0, 0
            while running < args.count + 1 and passes < 50:
                rec.schedule_once()
                rec.lifecycle_once()
                passes += 1
                with db.read() as s:
                    running = int(s.scalar(select(func.count()).select_from(VM)
                                           .where(VM.state == "RUNNING")) or 0)
            print(f"{args.db}: scheduler + lifecycle passes to {running:,} RUNNING: {passes} "
                  f"passes, {time.perf_counter() - t:.2f} s wall, {time.process_time() - c:.2f} s CPU")
        if args.profile:
            prof.disable()
            st = pstats.Stats(prof, stream=sys.stdout)
            st.sort_stats("cumulative").print_stats(40)
        db.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
