"""Acting on several objects at once (``vm terminate 3..7``), reporting each one.

Why not stop at the first refusal: like ``onevm terminate 3,4,5``, one VM in the wrong state must
not leave the others untouched; but the command still exits 2 so a script notices. A daemon that
cannot be reached is not per-object: that error propagates and ends the command at once.

With ``--json`` (the command's own flag or the global ``vocloud --json``) the per-object lines
become one JSON list, ``[{"ref": 3, "ok": true, "state": "SHUTDOWN"}, {"ref": 4, "ok": false,
"error": "..."}]``, printed once at the end, with the same exit code: a script gets every result
and still sees the failure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import click
import typer

from vocloud.cli import output as out
from vocloud.cli.errors import EXIT_USER_ERROR, ApiError
from vocloud.cli.state import state

R = TypeVar("R", int, str)


@dataclass(frozen=True, slots=True)
class Done:
    """One object's result: the human line, and what ``--json`` prints for it."""

    line: str
    row: Mapping[str, Any] = field(default_factory=dict)


def _global_json() -> bool:
    ctx = click.get_current_context(silent=True)
    return ctx is not None and state(ctx).json  # type: ignore[arg-type]


def for_each(refs: Iterable[R], kind: str, fn: Callable[[R], str | Done], as_json: bool = False) -> None:
    """Run ``fn`` on every ref; print its line (or collect its row), or the daemon's refusal."""
    as_json = as_json or _global_json()
    failed = 0
    rows: list[dict[str, Any]] = []
    for ref in refs:
        try:
            result = fn(ref)
        except ApiError as exc:
            failed += 1
            if as_json:
                rows.append({"ref": ref, "ok": False, "error": exc.message})
            else:
                out.warn(f"{kind} {ref}: {exc.message}")
            continue
        done = result if isinstance(result, Done) else Done(result, {"message": result})
        if as_json:
            rows.append({"ref": ref, "ok": True, **done.row})
        else:
            out.echo(f"{kind} {ref}: {done.line}")
    if as_json:
        out.emit_json(rows)
    if failed:
        raise typer.Exit(EXIT_USER_ERROR)
