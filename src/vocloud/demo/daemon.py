"""The demo's daemon: ``vocloud serve`` as a subprocess on a fresh SQLite store, driven through
the shared REST client, stopped with SIGTERM as an init system would."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from rich.console import Console

from vocloud.client import Client, wait_healthy
from vocloud.demo.api import Api
from vocloud.demo.base import DemoError
from vocloud.devtools.localprocs import free_port, kill_all, qemu_pids_under


@contextlib.contextmanager
def demo_daemon(data_dir: Path, env_extra: dict[str, str], console: Console) -> Iterator[Api]:
    """``vocloud serve`` as a subprocess on a fresh SQLite store; SIGTERM on the way out, as an
    init system would, then SIGKILL of any qemu it left (a daemon keeps guests across restarts,
    but the demo's guests must not outlive the demo)."""
    port = free_port()
    # The machine's own VOCLOUD_* settings (a PostgreSQL URL, a port) must not leak in; the
    # accelerator choice and the guest cache are about this machine and may.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("VOCLOUD_") or k in ("VOCLOUD_ACCEL", "VOCLOUD_CACHE")}
    env.update({"VOCLOUD_HOME": str(data_dir), "VOCLOUD_PORT": str(port),
                "VOCLOUD_LOG_LEVEL": "info", "VOCLOUD_MONITOR_INTERVAL": "2",
                "VOCLOUD_SCHEDULER_INTERVAL": "0.5", **env_extra})
    log = (data_dir / "daemon.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "vocloud.app.serve_main"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_healthy(url, lambda: proc.poll() is None, 60):
            if proc.poll() is not None:
                raise DemoError(f"the daemon exited ({proc.returncode}); see {data_dir}/daemon.log")
            raise DemoError(f"the daemon did not answer within 60 s; see {data_dir}/daemon.log")
        console.print(f"daemon up: API on {url}, SQLite store in {data_dir}")
        yield Api(Client(url, (data_dir / "admin.token").read_text().strip(), timeout=30), DemoError)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()
        left = kill_all(lambda: qemu_pids_under(data_dir))
        console.print(f"daemon stopped (exit {proc.returncode})"
                      + (f"; killed {len(left)} qemu it left" if left else ""))
