"""``vocloud image``: the image repository (oneimage)."""

from pathlib import Path
from typing import Annotated

import typer

from vocloud.cli import output as out
from vocloud.cli.batch import for_each
from vocloud.cli.state import JsonFlag, api, want_json
from vocloud.cli.units import human_mib

app = typer.Typer(help="Disk images.", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Image name (unique).")],
    path: Annotated[str, typer.Option(help="Image file on the front-end (made absolute here).")],
    format_: Annotated[str | None, typer.Option("--format", help="qcow2 or raw (default: sniffed).")] = None,
    persistent: Annotated[bool, typer.Option(help="Used by one VM at a time, changes kept.")] = False,
    public: Annotated[bool, typer.Option(help="Let every group use it.")] = False,
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    json_: JsonFlag = False,
) -> None:
    """Register an image file; prints its ID."""
    body = {"name": name, "path": str(Path(path).expanduser().absolute()), "format": format_,
            "persistent": persistent, "public": public, "description": description}
    img = api(ctx).post("/images", body)
    if want_json(ctx, json_):
        out.emit_json(img)
    else:
        out.echo(f"ID: {img['id']}")


@app.command("list")
def list_(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Images you may use."""
    rows = api(ctx).get("/images")
    if want_json(ctx, json_):
        out.emit_json(rows)
        return
    out.table(["ID", "NAME", "STATE", "FORMAT", "SIZE", "PERS", "PUBLIC", "RVMS"],
              ([i["id"], i["name"], i["state"], i["format"], human_mib(i["size_mib"]), i["persistent"],
                i["public"], i["running_vms"]] for i in rows),
              right=["ID", "SIZE", "RVMS"])


@app.command("show")
def show(ctx: typer.Context, image: Annotated[str, typer.Argument(help="Image name or ID.")],
         json_: JsonFlag = False) -> None:
    """One image."""
    i = api(ctx).get(f"/images/{image}")
    if want_json(ctx, json_):
        out.emit_json(i)
        return
    out.section(f"IMAGE {i['id']} INFORMATION")
    out.fields([("ID", i["id"]), ("NAME", i["name"]), ("STATE", i["state"]), ("PATH", i["path"]),
                ("FORMAT", i["format"]), ("SIZE", human_mib(i["size_mib"])), ("SHA256", i["sha256"]),
                ("PERSISTENT", i["persistent"]), ("PUBLIC", i["public"]), ("RUNNING VMS", i["running_vms"]),
                ("OWNER", i["owner_id"]), ("GROUP", i["group_id"]), ("DESCRIPTION", i["description"])])


def _action(name: str, doc: str) -> None:
    def command(ctx: typer.Context,
                images: Annotated[list[str], typer.Argument(help="Image names or IDs.")]) -> None:
        client = api(ctx)

        def one(ref: str) -> str:
            img = client.post(f"/images/{ref}/action", {"action": name})
            return f"{name}: {img['state']}{', persistent' if img['persistent'] else ''}"

        for_each(images, "image", one)

    command.__doc__ = doc
    app.command(name)(command)


_action("enable", "Make images usable again.")
_action("disable", "Keep new VMs from using the images.")
_action("persistent", "Make images persistent (one VM, changes kept).")
_action("nonpersistent", "Make images non-persistent (copy-on-write clones per VM).")


@app.command("delete")
def delete(ctx: typer.Context,
           images: Annotated[list[str], typer.Argument(help="Image names or IDs.")]) -> None:
    """Forget images no VM uses (the file itself is left alone)."""
    client = api(ctx)

    def one(ref: str) -> str:
        client.delete(f"/images/{ref}")
        return "deleted"

    for_each(images, "image", one)
