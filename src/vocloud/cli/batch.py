"""Acting on several objects at once (``vm terminate 3..7``), reporting each one.

Why not stop at the first refusal: like ``onevm terminate 3,4,5``, one VM in the wrong state must
not leave the others untouched; but the command still exits 2 so a script notices. A daemon that
cannot be reached is not per-object: that error propagates and ends the command at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TypeVar

import typer

from vocloud.cli import output as out
from vocloud.cli.errors import EXIT_USER_ERROR, ApiError

R = TypeVar("R", int, str)


def for_each(refs: Iterable[R], kind: str, fn: Callable[[R], str]) -> None:
    """Run ``fn`` on every ref; print its line, or the daemon's refusal on stderr."""
    failed = 0
    for ref in refs:
        try:
            line = fn(ref)
        except ApiError as exc:
            out.warn(f"{kind} {ref}: {exc.message}")
            failed += 1
            continue
        out.echo(f"{kind} {ref}: {line}")
    if failed:
        raise typer.Exit(EXIT_USER_ERROR)
