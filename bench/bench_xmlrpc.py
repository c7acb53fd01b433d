"""Benchmark: OpenNebula's ``one.vmpool.info`` of 20,000 VMs over vocloud's XML-RPC (/RPC2).

Starts a real daemon (temp SQLite store, loops idle), fills it with VMs through the service
layer, and times the call three ways: the wire alone (httpx POST, whole response read), pyone's
whole call (its bindings build 20,000 VM objects from the XML), and the wire under load
(``--clients`` threads calling back to back; latency and requests per second). OpenNebula's
published figures for the same call: 2.39 s at 20K VMs (5.12); 0.78-1.27 s at 10-30 req/s (6.10).

Usage: .venv/bin/python bench/bench_xmlrpc.py [--vms 20000] [--clients 4] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import xmlrpc.client
from pathlib import Path

import httpx
import pyone

from bench.support import bench_daemon, fill_store

ANCHORS = {"opennebula_5.12_s": 2.39, "opennebula_6.10_s": "0.78-1.27 at 10-30 req/s"}


def _timed(fn: object, repeat: int) -> list[float]:
    assert callable(fn)
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--vms", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--load-seconds", type=float, default=10.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vocloud-bench-") as tmp:
        data_dir = Path(tmp)
        t0 = time.perf_counter()
        fill_store(data_dir, args.vms)
        fill_s = time.perf_counter() - t0
        with bench_daemon(data_dir) as d:
            token = d.token
            endpoint = f"{d.base_url}/RPC2"
            body = xmlrpc.client.dumps((f"admin:{token}", -2, -1, -1, -1), "one.vmpool.info").encode()
            size = [0]

            with httpx.Client(timeout=120) as client:
                def wire() -> None:
                    r = client.post(endpoint, content=body, headers={"Content-Type": "text/xml"})
                    r.raise_for_status()
                    size[0] = len(r.content)

                wire_times = _timed(wire, args.repeat)
            one = pyone.OneServer(endpoint, session=f"admin:{token}")
            count = [0]

            def whole() -> None:
                count[0] = len(one.vmpool.info(-2, -1, -1, -1).VM)

            pyone_times = _timed(whole, max(3, args.repeat // 2))
            lat: list[float] = []
            lock = threading.Lock()
            stop = time.monotonic() + args.load_seconds

            def worker() -> None:
                with httpx.Client(timeout=120) as c:
                    while time.monotonic() < stop:
                        t = time.perf_counter()
                        r = c.post(endpoint, content=body, headers={"Content-Type": "text/xml"})
                        r.raise_for_status()
                        with lock:
                            lat.append(time.perf_counter() - t)

            threads = [threading.Thread(target=worker) for _ in range(args.clients)]
            started = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            load_s = time.perf_counter() - started
    assert count[0] == args.vms, f"listed {count[0]} VMs, expected {args.vms}"
    lat.sort()
    result = {
        "figure": f"one.vmpool.info of {args.vms} VMs over XML-RPC",
        "wire_best_s": round(min(wire_times), 3),
        "wire_median_s": round(sorted(wire_times)[len(wire_times) // 2], 3),
        "pyone_best_s": round(min(pyone_times), 3), "response_mib": round(size[0] / 2**20, 1),
        "load_clients": args.clients, "load_req_per_s": round(len(lat) / load_s, 2),
        "load_median_s": round(lat[len(lat) // 2], 3), "load_p95_s": round(lat[int(len(lat) * 0.95) - 1], 3),
        "fill_s": round(fill_s, 1), **ANCHORS,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        print(f"{key:22} {value}")


if __name__ == "__main__":
    main()
