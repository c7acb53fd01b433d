"""``vocloud host lease`` / ``leases`` / ``lease-cancel``: hypervisors leased from the batch
system (docs/host-leases.md). Registered on the ``host`` command group by :func:`register`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from vocloud.cli import output as out
from vocloud.cli.state import JsonFlag, api, want_json
from vocloud.cli.units import parse_size


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts).strftime("%H:%M:%S")


def _table(rows: list[dict[str, Any]]) -> None:
    out.table(["ID", "BATCH", "JOB", "STATE", "HOST", "ENDS", "MESSAGE"],
              ([r["id"], r["batch"], r["job_id"] or "-", r["state"], r["host"] or "-",
                _when(r["lease_end"]), r["message"]] for r in rows), right=["ID"])


def lease(
    ctx: typer.Context,
    batch: Annotated[str, typer.Option("--batch", help="Batch system to lease from: slurm or gridengine.")],
    nodes: Annotated[int, typer.Option("--nodes", help="Nodes (one batch job each).")],
    walltime: Annotated[str, typer.Option("--walltime", help="Lease length: 3600, 1:00:00, 2h.")],
    partition: Annotated[str, typer.Option("--partition", help="Batch partition/queue.")] = "",
    vmm: Annotated[str, typer.Option(help="Virtualization driver of the leased hosts.")] = "qemu",
    cpu: Annotated[float | None, typer.Option(help="Declared CPU cores (sim hosts).")] = None,
    memory: Annotated[str | None, typer.Option(help="Declared memory (sim hosts), e.g. 16G.")] = None,
    json_: JsonFlag = False,
) -> None:
    """Lease NODES hypervisors from the batch system for WALLTIME (administrators)."""
    body: dict[str, Any] = {"batch": batch, "nodes": nodes, "walltime": walltime,
                            "partition": partition, "vmm": vmm, "cpu": cpu,
                            "memory": parse_size(memory, "memory") if memory is not None else None}
    rows = api(ctx).post("/host-leases", {k: v for k, v in body.items() if v is not None})
    if want_json(ctx, json_):
        out.emit_json(rows)
    else:
        _table(rows)


def leases(ctx: typer.Context,
           all_: Annotated[bool, typer.Option("--all", help="Ended leases too.")] = False,
           json_: JsonFlag = False) -> None:
    """Host leases: their batch jobs, hosts and when they end."""
    rows = api(ctx).get("/host-leases", all=all_ or None)
    if want_json(ctx, json_):
        out.emit_json(rows)
    else:
        _table(rows)


def lease_cancel(ctx: typer.Context, lease_id: Annotated[int, typer.Argument(help="Lease ID.")],
                 json_: JsonFlag = False) -> None:
    """End a lease now: its job is cancelled, its VMs shut down, its host leaves."""
    row = api(ctx).delete(f"/host-leases/{lease_id}")
    if want_json(ctx, json_):
        out.emit_json(row)
    else:
        out.echo(f"host lease {row['id']}: cancelled, draining")


def register(app: typer.Typer) -> None:
    app.command("lease")(lease)
    app.command("leases")(leases)
    app.command("lease-cancel")(lease_cancel)
