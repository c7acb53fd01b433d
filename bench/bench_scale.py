"""Benchmark: the control plane at scale (issue 15), on SQLite and on PostgreSQL.

Figures, each printed next to its baseline:

* ``hosts``: 2,000 sim hosts (8 CPU, 64 GiB) registered over REST in one ``POST /hosts/batch``
  (target < 5 s). Baseline, same run: ``POST /hosts`` one host at a time, timed over
  ``--baseline-hosts`` hosts and scaled to 2,000 (issue 15 measured 17.5 s).
* ``vms``: 10,000 VMs (``CPU=1 MEMORY=512``) created over REST in batches of 500 and driven by the
  daemon's own loops to RUNNING (``sim_boot_delay=0``), timed from the first create until the
  store says all are RUNNING (target < 10 s; issue 15 measured 73.5 s before this work). Then the
  invariants are checked from the store: no host over capacity, each host's allocation equal to
  the sum of its VMs, no duplicate lease, user and group quotas equal to the live VMs. The pure
  ``place()`` of the same VMs on the same hosts is printed as the floor.
* ``monitor``: one forced monitor pass over the 2,000 hosts (10,000 guests) by a Reconciler on the
  same store and sim directory (target < 1 s).
* ``rest`` (``--rest``): 50 concurrent REST clients for ``--duration`` s on 20 sim hosts, each
  looping create / list / terminate (target >= 500 req/s, p99 < 250 ms, 0 errors; issue 15
  measured 88 req/s, p99 5.95 s). Bounded: a fixed number of clients, 127.0.0.1 only.

    PYTHONPATH=src .venv/bin/python -m bench.bench_scale [--db sqlite|postgres|both] [--rest]
        [--sim-files tmpfs|disk]
        [--workers N] [--baseline-src /work/main/src] [--repeat N]

``--baseline-src`` runs the VMs figures, and the REST load, first on a daemon of another
checkout's code (the main branch: the same-run baseline), then on this code (REST: with one API
process, then with ``--workers``); ``--repeat N`` runs the REST sequence N times, so that
baseline and this code take turns on a machine whose load changes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from bench.support import BenchDaemon, bench_daemon, fill_store, store_url
from vocloud.core.placement import HostView, PendingVM, SchedPolicy, place
from vocloud.drivers.vmm.sim import SimDriver
from vocloud.engine.reconcile import LoopSettings, Reconciler
from vocloud.model.lifecycle import HOLDS_HOST, VMState
from vocloud.service.cloud import Cloud
from vocloud.store.db import Database
from vocloud.store.schema import VM, Host, Lease, Quota

HOST_CPU, HOST_MEM = 8, 64 * 1024
TEMPLATE = "CPU=1\nMEMORY=512\n"
TARGETS = {"hosts_s": 5.0, "vms_running_s": 10.0, "monitor_s": 1.0, "rest_rps": 500.0,
           "rest_p99_ms": 250.0}
ISSUE_BASELINE = {"hosts_s": 17.5, "vms_running_s": 73.5, "rest_rps": 88.0, "rest_p99_ms": 5950.0}


#: The scheduler's and lifecycle loop's period in the benchmark's daemons (s): shorter than a
#: site's defaults (1 s and 0.5 s), so that 10,000 VMs come up in few passes. ``--loop-interval``
#: changes it for the REST figure (at the defaults its req/s were 10-20 % higher, session 11).
LOOP_INTERVAL = 0.2


def daemon_env(url: str, shared: Path | None = None,
               loop_interval: float = LOOP_INTERVAL) -> dict[str, str]:
    env = {"VOCLOUD_DB_URL": url, "VOCLOUD_SIM_BOOT_DELAY": "0", "VOCLOUD_SIM_SHUTDOWN_DELAY": "0",
           "VOCLOUD_SCHEDULER_INTERVAL": f"{loop_interval:g}",
           "VOCLOUD_LIFECYCLE_INTERVAL": f"{loop_interval:g}",
           "VOCLOUD_MONITOR_INTERVAL": "3600", "VOCLOUD_DB_POOL": "20"}
    if shared is not None:
        env["VOCLOUD_SHARED_DIR"] = str(shared)
    return env


@contextmanager
def sim_root(where: str, data_dir: Path) -> Iterator[Path]:
    """Where the sim driver keeps its guest files (``<shared dir>/sim``). The sim stands in for
    10,000 hypervisor guests as 10,000 small files; on this machine's ext4 disk creating them
    costs ~0.5 ms of kernel time each (1.8 s wall and 0.2 s CPU on tmpfs, 18 s and 5.6 s on the
    disk, for 10,000), a cost no real hypervisor has. ``tmpfs`` (default, when /dev/shm exists)
    keeps them in memory; ``disk`` in the data directory, as before. The database is on the disk
    either way."""
    shm = Path("/dev/shm")
    if where == "tmpfs" and shm.is_dir():
        with tempfile.TemporaryDirectory(prefix="vocloud-bench-sim-", dir=shm) as d:
            yield Path(d)
    else:
        yield data_dir


def host_body(name: str) -> dict[str, Any]:
    return {"name": name, "vmm": "sim", "cpu": HOST_CPU, "memory": HOST_MEM}


def register_hosts(c: httpx.Client, n: int, baseline_n: int) -> dict[str, float]:
    """Baseline: one POST per host (then deleted); figure: all ``n`` in one batch request."""
    t = time.perf_counter()
    for i in range(baseline_n):
        c.post("/hosts", json=host_body(f"base{i}")).raise_for_status()
    per_host = (time.perf_counter() - t) / max(baseline_n, 1)
    for i in range(baseline_n):
        c.delete(f"/hosts/base{i}").raise_for_status()
    t = time.perf_counter()
    r = c.post("/hosts/batch", json={"hosts": [host_body(f"h{i}") for i in range(n)]}, timeout=120)
    if r.status_code in (404, 405):  # a daemon without the batch path: one at a time
        for i in range(n):
            c.post("/hosts", json=host_body(f"h{i}")).raise_for_status()
    else:
        r.raise_for_status()
    return {"hosts_s": time.perf_counter() - t, "hosts_one_by_one_s": per_host * n}


def wait_count(db: Database, cond: Any, n: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with db.read() as s:
            got = s.scalar(select(func.count()).select_from(VM).where(cond))
        if got == n:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {got} of {n} {what}")
        time.sleep(0.05)


def check_invariants(db: Database) -> dict[str, int]:
    """Every rule the fast paths must keep, read from the store (raises on a breach)."""
    holds = [st.value for st in HOLDS_HOST]
    with db.read() as s:
        over = s.scalar(select(func.count()).select_from(Host).where(
            (Host.alloc_cpu_m > Host.total_cpu_m) | (Host.alloc_mem > Host.total_mem)))
        sums = dict(s.execute(select(VM.host_id, func.sum(VM.cpu_m)).where(VM.state.in_(holds))
                              .group_by(VM.host_id)).all())
        mems = dict(s.execute(select(VM.host_id, func.sum(VM.memory)).where(VM.state.in_(holds))
                              .group_by(VM.host_id)).all())
        counts = dict(s.execute(select(VM.host_id, func.count()).where(VM.state.in_(holds))
                                .group_by(VM.host_id)).all())
        wrong_alloc = 0
        for h in s.scalars(select(Host)):
            if (h.alloc_cpu_m, h.alloc_mem, h.running_vms) != (
                    int(sums.get(h.id, 0)), int(mems.get(h.id, 0)), int(counts.get(h.id, 0))):
                wrong_alloc += 1
        dup_leases = s.scalar(select(func.count()).select_from(
            select(Lease.network_id, Lease.ip).where(Lease.vm_id.is_not(None))
            .group_by(Lease.network_id, Lease.ip).having(func.count() > 1).subquery()))
        live = s.execute(select(VM.owner_id, VM.group_id, VM.cpu_m, VM.memory)
                         .where(VM.state != VMState.DONE.value)).all()
        wrong_quota = 0
        for q in s.scalars(select(Quota)):
            mine = [r for r in live if (r[0] if q.scope == "user" else r[1]) == q.scope_id]
            if (q.vms_used, q.cpu_m_used, q.mem_used) != (
                    len(mine), sum(r[2] for r in mine), sum(r[3] for r in mine)):
                wrong_quota += 1
    out = {"hosts_over_capacity": int(over or 0), "hosts_alloc_wrong": wrong_alloc,
           "duplicate_leases": int(dup_leases or 0), "quotas_wrong": wrong_quota}
    if any(out.values()):
        raise SystemExit(f"INVARIANT BROKEN: {out}")
    return out


def place_floor(n_hosts: int, n_vms: int) -> float:
    hosts = [HostView(id=i + 1, name=f"h{i}", total_cpu=HOST_CPU, total_mem=HOST_MEM, used_cpu=0,
                      used_mem=0, running_vms=0, attrs={"HYPERVISOR": "sim", "CLUSTER": "default"})
             for i in range(n_hosts)]
    pending = [PendingVM(id=i + 1, cpu=1.0, memory=512, requirements="", rank="")
               for i in range(n_vms)]
    t = time.perf_counter()
    place(pending, hosts, SchedPolicy())
    return time.perf_counter() - t


def run_vms(kind: str, n_hosts: int, n_vms: int, batch: int, baseline_hosts: int,
            sim_where: str = "tmpfs", src: str | None = None) -> dict[str, Any]:
    """``src``: run the daemon on another checkout's code (``--baseline-src``: main's, timed in
    the same run as this code's)."""
    with tempfile.TemporaryDirectory(prefix="vocloud-bench-scale-") as tmp, \
            store_url(kind, Path(tmp), "bench_scale") as url, sim_root(sim_where, Path(tmp)) as shared:
        data_dir = Path(tmp)
        fill_store(data_dir, 0, url=url)
        out: dict[str, Any] = {"db": kind, "hosts": n_hosts, "vms": n_vms,
                               "sim_files": "tmpfs" if shared != data_dir else "disk",
                               "code": src or "this checkout"}
        env = daemon_env(url, shared)
        if src is not None:
            env["PYTHONPATH"] = os.pathsep.join([src, str(Path(__file__).resolve().parents[1])])
        with bench_daemon(data_dir, env_extra=env) as d, client(d) as c:
            out.update(register_hosts(c, n_hosts, baseline_hosts))
            db = Database(url)
            wait_hosts_monitored(db, n_hosts)
            cpu0 = cpu_seconds(d.pid)
            t0 = time.perf_counter()
            left = n_vms
            while left:
                k = min(batch, left)
                c.post("/vms", json={"template": TEMPLATE, "count": k, "name": "scale"},
                       timeout=120).raise_for_status()
                left -= k
            out["vms_created_s"] = time.perf_counter() - t0
            cpu_created = cpu_seconds(d.pid) - cpu0
            wait_count(db, VM.state == VMState.RUNNING.value, n_vms, 600, "VMs RUNNING")
            out["vms_running_s"] = time.perf_counter() - t0
            out["daemon_cpu_s"] = cpu_seconds(d.pid) - cpu0
            out["daemon_cpu_created_s"] = cpu_created
        out["load"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        out["invariants"] = check_invariants(db)
        out["monitor_s"] = monitor_pass(db, shared)
        db.dispose()
    out["place_only_s"] = place_floor(n_hosts, n_vms)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU the process has used: on a shared machine, wall time says how busy the
    machine was as much as how much work the daemon did; this says the latter."""
    return stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def stat_cpu_seconds(stat: Path) -> float:
    """User + system CPU of a process or thread (``/proc/PID[/task/TID]/stat``)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_hosts_monitored(db: Database, n: int, timeout: float = 120.0) -> None:
    """The daemon's first monitor pass takes new hosts from INIT to MONITORED."""
    deadline = time.monotonic() + timeout
    while True:
        with db.read() as s:
            got = s.scalar(select(func.count()).select_from(Host).where(Host.state == "MONITORED"))
        if got == n:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"only {got} of {n} hosts MONITORED")
        time.sleep(0.05)


