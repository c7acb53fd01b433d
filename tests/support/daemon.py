"""A real daemon process (``python -m vocloud.app.serve_main``) on a free loopback port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

FAST = {
    "VOCLOUD_SCHEDULER_INTERVAL": "0.2", "VOCLOUD_LIFECYCLE_INTERVAL": "0.2",
    "VOCLOUD_MONITOR_INTERVAL": "0.5", "VOCLOUD_SIM_BOOT_DELAY": "0.5",
    "VOCLOUD_SIM_SHUTDOWN_DELAY": "0.2", "VOCLOUD_LOG_LEVEL": "warning",
}


@dataclass
class Daemon:
    data_dir: Path
    db_url: str
    port: int
    extra_env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    wrap: list[str] = field(default_factory=list)  # a command prefix, e.g. a mount namespace

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def env(self) -> dict[str, str]:
        return {**os.environ, **FAST, **self.extra_env, "VOCLOUD_HOME": str(self.data_dir),
                "VOCLOUD_PORT": str(self.port), "VOCLOUD_DB_URL": self.db_url}

    def start(self) -> None:
        log = (self.data_dir / "daemon.log").open("ab")
        self.proc = subprocess.Popen([*self.wrap, sys.executable, "-m", "vocloud.app.serve_main"],
                                     env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.proc.poll() is None, (self.data_dir / "daemon.log").read_text()
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError("daemon did not come up")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)
        return self.proc.returncode

    @property
    def token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {token or self.token}"})
