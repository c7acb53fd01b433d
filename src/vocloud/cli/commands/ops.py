"""``vocloud acct`` and ``vocloud audit``: accounting / showback / APEL export and the audit log
(docs/operations.md). REST calls like every command; the rights are the daemon's."""

from __future__ import annotations

import csv
import io
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from vocloud.cli import output as out
from vocloud.cli.errors import CliError
from vocloud.cli.state import JsonFlag, api, want_json

BY = ("vo", "user", "host", "pool", "vm", "day", "month")
COLUMNS = ("vms", "vm_hours", "cpu_hours", "gib_hours", "cost")


def acct(
    ctx: typer.Context,
    vo: Annotated[str | None, typer.Option("--vo", help="Only this VO (group name or ID).")] = None,
    user: Annotated[str | None, typer.Option("--user", help="Only this user (name or ID).")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Start: UNIX seconds or ISO 8601 "
                                              "(UTC), e.g. 2026-11-01. Default: the beginning.")] = None,
    to: Annotated[str | None, typer.Option("--to", help="End (exclusive). Default: now.")] = None,
    by: Annotated[str, typer.Option("--by", help=f"Group by: {', '.join(BY)}.")] = "vo",
    csv_: Annotated[bool, typer.Option("--csv", help="CSV output (header + one line per row).")] = False,
    apel: Annotated[Path | None, typer.Option("--apel", help="Write the VMs' APEL cloud usage records "
                                              "(v0.4) to this file ('-': standard output).")] = None,
    json_: JsonFlag = False,
) -> None:
    """VM-hours, core-hours, memory GiB-hours and showback cost over a period."""
    if by not in BY:
        raise CliError(f"--by must be one of: {', '.join(BY)}")
    client = api(ctx)
    if apel is not None:
        text = client.get_text("/accounting/apel", **{
            "from": from_, "to": to, "vo": vo, "user": user})
        if str(apel) == "-":
            out.echo(text.rstrip("\n"))
            return
        fd = os.open(apel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        out.echo(f"{text.count('VMUUID: ')} APEL records written to {apel}")
        return
    doc: dict[str, Any] = client.get("/accounting", **{"from": from_, "to": to, "vo": vo,
                                                         "user": user, "by": by})
    if want_json(ctx, json_):
        out.emit_json(doc)
        return
    if csv_:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow([by, "id", *COLUMNS])
        for r in doc["rows"]:
            w.writerow([r["key"], "" if r["id"] is None else r["id"], *(r[c] for c in COLUMNS)])
        out.echo(buf.getvalue().rstrip("\n"))
        return
    out.echo(f"usage from {doc['from_iso']} to {doc['to_iso']}, by {by}")
    total = doc["total"]
    out.table([by.upper(), "VMS", "VM-HOURS", "CORE-HOURS", "GIB-HOURS", "COST"],
              [*([r["key"], r["vms"], f"{r['vm_hours']:.2f}", f"{r['cpu_hours']:.2f}",
                  f"{r['gib_hours']:.2f}", f"{r['cost']:.2f}"] for r in doc["rows"]),
               ["TOTAL", total["vms"], f"{total['vm_hours']:.2f}", f"{total['cpu_hours']:.2f}",
                f"{total['gib_hours']:.2f}", f"{total['cost']:.2f}"]],
              right=["VMS", "VM-HOURS", "CORE-HOURS", "GIB-HOURS", "COST"])


def audit(
    ctx: typer.Context,
    user: Annotated[str | None, typer.Option("--user", help="Only this user's calls.")] = None,
    since: Annotated[str | None, typer.Option("--since", help="UNIX seconds or ISO 8601.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many records (newest first).")] = 100,
    json_: JsonFlag = False,
) -> None:
    """The audit log: who changed what, when, through which front-end, with which result."""
    rows = api(ctx).get("/audit", user=user, since=since, limit=limit)
    if want_json(ctx, json_):
        out.emit_json(rows)
        return
    out.table(["ID", "TIME", "USER", "VIA", "ACTION", "OBJECT", "RESULT"],
              ([r["id"], datetime.fromtimestamp(r["time"], UTC).strftime("%Y-%m-%d %H:%M:%S"),
                r["user"], r["frontend"], r["action"], r["object"], r["result"]] for r in rows),
              right=["ID"])