def monitor_pass(db: Database, shared: Path) -> float:
    sim = SimDriver(shared / "sim", 0.0, 0.0)
    rec = Reconciler(Cloud(db), {"sim": sim}, LoopSettings())
    rec.monitor_once(force=True)  # warm: first touches of the files and the connection pool
    t = time.perf_counter()
    rec.monitor_once(force=True)
    return time.perf_counter() - t


@contextmanager
def client(d: BenchDaemon) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=d.api, headers={"Authorization": f"Bearer {d.token}"},
                      timeout=60) as c:
        yield c


# ------------------------------------------------------------------ REST load
async def rest_worker(ac: httpx.AsyncClient, stop_at: float, lat: dict[str, list[float]],
                      errors: list[str], rng: random.Random) -> None:
    mine: list[int] = []
    while time.perf_counter() < stop_at:
        r = rng.random()
        if r < 0.4 or not mine:
            op, req = "create", ac.post("/vms", json={"template": TEMPLATE, "name": "load"})
        elif r < 0.7:
            op, req = "list", ac.get("/vms", params={"limit": 100})
        else:
            op, req = "terminate", ac.post(f"/vms/{mine.pop(0)}/action", json={"action": "terminate"})
        t = time.perf_counter()
        try:
            resp = await req
        except httpx.HTTPError as exc:
            errors.append(f"{op}: {exc!r}")
            continue
        lat[op].append(time.perf_counter() - t)
        if resp.status_code >= 400:
            errors.append(f"{op}: HTTP {resp.status_code} {resp.text[:200]}")
        elif op == "create":
            mine.extend(resp.json()["ids"])


