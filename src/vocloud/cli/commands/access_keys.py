"""``vocloud user keys``: EC2 access keys (create shows the secret once; docs/ec2.md)."""

import time
from typing import Annotated, Any

import typer

from vocloud.cli import output as out
from vocloud.cli.batch import for_each
from vocloud.cli.state import JsonFlag, api, want_json

app = typer.Typer(help="EC2 access keys (for boto3, the AWS CLI, libcloud).", no_args_is_help=True)

UserArg = Annotated[str | None, typer.Argument(help="User name or ID (default: you).")]


@app.command("create")
def create(ctx: typer.Context, user: UserArg = None, json_: JsonFlag = False) -> None:
    """A new access key; prints its secret, once."""
    doc: dict[str, Any] = api(ctx).post("/access-keys", {"user": user})
    if want_json(ctx, json_):
        out.emit_json(doc)
        return
    out.echo(f"AWS_ACCESS_KEY_ID: {doc['access_key_id']}")
    out.echo(f"AWS_SECRET_ACCESS_KEY: {doc['secret_access_key']}")
    out.warn("the secret is shown this once: keep it (e.g. in ~/.aws/credentials)")


@app.command("list")
def list_(ctx: typer.Context, user: UserArg = None, json_: JsonFlag = False) -> None:
    """A user's access keys (ids only: secrets are never shown again)."""
    rows = api(ctx).get("/access-keys", **({"user": user} if user else {}))
    if want_json(ctx, json_):
        out.emit_json(rows)
        return
    out.table(["ACCESS KEY ID", "USER", "CREATED"],
              ([k["access_key_id"], k["user"],
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(k["created_at"]))] for k in rows))


@app.command("delete")
def delete(ctx: typer.Context,
           keys: Annotated[list[str], typer.Argument(help="Access key ids.")]) -> None:
    """Delete access keys (requests signed with them are refused from now on)."""
    client = api(ctx)

    def one(key: str) -> str:
        client.delete(f"/access-keys/{key}")
        return "deleted"

    for_each(keys, "access key", one)
