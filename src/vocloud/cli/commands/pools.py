"""``vocloud pool``: VO worker pools that track the batch queue (the VO-cluster controller)."""

import time
from typing import Annotated, Any

import typer

from vocloud.cli import output as out
from vocloud.cli.state import JsonFlag, api, want_json
from vocloud.cli.units import parse_size

app = typer.Typer(help="VO worker pools sized by the batch queue.", no_args_is_help=True)

Opt = typer.Option


def _policy(min_: int | None, max_: int | None, weight: float | None, idle_timeout: float | None,
            boot_timeout: float | None, max_lifetime: float | None, max_boots: int | None,
            scale_down_delay: float | None) -> dict[str, Any]:
    fields = {"min": min_, "max": max_, "weight": weight, "idle_timeout": idle_timeout,
              "boot_timeout": boot_timeout, "max_lifetime": max_lifetime,
              "max_boots_per_minute": max_boots, "scale_down_delay": scale_down_delay}
    return {k: v for k, v in fields.items() if v is not None}


MinOpt = Annotated[int | None, Opt("--min", min=0, help="VMs kept even without demand.")]
MaxOpt = Annotated[int | None, Opt("--max", min=0, help="Most VMs this pool may have.")]
WeightOpt = Annotated[float | None, Opt(help="Fair-share weight when capacity is scarce.")]
IdleOpt = Annotated[float | None, Opt("--idle-timeout", help="Seconds idle before a worker drains.")]
BootOpt = Annotated[float | None, Opt("--boot-timeout", help="Seconds to join the batch system.")]
LifeOpt = Annotated[float | None, Opt("--max-lifetime", help="Seconds a worker may live (0: no limit).")]
RateOpt = Annotated[int | None, Opt("--max-boots-per-minute", min=1, help="Boot rate limit.")]
DelayOpt = Annotated[float | None, Opt("--scale-down-delay", help="Seconds after a boot before shrinking.")]
BurstOpt = Annotated[int | None, Opt(
    "--burst-limit", min=0, help="Administrators only: workers the pool may run on cloud hosts "
    "when the site is full (0: site only; docs/bursting.md).")]
ShapeOpt = Annotated[str | None, Opt(
    "--worker-shape", help="How workers are sized: fixed (--cores each), job (as wide as the "
    "widest waiting job, up to a host; wider jobs span workers) or host (whole-host workers).")]
HeadroomOpt = Annotated[float | None, Opt(
    "--headroom", min=0, max=10, help="Spare workers kept beyond the queue's need, per busy worker "
    "(0.25: one per four busy, booted ahead of demand); 0: none.")]
PrestageOpt = Annotated[str | None, Opt(
    "--prestage", help="Administrators only: copy the workers' image to the hosts that could take "
    "them before they boot: wait (boots wait for it, or go to hosts that hold it), start (do not "
    "wait), off, or site (the daemon's pool_prestage). docs/image-distribution.md.")]
SiteOpt = Annotated[str | None, Opt(
    "--site-template", help="Administrators only: the site template (an administrator's VM "
    "template) merged into every worker: batch secret, worker network, boot attributes. "
    "Default: the daemon's pool_site_template; on update, \"\" returns to it.")]


@app.command("create")
def create(
    ctx: typer.Context,
    vo: Annotated[str, typer.Argument(help="The VO: an existing group's name.")],
    template: Annotated[str, Opt("--template", "-t", help="VM template (name or ID) workers boot.")],
    cores: Annotated[int, Opt(min=1, help="Cores per worker VM.")] = 1,
    memory: Annotated[str, Opt(help="Memory per worker VM (e.g. 2G, 2048).")] = "2G",
    min_: MinOpt = None, max_: MaxOpt = None, weight: WeightOpt = None, idle_timeout: IdleOpt = None,
    boot_timeout: BootOpt = None, max_lifetime: LifeOpt = None, max_boots: RateOpt = None,
    scale_down_delay: DelayOpt = None, site_template: SiteOpt = None, burst_limit: BurstOpt = None,
    json_: JsonFlag = False, worker_shape: ShapeOpt = None, headroom: HeadroomOpt = None,
    prestage: PrestageOpt = None,
) -> None:
    """Create the pool of a VO; its workers are created as the VO (user pool.<vo>)."""
    body = {"vo": vo, "template": template, "cores": cores, "memory": parse_size(memory, "memory"),
            **_policy(min_, max_, weight, idle_timeout, boot_timeout, max_lifetime, max_boots,
                      scale_down_delay)}
    if worker_shape is not None:
        body["worker_shape"] = worker_shape
    if headroom is not None:
        body["headroom"] = headroom
    if prestage is not None:
        body["prestage"] = prestage
    if site_template is not None:
        body["site_template"] = site_template
    if burst_limit is not None:
        body["burst_limit"] = burst_limit
    pool = api(ctx).post("/pools", body)
    if want_json(ctx, json_):
        out.emit_json(pool)
    else:
        out.echo(f"POOL: {pool['vo']}")


