"""A real Prometheus server (Debian ``prometheus``) on loopback, scraping one target every second."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port
from tests.support.procs import skip_or_fail


class Prometheus:
    def __init__(self, root: Path, target: str, metrics_path: str = "/metrics",
                 token: str | None = None) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            skip_or_fail("prometheus not installed (apt-get install prometheus)")
        assert binary is not None
        self.binary = binary
        self.root = root
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        auth = ""
        if token is not None:
            (root / "token").write_text(token)
            (root / "token").chmod(0o600)
            auth = f"    authorization:\n      type: Bearer\n      credentials_file: {root / 'token'}\n"
        (root / "prometheus.yml").write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: vocloud\n"
            f"    metrics_path: {metrics_path}\n{auth}"
            f"    static_configs:\n      - targets: ['{target}']\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.root / "prometheus.log").open("ab")
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.root / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.root / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(self.root)})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.root / "prometheus.log").read_text()[-2000:]
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus did not become ready")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query through the HTTP API; the result vector."""
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        r.raise_for_status()
        doc = r.json()
        assert doc["status"] == "success", doc
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
