"""Process helpers shared by the batch-system test harnesses (Slurm, Grid Engine).

Daemons that fork away from the test (slurmd job steps, sge_execd shepherds) cannot be tracked by
pid; each harness tags everything it starts with an environment variable instead, and finds (and
kills) its processes by that tag.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on loopback (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def processes_with_env(name: str, value: str) -> list[int]:
    """Pids (other than ours) whose environment carries ``name=value``."""
    needle = f"{name}={value}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            pids.append(int(entry.name))
    return pids
