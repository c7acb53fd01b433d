"""``vocloud quota``: per-user and per-group limits on VMs, CPU, memory and image bytes (onequota)."""

from enum import StrEnum
from typing import Annotated, Any

import typer

from vocloud.cli import output as out
from vocloud.cli.errors import CliError
from vocloud.cli.state import JsonFlag, api, want_json
from vocloud.cli.units import cores, human_mib, parse_size

app = typer.Typer(help="Quotas (-1 = unlimited).", no_args_is_help=True)


class Scope(StrEnum):
    user = "user"
    group = "group"


ScopeArg = Annotated[Scope, typer.Argument(help="user or group.")]
RefArg = Annotated[str, typer.Argument(help="User or group name or ID.")]


def _limit(value: Any, fmt: Any) -> str:
    return "unlimited" if value is None or value < 0 else str(fmt(value))


def render_quota(q: dict[str, Any]) -> None:
    out.table(
        ["RESOURCE", "USED", "LIMIT"],
        [["VMS", q["vms"]["used"], _limit(q["vms"]["limit"], str)],
         ["CPU", cores(q["cpu"]["used"]), _limit(q["cpu"]["limit"], cores)],
         ["MEMORY", human_mib(q["memory"]["used"]), _limit(q["memory"]["limit"], human_mib)],
         *([["IMAGES", human_mib(q["images"]["used"]), _limit(q["images"]["limit"], human_mib)]]
           if "images" in q else [])],
        right=["USED", "LIMIT"],
    )


@app.command("show")
def show(ctx: typer.Context, scope: ScopeArg, ref: RefArg, json_: JsonFlag = False) -> None:
    """Usage and limits of a user or group."""
    q = api(ctx).get(f"/quotas/{scope.value}/{ref}")
    if want_json(ctx, json_):
        out.emit_json(q)
    else:
        render_quota(q)


@app.command("set")
def set_(
    ctx: typer.Context,
    scope: ScopeArg,
    ref: RefArg,
    vms: Annotated[int | None, typer.Option(help="Most VMs at once (-1 = unlimited).")] = None,
    cpu: Annotated[float | None, typer.Option(help="Most CPU cores (-1 = unlimited).")] = None,
    memory: Annotated[str | None, typer.Option(help="Most memory, e.g. 64G (-1 = unlimited).")] = None,
    images: Annotated[str | None, typer.Option(
        help="Most image file bytes (uploads and registrations), e.g. 10G (-1 = unlimited).")] = None,
    json_: JsonFlag = False,
) -> None:
    """Set limits; the ones not given stay as they are."""
    if vms is None and cpu is None and memory is None and images is None:
        raise CliError("give at least one of --vms, --cpu, --memory, --images")
    body = {"vms": vms, "cpu": cpu,
            "memory": parse_size(memory, "memory", allow_unlimited=True) if memory is not None else None,
            "images": parse_size(images, "images", allow_unlimited=True) if images is not None else None}
    q = api(ctx).put(f"/quotas/{scope.value}/{ref}", body)
    if want_json(ctx, json_):
        out.emit_json(q)
    else:
        render_quota(q)
