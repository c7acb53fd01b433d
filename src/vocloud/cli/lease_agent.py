"""``python -m vocloud.cli.lease_agent``: the payload of a host-lease batch job (docs/host-leases.md).

It runs on the allocated node, started by the job script (``batch/lease_jobs.py``), with the
lease's one-time token on stdin. It registers the node with the daemon as a transient host
(its address: the one this node uses to reach the daemon, so the daemon can reach it back), then
waits for the job's end. On SIGTERM (``scancel``, or the batch system's walltime) it tells the
daemon, which drains the host (each VM: ACPI shutdown, then a hard stop), and keeps asking
until the host has left or ``--wait`` seconds pass, within the batch system's grace period
before SIGKILL (Slurm's ``KillWait``, 30 s by default).

Exit status: 0 after a clean end, 1 if the daemon refused the registration (the job then ends
and the lease with it), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

import httpx

from vocloud.client import ApiError, Client, ClientError


def reach_address(url: str) -> str:
    """The local address this node uses towards ``url``'s host (no packet is sent)."""
    u = httpx.URL(url)
    family = socket.AF_INET6 if ":" in u.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect((u.host, u.port or 80))
        return str(s.getsockname()[0])


def node_capacity() -> tuple[float | None, int | None]:
    """What the batch system gave this job (else the machine's), for hosts that declare it."""
    cpus = os.environ.get("SLURM_CPUS_ON_NODE") or str(os.cpu_count() or "")
    mem = os.environ.get("SLURM_MEM_PER_NODE", "")
    if not mem.isdigit():
        try:
            with open("/proc/meminfo") as f:
                mem = str(int(f.readline().split()[1]) // 1024)
        except (OSError, IndexError, ValueError):
            mem = ""
    return (float(cpus) if cpus.isdigit() else None, int(mem) if mem.isdigit() and int(mem) else None)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vocloud.cli.lease_agent")
    p.add_argument("--url", required=True)
    p.add_argument("--lease", type=int, required=True)
    p.add_argument("--started", type=float, default=None)
    p.add_argument("--wait", type=float, default=25.0)
    p.add_argument("--address", default="")
    args = p.parse_args(argv)
    token = sys.stdin.readline().strip()
    if not token:
        print("lease agent: no token on stdin", file=sys.stderr)
        return 2
    ending = threading.Event()

    def on_term(_sig: int, _frame: FrameType | None) -> None:
        ending.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    # Grid Engine: SIGUSR1 at the soft walltime (s_rt), SIGUSR2 before qdel's SIGKILL (-notify)
    signal.signal(signal.SIGUSR1, on_term)
    signal.signal(signal.SIGUSR2, on_term)
    cpu, memory = node_capacity()
    with Client(args.url, None, timeout=30) as api:
        base = f"/host-leases/{args.lease}"
        body = {"token": token, "address": args.address or reach_address(args.url),
                "started": args.started if args.started is not None else time.time(),
                "cpu": cpu, "memory": memory}
        for attempt in range(10):
            try:
                api.post(f"{base}/register", {k: v for k, v in body.items() if v is not None})
                break
            except ApiError as exc:
                print(f"lease agent: registration refused: {exc}", file=sys.stderr)
                return 1
            except ClientError as exc:  # the daemon restarting: try again for a while
                print(f"lease agent: {exc}; retrying", file=sys.stderr)
                if ending.wait(min(2.0 ** attempt, 30.0)):
                    return 0
        else:
            return 1
        print(f"lease agent: node registered for lease {args.lease}", flush=True)
        ending.wait()
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            try:
                if api.post(f"{base}/ending", {"token": token}).get("done"):
                    return 0
            except ClientError as exc:
                print(f"lease agent: {exc}", file=sys.stderr)
            time.sleep(1.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