@app.command("list")
def list_(ctx: typer.Context, json_: JsonFlag = False) -> None:
    """Pools with their demand and workers, as of the controller's last pass."""
    rows = api(ctx).get("/pools")
    if want_json(ctx, json_):
        out.emit_json(rows)
        return
    # SITE/CLOUD: the pool's workers on the site's hosts and on cloud hosts (docs/bursting.md)
    out.table(["VO", "IMAGE", "PENDING", "DESIRED", "BOOTING", "RUNNING", "DRAINING", "IDLE", "SITE",
               "CLOUD", "MIN", "MAX", "BURST"],
              ([p["vo"], p["image"], f"{p['pending_jobs']}/{p['pending_cores']}", p["desired"],
                p["booting"], p["running"], p["draining"], p["idle"], p.get("site_workers", 0),
                p.get("cloud_workers", 0), p["min"], p["max"], p.get("burst_limit", 0)] for p in rows),
              right=["DESIRED", "BOOTING", "RUNNING", "DRAINING", "IDLE", "SITE", "CLOUD", "MIN", "MAX",
                     "BURST"])


@app.command("show")
def show(ctx: typer.Context, vo: Annotated[str, typer.Argument(help="The pool's VO.")],
         json_: JsonFlag = False) -> None:
    """One pool: its policy, status and workers."""
    p = api(ctx).get(f"/pools/{vo}")
    if want_json(ctx, json_):
        out.emit_json(p)
        return
    out.section(f"POOL {p['vo']}")
    keys = ("template", "site_template", "owner", "image", "cores", "memory", "min", "max",
            "weight", "idle_timeout", "boot_timeout", "max_lifetime", "max_boots_per_minute",
            "scale_down_delay", "enabled", "burst_limit", "site_workers", "cloud_workers",
            "pending_jobs", "pending_cores", "desired", "booting", "running", "draining", "idle")
    out.fields([(k.upper(), p.get(k)) for k in keys])
    for note in p.get("notes", []):
        out.echo(f"note: {note}")
    vms = p.get("vms") or []
    if vms:
        out.echo()
        out.section("WORKERS")
        out.table(["VM", "NAME", "STATE", "JOBS"],
                  ([v.get("vm_id"), v.get("name"), v.get("state"), v.get("running_jobs", 0)] for v in vms))


@app.command("update")
def update(
    ctx: typer.Context, vo: Annotated[str, typer.Argument(help="The pool's VO.")],
    template: Annotated[str | None, Opt("--template", "-t", help="VM template (name or ID).")] = None,
    cores: Annotated[int | None, Opt(min=1, help="Cores per worker VM.")] = None,
    memory: Annotated[str | None, Opt(help="Memory per worker VM.")] = None,
    min_: MinOpt = None, max_: MaxOpt = None, weight: WeightOpt = None, idle_timeout: IdleOpt = None,
    boot_timeout: BootOpt = None, max_lifetime: LifeOpt = None, max_boots: RateOpt = None,
    scale_down_delay: DelayOpt = None,
    enable: Annotated[bool | None, Opt("--enable/--disable", help="Let the controller act on it.")] = None,
    site_template: SiteOpt = None, burst_limit: BurstOpt = None, json_: JsonFlag = False,
    worker_shape: ShapeOpt = None, headroom: HeadroomOpt = None,
    prestage: PrestageOpt = None,
) -> None:
    """Change a pool's policy; lowering --max drains surplus workers, never kills a running job."""
    body: dict[str, Any] = _policy(min_, max_, weight, idle_timeout, boot_timeout, max_lifetime,
                                   max_boots, scale_down_delay)
    if worker_shape is not None:
        body["worker_shape"] = worker_shape
    if headroom is not None:
        body["headroom"] = headroom
    if prestage is not None:
        body["prestage"] = prestage
    if template is not None:
        body["template"] = template
    if cores is not None:
        body["cores"] = cores
    if memory is not None:
        body["memory"] = parse_size(memory, "memory")
    if enable is not None:
        body["enabled"] = enable
    if site_template is not None:
        body["site_template"] = site_template
    if burst_limit is not None:
        body["burst_limit"] = burst_limit
    pool = api(ctx).patch(f"/pools/{vo}", body)
    if want_json(ctx, json_):
        out.emit_json(pool)
    else:
        out.echo(f"POOL: {pool['vo']} updated")


@app.command("delete")
def delete(ctx: typer.Context, vo: Annotated[str, typer.Argument(help="The pool's VO.")],
           force: Annotated[bool, Opt("--force", help="Drain and remove its workers first.")] = False,
           ) -> None:
    """Delete a pool (refused while it has workers, unless --force drains them first)."""
    res = api(ctx).delete(f"/pools/{vo}", force=force or None)
    if isinstance(res, dict) and not res.get("deleted", True):
        out.echo(f"POOL: {vo} draining {res.get('draining', 0)} workers; deleted when they are gone")
    else:
        out.echo(f"POOL: {vo} deleted")


@app.command("events")
def events(ctx: typer.Context, vo: Annotated[str, typer.Argument(help="The pool's VO.")],
           limit: Annotated[int, Opt(min=1, max=10_000, help="How many, newest last.")] = 50,
           json_: JsonFlag = False) -> None:
    """The controller's decisions for a pool, each explained in one line."""
    rows = api(ctx).get(f"/pools/{vo}/events", limit=limit)
    if want_json(ctx, json_):
        out.emit_json(rows)
        return
    for e in rows:
        stamp = time.strftime("%H:%M:%S", time.localtime(e["time"]))
        out.echo(f"{stamp} {e['reason']}")
