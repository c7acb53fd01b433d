"""The demo's live loop: poll the pools, their decisions and the jobs every second, show them
(a table in place on a terminal, one line per change in a log) until the burst is done and every
pool is back to zero workers."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.live import Live

from vocloud.demo.api import Api
from vocloud.demo.base import VOS, WORKER, DemoError
from vocloud.demo.jobs import FAILED_JOB_STATES, Batch, Job
from vocloud.demo.summary import Watch
from vocloud.demo.views import event_text, pool_sizes, pool_table


def watch(console: Console, api: Api, batch: Batch, t0: float, deadline: float) -> Watch:
    """Refresh the table every second until every job completed and both pools are back to 0
    workers (every worker VM DONE); print each pool decision as it is made."""
    w = Watch()
    seen: set[tuple[Any, ...]] = set()
    last: dict[str, str] = {}
    last_sizes = ""
    interactive = console.is_terminal
    # On a terminal the table refreshes in place; in a log (CI, a pipe) each change of the pool
    # sizes is one line instead, and the table is printed once at the end.
    live = Live(console=console, refresh_per_second=4) if interactive else None
    pools: list[dict[str, Any]] = []
    jobs: list[Job] = []
    try:
        if live is not None:
            live.start()
        while True:
            pools = api("GET", "/pools")
            jobs = batch.jobs()
            for vo in VOS:
                for e in api("GET", f"/pools/{vo}/events", params={"limit": 50}):
                    key = (vo, e["time"], e["action"], e["count"], e["vm_id"], e["reason"])
                    if key in seen:
                        continue
                    seen.add(key)
                    last[vo] = event_text(e)
                    w.events[vo].append(e["action"])
                    console.print(f"[dim]{time.time() - t0:6.1f} s[/] [bold]{vo}[/] {event_text(e)}")
            for p in pools:
                w.peak[p["vo"]] = max(w.peak.get(p["vo"], 0),
                                      p["booting"] + p["running"] + p["draining"])
            sizes = pool_sizes(pools)
            if live is None and sizes != last_sizes:
                console.print(f"[dim]{time.time() - t0:6.1f} s[/] pools: {sizes}")
            last_sizes = sizes
            if live is not None:
                live.update(pool_table(pools, jobs, last, time.time() - t0))
            bad = [j for j in jobs if j.state in FAILED_JOB_STATES]
            if bad:
                raise DemoError(f"job {bad[0].id} ({bad[0].vo}) ended {bad[0].state}")
            if all(j.state == "COMPLETED" for j in jobs):
                w.jobs_done_at = w.jobs_done_at or time.time()
                vms = api("GET", "/vms", params={"all": True})
                workers = [v for v in vms if WORKER.match(v["name"])]
                empty = all(p["booting"] + p["running"] + p["draining"] + p["idle"] == 0
                            for p in pools)
                if empty and workers and all(v["state"] == "DONE" for v in workers) and all(
                        not api("GET", f"/pools/{vo}")["vms"] for vo in VOS):
                    return w
            if time.monotonic() > deadline:
                states = {j.id: j.state for j in jobs}
                raise DemoError(f"timed out: jobs {states}; pools: {sizes}")
            time.sleep(1)
    finally:
        if live is not None:
            live.stop()
        elif pools:
            console.print(pool_table(pools, jobs, last, time.time() - t0))
