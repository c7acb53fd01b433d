"""``vocloud vm``: create, list, inspect and drive virtual machines (onevm)."""

import sys
import time
from typing import Annotated, Any

import typer

from vocloud.cli import output as out
from vocloud.cli.batch import Done, for_each
from vocloud.cli.client import Client
from vocloud.cli.commands.vm_view import age, render
from vocloud.cli.errors import ApiError, CliError
from vocloud.cli.files import read_template, relabel
from vocloud.cli.follow import new_part
from vocloud.cli.state import JsonFlag, api, want_json
from vocloud.cli.units import cores, duration, human_mib, parse_ids, parse_size

app = typer.Typer(help="Virtual machines.", no_args_is_help=True)

IdsArg = Annotated[list[str], typer.Argument(help="VM IDs; ranges like 3..7 and lists like 3,5 work.")]


@app.command("create")
def create(
    ctx: typer.Context,
    template: Annotated[str | None, typer.Argument(
        help="Template file (ONE syntax, JSON or TOML); '-' reads stdin.")] = None,
    cpu: Annotated[float | None, typer.Option(help="CPU cores (overrides the template).")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory, e.g. 512 (MiB) or 2G.")] = None,
    name: Annotated[str | None, typer.Option(help="VM name (NAME-0, NAME-1, ... with -m).")] = None,
    multiple: Annotated[int, typer.Option("--multiple", "-m", min=1, help="How many VMs.")] = 1,
    hold: Annotated[bool, typer.Option(help="Create them on HOLD (not scheduled until released).")] = False,
    json_: JsonFlag = False,
) -> None:
    """Create VMs from a template file, or from --cpu/--memory alone; prints the new IDs."""
    if template is None and cpu is None and memory is None:
        raise CliError("give a template file (or '-' for stdin), or --cpu and --memory")
    tf = read_template(template) if template is not None else None
    body: dict[str, Any] = {
        "template": tf.text if tf else "", "format": tf.format if tf else "auto", "count": multiple,
        "name": name, "hold": hold, "cpu": cpu,
        "memory": parse_size(memory, "memory") if memory is not None else None,
    }
    try:
        ids: list[int] = api(ctx).post("/vms", body)["ids"]
    except ApiError as exc:
        raise relabel(exc, tf.source) if tf else exc from None
    if want_json(ctx, json_):
        out.emit_json(ids)
    else:
        for vm_id in ids:
            out.echo(f"ID: {vm_id}")


@app.command("attributes")
def attributes(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Template attributes vocloud understands; ADMIN ones are for administrators only.

    Any attribute not listed is refused; INTERNAL ones are written by vocloud itself. See
    docs/security.md.
    """
    doc = api(ctx).get("/attributes")
    if want_json(ctx, json_):
        out.emit_json(doc)
        return
    out.table(["ATTRIBUTE", "ACCESS", "DESCRIPTION", "USED BY"],
              ([a["name"], a["access"].upper(), a["description"], a["consumer"]]
               for a in doc["attributes"]))
    extra = [p for p in doc.get("site_restricted", []) if p.startswith("CONTEXT/")]
    if extra:
        out.echo("restricted by this site: " + ", ".join(extra))


@app.command("list")
def list_(
    ctx: typer.Context,
    all_: Annotated[bool, typer.Option("--all", "-a", help="Include DONE VMs.")] = False,
    state: Annotated[str | None, typer.Option(help="Only VMs in this state, e.g. PENDING.")] = None,
    json_: JsonFlag = False,
) -> None:
    """VMs you may see (all of them for an administrator)."""
    rows = api(ctx).get("/vms", all=str(all_).lower(), state=state)
    if want_json(ctx, json_):
        out.emit_json(rows)
        return
    out.table(
        ["ID", "USER", "GROUP", "NAME", "STAT", "CPU", "MEM", "HOST", "TIME"],
        ([r["id"], r["user"], r["group"], r["name"], r["stat"], cores(r["cpu"]), human_mib(r["memory"]),
          r["host"], duration(age(r))] for r in rows),
        right=["ID", "CPU", "MEM", "TIME"],
    )


@app.command("show")
def show(ctx: typer.Context, vm_id: Annotated[int, typer.Argument(metavar="ID", help="VM ID.")],
         json_: JsonFlag = False) -> None:
    """One VM: state, why it is not placed, errors, leases, template and history."""
    vm = api(ctx).get(f"/vms/{vm_id}")
    if want_json(ctx, json_):
        out.emit_json(vm)
    else:
        render(vm)


@app.command("log")
def log(
    ctx: typer.Context,
    vm_id: Annotated[int, typer.Argument(metavar="ID", help="VM ID.")],
    follow: Annotated[bool, typer.Option("--follow", "-f",
                                         help="Keep printing what the guest prints until the VM is DONE "
                                              "(Ctrl-C to stop).")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between reads with --follow.", min=0.2)] = 1.0,
    json_: JsonFlag = False,
) -> None:
    """The guest's serial console (its last 64 KiB); needs MANAGE on the VM."""
    client = api(ctx)
    doc = client.get(f"/vms/{vm_id}/log")
    if want_json(ctx, json_):
        if follow:
            raise CliError("--follow streams text; it does not combine with --json")
        out.emit_json(doc)
        return
    if not doc["log"] and not follow:
        out.warn(f"VM {vm_id}: {doc.get('note') or 'no console log'}")
        return
    shown = doc["log"]
    sys.stdout.write(shown)
    sys.stdout.flush()
    while follow and doc["state"] != "DONE":
        time.sleep(interval)
        doc = client.get(f"/vms/{vm_id}/log")
        sys.stdout.write(new_part(shown, doc["log"]))
        sys.stdout.flush()
        shown = doc["log"] or shown


_UNPLACED = frozenset({"PENDING", "HOLD"})


def _unplaced_first(client: Client, vm_ids: list[int]) -> list[int]:
    """Order a multi-VM terminate so VMs not yet on a host go first.

    Why: terminating running VMs frees capacity, and the scheduler would hand it to the PENDING
    VMs of the same batch, which then sit in PROLOG, where terminate is refused. Done first, they
    go straight to DONE and ``vm terminate 1..30`` ends everything it was asked to.
    """
    states = {row["id"]: row["state"] for row in client.get("/vms")}
    return sorted(vm_ids, key=lambda vm_id: states.get(vm_id) not in _UNPLACED)


def _act(ctx: typer.Context, ids: list[str], action: str, as_json: bool = False, **extra: Any) -> None:
    client = api(ctx)
    vm_ids = parse_ids(ids)
    if action.startswith("terminate") and len(vm_ids) > 1:
        vm_ids = _unplaced_first(client, vm_ids)

    def one(vm_id: int) -> Done:
        row = client.post(f"/vms/{vm_id}/action", {"action": action, **extra})
        return Done(f"{action}: now {row['state']}", {"action": action, "state": row["state"]})

    for_each(vm_ids, "VM", one, as_json=want_json(ctx, as_json))


HardFlag = Annotated[bool, typer.Option("--hard", help="Do not ask the guest: destroy it / pull the plug.")]


def _simple(name: str, doc: str, hard: bool = False) -> None:
    """Register ``vm NAME ID...`` (with ``--hard`` when the lifecycle has a hard variant)."""
    if not hard:
        def command(ctx: typer.Context, ids: IdsArg, json_: JsonFlag = False) -> None:
            _act(ctx, ids, name, json_)
    else:
        def command(ctx: typer.Context, ids: IdsArg, hard_: HardFlag = False,  # type: ignore[misc]
                    json_: JsonFlag = False) -> None:
            _act(ctx, ids, f"{name}-hard" if hard_ else name, json_)

    command.__doc__ = doc
    app.command(name)(command)


_simple("terminate", "Shut VMs down and release everything they hold (-> DONE).", hard=True)
_simple("poweroff", "Power VMs off, keeping their host and disks (-> POWEROFF).", hard=True)
_simple("suspend", "Save VMs' memory and pause them on their host (-> SUSPENDED).")
_simple("resume", "Start powered-off, suspended, stopped or undeployed VMs again.")
_simple("stop", "Save VMs and free their host (-> STOPPED).")
_simple("reboot", "Reboot running VMs.")
_simple("undeploy", "Shut VMs down and free their host, keeping their disks (-> UNDEPLOYED).")
_simple("hold", "Keep PENDING VMs from being scheduled (-> HOLD).")
_simple("release", "Let held VMs be scheduled (-> PENDING).")


@app.command("migrate")
def migrate(
    ctx: typer.Context,
    vm_id: Annotated[int, typer.Argument(metavar="ID", help="VM ID.")],
    host: Annotated[str, typer.Argument(help="Target host name or ID.")],
    force: Annotated[bool, typer.Option(help="Also to a host that is not MONITORED.")] = False,
    cold: Annotated[bool, typer.Option("--cold", help="Shut the guest down, move its disks, boot "
                                                      "it on the target (also where live works).")] = False,
    wait: Annotated[bool, typer.Option(help="Wait for the outcome (exit 2 if the VM stayed where "
                                            "it was); --no-wait returns once MIGRATE began.")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the outcome.")] = 900.0,
    json_: JsonFlag = False,
) -> None:
    """Move a running VM to another host: live where both hosts' drivers can, else (or with
    --cold) shut down, disks copied, booted there; refused up front where the drivers cannot.

    Waits for the outcome by default: a migration that failed leaves the VM RUNNING where it was
    with the reason, which is printed, and the exit status is 2.
    """
    if not wait:
        _act(ctx, [str(vm_id)], "migrate", json_, host=host, enforce=not force, cold=cold)
        return
    client = api(ctx)

    def one(ref: int) -> Done:
        client.post(f"/vms/{ref}/action", {"action": "migrate", "host": host, "enforce": not force,
                                           "cold": cold})
        deadline = time.monotonic() + timeout
        row = client.get(f"/vms/{ref}")
        while row["state"] == "MIGRATE":
            if time.monotonic() > deadline:
                raise ApiError(504, "timeout", f"still migrating after {timeout:g} s (vm show {ref})")
            time.sleep(0.5)
            row = client.get(f"/vms/{ref}")
        last: dict[str, Any] = next((h for h in reversed(row.get("history") or [])
                     if h.get("action") in ("migrate_ok", "migrate_fail")), {})
        if last.get("action") != "migrate_ok":
            raise ApiError(409, "migrate_failed", f"migration failed, now {row['state']} on "
                           f"{row.get('host')}: {last.get('message') or row.get('error') or '?'}")
        return Done(f"migrate: now {row['state']} on {row.get('host')} ({last.get('message', '')})",
                    {"action": "migrate", "state": row["state"], "host": row.get("host"),
                     "message": last.get("message", "")})

    for_each([vm_id], "VM", one, as_json=want_json(ctx, json_))


@app.command("recover")
def recover(
    ctx: typer.Context,
    ids: IdsArg,
    success: Annotated[bool, typer.Option("--success", help="The stuck step did succeed.")] = False,
    failure: Annotated[bool, typer.Option("--failure", help="The stuck step failed.")] = False,
    retry: Annotated[bool, typer.Option("--retry", help="Run the failed step again.")] = False,
    delete: Annotated[bool, typer.Option("--delete", help="Drop the VM to DONE, releasing all.")] = False,
    json_: JsonFlag = False,
) -> None:
    """Repair VMs stuck in a transient or failure state (administrators)."""
    chosen = [op for op, on in (("success", success), ("failure", failure), ("retry", retry),
                                ("delete", delete)) if on]
    if len(chosen) != 1:
        raise CliError("recover needs exactly one of --success, --failure, --retry, --delete")
    client = api(ctx)

    def one(vm_id: int) -> Done:
        row = client.post(f"/vms/{vm_id}/recover", {"op": chosen[0]})
        return Done(f"recover --{chosen[0]}: now {row['state']}", {"state": row["state"]})

    for_each(parse_ids(ids), "VM", one, as_json=want_json(ctx, json_))


@app.command("delete")
def delete_(ctx: typer.Context, ids: IdsArg, json_: JsonFlag = False) -> None:
    """Purge VM records (DONE VMs, or VMs that never left PENDING/HOLD)."""
    client = api(ctx)

    def one(vm_id: int) -> Done:
        client.delete(f"/vms/{vm_id}")
        return Done("deleted", {"deleted": True})

    for_each(parse_ids(ids), "VM", one, as_json=want_json(ctx, json_))
