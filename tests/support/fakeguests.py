"""Guests the qemu driver's monitor cannot tell from real ones, without booting qemu.

A monitor pass looks at run directories (``spec.json``, ``qemu.pid``, ``ready``, ``intent``),
``/proc/PID/cmdline`` (it must name the run dir's ``qmp.sock``) and a QMP ``query-status``. One
:class:`QmpStub` process serves the QMP sockets of many guests at once (its command line lists
every socket, so each guest's pid check passes) and answers ``running``; :func:`make_guest` writes
a run dir for it. That is enough to measure and count what a monitor pass costs per host, for
100 hosts on a 2-core machine where 100 real guests would not fit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from vocloud.devtools.localprocs import kill_all

#: Serves QMP on every socket path in argv: greeting, ``qmp_capabilities``, ``query-status``.
STUB = r"""
import asyncio, json, os, sys
async def serve(reader, writer):
    writer.write(json.dumps({"QMP": {"version": {}, "capabilities": []}}).encode() + b"\n")
    while line := await reader.readline():
        cmd = json.loads(line).get("execute")
        ret = {"status": "running", "running": True} if cmd == "query-status" else {}
        writer.write(json.dumps({"return": ret}).encode() + b"\n")
        await writer.drain()
    writer.close()
async def main():
    servers = []
    for path in sys.argv[1:]:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path):
            os.unlink(path)
        servers.append(await asyncio.start_unix_server(serve, path))
    print("ready", flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


class QmpStub:
    """One process answering QMP on ``sockets``; ``pid`` is every fake guest's qemu.pid."""

    def __init__(self, sockets: list[Path]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", STUB, *map(str, sockets)],
                                     stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            self.close()
            raise RuntimeError("the QMP stub did not start")
        self.pid = self.proc.pid

    def close(self) -> None:
        if self.proc.poll() is None:
            kill_all(lambda: [self.proc.pid] if self.proc.poll() is None else [], 5)
        self.proc.wait(5)

    def __enter__(self) -> QmpStub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_guest(host_dir: Path, deploy_id: str, vm_id: int, *, pid: int | None,
               ready: bool = True, intent: str = "", memory_mib: int = 64) -> Path:
    """A run dir as the driver leaves it for a guest that is up (``ready``) or stopped."""
    run = host_dir / deploy_id
    run.mkdir(parents=True, exist_ok=True)
    spec = {"vm_id": vm_id, "deploy_id": deploy_id, "name": f"vm{vm_id}", "cpu": 1.0, "vcpu": 1,
            "memory_mib": memory_mib, "disks": [], "nics": [], "context": {}}
    (run / "spec.json").write_text(json.dumps(spec))
    if pid is not None:
        (run / "qemu.pid").write_text(f"{pid}\n")
    if ready:
        (run / "ready").write_text(f"{time.time():.3f}\n")
    if intent:
        (run / "intent").write_text(intent + "\n")
    (run / "console.log").write_text("booting\nVOCLOUD-READY\n")
    return run
