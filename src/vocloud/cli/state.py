"""What the global options decide, handed to every command through Typer's context.

Why lazily: ``vocloud serve`` and ``vocloud --help`` must not look for a token or a daemon; only
commands that talk to the API resolve the endpoint, the first time they ask for a client.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

import typer

from vocloud.cli.client import Client
from vocloud.cli.credentials import resolve


@dataclass
class CliState:
    url: str | None = None
    token: str | None = None
    json: bool = False
    _client: Client | None = field(default=None, repr=False)

    def client(self) -> Client:
        if self._client is None:
            self._client = Client(resolve(self.url, self.token))
        return self._client


def state(ctx: typer.Context) -> CliState:
    obj = ctx.find_root().obj
    if not isinstance(obj, CliState):
        obj = CliState()
        ctx.find_root().obj = obj
    return obj


def api(ctx: typer.Context) -> Client:
    return state(ctx).client()


def want_json(ctx: typer.Context, flag: bool) -> bool:
    """``vocloud --json vm list`` and ``vocloud vm list --json`` mean the same."""
    return flag or state(ctx).json


#: The per-command ``--json`` every read command takes.
JsonFlag = Annotated[bool, typer.Option("--json", help="Print the raw JSON answer (for scripts).")]
