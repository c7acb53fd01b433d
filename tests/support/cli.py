"""The real ``vocloud`` command as an administrator runs it: where it is, its clean environment,
and what one run of it gave. The daemon it talks to is :class:`tests.support.daemon.Daemon`
(``entry="cli"``: the real ``vocloud serve``; ``start_daemon``/``stop_daemon``).

Why subprocesses and not in-process calls: the acceptance is what an administrator sees at a
shell (exit codes, one-line errors, no tracebacks, a daemon that stops cleanly on SIGTERM), and
only separate processes show that honestly.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
    """One ``vocloud`` run: its arguments, exit code, stdout and stderr."""

    args: tuple[str, ...]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def __getattr__(name: str) -> Any:
    """``Daemon``, ``start_daemon`` and ``stop_daemon`` used to live here; tests written against
    the old place still import them (they moved to tests/support/daemon.py)."""
    if name in ("Daemon", "start_daemon", "stop_daemon"):
        from tests.support import daemon

        return getattr(daemon, name)
    raise AttributeError(name)
