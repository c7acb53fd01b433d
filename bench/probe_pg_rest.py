"""Where the REST mix spends its time on PostgreSQL, seen from the server (docs/performance.md,
"REST request path", session 15).

bench_scale's REST mix (wrk, 50 clients, 2 API processes, 20 sim hosts) against a daemon on a
PostgreSQL server of its own started with ``pg_stat_statements``. Prints the server's and the
daemon's CPU per request, the statements per request (calls per request and mean execution
time, most called first), and what the server's backends were doing, sampled every 50 ms from
``pg_stat_activity``: a wait on a lock (``Lock``) is a queue in the database, ``ClientRead``
while ``idle in transaction`` is the server waiting for the daemon; for each lock wait, what the
backend it waits for was doing (``pg_blocking_pids``). Bounded; 127.0.0.1 only.

    PYTHONPATH=src .venv/bin/python -m bench.probe_pg_rest [--duration 20] [--workers 2]
        [--loop-interval 1]
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import threading
import time
from pathlib import Path

import psycopg
from tests.support.pgserver import PgServer, find_bindir

from bench.bench_scale import rest_daemon, sim_root, tree_cpu_seconds, wrk_load

STATEMENTS = ("-c shared_preload_libraries=pg_stat_statements "
              "-c pg_stat_statements.track=all")
ACTIVITY = ("SELECT state, wait_event_type, wait_event, left(query, 60) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND state <> 'idle'")
#: for each backend waiting on a lock, the backends it waits for: their state, last statement
#: and transaction age (who holds what a request queues on)
BLOCKERS = ("SELECT left(w.query, 40), b.state, left(b.query, 60), "
            "extract(epoch FROM now() - b.xact_start) FROM pg_stat_activity w "
            "CROSS JOIN LATERAL unnest(pg_blocking_pids(w.pid)) AS bp(pid) "
            "JOIN pg_stat_activity b ON b.pid = bp.pid "
            "WHERE w.datname = %s AND w.wait_event_type = 'Lock'")
TOP = ("SELECT calls, total_exec_time, query FROM pg_stat_statements "
       "WHERE dbid = (SELECT oid FROM pg_database WHERE datname = %s) ORDER BY calls DESC LIMIT %s")


def _sample(conninfo: str, db: str, stop: threading.Event,
            into: collections.Counter[tuple[str, str, str]],
            blockers: collections.Counter[tuple[str, str, str, str]]) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while not stop.is_set():
            for state, wait_type, wait, query in conn.execute(ACTIVITY, (db,)):
                into[(state, f"{wait_type or '-'}:{wait or '-'}", " ".join(query.split()))] += 1
            for waiter, state, query, age in conn.execute(BLOCKERS, (db,)):
                held = "<10ms" if age is None or age < 0.01 else (
                    "<100ms" if age < 0.1 else ("<1s" if age < 1 else ">=1s"))
                blockers[(" ".join(waiter.split()), state or "-", " ".join(query.split()),
                          held)] += 1
            time.sleep(0.05)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--workers", type=int, default=2, help="API processes")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--loop-interval", type=float, default=1.0, help="the daemon's loops, s")
    ap.add_argument("--top", type=int, default=20, help="statements shown")
    args = ap.parse_args()
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries not found (apt-get install postgresql)")
    server = PgServer(bindir, options=STATEMENTS)
    server.start()
    name = "probe_rest"
    try:
        url = server.create_db(name)
        conninfo = f"host=127.0.0.1 port={server.port} user={server.user} dbname={name}"
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        postmaster = int((server.datadir / "postmaster.pid").read_text().split()[0])
        with tempfile.TemporaryDirectory(prefix="vocloud-probe-") as tmp, \
                sim_root("tmpfs", Path(tmp)) as shared:
            with rest_daemon(url, Path(tmp), shared, args.workers,
                             loop_interval=args.loop_interval) as d:
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    conn.execute("SELECT pg_stat_statements_reset()")
                seen: collections.Counter[tuple[str, str, str]] = collections.Counter()
                blocking: collections.Counter[tuple[str, str, str, str]] = collections.Counter()
                stop = threading.Event()
                sampler = threading.Thread(target=_sample,
                                           args=(conninfo, name, stop, seen, blocking))
                pg0, d0 = tree_cpu_seconds(postmaster), tree_cpu_seconds(d.pid)
                sampler.start()
                try:
                    out = wrk_load(d, args.clients, args.duration)
                finally:
                    stop.set()
                    sampler.join()
                n = max(out["requests"], 1)
                print(f"{out['rps']:.0f} req/s, p99 {out['p99_ms']:.0f} ms, {out['errors']} errors; "
                      f"CPU per request: server {(tree_cpu_seconds(postmaster) - pg0) * 1000 / n:.2f}"
                      f" ms, daemon {(tree_cpu_seconds(d.pid) - d0) * 1000 / n:.2f} ms")
                with psycopg.connect(conninfo, autocommit=True) as conn:
                    rows = conn.execute(TOP, (name, args.top)).fetchall()
        print(f"\nstatements per request (the {args.top} most called):")
        for calls, total_ms, query in rows:
            text = " ".join(query.split())[:100]
            print(f"  {calls / n:5.2f}/req {total_ms / calls * 1000:8.1f} us  {text}")
        total = sum(seen.values()) or 1
        print("\nbackends not idle, sampled every 50 ms (state, wait, query):")
        for (state, wait, query), count in seen.most_common(args.top):
            print(f"  {count / total * 100:5.1f}%  {state:<20} {wait:<26} {query}")
        print("\nlock waits, by the blocker (waiter | blocker's state, last statement, "
              "transaction age), samples:")
        for (waiter, state, query, held), count in blocking.most_common(args.top):
            print(f"  {count:5d}  {waiter:<40} | {state:<20} {held:<7} {query}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
