"""``vocloud host``: register hypervisors and take them in and out of service (onehost)."""

from datetime import datetime
from typing import Annotated, Any

import typer

from vocloud.cli import output as out
from vocloud.cli.batch import for_each
from vocloud.cli.commands import host_leases
from vocloud.cli.state import JsonFlag, api, want_json
from vocloud.cli.units import cores, human_mib, parse_attrs, parse_size

app = typer.Typer(help="Hypervisor hosts.", no_args_is_help=True)

#: onehost's short states, so the table reads like the tool admins know.
SHORT_STATE = {"INIT": "init", "MONITORED": "on", "ERROR": "err", "DISABLED": "dsbl", "OFFLINE": "off"}


@app.command("create")
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Host name (unique).")],
    vmm: Annotated[str, typer.Option(help="Virtualization driver: sim, qemu or ec2 (cloud).")] = "sim",
    transport: Annotated[str, typer.Option(help="local or ssh://user@address[:port].")] = "local",
    cpu: Annotated[float | None, typer.Option(help="Declared CPU cores (sim hosts).")] = None,
    memory: Annotated[str | None, typer.Option(help="Declared memory, e.g. 16G or 16384 (MiB).")] = None,
    cluster: Annotated[str, typer.Option(help="Cluster the host belongs to.")] = "default",
    attr: Annotated[list[str] | None, typer.Option("--attr", help="Extra attribute KEY=VALUE.")] = None,
    json_: JsonFlag = False,
) -> None:
    """Register a host; prints its ID."""
    body: dict[str, Any] = {
        "name": name, "vmm": vmm, "transport": transport, "cluster": cluster,
        "cpu": cpu, "memory": parse_size(memory, "memory") if memory is not None else None,
        "attrs": parse_attrs(attr),
    }
    host = api(ctx).post("/hosts", body)
    if want_json(ctx, json_):
        out.emit_json(host)
    else:
        out.echo(f"ID: {host['id']}")


@app.command("update")
def update(
    ctx: typer.Context,
    host: Annotated[str, typer.Argument(help="Host name or ID.")],
    attr: Annotated[list[str], typer.Option("--attr", help="KEY=VALUE to set; KEY= removes it. "
                                            "RESERVED_CPU/RESERVED_MEM (MiB) hold capacity back; "
                                            "negative values overcommit.")],
    json_: JsonFlag = False,
) -> None:
    """Set or remove host attributes (like onehost update)."""
    h = api(ctx).patch(f"/hosts/{host}", {"attrs": parse_attrs(attr)})
    if want_json(ctx, json_):
        out.emit_json(h)
    else:
        out.echo(f"host {h['name']}: {cores(h['total_cpu'])} CPU, {human_mib(h['total_mem'])} schedulable")


