"""``vocloud user``: accounts and their tokens (oneuser)."""

from typing import Annotated, Any

import typer

from vocloud.cli import output as out
from vocloud.cli.batch import for_each
from vocloud.cli.commands import access_keys
from vocloud.cli.commands.quotas import render_quota
from vocloud.cli.state import JsonFlag, api, want_json

app = typer.Typer(help="Users.", no_args_is_help=True)
app.add_typer(access_keys.app, name="keys")

UsersArg = Annotated[list[str], typer.Argument(help="User names or IDs.")]


def _print_token(doc: dict[str, Any]) -> None:
    out.echo(f"ID: {doc['id']}")
    out.echo(f"TOKEN: {doc['token']}")
    out.warn("the token is shown this once: keep it (e.g. in ~/.config/vocloud/token)")


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="User name (unique).")],
    group: Annotated[str, typer.Option(help="Group (VO) name or ID.")],
    admin: Annotated[bool, typer.Option(help="Make the user a site administrator.")] = False,
    json_: JsonFlag = False,
) -> None:
    """Create a user; prints its token, once."""
    user = api(ctx).post("/users", {"name": name, "group": group, "admin": admin})
    if want_json(ctx, json_):
        out.emit_json(user)
    else:
        _print_token(user)


@app.command("list")
def list_(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Users (yourself only unless administrator)."""
    rows = api(ctx).get("/users")
    if want_json(ctx, json_):
        out.emit_json(rows)
        return
    out.table(["ID", "NAME", "GROUP", "ADMIN", "ENABLED"],
              ([u["id"], u["name"], u["group"], u["is_admin"], u["enabled"]] for u in rows), right=["ID"])


def _render(u: dict[str, Any]) -> None:
    out.section(f"USER {u['id']} INFORMATION")
    out.fields([("ID", u["id"]), ("NAME", u["name"]), ("GROUP", u["group"]), ("ADMIN", u["is_admin"]),
                ("ENABLED", u["enabled"])])
    if "quota" in u:
        out.echo()
        out.section("USER QUOTAS")
        render_quota(u["quota"])


@app.command("show")
def show(ctx: typer.Context, user: Annotated[str, typer.Argument(help="User name or ID.")],
         json_: JsonFlag = False) -> None:
    """One user and its quota."""
    u = api(ctx).get(f"/users/{user}")
    if want_json(ctx, json_):
        out.emit_json(u)
    else:
        _render(u)


@app.command("me")
def me(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Who the token belongs to."""
    u = api(ctx).get("/users/me")
    if want_json(ctx, json_):
        out.emit_json(u)
    else:
        _render(u)


@app.command("token")
def token(ctx: typer.Context, user: Annotated[str, typer.Argument(help="User name or ID.")],
          json_: JsonFlag = False) -> None:
    """Issue a new token (the old one stops working); prints it once."""
    doc = api(ctx).post(f"/users/{user}/token")
    if want_json(ctx, json_):
        out.emit_json(doc)
    else:
        _print_token(doc)


def _enabled(ctx: typer.Context, users: list[str], enabled: bool) -> None:
    client = api(ctx)

    def one(ref: str) -> str:
        client.post(f"/users/{ref}/enabled", {"enabled": enabled})
        return "enabled" if enabled else "disabled"

    for_each(users, "user", one)


@app.command("enable")
def enable(ctx: typer.Context, users: UsersArg) -> None:
    """Let users log in again."""
    _enabled(ctx, users, True)


@app.command("disable")
def disable(ctx: typer.Context, users: UsersArg) -> None:
    """Refuse the users' tokens (their VMs keep running)."""
    _enabled(ctx, users, False)


@app.command("delete")
def delete(ctx: typer.Context, users: UsersArg) -> None:
    """Delete users that own nothing."""
    client = api(ctx)

    def one(ref: str) -> str:
        client.delete(f"/users/{ref}")
        return "deleted"

    for_each(users, "user", one)
