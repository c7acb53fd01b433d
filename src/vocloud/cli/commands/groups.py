"""``vocloud group``: groups, one per Virtual Organization (onegroup)."""

from typing import Annotated

import typer

from vocloud.cli import output as out
from vocloud.cli.batch import for_each
from vocloud.cli.commands.quotas import render_quota
from vocloud.cli.state import JsonFlag, api, want_json

app = typer.Typer(help="Groups (one per VO).", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Group name, usually the VO's.")],
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    json_: JsonFlag = False,
) -> None:
    """Create a group; prints its ID."""
    g = api(ctx).post("/groups", {"name": name, "description": description})
    if want_json(ctx, json_):
        out.emit_json(g)
    else:
        out.echo(f"ID: {g['id']}")


@app.command("list")
def list_(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Groups (your own only unless administrator)."""
    rows = api(ctx).get("/groups")
    if want_json(ctx, json_):
        out.emit_json(rows)
        return
    out.table(["ID", "NAME", "USERS", "DESCRIPTION"],
              ([g["id"], g["name"], g["users"], g["description"]] for g in rows), right=["ID", "USERS"])


@app.command("show")
def show(ctx: typer.Context, group: Annotated[str, typer.Argument(help="Group name or ID.")],
         json_: JsonFlag = False) -> None:
    """One group: its users and quota."""
    g = api(ctx).get(f"/groups/{group}")
    if want_json(ctx, json_):
        out.emit_json(g)
        return
    out.section(f"GROUP {g['id']} INFORMATION")
    out.fields([("ID", g["id"]), ("NAME", g["name"]), ("DESCRIPTION", g["description"]),
                ("USERS", ", ".join(g["users"]) or "none")])
    out.echo()
    out.section("GROUP QUOTAS")
    render_quota(g["quota"])


@app.command("delete")
def delete(ctx: typer.Context,
           groups: Annotated[list[str], typer.Argument(help="Group names or IDs.")]) -> None:
    """Delete groups that own nothing."""
    client = api(ctx)

    def one(ref: str) -> str:
        client.delete(f"/groups/{ref}")
        return "deleted"

    for_each(groups, "group", one)
