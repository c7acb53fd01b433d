"""``vocloud image``: the image repository (oneimage)."""

import os
import stat
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from vocloud.cli import output as out
from vocloud.cli.batch import for_each
from vocloud.cli.errors import CliError
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
    """Register an image file already inside a datastore (administrators); prints its ID.

    Everyone else uploads: `vocloud image upload NAME FILE`."""
    body = {"name": name, "path": str(Path(path).expanduser().absolute()), "format": format_,
            "persistent": persistent, "public": public, "description": description}
    img = api(ctx).post("/images", body)
    if want_json(ctx, json_):
        out.emit_json(img)
    else:
        out.echo(f"ID: {img['id']}")


@app.command("upload")
def upload(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Image name (unique).")],
    file: Annotated[Path, typer.Argument(help="Local qcow2 or raw file to upload.")],
    format_: Annotated[str | None, typer.Option(
        "--format", help="qcow2 or raw; must be what qemu-img reads (default: what it reads).")] = None,
    persistent: Annotated[bool, typer.Option(help="Used by one VM at a time, changes kept.")] = False,
    public: Annotated[bool, typer.Option(help="Let every group use it.")] = False,
    datastore: Annotated[str, typer.Option(help="Datastore name or ID.")] = "default",
    description: Annotated[str, typer.Option(help="Free text.")] = "",
    json_: JsonFlag = False,
) -> None:
    """Upload an image's bytes to the daemon (streamed, with a progress bar); prints its ID."""
    try:
        f = file.expanduser().open("rb")
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror}") from None
    with f:
        size = os_size(f.fileno())
        params = {"name": name, "format": format_, "persistent": str(persistent).lower(),
                  "public": str(public).lower(), "datastore": datastore, "description": description}
        err = Console(stderr=True)  # the bar goes to stderr; stdout stays the answer
        with Progress(TextColumn(f"uploading {name}"), BarColumn(), DownloadColumn(),
                      TransferSpeedColumn(), TimeRemainingColumn(), console=err,
                      disable=not err.is_terminal, transient=True) as bar:
            task = bar.add_task("upload", total=size)
            img = api(ctx).upload("/images/upload", f, size, params,
                                  progress=lambda n: bar.advance(task, n))
    if want_json(ctx, json_):
        out.emit_json(img)
    else:
        out.echo(f"ID: {img['id']}")


def os_size(fd: int) -> int:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise CliError("the image to upload must be a regular file")
    return st.st_size


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
                ("OWNER", i["owner_id"]), ("GROUP", i["group_id"]),
                ("DATASTORE", i.get("datastore_id")), ("UPLOADED", i.get("uploaded")),
                ("DESCRIPTION", i["description"])])


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
    """Forget images no VM uses: an uploaded file is removed, a file registered by path is left."""
    client = api(ctx)

    def one(ref: str) -> str:
        client.delete(f"/images/{ref}")
        return "deleted"

    for_each(images, "image", one)


_DONE = ("verified", "held", "local", "failed")


@app.command("distribute")
def distribute(
    ctx: typer.Context,
    image: Annotated[str, typer.Argument(help="Image name or ID.")],
    hosts: Annotated[str | None, typer.Option(
        help="Comma-separated host names (default: every enabled qemu host).")] = None,
    fanout: Annotated[int, typer.Option(help="Children each holder serves at once (1-16).")] = 2,
    poll: Annotated[float, typer.Option(help="Seconds between progress polls.", min=0.1)] = 0.5,
    json_: JsonFlag = False,
) -> None:
    """Pre-stage an image's base onto hosts (administrators): the front-end sends it about
    once, hosts that hold it serve others (a fan-out tree over SSH), sha256 checked at every
    hop. Exit 1 if a host did not get it."""
    import time

    names = [h.strip() for h in hosts.split(",")] if hosts is not None else None
    if names is not None and not all(names):
        raise CliError("--hosts: an empty host name (write h1,h2,...)")
    client = api(ctx)
    dist = client.post(f"/images/{image}/distribute", {"hosts": names, "fanout": fanout})
    err = Console(stderr=True)
    with Progress(TextColumn(f"distributing {image}"), BarColumn(),
                  TextColumn("{task.completed}/{task.total} hosts {task.description}"),
                  console=err, disable=not err.is_terminal or want_json(ctx, json_),
                  transient=True) as bar:
        task = bar.add_task("", total=len(dist["hosts"]))
        while dist["state"] == "running":
            time.sleep(poll)
            dist = client.get(f"/distributions/{dist['id']}")
            sending = sorted(f"{h['host']}<-{h.get('source') or '?'}" for h in dist["hosts"]
                             if h.get("state") == "sending")
            bar.update(task, completed=sum(h.get("state") in _DONE for h in dist["hosts"]),
                       description=", ".join(sending[:4]))
    result = dist.get("result") or {}
    if want_json(ctx, json_):
        out.emit_json(dist)
    else:
        rows = result.get("hosts") or dist["hosts"]
        out.table(["HOST", "STATE", "FROM", "MIB", "TRIES", "SECONDS", "ERROR"],
                  ([h["host"], h.get("state", ""), h.get("source", ""),
                    f"{h.get('bytes', 0) / 1048576:.1f}", h.get("attempts", 0),
                    h.get("seconds", 0), h.get("error", "")] for h in rows),
                  right=["MIB", "TRIES", "SECONDS"])
        if result:
            out.echo(f"front-end sent {result['front_end_bytes'] / 1048576:.1f} MiB, hosts "
                     f"{result['host_bytes'] / 1048576:.1f} MiB; tree depth {result['depth']}; "
                     f"{result['seconds']:.1f} s")
    if dist["state"] != "done":
        if not want_json(ctx, json_):
            err.print(f"distribution {dist['id']}: {dist.get('error') or dist['state']}")
        raise typer.Exit(1)
