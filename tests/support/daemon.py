"""A real vocloud daemon process on a free loopback port: the one ``Daemon`` of the tests.

Two ways to start it, because two kinds of test need two honest views of it:

* ``entry="module"`` (the default): ``python -m vocloud.app.serve_main`` with this test's
  environment plus ``extra_env``: the daemon as a service manager starts it, on any database
  (``db_url``), optionally under a command prefix (``wrap``, e.g. a mount namespace).
* ``entry="cli"``: the real ``vocloud serve --data-dir D --port P`` console script, in a clean
  environment with its own ``HOME`` (no ``VOCLOUD_*`` of the machine): the daemon as an
  administrator starts it at a shell. ``start_daemon``/``stop_daemon`` make and stop one, and its
  ``cli``/``ok``/``fails`` methods run the real CLI against it (tests/support/cli.py).

Every test talks to it through ``rest()`` (the project's REST client, ``vocloud.client.Client``),
``api()`` (the same, one call), or ``client()``, a raw ``httpx.Client`` for tests that check the
HTTP itself (status codes, headers, malformed bodies).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from tests.support.cli import Result, clean_env, vocloud_command
from tests.support.ports import free_port
from vocloud.client import ApiError, Client
from vocloud.devtools.localprocs import poll_until

#: fast loops for ``entry="module"`` daemons (integration tests)
FAST = {
    "VOCLOUD_SCHEDULER_INTERVAL": "0.2", "VOCLOUD_LIFECYCLE_INTERVAL": "0.2",
    "VOCLOUD_MONITOR_INTERVAL": "0.5", "VOCLOUD_SIM_BOOT_DELAY": "0.5",
    "VOCLOUD_SIM_SHUTDOWN_DELAY": "0.2", "VOCLOUD_LOG_LEVEL": "warning",
}
#: fast loops for ``entry="cli"`` daemons (the end-to-end tests; quicker simulated boots)
FAST_LOOPS = {
    "VOCLOUD_SIM_BOOT_DELAY": "0.2", "VOCLOUD_SIM_SHUTDOWN_DELAY": "0.1",
    "VOCLOUD_SCHEDULER_INTERVAL": "0.2", "VOCLOUD_LIFECYCLE_INTERVAL": "0.2",
    "VOCLOUD_MONITOR_INTERVAL": "0.5",
}
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


@dataclass
class Daemon:
    data_dir: Path
    db_url: str  # "" with entry="cli": the daemon's own default (SQLite in the data dir)
    port: int
    extra_env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    wrap: list[str] = field(default_factory=list)  # a command prefix, e.g. a mount namespace
    entry: Literal["module", "cli"] = "module"
    home_dir: Path | None = None  # the administrator's HOME for entry="cli" and the CLI

    @property
    def home(self) -> Path:
        """The HOME of ``vocloud serve`` and of the CLI commands (default: beside the data dir)."""
        return self.home_dir or self.data_dir.parent / "home"

    @property
    def url(self) -> str:
        """The API's root (``.../api/v1``)."""
        return f"{self.base_url}/api/v1"

    @property
    def base_url(self) -> str:
        """The daemon's root, what ``vocloud --url`` and ``vocloud.client.Client`` take."""
        return f"http://{self.extra_env.get('VOCLOUD_HOST', '127.0.0.1')}:{self.port}"

    @property
    def log(self) -> Path:
        """The daemon's stdout and stderr. Outside the data dir for ``vocloud serve``, which
        creates that directory itself (with its own modes)."""
        return (self.data_dir.parent if self.entry == "cli" else self.data_dir) / "daemon.log"

    @property
    def token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def env(self) -> dict[str, str]:
        """The daemon process's environment."""
        if self.entry == "cli":
            db = {"VOCLOUD_DB_URL": self.db_url} if self.db_url else {}
            return {**clean_env(self.home), **FAST_LOOPS, **self.extra_env, **db}
        return {**os.environ, **FAST, **self.extra_env, "VOCLOUD_HOME": str(self.data_dir),
                "VOCLOUD_PORT": str(self.port), "VOCLOUD_DB_URL": self.db_url}

    def command(self) -> list[str]:
        if self.entry == "cli":
            return [*self.wrap, *vocloud_command(), "serve", "--data-dir", str(self.data_dir),
                    "--port", str(self.port)]
        return [*self.wrap, sys.executable, "-m", "vocloud.app.serve_main"]

    def start(self) -> None:
        """Start it and wait for ``/health``; a daemon that exits or stays silent fails the test
        with its log."""
        if self.entry == "cli":
            self.home.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.command(), env=self.env(), stdout=log,
                                         stderr=subprocess.STDOUT)
        proc = self.proc

        def healthy() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the daemon exited with {proc.returncode}:\n"
                                     f"{self.log.read_text(errors='replace')}")
            try:
                return httpx.get(f"{self.url}/health", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        try:
            poll_until(healthy, START_TIMEOUT, f"the daemon's /health on port {self.port}",
                       lambda: self.log.read_text(errors="replace"), interval=0.1)
        except TimeoutError as exc:
            proc.kill()
            proc.wait(10)
            raise AssertionError(str(exc)) from None

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0, clean: bool = False) -> int:
        """SIGTERM, as an init system stops it; its exit code. A daemon that ignores SIGTERM
        for ``timeout`` s is killed and fails the test; ``clean``: so does any exit but 0."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError(f"the daemon ignored SIGTERM for {timeout:g} s:\n"
                                     f"{self.log.read_text(errors='replace')}") from None
        code = self.proc.returncode
        assert not clean or code == 0, \
            f"the daemon exited with {code} on SIGTERM:\n{self.log.read_text(errors='replace')}"
        return code

    # -- talking to it --------------------------------------------------------------------------

    def rest(self, token: str | None = None) -> Client:
        """The project's REST client against this daemon: the administrator's token by default,
        none at all with ``token=""``."""
        return Client(self.base_url, self.token if token is None else token, timeout=30)

    def api(self, method: str, path: str, token: str | None = None,
            json: dict[str, Any] | None = None, params: dict[str, Any] | None = None) -> Any:
        """One REST call (``vocloud.client.ApiError`` on a refusal): for setting up, waiting, and
        checking that a refused command changed nothing."""
        with self.rest(token) as c:
            return c.request(method, path, body=json, params=params)

    def refused(self, method: str, path: str, token: str | None = None,
                json: dict[str, Any] | None = None, params: dict[str, Any] | None = None) -> ApiError:
        """The daemon's refusal of a well-formed request (its status, code and message); fails
        the test if the call succeeds."""
        try:
            got = self.api(method, path, token, json, params)
        except ApiError as exc:
            return exc
        raise AssertionError(f"{method} {path} was not refused: {got!r}")

    def client(self, token: str | None = None) -> httpx.Client:
        """Raw HTTP, for the tests of the HTTP itself (statuses, headers, bad bodies)."""
        return httpx.Client(base_url=self.url, timeout=30,
                            headers={"Authorization": f"Bearer {token or self.token}"})

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
        """Poll ``check()`` until it is true (``poll_until``); fails naming ``what``."""
        try:
            poll_until(check, timeout, what, interval=0.1)
        except TimeoutError as exc:
            raise AssertionError(str(exc)) from None

    # -- the real CLI against it ----------------------------------------------------------------

    def cli_env(self, token: str | None = None, **extra: str) -> dict[str, str]:
        """The environment of a ``vocloud`` command aimed at this daemon."""
        env = clean_env(self.home)
        env["VOCLOUD_URL"] = self.base_url
        env["VOCLOUD_TOKEN"] = self.token if token is None else token
        env.update(extra)
        return env

    def cli(self, *args: str, token: str | None = None, stdin: str | None = None,
            env: dict[str, str] | None = None) -> Result:
        """Run ``python -m vocloud.cli.main ARGS`` against this daemon."""
        proc = subprocess.run(
            [sys.executable, "-m", "vocloud.cli.main", *args],
            input=stdin, capture_output=True, text=True, timeout=60,
            env=env if env is not None else self.cli_env(token),
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


def start_daemon(tmp: Path, extra: dict[str, str] | None = None) -> Daemon:
    """A started ``vocloud serve`` (``entry="cli"``): data in ``tmp/data``, HOME ``tmp/home``."""
    d = Daemon(tmp / "data", "", free_port(), dict(extra or {}), entry="cli", home_dir=tmp / "home")
    d.start()
    return d


def stop_daemon(d: Daemon) -> None:
    """SIGTERM, and the daemon must exit 0 within :data:`STOP_TIMEOUT` s."""
    d.stop(STOP_TIMEOUT, clean=True)