async def rest_load(d: BenchDaemon, clients: int, duration: float) -> dict[str, Any]:
    lat: dict[str, list[float]] = {"create": [], "list": [], "terminate": []}
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=d.api, headers={"Authorization": f"Bearer {d.token}"},
                                 timeout=60, limits=limits) as ac:
        t0 = time.perf_counter()
        stop_at = t0 + duration
        await asyncio.gather(*(rest_worker(ac, stop_at, lat, errors, random.Random(i))
                               for i in range(clients)))
        elapsed = time.perf_counter() - t0
    every = sorted(x for v in lat.values() for x in v)

    def pct(xs: list[float], p: float) -> float:
        return sorted(xs)[min(len(xs) - 1, int(p * len(xs)))] * 1000 if xs else 0.0

    return {"requests": len(every), "rps": len(every) / elapsed, "p50_ms": pct(every, 0.5),
            "p99_ms": pct(every, 0.99), "max_ms": every[-1] * 1000 if every else 0.0,
            "errors": len(errors), "first_errors": errors[:3],
            **{f"{op}_p99_ms": pct(v, 0.99) for op, v in lat.items()},
            **{f"{op}_n": len(v) for op, v in lat.items()}}


def wrk_load(d: BenchDaemon, clients: int, duration: float) -> dict[str, Any]:
    """The same mix driven by wrk (``rest_mix.lua``): one C thread, ~0.05 ms CPU per request,
    so that the daemon has the machine's cores to itself. Its CPU is read from the children's
    rusage."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk not found (apt-get install wrk), or use --loadgen python")
    script = Path(__file__).with_name("rest_mix.lua")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [wrk, "-t1", f"-c{clients}", f"-d{duration:.0f}s", "--timeout", "60s", "-s", str(script),
         d.base_url, "--", d.token, "/api/v1"], capture_output=True, text=True, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed (rc {proc.returncode}): {proc.stderr.strip()[:500]}")
    w = json.loads(line.removeprefix("WRK_JSON "))
    n = max(w["requests"], 1)
    socket_errors = sum(w[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts"))
    return {"requests": w["requests"], "rps": w["requests"] / (w["duration_us"] / 1e6),
            "p50_ms": w["p50_us"] / 1000, "p99_ms": w["p99_us"] / 1000, "max_ms": w["max_us"] / 1000,
            "errors": socket_errors + w["http_errors"],
            "first_errors": [w["first_error"]] if w["first_error"] else [],
            "create_n": w["create_n"], "list_n": w["list_n"], "terminate_n": w["terminate_n"],
            "client_cpu_ms": (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            * 1000 / n, "loadgen": "wrk"}


WRITER_SERIES = ("vocloud_store_write_transactions_total", "vocloud_store_writer_hold_seconds_total",
                 "vocloud_store_writer_wait_seconds_total")


def writer_lock(d: BenchDaemon) -> dict[str, float]:
    """The SQLite store's writer-lock counters of the daemon's first process, from its
    ``/metrics`` (empty on PostgreSQL, and from a daemon whose code predates them)."""
    r = httpx.get(f"{d.base_url}/metrics", headers={"Authorization": f"Bearer {d.token}"},
                  timeout=30)
    out: dict[str, float] = {}
    for line in r.text.splitlines():
        name, _, value = line.partition(" ")
        if name in WRITER_SERIES:
            out[name] = float(value)
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` and its child processes (the daemon's ``api_workers``)."""
    total = cpu_seconds(pid)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            total += cpu_seconds(int(stat.parent.name))
    return total


