"""``vocloud acl``: rules that grant rights beyond a group's own objects (oneacl)."""

from typing import Annotated

import typer

from vocloud.cli import output as out
from vocloud.cli.batch import for_each
from vocloud.cli.state import JsonFlag, api, want_json
from vocloud.cli.units import parse_ids

app = typer.Typer(help="ACL rules (administrators).", no_args_is_help=True)


@app.command("list")
def list_(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """All ACL rules."""
    rows = api(ctx).get("/acls")
    if want_json(ctx, json_):
        out.emit_json(rows)
        return
    out.table(["ID", "SUBJECT", "RESOURCE", "TARGET", "RIGHTS"],
              ([a["id"], a["subject"], a["resource"], a["target"], a["rights"]] for a in rows), right=["ID"])


@app.command("create")
def create(
    ctx: typer.Context,
    subject: Annotated[str, typer.Argument(help="Who: #UID, @GID or *.")],
    resource: Annotated[str, typer.Argument(help="What kind: VM, IMAGE, VNET, TEMPLATE, HOST, ...")],
    target: Annotated[str, typer.Argument(help="Which: #ID, @GID or *.")],
    rights: Annotated[str, typer.Argument(help="USE, MANAGE, ADMIN (comma-separated).")],
    json_: JsonFlag = False,
) -> None:
    """Add a rule; prints its ID."""
    rule = api(ctx).post("/acls", {"subject": subject, "resource": resource, "target": target,
                                   "rights": rights})
    if want_json(ctx, json_):
        out.emit_json(rule)
    else:
        out.echo(f"ID: {rule['id']}")


@app.command("delete")
def delete(ctx: typer.Context,
           ids: Annotated[list[str], typer.Argument(help="Rule IDs.")]) -> None:
    """Remove rules."""
    client = api(ctx)

    def one(acl_id: int) -> str:
        client.delete(f"/acls/{acl_id}")
        return "deleted"

    for_each(parse_ids(ids, "ACL"), "ACL", one)
