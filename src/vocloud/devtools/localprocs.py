"""Helpers for the throwaway daemons vocloud starts on this machine (the demo's Slurm, and the
test harnesses' Slurm and Grid Engine cells): find them, wait for them, show their logs.

Processes are found by a marker in their environment rather than by pid files, because
daemons that fork and re-exec (slurmctld, munged, sge_qmaster) leave pid files that lie, while
the environment is inherited by everything they start.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


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


def poll_until(check: Callable[[], T | None], timeout: float, what: str,
               detail: Callable[[], str] = str, interval: float = 0.25) -> T:
    """Poll ``check`` until it returns something truthy and return that; on timeout raise
    :class:`TimeoutError` naming ``what`` followed by ``detail()`` (e.g. log tails)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}\n{detail()}")
        time.sleep(interval)


def kill_all(find: Callable[[], list[int]], timeout: float = 5.0, interval: float = 0.05) -> list[int]:
    """SIGKILL every pid ``find()`` names, again and again until it names none or ``timeout``
    passes; the pids it named first. Best effort, for teardown (which must not fail): a process
    that will not die is left for the caller's next look."""
    first = find()

    def gone() -> bool:
        pids = find()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        return not pids

    with contextlib.suppress(TimeoutError):
        poll_until(gone, timeout, "processes to exit", interval=interval)
    return first


def tail_files(paths: Iterable[Path], lines: int, root: Path | None = None) -> str:
    """The last ``lines`` lines of each readable file, each under a ``--- name`` header."""
    out = []
    for path in paths:
        with contextlib.suppress(OSError):
            tail = path.read_text(errors="replace").splitlines()[-lines:]
            name = path.relative_to(root) if root is not None else path.name
            out.append(f"--- {name}\n" + "\n".join(tail))
    return "\n".join(out)


def qemu_pids_under(path: Path) -> list[int]:
    """Live qemu processes whose command line names ``path`` (a data or state dir's guests)."""
    needle = str(path).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"qemu-system" in argv.split(b"\0", 1)[0] and needle in argv:
            pids.append(int(entry.name))
    return pids


def free_port() -> int:
    """A free TCP port on loopback, for a daemon a demo starts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
