"""``vocloud vnet``: virtual networks, their address ranges and leases (onevnet)."""

from typing import Annotated, Any

import typer

from vocloud.cli import output as out
from vocloud.cli.batch import for_each
from vocloud.cli.errors import ApiError
from vocloud.cli.files import read_template, relabel
from vocloud.cli.state import JsonFlag, api, want_json

app = typer.Typer(help="Virtual networks.", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="Network template: NAME, BRIDGE, AR=[...]; '-' is stdin.")],
    json_: JsonFlag = False,
) -> None:
    """Create a network from a template file; prints its ID."""
    tf = read_template(file)
    try:
        net = api(ctx).post("/vnets", {"template": tf.text, "format": tf.format})
    except ApiError as exc:
        raise relabel(exc, tf.source) from None
    if want_json(ctx, json_):
        out.emit_json(net)
    else:
        out.echo(f"ID: {net['id']}")


@app.command("list")
def list_(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Networks you may use."""
    rows = api(ctx).get("/vnets")
    if want_json(ctx, json_):
        out.emit_json(rows)
        return
    out.table(["ID", "NAME", "BRIDGE", "SIZE", "LEASES", "PUBLIC"],
              ([n["id"], n["name"], n["bridge"] or "-", n["size"], n["used_leases"], n["public"]]
               for n in rows),
              right=["ID", "SIZE", "LEASES"])


def render(net: dict[str, Any]) -> None:
    out.section(f"VIRTUAL NETWORK {net['id']} INFORMATION")
    out.fields([("ID", net["id"]), ("NAME", net["name"]), ("BRIDGE", net["bridge"] or "-"),
                ("PUBLIC", net["public"]), ("OWNER", net["owner_id"]), ("GROUP", net["group_id"]),
                ("SIZE", net["size"]), ("USED LEASES", net["used_leases"])])
    out.echo()
    out.section("ADDRESS RANGES")
    out.table(["AR", "FIRST IP", "SIZE", "FIRST MAC"],
              ([i, r["ip"], r["size"], r["mac"]] for i, r in enumerate(net["ranges"])), right=["AR", "SIZE"])
    out.echo()
    out.section("LEASES")
    out.table(["IP", "MAC", "VM", "HELD"],
              ([lease["ip"], lease["mac"], lease["vm_id"], lease["held"]] for lease in net.get("leases", [])),
              right=["VM"])


@app.command("show")
def show(ctx: typer.Context, vnet: Annotated[str, typer.Argument(help="Network name or ID.")],
         json_: JsonFlag = False) -> None:
    """One network: its address ranges and a LEASES table."""
    net = api(ctx).get(f"/vnets/{vnet}")
    if want_json(ctx, json_):
        out.emit_json(net)
    else:
        render(net)


@app.command("hold")
def hold(ctx: typer.Context, vnet: Annotated[str, typer.Argument(help="Network name or ID.")],
         ip: Annotated[str, typer.Argument(help="Address to keep from VMs.")]) -> None:
    """Reserve an address so no VM gets it."""
    api(ctx).post(f"/vnets/{vnet}/hold", {"ip": ip})
    out.echo(f"vnet {vnet}: {ip} on hold")


@app.command("release")
def release(ctx: typer.Context, vnet: Annotated[str, typer.Argument(help="Network name or ID.")],
            ip: Annotated[str, typer.Argument(help="Held address to free.")]) -> None:
    """Free an address put on hold."""
    api(ctx).post(f"/vnets/{vnet}/release", {"ip": ip})
    out.echo(f"vnet {vnet}: {ip} released")


@app.command("delete")
def delete(ctx: typer.Context,
           vnets: Annotated[list[str], typer.Argument(help="Network names or IDs.")]) -> None:
    """Delete networks with no lease in use."""
    client = api(ctx)

    def one(ref: str) -> str:
        client.delete(f"/vnets/{ref}")
        return "deleted"

    for_each(vnets, "vnet", one)
