"""``vocloud serve`` and ``vocloud db`` as commands: their failures are one line and exit 2, and
the simulator's command plugs in when (and only when) its module provides ``register``."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest
import typer

from tests.support.cli import clean_env, vocloud_command
from tests.support.daemon import Daemon
from tests.support.ports import free_port
from vocloud.cli import main as cli_main


def _run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*vocloud_command(), *args], capture_output=True, text=True, timeout=60,
                          env=clean_env(home))


def test_serve_refuses_a_data_dir_in_use(daemon: Daemon) -> None:
    r = _run(daemon.home, "serve", "--data-dir", str(daemon.data_dir), "--port", str(free_port()))
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("error: another vocloud daemon") and "Traceback" not in r.stderr
    assert daemon.proc is not None and daemon.proc.poll() is None  # the running one is untouched


def test_serve_bad_option_and_custom_policy_without_rank(tmp_path: Path) -> None:
    r = _run(tmp_path, "serve", "--data-dir", str(tmp_path / "d"), "--policy", "fastest")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "fastest" in r.stderr
    r = _run(tmp_path, "serve", "--data-dir", str(tmp_path / "d"), "--policy", "custom")
    assert r.returncode == 2 and "--rank" in r.stderr
    assert not (tmp_path / "d").exists()


def test_db_upgrade_and_current(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    r = _run(tmp_path, "db", "current", "--data-dir", str(data))
    assert r.returncode == 0 and "current: empty" in r.stdout and "behind" in r.stdout
    r = _run(tmp_path, "db", "upgrade", "--data-dir", str(data))
    assert r.returncode == 0 and r.stdout.startswith("upgraded empty -> "), r.stdout + r.stderr
    r = _run(tmp_path, "db", "current", "--data-dir", str(data))
    assert r.returncode == 0 and "up to date" in r.stdout
    r = _run(tmp_path, "db", "current", "--data-dir", str(tmp_path / "missing" / "deeper"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_simulator_command_is_registered_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("vocloud.cli.simulate")

    def register(app: typer.Typer) -> None:
        @app.command("simulate")
        def simulate() -> None:
            typer.echo("simulated")

    fake.register = register  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vocloud.cli.simulate", fake)
    assert cli_main.run(["simulate"]) == 0
    # a module without register() is skipped, the rest of the CLI still works
    monkeypatch.setitem(sys.modules, "vocloud.cli.simulate", types.ModuleType("vocloud.cli.simulate"))
    assert cli_main.run(["simulate"]) == 2
    assert cli_main.run(["--version"]) == 0
