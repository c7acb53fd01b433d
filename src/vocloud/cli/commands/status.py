"""``vocloud status``: the front-end that answered and the one that leads (docs/ha.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import typer

from vocloud.cli import output as out
from vocloud.cli.state import JsonFlag, api, want_json


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def status(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Which front-end answered and which one runs the loops (administrators only)."""
    doc: dict[str, Any] = api(ctx).get("/status")
    if want_json(ctx, json_):
        out.emit_json(doc)
        return
    this, leader = doc["this"], doc["leader"]
    pairs: list[tuple[str, Any]] = [
        ("version", doc["version"]), ("store", doc["store"]),
        ("this front-end", f"{this['role']}: pid {this['pid']} on {this['host']}, {this['data_dir']}"),
    ]
    if leader is None:
        pairs.append(("leader", "none right now (an election is under way)"))
    else:
        pairs.append(("leader", f"pid {leader['pid']} on {leader['host']}, {leader['data_dir']}"))
        pairs.append(("leading since", f"{_when(leader['since'])} (epoch {leader['epoch']})"))
    out.fields(pairs)
