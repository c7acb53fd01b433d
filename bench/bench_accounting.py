"""Benchmark: accounting over 20,000 VMs with 200,000 history records (target < 1 s).

Fills a temp SQLite store (or ``--db-url``) with VMs in 20 VOs, 100 users and 100 hosts, each
with ten lifecycle events over a month (boot, a stay in UNKNOWN, a stop and a restart, some still
running), then times ``AccountingService.get_usage`` — the one window-function query plus the
pure aggregation — for a month-long period grouped by VO, host and day, as ``vocloud acct``
asks for it. Prints the median of the repeats next to the target.

Usage: .venv/bin/python bench/bench_accounting.py [--vms 20000] [--repeat 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import insert, select

from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.store import migrate
from vocloud.store.db import Database
from vocloud.store.schema import VM, Event, Group, Host, User

TARGET_S = 1.0
T0 = 1_764_547_200.0  # 2025-12-01T00:00:00Z
DAY = 86400.0
#: (state, typical seconds in it): ten events per VM, one restart, one stay in UNKNOWN
LIFE = [("PENDING", 60), ("PROLOG", 30), ("BOOT", 20), ("RUNNING", 3 * DAY), ("UNKNOWN", 3600),
        ("RUNNING", 2 * DAY), ("STOPPED", DAY), ("PENDING", 60), ("PROLOG", 30), ("RUNNING", 0)]


def fill(db: Database, n: int, seed: int = 1) -> Actor:
    rnd = random.Random(seed)
    cloud = Cloud(db)
    cloud.accounts.bootstrap()
    with db.read() as s:
        u = s.scalars(select(User)).one()
    admin = Actor(u.id, u.name, u.group_id, True)
    with db.write() as s:
        s.execute(insert(Group), [{"name": f"vo{i}", "description": ""} for i in range(20)])
        gids = list(s.scalars(select(Group.id).where(Group.name.like("vo%"))))
        s.execute(insert(User), [{"name": f"u{i}", "group_id": gids[i % 20], "token_hash": f"{i:064d}"}
                                 for i in range(100)])
        members = select(User.id, User.group_id).where(User.name.like("u%"))
        users = [(uid, gid) for uid, gid in s.execute(members)]
        s.execute(insert(Host), [{"name": f"h{i}", "total_cpu_m": 64000, "total_mem": 262144}
                                 for i in range(100)])
        hosts = list(s.scalars(select(Host.id)))
        vms, events = [], []
        for i in range(n):
            uid, gid = users[i % len(users)]
            vms.append({"id": i + 1, "name": f"vm{i}", "owner_id": uid, "group_id": gid,
                        "state": "RUNNING", "host_id": rnd.choice(hosts),
                        "cpu_m": rnd.choice([1000, 2000, 4000]), "memory": rnd.choice([1024, 2048, 4096])})
            t = T0 + rnd.uniform(-5 * DAY, 25 * DAY)
            for state, typical in LIFE:
                events.append({"time": t, "kind": "vm", "obj_id": i + 1, "action": "x",
                               "to_state": state, "host_id": vms[-1]["host_id"]})
                t += typical * rnd.uniform(0.5, 1.5)
        s.execute(insert(VM), vms)
        for k in range(0, len(events), 50_000):
            s.execute(insert(Event), events[k:k + 50_000])
    return admin


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--db-url", default="")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(args.db_url or f"sqlite:///{Path(tmp) / 'vocloud.db'}")
        migrate.upgrade(db)
        admin = fill(db, args.vms)
        cloud = Cloud(db)
        with db.read() as s:
            n_events = s.query(Event).count()
        figures: dict[str, float] = {}
        cpu: dict[str, float] = {}
        for by in ("vo", "host", "day"):
            times, cpus = [], []
            for _ in range(args.repeat):
                t0, c0 = time.perf_counter(), time.process_time()
                doc = cloud.accounting.get_usage(admin, since=T0, until=T0 + 31 * DAY, by=by)
                times.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
            figures[by] = statistics.median(times)
            cpu[by] = statistics.median(cpus)
            assert doc["total"]["vms"] > 0
        db.dispose()
    worst = max(figures.values())
    if args.json:
        print(json.dumps({"vms": args.vms, "events": n_events, "seconds": figures, "cpu_seconds": cpu,
                          "target_s": TARGET_S, "load": os.getloadavg()[0]}))
        return
    print(f"accounting over {args.vms:,} VMs, {n_events:,} history records (one month, median of "
          f"{args.repeat}):")
    for by, sec in figures.items():
        print(f"  --by {by:5s} {sec:.3f} s wall, {cpu[by]:.3f} s CPU")
    print(f"worst {worst:.3f} s, target < {TARGET_S:.1f} s: {'OK' if worst < TARGET_S else 'MISSED'} "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs while measuring)")


if __name__ == "__main__":
    main()
