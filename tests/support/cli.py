"""A real ``vocloud serve`` subprocess and the real CLI against it, as an administrator runs them.

Why subprocesses and not in-process calls: the acceptance is what an administrator sees at a
shell (exit codes, one-line errors, no tracebacks, a daemon that stops cleanly on SIGTERM), and
only separate processes show that honestly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port

FAST_LOOPS = {
    "VOCLOUD_SIM_BOOT_DELAY": "0.2",
    "VOCLOUD_SIM_SHUTDOWN_DELAY": "0.1",
    "VOCLOUD_SCHEDULER_INTERVAL": "0.2",
    "VOCLOUD_LIFECYCLE_INTERVAL": "0.2",
    "VOCLOUD_MONITOR_INTERVAL": "0.5",
}
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def vocloud_command() -> list[str]:
    """The installed console script next to this interpreter, as an administrator runs it."""
    script = Path(sys.executable).with_name("vocloud")
    return [str(script)] if script.exists() else [sys.executable, "-m", "vocloud.cli.main"]


def clean_env(home: Path) -> dict[str, str]:
    """The test's environment without any VOCLOUD_* or token file of the machine it runs on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOCLOUD_")}
    env["HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(home / ".config")
    env["COLUMNS"] = "200"
    return env


@dataclass
class Result:
    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@dataclass
class Daemon:
    url: str
    token: str
    data_dir: Path
    home: Path
    proc: subprocess.Popen[bytes]
    log: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self, token: str | None = None, **extra: str) -> dict[str, str]:
        env = clean_env(self.home)
        env["VOCLOUD_URL"] = self.url
        env["VOCLOUD_TOKEN"] = self.token if token is None else token
        env.update(extra)
        return env

    def cli(self, *args: str, token: str | None = None, stdin: str | None = None,
            env: dict[str, str] | None = None) -> Result:
        """Run ``python -m vocloud.cli.main ARGS`` against this daemon."""
        proc = subprocess.run(
            [sys.executable, "-m", "vocloud.cli.main", *args],
            input=stdin, capture_output=True, text=True, timeout=60,
            env=env if env is not None else self.env(token),
        )
        return Result(args, proc.returncode, proc.stdout, proc.stderr)

    def cli_many(self, commands: list[tuple[str, ...]], token: str | None = None) -> list[Result]:
        """Independent commands at once (each still its own process): the suite's time is
        mostly interpreter start-up, which overlaps well."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(lambda args: self.cli(*args, token=token), commands))

    def ok(self, *args: str, **kw: Any) -> Result:
        r = self.cli(*args, **kw)
        assert r.code == 0, f"vocloud {' '.join(args)} -> {r.code}\nstdout: {r.out}\nstderr: {r.err}"
        return r

    def fails(self, *args: str, **kw: Any) -> Result:
        """A user error: exit code 2, a message on stderr, no traceback."""
        r = self.cli(*args, **kw)
        assert r.code == 2, f"vocloud {' '.join(args)} -> {r.code}\nstdout: {r.out}\nstderr: {r.err}"
        assert r.err.strip(), "no message on stderr"
        assert "Traceback" not in r.err and "Traceback" not in r.out
        return r

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> Any:
        """Straight to REST, for waiting and for checking that a refused command changed nothing."""
        resp = httpx.request(method, f"{self.url}/api/v1{path}", timeout=30,
                             headers={"Authorization": f"Bearer {token or self.token}"}, **kw)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_daemon(tmp: Path, extra: dict[str, str] | None = None) -> Daemon:
    data_dir, home = tmp / "data", tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    env = clean_env(home)
    env.update(FAST_LOOPS)
    env.update(extra or {})
    log = tmp / "daemon.log"
    with log.open("wb") as logf:
        proc = subprocess.Popen(
            [*vocloud_command(), "serve", "--data-dir", str(data_dir), "--port", str(port)],
            stdout=logf, stderr=subprocess.STDOUT, env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"vocloud serve exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"vocloud serve did not answer in {START_TIMEOUT}s:\n{log.read_text()}")
        time.sleep(0.1)
    token = (data_dir / "admin.token").read_text().strip()
    return Daemon(url, token, data_dir, home, proc, log)


def stop_daemon(d: Daemon) -> None:
    d.proc.send_signal(signal.SIGTERM)
    try:
        code = d.proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        d.proc.wait()
        raise AssertionError(f"vocloud serve ignored SIGTERM for {STOP_TIMEOUT}s:\n{d.log.read_text()}"
                             ) from None
    assert code == 0, f"vocloud serve exited with {code} on SIGTERM:\n{d.log.read_text()}"
