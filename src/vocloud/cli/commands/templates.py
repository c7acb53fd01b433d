"""``vocloud template``: stored VM templates, instantiated by name (onetemplate)."""

from typing import Annotated

import typer

from vocloud.cli import output as out
from vocloud.cli.batch import for_each
from vocloud.cli.errors import ApiError
from vocloud.cli.files import read_template, relabel
from vocloud.cli.state import JsonFlag, api, want_json
from vocloud.cli.units import parse_attrs

app = typer.Typer(help="VM templates.", no_args_is_help=True)


@app.command("create")
def create(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="Template file (ONE syntax, JSON or TOML); '-' is stdin.")],
    name: Annotated[str | None, typer.Option(help="Name (overrides NAME in the file).")] = None,
    public: Annotated[bool, typer.Option(help="Let every group use it.")] = False,
    json_: JsonFlag = False,
) -> None:
    """Store a template; prints its ID."""
    tf = read_template(file)
    try:
        row = api(ctx).post("/templates", {"template": tf.text, "format": tf.format, "name": name,
                                           "public": public})
    except ApiError as exc:
        raise relabel(exc, tf.source) from None
    if want_json(ctx, json_):
        out.emit_json(row)
    else:
        out.echo(f"ID: {row['id']}")


@app.command("list")
def list_(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Templates you may use."""
    rows = api(ctx).get("/templates")
    if want_json(ctx, json_):
        out.emit_json(rows)
        return
    out.table(["ID", "NAME", "OWNER", "GROUP", "PUBLIC"],
              ([r["id"], r["name"], r["owner_id"], r["group_id"], r["public"]] for r in rows),
              right=["ID", "OWNER", "GROUP"])


@app.command("show")
def show(ctx: typer.Context, template: Annotated[str, typer.Argument(help="Template name or ID.")],
         json_: JsonFlag = False) -> None:
    """One template and its body."""
    row = api(ctx).get(f"/templates/{template}")
    if want_json(ctx, json_):
        out.emit_json(row)
        return
    out.section(f"TEMPLATE {row['id']} INFORMATION")
    out.fields([("ID", row["id"]), ("NAME", row["name"]), ("OWNER", row["owner_id"]),
                ("GROUP", row["group_id"]), ("PUBLIC", row["public"])])
    out.echo()
    out.section("TEMPLATE CONTENTS")
    out.echo(row["body"].rstrip())


@app.command("instantiate")
def instantiate(
    ctx: typer.Context,
    template: Annotated[str, typer.Argument(help="Template name or ID.")],
    multiple: Annotated[int, typer.Option("--multiple", "-m", min=1, help="How many VMs.")] = 1,
    name: Annotated[str | None, typer.Option(help="VM name.")] = None,
    hold: Annotated[bool, typer.Option(help="Create them on HOLD.")] = False,
    attr: Annotated[list[str] | None, typer.Option("--attr", help="Extra/overriding KEY=VALUE.")] = None,
    json_: JsonFlag = False,
) -> None:
    """Create VMs from a stored template; prints the new IDs."""
    body = {"count": multiple, "name": name, "hold": hold, "extra": parse_attrs(attr)}
    ids: list[int] = api(ctx).post(f"/templates/{template}/instantiate", body)["ids"]
    if want_json(ctx, json_):
        out.emit_json(ids)
    else:
        for vm_id in ids:
            out.echo(f"ID: {vm_id}")


@app.command("delete")
def delete(ctx: typer.Context,
           templates: Annotated[list[str], typer.Argument(help="Template names or IDs.")]) -> None:
    """Delete templates (VMs made from them are not affected)."""
    client = api(ctx)

    def one(ref: str) -> str:
        client.delete(f"/templates/{ref}")
        return "deleted"

    for_each(templates, "template", one)