@contextmanager
def rest_daemon(url: str, data_dir: Path, shared: Path, workers: int = 1,
                src: str | None = None, loop_interval: float = LOOP_INTERVAL) -> Iterator[BenchDaemon]:
    """The REST mix's daemon: a fresh store at ``url``, ``workers`` API processes running the
    code in ``src`` (another checkout's) or this one, 20 sim hosts registered, the API
    processes started."""
    fill_store(data_dir, 0, url=url)
    env = daemon_env(url, shared, loop_interval)
    if workers > 1:
        env["VOCLOUD_API_WORKERS"] = str(workers)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([src, str(Path(__file__).resolve().parents[1])])
    with bench_daemon(data_dir, env_extra=env) as d:
        with client(d) as c:
            for i in range(20):
                c.post("/hosts", json=host_body(f"r{i}")).raise_for_status()
        time.sleep(3.0 if workers > 1 else 0.0)  # the API workers finish starting
        yield d


def run_rest(kind: str, clients: int, duration: float, workers: int = 1,
             src: str | None = None, label: str = "", loadgen: str = "python",
             sim_where: str = "tmpfs", loop_interval: float = LOOP_INTERVAL) -> dict[str, Any]:
    """The REST mix against a daemon with ``workers`` API processes, running the code in
    ``src`` (another checkout's ``src``: the baseline of the same run) or this one."""
    with tempfile.TemporaryDirectory(prefix="vocloud-bench-rest-") as tmp, \
            store_url(kind, Path(tmp), "bench_scale") as url, sim_root(sim_where, Path(tmp)) as shared:
        with rest_daemon(url, Path(tmp), shared, workers, src, loop_interval) as d:
            main_thread = Path(f"/proc/{d.pid}/task/{d.pid}/stat")  # uvicorn's event loop
            cpu0, mine0 = tree_cpu_seconds(d.pid), time.process_time()
            loop0 = stat_cpu_seconds(main_thread)
            lock0, t0 = writer_lock(d), time.perf_counter()
            if loadgen == "wrk":
                out = wrk_load(d, clients, duration)
            else:
                out = asyncio.run(rest_load(d, clients, duration))
                out["loadgen"] = "python (httpx)"
            n = max(out["requests"], 1)
            lock1, took = writer_lock(d), time.perf_counter() - t0
            if lock0 and lock1:
                tx = lock1[WRITER_SERIES[0]] - lock0[WRITER_SERIES[0]]
                out["writer_lock"] = {
                    "transactions": tx,
                    "held_fraction": (lock1[WRITER_SERIES[1]] - lock0[WRITER_SERIES[1]]) / took,
                    "mean_hold_ms": 1000 * (lock1[WRITER_SERIES[1]] - lock0[WRITER_SERIES[1]])
                    / max(tx, 1),
                    "mean_wait_ms": 1000 * (lock1[WRITER_SERIES[2]] - lock0[WRITER_SERIES[2]])
                    / max(tx, 1)}
            out["daemon_cpu_ms_per_request"] = (tree_cpu_seconds(d.pid) - cpu0) * 1000 / n
            out["event_loop_cpu_ms_per_request"] = (stat_cpu_seconds(main_thread) - loop0) * 1000 / n
            out["client_cpu_ms_per_request"] = out.pop("client_cpu_ms", None) or (
                (time.process_time() - mine0) * 1000 / n)
        out["load"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
        db = Database(url)
        out["invariants"] = check_invariants(db)
        db.dispose()
    out["db"] = kind
    out["sim_files"] = "tmpfs" if sim_where == "tmpfs" and Path("/dev/shm").is_dir() else "disk"
    out["loop_interval_s"] = loop_interval
    out["config"] = label or (f"{workers} API process{'es' if workers > 1 else ''}"
                              + (f", code from {src}" if src else ""))
    return out


def report(results: list[dict[str, Any]]) -> None:
    print(f"{'figure':48} {'db':9} {'value':>10} {'target':>10} {'baseline':>12}")
    for r in results:
        db = r["db"]
        if "vms_running_s" in r:
            nh, nv = f"{r['hosts']:,}", f"{r['vms']:,}"
            print(f"-- daemon code: {r.get('code', 'this checkout')}")
            print(f"{nh + ' hosts registered (one batch request)':48} {db:9} {r['hosts_s']:9.2f}s "
                  f"{'<5s':>10} {r['hosts_one_by_one_s']:11.2f}s  (one POST each, same run; "
                  f"issue: 17.5 s)")
            print(f"{nv + ' VMs created over REST':48} {db:9} "
                  f"{r['vms_created_s']:9.2f}s {'':>10} {'29.0':>11}s  (issue)")
            print(f"{nv + ' VMs -> RUNNING (from first create)':48} {db:9} "
                  f"{r['vms_running_s']:9.2f}s {'<10s':>10} {'73.5':>11}s  (issue); "
                  f"place() alone: {r['place_only_s']:.2f} s")
            print(f"  loops' tail (all RUNNING after the last create): "
                  f"{r['vms_running_s'] - r['vms_created_s']:.2f} s")
            print(f"  daemon CPU while bringing them up: {r['daemon_cpu_s']:.1f} s (of it until the "
                  f"last create returned: {r['daemon_cpu_created_s']:.1f} s); machine load "
                  f"average at the end: {r['load']}; sim guest files on {r['sim_files']}")
            print(f"{'monitor pass, ' + nh + ' hosts / ' + nv + ' guests':48} {db:9} "
                  f"{r['monitor_s']:9.2f}s {'<1s':>10}")
            print(f"  invariants: {r['invariants']}")
        else:
            print(f"-- {r['config']}")
            print(f"{'50 clients x create/list/terminate, req/s':48} {db:9} {r['rps']:10.0f} "
                  f"{'>=500':>10} {'88':>12}  (issue)")
            print(f"{'  p99 latency':48} {db:9} {r['p99_ms']:8.0f}ms {'<250ms':>10} "
                  f"{'5950':>10}ms  (issue); p50 {r['p50_ms']:.0f} ms, max {r['max_ms']:.0f} ms")
            if "create_p99_ms" in r:
                per_op = (f"p99 create {r['create_p99_ms']:.0f} / list {r['list_p99_ms']:.0f} / "
                          f"terminate {r['terminate_p99_ms']:.0f} ms")
            else:  # wrk: one latency histogram
                per_op = (f"create {r['create_n']} / list {r['list_n']} / terminate "
                          f"{r['terminate_n']}")
            print(f"  {r['requests']} requests, {r['errors']} errors {r['first_errors']}; {per_op}; "
                  f"invariants: {r['invariants']}")
            print(f"  daemon CPU per request: {r['daemon_cpu_ms_per_request']:.1f} ms (all its processes), "
                  f"load generator ({r['loadgen']}) {r['client_cpu_ms_per_request']:.2f} ms; machine load "
                  f"average at the end: {r['load']}; sim guest files on {r['sim_files']}; loops every "
                  f"{r['loop_interval_s']:g} s")
            print(f"  of which the first process's event loop (uvicorn, routing, middlewares, async "
                  f"dependencies): {r['event_loop_cpu_ms_per_request']:.1f} ms; the rest: its "
                  "worker threads (routes, service calls), its loops and any other API process")
            if r.get("writer_lock"):
                wl = r["writer_lock"]
                print(f"  SQLite writer lock (first process, /metrics): held "
                      f"{100 * wl['held_fraction']:.0f} % of the run, "
                      f"{wl['transactions']:.0f} write transactions, mean hold "
                      f"{wl['mean_hold_ms']:.1f} ms, mean wait {wl['mean_wait_ms']:.1f} ms")
            per = max(r["daemon_cpu_ms_per_request"], 0.01)
            print(f"  at that CPU per request the daemon alone would serve at most {1000 / per:.0f} "
                  "req/s per free core (one core per API process: the GIL)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--hosts", type=int, default=2000)
    ap.add_argument("--vms", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--baseline-hosts", type=int, default=100)
    ap.add_argument("--no-vms", action="store_true", help="skip the hosts/VMs/monitor figures")
    ap.add_argument("--rest", action="store_true", help="also run the 50-client REST load")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--sim-files", choices=["tmpfs", "disk"], default="tmpfs",
                    help="where the sim driver keeps its guest files (see sim_root)")
    ap.add_argument("--workers", type=int, default=1,
                    help="REST: API processes of the daemon (setting api_workers)")
    ap.add_argument("--baseline-src", default=None,
                    help="first run the same VMs (and REST load, one API process) on the daemon "
                    "of this src directory (e.g. /work/main/src): the same-run baseline")
    ap.add_argument("--repeat", type=int, default=1,
                    help="REST: run the configurations this many times, taking turns")
    ap.add_argument("--loop-interval", type=float, default=LOOP_INTERVAL,
                    help="REST: the daemon's scheduler and lifecycle period, s (a site's "
                    "defaults: 1 and 0.5)")
    ap.add_argument("--loadgen", choices=["auto", "wrk", "python"], default="auto",
                    help="REST load generator: wrk (rest_mix.lua; auto: when installed) or the "
                    "Python one (httpx, in this process)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "python"
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    results: list[dict[str, Any]] = []
    for kind in kinds:
        if not args.no_vms:
            if args.baseline_src:
                results.append(run_vms(kind, args.hosts, args.vms, args.batch,
                                       args.baseline_hosts, args.sim_files, args.baseline_src))
            results.append(run_vms(kind, args.hosts, args.vms, args.batch, args.baseline_hosts,
                                   args.sim_files))
        for _ in range(args.repeat if args.rest else 0):
            # baseline and this code take turns, so that a change in the machine's load during
            # the run does not favour whichever ran first
            if args.baseline_src:
                results.append(run_rest(kind, args.clients, args.duration, 1, args.baseline_src,
                                        f"baseline: {args.baseline_src}, 1 API process", loadgen,
                                        args.sim_files, args.loop_interval))
                results.append(run_rest(kind, args.clients, args.duration, 1, loadgen=loadgen,
                                        sim_where=args.sim_files, loop_interval=args.loop_interval))
            if args.workers > 1 or not args.baseline_src:
                results.append(run_rest(kind, args.clients, args.duration, args.workers,
                                        loadgen=loadgen, sim_where=args.sim_files,
                                        loop_interval=args.loop_interval))
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        report(results)
    ok = all(r.get("vms_running_s", 0) < TARGETS["vms_running_s"] and r.get("hosts_s", 0) < 5
             and r.get("monitor_s", 0) < 1 for r in results
             if "vms_running_s" in r and r["code"] == "this checkout") and all(
        r["rps"] >= TARGETS["rest_rps"] and r["p99_ms"] < TARGETS["rest_p99_ms"] and not r["errors"]
        for r in results if "rps" in r)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
