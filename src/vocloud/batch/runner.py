"""Run batch-system commands: the one place where adapters touch processes.

Every adapter talks to its batch system through command-line tools (``squeue``, ``condor_q``,
``qstat``, ``bjobs``...). Keeping the subprocess call in one small, injectable class means the
adapters' own code is pure parsing plus argv construction, so unit tests swap in a fake runner
and exercise the real adapter logic on recorded outputs, with no batch system installed.

A failure is always a :class:`CommandFailed` (a :class:`~vocloud.errors.DriverError`) that names
the command, the exit code and the tool's own stderr: that is what a site admin needs to fix a
broken ``slurm.conf`` or a dead ``munged``. Adapters inspect ``stderr`` to tell harmless failures
("node already resumed") from real ones, which is how they keep their operations idempotent.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from vocloud.errors import DriverError

DEFAULT_TIMEOUT_S = 60.0


class CommandFailed(DriverError):
    """A batch command could not run, timed out or exited non-zero."""

    code = "BatchCommandFailed"

    def __init__(self, argv: Sequence[str], message: str, returncode: int | None = None,
                 stderr: str = "") -> None:
        super().__init__(message, command=shlex.join(argv), returncode=returncode,
                         stderr=stderr)
        self.argv = list(argv)
        self.returncode = returncode
        self.stderr = stderr


class Runner(Protocol):
    """What adapters need from a command runner: argv in, stdout out, CommandFailed on error."""

    def run(self, argv: Sequence[str]) -> str: ...


class CommandRunner:
    """Run a command with a timeout and an optional environment overlay.

    ``env`` is *added* to the daemon's environment rather than replacing it, because the usual
    need is one extra variable (``SLURM_CONF``, ``CONDOR_CONFIG``, ``PBS_CONF_FILE``) while
    ``PATH`` and the locale must stay as they are.
    """

    def __init__(self, env: Mapping[str, str] | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.env = dict(env or {})
        self.timeout_s = timeout_s

    def run(self, argv: Sequence[str]) -> str:
        if not argv:
            raise ValueError("empty command")
        env = {**os.environ, **self.env}
        cmd = shlex.join(argv)
        try:
            proc = subprocess.run(list(argv), capture_output=True, text=True, env=env,
                                  timeout=self.timeout_s, check=False, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise CommandFailed(argv, f"{argv[0]}: command not found (is the batch system's "
                                      "client installed and on PATH?)") from None
        except PermissionError as exc:
            raise CommandFailed(argv, f"{argv[0]}: cannot execute: {exc}") from None
        except subprocess.TimeoutExpired:
            raise CommandFailed(argv, f"{cmd}: no answer within {self.timeout_s:g} s "
                                      "(is the batch controller up?)") from None
        if proc.returncode != 0:
            err = proc.stderr.strip()
            detail = err or proc.stdout.strip() or "no output"
            raise CommandFailed(argv, f"{cmd} exited with {proc.returncode}: {detail}",
                                returncode=proc.returncode, stderr=err)
        return proc.stdout


def _decode_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        snippet = text.strip()[:80]
        raise DriverError(f"{what}: output is not valid JSON ({exc.msg} at line {exc.lineno} "
                          f"column {exc.colno}): {snippet!r}") from None


def parse_json_object(text: str, what: str) -> dict[str, Any]:
    """Decode a tool's JSON output, insisting on an object at the top.

    ``what`` names the command in the error, so "garbled JSON" says *which* tool produced it.
    """
    data = _decode_json(text, what)
    if not isinstance(data, dict):
        raise DriverError(f"{what}: expected a JSON object, got {type(data).__name__}")
    return data


def parse_json_list(text: str, what: str) -> list[Any]:
    """Decode JSON output that is a top-level array (HTCondor's ``-json``); empty text is ``[]``.

    HTCondor prints nothing at all, not ``[]``, when no ad matches, so empty output is valid.
    """
    if not text.strip():
        return []
    data = _decode_json(text, what)
    if not isinstance(data, list):
        raise DriverError(f"{what}: expected a JSON array, got {type(data).__name__}")
    return data


def expand_ranges(spec: str, error: str) -> list[str]:
    """Array-job index lists as batch systems print them (``1-10:2``, ``1,3,5-7``), expanded;
    ``error`` is the DriverError message for a malformed list. Shared by Grid Engine and PBS."""
    out: list[str] = []
    for item in filter(None, spec.split(",")):
        rng, _, step = item.partition(":")
        lo, _, hi = rng.partition("-")
        try:
            out.extend(str(i) for i in range(int(lo), int(hi or lo) + 1, int(step or 1)))
        except ValueError:
            raise DriverError(error) from None
    return out
