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
    file: Annotated[str, typer.Argument(help="Network template: NAME, BRIDGE, VLAN_ID, PHYDEV, AR=[...], "
                                             "PUBLIC, GROUP; '-' is stdin.")],
    group: Annotated[str | None, typer.Option("--group", "-g",
                                              help="Group (VO) that owns the network.")] = None,
    json_: JsonFlag = False,
) -> None:
    """Create a network from a template file (administrators); prints its ID."""
    tf = read_template(file)
    body: dict[str, Any] = {"template": tf.text, "format": tf.format}
    if group is not None:
        body["group"] = group
    try:
        net = api(ctx).post("/vnets", body)
    except ApiError as exc:
        raise relabel(exc, tf.source) from None
    if want_json(ctx, json_):
        out.emit_json(net)
    else:
        out.echo(f"ID: {net['id']}")


@app.command("reserve")
def reserve(
    ctx: typer.Context,
    vnet: Annotated[str, typer.Argument(help="Network (name or ID) to reserve addresses of.")],
    size: Annotated[int, typer.Option("--size", "-s", min=1, help="Number of contiguous addresses.")],
    name: Annotated[str | None, typer.Option("--name", "-n", help="Name of the new network.")] = None,
    ip: Annotated[str | None, typer.Option("--ip", help="First address (default: lowest free block).")]
    = None,
    group: Annotated[str | None, typer.Option("--group", "-g",
                                              help="Reserve for this group (administrators).")] = None,
    json_: JsonFlag = False,
) -> None:
    """Reserve a block of a shared network for your group (onevnet reserve); prints its ID."""
    body: dict[str, Any] = {"size": size}
    for key, value in (("name", name), ("ip", ip), ("group", group)):
        if value is not None:
            body[key] = value
    net = api(ctx).post(f"/vnets/{vnet}/reserve", body)
    if want_json(ctx, json_):
        out.emit_json(net)
    else:
        first = net["ranges"][0]
        out.echo(f"ID: {net['id']}")
        out.echo(f"reserved {net['size']} addresses from {first['ip']} of {net['parent']} as {net['name']}")


@app.command("list")
def list_(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Networks you may use."""
    rows = api(ctx).get("/vnets")
    if want_json(ctx, json_):
        out.emit_json(rows)
        return
    out.table(["ID", "NAME", "BRIDGE", "VLAN", "SIZE", "LEASES", "RESERVED", "PARENT", "PUBLIC"],
              ([n["id"], n["name"], n["bridge"] or "-", n.get("vlan_id") or "-", n["size"], n["used_leases"],
                n.get("reserved", 0), n.get("parent") or "-", n["public"]]
               for n in rows),
              right=["ID", "SIZE", "LEASES", "RESERVED"])


def render(net: dict[str, Any]) -> None:
    out.section(f"VIRTUAL NETWORK {net['id']} INFORMATION")
    out.fields([("ID", net["id"]), ("NAME", net["name"]), ("BRIDGE", net["bridge"] or "-"),
                ("VLAN_ID", net.get("vlan_id") or "-"), ("PHYDEV", net.get("phydev") or "-"),
                ("VN_MAD", net.get("vn_mad") or "bridge"), ("PARENT", net.get("parent") or "-"),
                ("PUBLIC", net["public"]), ("OWNER", net["owner_id"]), ("GROUP", net["group_id"]),
                ("SIZE", net["size"]), ("USED LEASES", net["used_leases"]),
                ("RESERVED", net.get("reserved", 0))])
    out.echo()
    out.section("ADDRESS RANGES")
    out.table(["AR", "FIRST IP", "SIZE", "FIRST MAC"],
              ([i, r["ip"], r["size"], r["mac"]] for i, r in enumerate(net["ranges"])), right=["AR", "SIZE"])
    if net.get("reservations"):
        out.echo()
        out.section("RESERVATIONS")
        out.table(["ID", "NAME", "GROUP", "FIRST IP", "SIZE"],
                  ([c["id"], c["name"], c["group_id"], r["ip"], r["size"]]
                   for c in net["reservations"] for r in c["ranges"]), right=["ID", "GROUP", "SIZE"])
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
         ip: Annotated[str, typer.Argument(help="Address to keep from VMs.")],
         json_: JsonFlag = False) -> None:
    """Reserve an address so no VM gets it."""
    net = api(ctx).post(f"/vnets/{vnet}/hold", {"ip": ip})
    if want_json(ctx, json_):
        out.emit_json(net)
    else:
        out.echo(f"vnet {vnet}: {ip} on hold")


@app.command("release")
def release(ctx: typer.Context, vnet: Annotated[str, typer.Argument(help="Network name or ID.")],
            ip: Annotated[str, typer.Argument(help="Held address to free.")],
            json_: JsonFlag = False) -> None:
    """Free an address put on hold."""
    net = api(ctx).post(f"/vnets/{vnet}/release", {"ip": ip})
    if want_json(ctx, json_):
        out.emit_json(net)
    else:
        out.echo(f"vnet {vnet}: {ip} released")


@app.command("delete")
def delete(ctx: typer.Context,
           vnets: Annotated[list[str], typer.Argument(help="Network names or IDs.")]) -> None:
    """Delete networks with no lease in use (administrators), or release your reservations."""
    client = api(ctx)

    def one(ref: str) -> str:
        client.delete(f"/vnets/{ref}")
        return "deleted"

    for_each(vnets, "vnet", one)
