"""How storage drivers run commands on a host: through an injected runner, never directly.

Every host-side action (``qemu-img``, ``cp``, ``sha256sum``, ``flock``, ``rm``) is one argv handed to
a :data:`Runner`, so the same driver code stages disks on this machine (:func:`local_runner`) or on
a remote hypervisor once the SSH transport hands in a runner bound to that host. Drivers ask a
:data:`RunnerFactory` for the runner of each host they touch; the default factory refuses
non-local hosts instead of silently staging a remote VM's disks on the front-end.
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Protocol

from vocloud.drivers.base import CommandResult, HostRef
from vocloud.drivers.transport.local import LocalTransport
from vocloud.errors import DriverError

DEFAULT_TIMEOUT_S = 3600.0  # a multi-GiB copy over a slow link is legitimately long


class Runner(Protocol):
    """``run(argv, input=None, timeout=None) -> CommandResult`` on one host."""

    def __call__(self, argv: list[str], input: bytes | None = None,
                 timeout: float | None = None) -> CommandResult: ...


RunnerFactory = Callable[[HostRef], Runner]


def local_runner(argv: list[str], input: bytes | None = None,
                 timeout: float | None = None) -> CommandResult:
    """Run ``argv`` here; a missing program or a timeout becomes a result, not an exception."""
    try:
        proc = subprocess.run(argv, input=input, capture_output=True,
                              timeout=timeout if timeout is not None else DEFAULT_TIMEOUT_S,
                              stdin=None if input is not None else subprocess.DEVNULL, check=False)
    except FileNotFoundError:
        return CommandResult(127, b"", f"{argv[0]}: command not found".encode())
    except subprocess.TimeoutExpired:
        return CommandResult(124, b"", f"{argv[0]}: timed out after {timeout} s".encode())
    return CommandResult(proc.returncode, proc.stdout, proc.stderr)


def local_only(host: HostRef) -> Runner:
    """The default factory: local hosts only, so a missing SSH wiring is an error, not a surprise."""
    if host.transport != "local":
        raise DriverError(f"host {host.name}: storage driver has no runner for transport "
                          f"{host.transport!r} (only local hosts are wired by default)")
    return local_runner


def stderr_text(result: CommandResult) -> str:
    """The last meaningful line of a command's stderr, for an error message an admin can act on."""
    lines = [ln.strip() for ln in result.stderr.decode(errors="replace").splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit status {result.returncode}"


def check(run: Runner, argv: list[str], what: str, timeout: float | None = None,
          input: bytes | None = None) -> CommandResult:
    """Run and raise :class:`DriverError` naming ``what`` failed and why."""
    result = run(argv, input=input, timeout=timeout)
    if result.returncode != 0:
        raise DriverError(f"{what}: {stderr_text(result)}")
    return result


# Make the lock file's directory, then hold the lock for the body: one round trip, and a stager
# that dies releases the lock with its process.
_LOCKED = '{ [ -d "$1" ] || mkdir -p -- "$1"; } && lock=$2 wait=$3 body=$4 && shift 4 && ' \
          'exec flock -w "$wait" -E 75 "$lock" sh -c "$body" vocloud "$@"'
LOCK_TIMEOUT_RC = 75


def locked_argv(lock: str, wait_s: float, body: str, args: list[str]) -> list[str]:
    """argv running shell ``body`` with ``args`` under ``flock`` on ``lock`` (exit 75: timed out)."""
    return ["sh", "-c", _LOCKED, "vocloud-lock", lock.rsplit("/", 1)[0] or "/", lock, f"{wait_s:g}",
            body, *args]


_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def safe_name(value: str, kind: str) -> str:
    """A single path component we will build paths from: no ``/``, no ``..``, no dot-files.

    Deploy ids and disk targets end up in ``rm -rf`` arguments, so anything that could climb out of
    the datastore is refused before it reaches a command.
    """
    if not value or not set(value) <= _SAFE or value.startswith(".") or len(value) > 128:
        raise DriverError(f"invalid {kind} {value!r}: use letters, digits, '.', '_' or '-'")
    return value


def absolute(path: str, what: str) -> str:
    """Image paths must be absolute: a relative one would resolve against a daemon's cwd."""
    if not path or not PurePosixPath(path).is_absolute() or "\x00" in path:
        raise DriverError(f"{what}: image path {path!r} is not an absolute path")
    return path



def runs_here(run: Runner) -> bool:
    """True when ``run`` executes on this machine: :func:`local_runner`, or a
    :class:`~vocloud.drivers.transport.local.LocalTransport`'s ``run`` bound to a host (what the
    daemon hands in for local hosts). Such hosts get the in-process fast paths (a cache hit read
    from the ``.ok`` stamp with ``stat``, an overlay written from a template) instead of a shell.
    A wrapped or fake runner is never taken for local: tests that count commands still see them.
    """
    if run is local_runner:
        return True
    if isinstance(run, functools.partial) and not run.args[1:] and not run.keywords:
        owner = getattr(run.func, "__self__", None)
        return type(owner) is LocalTransport and getattr(run.func, "__name__", "") == "run"
    return False
