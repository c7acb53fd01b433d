"""``vocloud datastore``: the directories image files may live in (onedatastore)."""

from typing import Annotated

import typer

from vocloud.cli import output as out
from vocloud.cli.batch import for_each
from vocloud.cli.state import JsonFlag, api, want_json

app = typer.Typer(help="Datastores: front-end directories that hold image files.", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Datastore name (unique).")],
    path: Annotated[str, typer.Argument(help="An existing directory on the daemon's machine (absolute).")],
    json_: JsonFlag = False,
) -> None:
    """Declare a directory as a datastore (administrators); prints its ID."""
    ds = api(ctx).post("/datastores", {"name": name, "path": path})
    if want_json(ctx, json_):
        out.emit_json(ds)
    else:
        out.echo(f"ID: {ds['id']}")


@app.command("list")
def list_(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Every datastore (images may be uploaded into any of them)."""
    rows = api(ctx).get("/datastores")
    if want_json(ctx, json_):
        out.emit_json(rows)
        return
    out.table(["ID", "NAME", "IMAGES", "PATH"], ([d["id"], d["name"], d["images"], d["path"]] for d in rows),
              right=["ID", "IMAGES"])


@app.command("show")
def show(ctx: typer.Context, datastore: Annotated[str, typer.Argument(help="Datastore name or ID.")],
         json_: JsonFlag = False) -> None:
    """One datastore."""
    d = api(ctx).get(f"/datastores/{datastore}")
    if want_json(ctx, json_):
        out.emit_json(d)
        return
    out.section(f"DATASTORE {d['id']} INFORMATION")
    out.fields([("ID", d["id"]), ("NAME", d["name"]), ("PATH", d["path"]), ("IMAGES", d["images"])])


@app.command("delete")
def delete(ctx: typer.Context,
           datastores: Annotated[list[str], typer.Argument(help="Datastore names or IDs.")]) -> None:
    """Forget datastores that hold no image (the directory is left alone)."""
    client = api(ctx)

    def one(ref: str) -> str:
        client.delete(f"/datastores/{ref}")
        return "deleted"

    for_each(datastores, "datastore", one)
