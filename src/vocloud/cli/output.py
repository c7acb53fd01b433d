"""How results look: OpenNebula-style tables and sections for people, raw JSON for scripts.

Why Rich is configured here once: piped output must not be cut at 80 columns or coloured, and
names coming from users must never be read as Rich markup (``[bold]`` in a VM name is text).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

_console: Console | None = None


def console() -> Console:
    global _console
    if _console is None:
        probe = Console(highlight=False)
        _console = probe if probe.is_terminal else Console(highlight=False, width=100_000,
                                                           color_system=None)
    return _console


def emit_json(doc: Any) -> None:
    sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    sys.stdout.flush()


def echo(line: str = "") -> None:
    sys.stdout.write(line + "\n")


def warn(line: str) -> None:
    sys.stderr.write(" ".join(line.split()) + "\n")


def _cell(value: Any) -> Text:
    if value is None:
        return Text("-")
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    return Text(str(value))


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[str] = ()) -> None:
    """A borderless table with upper-case headers, like ``onevm list``."""
    right_set = set(right)
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", padding=(0, 1))
    for col in columns:
        t.add_column(col, justify="right" if col in right_set else "left", no_wrap=True)
    for row in rows:
        t.add_row(*(_cell(v) for v in row))
    con = console()
    if con.is_terminal:
        con.print(t)
        return
    with con.capture() as captured:  # piped: no trailing blanks for scripts to trip over
        con.print(t)
    sys.stdout.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))


def section(title: str) -> None:
    """A ``VIRTUAL MACHINE 7 INFORMATION``-style heading, separated from what came before."""
    console().print(Text(title, style="bold"))


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """``KEY        : value`` lines with aligned colons, as ``onevm show`` prints them."""
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        echo(f"{key.ljust(width)} : {_cell(value).plain}".rstrip())
