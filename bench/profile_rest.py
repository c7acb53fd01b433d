"""Profile the REST mix inside one process (docs/performance.md, "REST request path").

The daemon's own app (``app.daemon.build``: every front-end, the loops running) on a temporary
SQLite store with 20 sim hosts, driven through ``httpx.ASGITransport`` by 50 concurrent clients
of bench_scale's mix (create / list / terminate). With ``--inline`` (default) the route handlers
and dependencies run on the event loop instead of the threadpool, so that cProfile, which sees
one thread, sees the whole request path; the profile measures that thread's CPU time. Prints
req/s and CPU per request, writes the profile (``--out``). Bounded; no network at all.

    PYTHONPATH=src .venv/bin/python -m bench.profile_rest [--seconds 20] [--no-inline]
        [--threads] [--wall] [--threadpool N]

``--no-inline`` keeps FastAPI's threadpool (the profile then sees the event loop only) and is the
mode whose "CPU per request by thread" line (event loop / worker threads / loops, from
``/proc/self/task``) describes the daemon as it runs; ``--threads`` profiles every thread (slow
under load); ``--wall`` profiles where the serving thread waits. Another checkout's code:
``PYTHONPATH=/work/main/src:. python -m bench.profile_rest`` (the same-run baseline).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import os
import pstats
import random
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

TEMPLATE = "CPU=1\nMEMORY=512\n"


async def _worker(ac: httpx.AsyncClient, stop_at: float, lat: dict[str, list[float]],
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
        resp = await req
        lat[op].append(time.perf_counter() - t)
        if resp.status_code >= 400:
            errors.append(resp.text[:200])
        elif op == "create":
            mine.extend(resp.json()["ids"])


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of this process's threads so far, by group: the event loop (the client,
    uvicorn's part, FastAPI's routing and async dependencies), FastAPI's worker threads (the
    sync routes: authentication and the service calls), and every other thread (the loops)."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out = {"event loop": 0.0, "worker threads": 0.0, "loops and other threads": 0.0}
    for stat in Path("/proc/self/task").glob("*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(stat.parent.name), "")
        group = ("event loop" if name == "MainThread" else
                 "worker threads" if name.startswith("AnyIO worker") else "loops and other threads")
        out[group] += (int(fields[11]) + int(fields[12])) / tick
    return out


async def _run(app: Any, runner: Any, token: str, seconds: float, out: str, wall: bool = False,
               threads: bool = False, threadpool: int = 0) -> None:
    if threadpool:
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = threadpool
    timer = time.perf_counter if wall else time.thread_time
    profs: list[cProfile.Profile] = []
    if threads:
        # every thread started from now on (FastAPI's threadpool, the loops) profiles itself:
        # the handoffs between threads and the loops' share are in the profile too
        def start(_frame: Any, _event: str, _arg: Any) -> None:
            p = cProfile.Profile(timer)
            profs.append(p)
            p.enable()  # replaces this hook in that thread

        threading.setprofile(start)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://profile/api/v1",
                                 headers={"Authorization": f"Bearer {token}"}) as ac:
        for i in range(20):
            (await ac.post("/hosts", json={"name": f"r{i}", "vmm": "sim", "cpu": 8,
                                           "memory": 65536})).raise_for_status()
        runner.start()
        lat: dict[str, list[float]] = {"create": [], "list": [], "terminate": []}
        errors: list[str] = []
        warm = time.perf_counter() + (0 if threads else 3)
        await asyncio.gather(*(_worker(ac, warm, lat, errors, random.Random(100 + i)) for i in range(50)))
        lat = {k: [] for k in lat}
        prof = cProfile.Profile(timer)
        t0, c0, split0 = time.perf_counter(), time.process_time(), _thread_cpu()
        prof.enable()
        stop = time.perf_counter() + seconds
        await asyncio.gather(*(_worker(ac, stop, lat, errors, random.Random(i)) for i in range(50)))
        prof.disable()
        elapsed = time.perf_counter() - t0
        n = sum(map(len, lat.values()))
        print(f"{n} requests in {elapsed:.1f} s = {n / elapsed:.0f} req/s; process CPU "
              f"{1000 * (time.process_time() - c0) / max(n, 1):.2f} ms per request (client, "
              f"server and loops); errors {len(errors)} {errors[:2]}")
        split = _thread_cpu()
        tms = os.times()
        print(f"  process user {tms.user:.1f} s, system {tms.system:.1f} s (whole run)")
        print("  CPU per request by thread: " + ", ".join(
            f"{k} {1000 * (split[k] - split0[k]) / max(n, 1):.2f} ms" for k in split))
        for op, v in lat.items():
            v.sort()
            if v:
                print(f"  {op}: {len(v)}, p50 {1000 * v[len(v) // 2]:.1f} ms")
        runner.join()
        threading.setprofile(None)
        if threads:
            stats = pstats.Stats(prof)
            for p in profs:
                with contextlib.suppress(TypeError):  # a profiler that never saw a call
                    stats.add(p)
            stats.dump_stats(out)
        else:
            prof.dump_stats(out)
        print(f"profile: {out} (python -m pstats {out})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--no-inline", action="store_true", help="keep FastAPI's threadpool")
    ap.add_argument("--out", default="rest.prof")
    ap.add_argument("--threads", action="store_true",
                    help="keep FastAPI's threadpool and profile every thread (the daemon as it runs)")
    ap.add_argument("--threadpool", type=int, default=0,
                    help="worker threads of the sync routes (default: AnyIO's 40)")
    ap.add_argument("--wall", action="store_true",
                    help="profile wall time of the serving thread (where it waits), not its CPU")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="vocloud-profile-rest-"))
    os.environ.update({"VOCLOUD_HOME": str(tmp), "VOCLOUD_LOG_LEVEL": "warning",
                       "VOCLOUD_SIM_BOOT_DELAY": "0", "VOCLOUD_SIM_SHUTDOWN_DELAY": "0",
                       "VOCLOUD_SCHEDULER_INTERVAL": "0.2", "VOCLOUD_LIFECYCLE_INTERVAL": "0.2",
                       "VOCLOUD_MONITOR_INTERVAL": "3600"})
    if not (args.no_inline or args.threads):
        import fastapi.dependencies.utils
        import fastapi.routing

        async def inline(func: Any, *a: Any, **k: Any) -> Any:
            return func(*a, **k)

        fastapi.routing.run_in_threadpool = inline  # type: ignore[attr-defined]
        fastapi.dependencies.utils.run_in_threadpool = inline  # type: ignore[attr-defined]
    from vocloud.app.daemon import build
    from vocloud.config import load_settings

    app, runner, _cloud = build(load_settings())
    token = (tmp / "admin.token").read_text().strip()
    asyncio.run(_run(app, runner, token, args.seconds, args.out, args.wall, args.threads,
                     args.threadpool))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