@app.command("list")
def list_(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """All hosts with their allocated and free capacity."""
    hosts = api(ctx).get("/hosts")
    if want_json(ctx, json_):
        out.emit_json(hosts)
        return
    out.table(
        ["ID", "NAME", "STATE", "RVM", "TCPU", "FCPU", "TMEM", "FMEM"],
        ([h["id"], h["name"], SHORT_STATE.get(h["state"], h["state"].lower()), h["running_vms"],
          cores(h["total_cpu"]), cores(h["free_cpu"]), human_mib(h["total_mem"]), human_mib(h["free_mem"])]
         for h in hosts),
        right=["ID", "RVM", "TCPU", "FCPU", "TMEM", "FMEM"],
    )


@app.command("show")
def show(ctx: typer.Context, host: Annotated[str, typer.Argument(help="Host name or ID.")],
         json_: JsonFlag = False) -> None:
    """One host: state, capacity, attributes and the VMs it holds."""
    h = api(ctx).get(f"/hosts/{host}")
    if want_json(ctx, json_):
        out.emit_json(h)
        return
    out.section(f"HOST {h['id']} INFORMATION")
    out.fields([("ID", h["id"]), ("NAME", h["name"]), ("STATE", h["state"]), ("VMM", h["vmm"]),
                ("TRANSPORT", h["transport"]), ("CLUSTER", h["cluster"])])
    if h.get("error"):
        out.fields([("ERROR", h["error"])])
    if (h.get("monitoring") or {}).get("failures"):
        out.fields([("MONITORING", monitoring_line(h["monitoring"]))])
    out.echo()
    out.section("HOST CAPACITY")
    out.fields([
        ("TOTAL CPU", cores(h["total_cpu"])), ("ALLOCATED CPU", cores(h["alloc_cpu"])),
        ("FREE CPU", cores(h["free_cpu"])), ("USED CPU (measured)", cores(h["used_cpu"])),
        ("TOTAL MEM", human_mib(h["total_mem"])), ("ALLOCATED MEM", human_mib(h["alloc_mem"])),
        ("FREE MEM", human_mib(h["free_mem"])), ("USED MEM (measured)", human_mib(h["used_mem"])),
        ("RUNNING VMS", h["running_vms"]),
    ])
    if h.get("attrs"):
        out.echo()
        out.section("MONITORING INFORMATION")
        out.fields(sorted(h["attrs"].items()))
    out.echo()
    out.section("VIRTUAL MACHINES")
    out.echo(" ".join(str(v) for v in h.get("vms", [])) or "none")


def monitoring_line(m: dict[str, Any]) -> str:
    """``failing since 12/02 00:10:05, 5 failures, next try in 40 s, last error: ...``"""
    since = datetime.fromtimestamp(m["failing_since"]).strftime("%m/%d %H:%M:%S") \
        if m.get("failing_since") else "?"
    n = m["failures"]
    nxt = "next try now" if m.get("next_attempt_in") in (None, 0) else \
        f"next try in {m['next_attempt_in']:.0f} s"
    plural = "s" if n != 1 else ""
    return f"failing since {since}, {n} failure{plural}, {nxt}, last error: {m.get('last_error', '')}"


def _action(name: str, doc: str) -> None:
    def command(ctx: typer.Context,
                hosts: Annotated[list[str], typer.Argument(help="Host names or IDs.")]) -> None:
        client = api(ctx)
        for_each(hosts, "host", lambda ref: client.post(f"/hosts/{ref}/action", {"action": name})["state"])

    command.__doc__ = doc
    app.command(name)(command)


_action("enable", "Let the scheduler place VMs on the hosts again.")
_action("disable", "Keep the hosts' VMs running but place no new ones there.")
GoneFlag = Annotated[bool, typer.Option(
    "--gone", help="The host will never answer again: the terminates its VMs owe end them as DONE "
                   "(lease and quota released). Refused, changing nothing, while it holds VMs "
                   "nobody asked to end.")]


@app.command("offline")
def offline(ctx: typer.Context,
            hosts: Annotated[list[str], typer.Argument(help="Host names or IDs.")],
            gone: GoneFlag = False) -> None:
    """Take empty hosts out of service (no monitoring, no VMs)."""
    client = api(ctx)
    body: dict[str, Any] = {"action": "offline", **({"gone": True} if gone else {})}
    for_each(hosts, "host", lambda ref: client.post(f"/hosts/{ref}/action", body)["state"])


@app.command("delete")
def delete(ctx: typer.Context,
           hosts: Annotated[list[str], typer.Argument(help="Host names or IDs.")],
           gone: GoneFlag = False) -> None:
    """Forget hosts that hold no VMs."""
    client = api(ctx)

    def one(ref: str) -> str:
        if gone:
            client.delete(f"/hosts/{ref}", gone="true")
        else:
            client.delete(f"/hosts/{ref}")
        return "deleted"

    for_each(hosts, "host", one)


host_leases.register(app)  # host lease / leases / lease-cancel (docs/host-leases.md)
