"""``vocloud simulate TRACE``: replay a workload trace through physical, static and elastic sites.

The command is a thin shell over :mod:`vocloud.sim`: it parses options into a ``SimConfig``,
loads the trace, runs the scenarios with a progress bar (on stderr, so ``--json`` stdout stays
machine-readable), prints the scenario table and, with ``--report DIR``, writes metrics.json,
summary.md and the plots. Every bad input (unknown scenario, malformed trace line under
``--strict``, truncated gzip, bad distribution) is one line on stderr and exit code 2.

Default site: the trace header's ``MaxProcs`` as 2-core hosts with 2 GiB per core; for
LPC-EGEE (``MaxProcs: 140``, ``MaxNodes: 70 (dual)``) that is 70 hosts x 2 cores, the real
cluster. ``--scale-hosts N`` replays on N hosts and scales the trace to match (see
``docs/simulator.md``: arrivals compressed by default, or the trace replicated).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from vocloud.elastic.policy import RESERVE_AFTER_S
from vocloud.errors import InvalidInput, VocloudError

DEFAULT_WORKERS = min(3, os.cpu_count() or 1)
SCENARIO_HELP = ("Scenario to run: physical, static, elastic or burst (repeat the option; default: the "
                 "first three; burst adds a cloud, docs/bursting.md).")


def _parse_split(text: str | None) -> dict[str, int]:
    if not text:
        return {}
    out: dict[str, int] = {}
    for item in text.split(","):
        vo, sep, n = item.partition("=")
        if not sep or not vo.strip():
            raise InvalidInput(f"--static-split item {item!r}: expected VO=HOSTS")
        try:
            out[vo.strip()] = int(n)
        except ValueError:
            raise InvalidInput(f"--static-split item {item!r}: {n!r} is not a whole number") from None
    return out


def simulate(
    trace: Annotated[Path, typer.Argument(help="SWF file (plain or gzip) or HTCondor history (JSON/CSV).")],
    scenario: Annotated[list[str] | None, typer.Option("--scenario", "-s", help=SCENARIO_HELP)] = None,
    hosts: Annotated[int | None, typer.Option(help="Hosts (default: the header's MaxProcs / cores).")] = None,
    cores_per_host: Annotated[int | None, typer.Option(help="Cores per host (default 2).")] = None,
    mem_per_host: Annotated[int | None, typer.Option(help="MiB per host (default 2048 per core).")] = None,
    vo_map: Annotated[str, typer.Option(
        help="How jobs map to VOs: group, user, queue, partition, vo, single, 'rules:F=RE:VO,...' "
             "or a rules file (docs/simulator.md).")] = "group",
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same metrics.json.")] = 1,
    strict: Annotated[bool, typer.Option(help="Refuse the trace at its first malformed line.")] = False,
    scale_hosts: Annotated[int | None, typer.Option(
        help="Replay on this many hosts, scaling the trace to match.")] = None,
    scale_mode: Annotated[str, typer.Option(help="compress (arrivals) or replicate (jobs).")] = "compress",
    poll_interval: Annotated[float, typer.Option(help="Virtual seconds between planner runs.")] = 60.0,
    boot_time: Annotated[str, typer.Option(
        help="VM boot time: fixed:S, uniform:LO,HI or lognormal:MEDIAN,SIGMA.")] = "fixed:60",
    shutdown_time: Annotated[str, typer.Option(help="VM shutdown time (same forms).")] = "fixed:10",
    penalty: Annotated[float, typer.Option(help="Virtualization service-time penalty (0.05 = 5 %).")] = 0.05,
    vm_cores: Annotated[int, typer.Option(help="Cores per elastic VM (the least, with job shape).")] = 1,
    worker_shape: Annotated[str, typer.Option(
        help="Elastic: fixed (--vm-cores each), job (as wide as the widest waiting job, up to a "
             "host; wider jobs span VMs) or host (whole-host VMs).")] = "job",
    idle_timeout: Annotated[float, typer.Option(help="Elastic: drain a VM idle this long (s).")] = 300.0,
    headroom: Annotated[float, typer.Option(
        help="Elastic: spare VMs kept beyond the queue's need, per busy VM (0.2: one per five; "
             "0: none).")] = 0.0,
    reserve_after: Annotated[float, typer.Option(
        help="Elastic: seconds the oldest job spanning VMs waits before it holds the site's "
             "reservation (0: at once, the planner of sessions 8-10).")] = RESERVE_AFTER_S,
    max_boots_per_minute: Annotated[int, typer.Option(help="Elastic: boot rate limit per pool.")] = 30,
    min_vms: Annotated[int, typer.Option(help="Elastic: minimum VMs per pool.")] = 0,
    max_vms: Annotated[int, typer.Option(help="Elastic: maximum VMs per pool (0: the site).")] = 0,
    static_split: Annotated[str | None, typer.Option(
        help="Static: hosts per VO, 'g1=10,g2=60' (default: by trace core-seconds).")] = None,
    split_partitions: Annotated[bool, typer.Option(
        help="Physical: one EASY queue per SWF partition, hosts split by core-seconds.")] = False,
    report: Annotated[Path | None, typer.Option(help="Write metrics.json, summary.md and PNGs here.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print metrics.json to stdout.")] = False,
    limit: Annotated[int | None, typer.Option(help="Replay only the first N jobs.")] = None,
    tolerance: Annotated[float, typer.Option(
        help="Seconds a submit time may go backwards before the line counts as time travel.")] = 0.0,
    progress: Annotated[bool, typer.Option(help="Show a progress bar on stderr.")] = True,
    workers: Annotated[int, typer.Option(
        help="Run the scenarios in this many parallel processes (same results).")] = DEFAULT_WORKERS,
    compare_policies: Annotated[str | None, typer.Option(
        help="Compare pool policies instead: 'all' or NAME,NAME (docs/policies.md).")] = None,
    validate: Annotated[bool, typer.Option(
        "--validate", help="Run a slice through the real daemon and Slurm and compare it with the "
                           "simulator's prediction (root; docs/simulator.md).")] = False,
    jobs: Annotated[int, typer.Option(help="--validate: jobs in the slice.")] = 300,
    compress: Annotated[float, typer.Option(
        help="--validate: time compression (trace s per real s).")] = 60.0,
    val_start: Annotated[int | None, typer.Option(
        help="--validate: first runnable job of the slice (default: a stretch of about 2 "
             "jobs per real second).")] = None,
    val_max_runtime: Annotated[float, typer.Option(
        help="--validate: trace seconds a job may run; longer ones are cut.")] = 3600.0,
    voc_report: Annotated[bool, typer.Option(
        "--voc-report", help="Add the VOC findings (pool tracking load, slowdown by job length) "
                             "to summary.md, with voc.png (needs --report).")] = False,
) -> None:
    """Replay a workload trace through bare hosts, static VO partitions and elastic VO pools."""
    try:
        _run(**locals())
    except VocloudError as exc:
        from vocloud.cli.errors import CliError

        raise CliError(exc.message) from None


def _run(**o: Any) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from vocloud.sim.dist import parse_duration
    from vocloud.sim.elastic import ElasticKnobs
    from vocloud.sim.recorded import recorded_figures
    from vocloud.sim.report import dumps, metrics_document, scenario_table, warnings, write_report
    from vocloud.sim.run import (
        DEFAULT_SCENARIOS,
        SCENARIOS,
        SimConfig,
        default_spec,
        load_trace,
        run_all,
        trace_summary,
    )
    from vocloud.sim.sites import SiteSpec

    scenarios = tuple(o["scenario"] or DEFAULT_SCENARIOS)
    for name, value in (("hosts", o["hosts"]), ("cores-per-host", o["cores_per_host"]),
                        ("mem-per-host", o["mem_per_host"]), ("scale-hosts", o["scale_hosts"]),
                        ("limit", o["limit"])):
        if value is not None and value < 1:
            raise InvalidInput(f"--{name} must be >= 1, got {value}")
    if o["workers"] < 1:
        raise InvalidInput("--workers must be >= 1")
    if o["vm_cores"] < 1:
        raise InvalidInput("--vm-cores must be >= 1")
    if o["worker_shape"] not in ("fixed", "job", "host"):
        raise InvalidInput(f"--worker-shape must be fixed, job or host, got {o['worker_shape'][:40]!r}")
    if o["max_boots_per_minute"] < 1:
        raise InvalidInput("--max-boots-per-minute must be >= 1")
    if not 0 <= o["headroom"] <= 10:
        raise InvalidInput("--headroom must be between 0 and 10")
    if not 0 <= o["reserve_after"] < math.inf:
        raise InvalidInput("--reserve-after must be a number of seconds >= 0")
    if o["min_vms"] < 0 or o["max_vms"] < 0 or o["idle_timeout"] < 0 or o["tolerance"] < 0:
        raise InvalidInput("--min-vms, --max-vms, --idle-timeout and --tolerance must be >= 0")
    boot = parse_duration(o["boot_time"], "--boot-time")
    shutdown = parse_duration(o["shutdown_time"], "--shutdown-time")
    split = _parse_split(o["static_split"])

    # The base site comes from the header, so scaling needs the header first: read it once
    # unscaled, then derive the factor. Reading is ~2 s for LPC-EGEE; scaling is in memory.
    loaded = load_trace(o["trace"], vo_map=o["vo_map"], strict=o["strict"], limit=o["limit"],
                        tolerance=o["tolerance"])
    base = default_spec(loaded.max_procs, o["hosts"], o["cores_per_host"], o["mem_per_host"])
    spec = base
    if o["scale_hosts"]:
        spec = SiteSpec(o["scale_hosts"], base.cores_per_host, base.mem_per_host)
        factor = spec.total_cores / base.total_cores
        loaded = load_trace(o["trace"], vo_map=o["vo_map"], strict=o["strict"], limit=o["limit"],
                            tolerance=o["tolerance"], scale=factor, scale_mode=o["scale_mode"])
    knobs = ElasticKnobs(
        cores_per_vm=o["vm_cores"], min_vms=o["min_vms"], max_vms=o["max_vms"],
        idle_timeout_s=o["idle_timeout"], max_boots_per_minute=o["max_boots_per_minute"],
        worker_shape=o["worker_shape"], headroom=o["headroom"], reserve_after_s=o["reserve_after"],
    )
    config = SimConfig(spec=spec, scenarios=scenarios, seed=o["seed"], poll_interval=o["poll_interval"],
                       penalty=o["penalty"], boot=boot, shutdown=shutdown, knobs=knobs, static_split=split,
                       split_partitions=o["split_partitions"])
    if o["voc_report"]:
        if o["report"] is None:
            raise InvalidInput("--voc-report writes into the report: give --report DIR")
        from dataclasses import replace

        from vocloud.sim.voc import SAMPLE_S

        config = replace(config, sample_interval=config.sample_interval or SAMPLE_S)
    if o["validate"]:
        from vocloud.cli.sim_validate import run_validate

        return run_validate(o, loaded, config)
    if o["compare_policies"] is not None:
        from vocloud.cli.compare_policies import run_compare

        return run_compare(o, loaded, config)
    w = loaded.workload
    err = Console(stderr=True)
    t0, t1 = w.submit[0], w.submit[-1]
    span = max(t1 - t0, 1.0)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=err, disable=not o["progress"], transient=False) as bar:
        tasks = {s: bar.add_task(f"{s:<8}", total=span) for s in SCENARIOS if s in scenarios}

        def tick(name: str, t: float) -> None:
            # Past the last arrival a saturated scenario still has its queue to run (elastic on
            # the whole SDSC-SP2: another 15 % of the span): say how far, instead of a bar that
            # sits at 100 % and looks finished, or hung.
            tail = t - t1
            desc = f"{name:<8}" if tail <= 0 else f"{name:<8} +{tail / 86400:,.1f} d after the last arrival"
            bar.update(tasks[name], completed=min(t - t0, span), description=desc)

        results = run_all(w, config, tick, workers=o["workers"])
        for task in tasks.values():
            bar.update(task, completed=span)
    trace_info = {
        "name": Path(o["trace"]).name,
        "vo_map": o["vo_map"],
        "header": loaded.header,
        "read": loaded.report.to_dict() | {"source": Path(o["trace"]).name},
        **trace_summary(w),
    }
    recorded = recorded_figures(w, loaded.max_procs)
    if recorded is not None:
        trace_info["recorded"] = recorded
    doc = metrics_document(results, config.to_dict(), trace_info)
    if o["report"] is not None:
        write_report(Path(o["report"]), results, doc, w.vo_names)
        if o["voc_report"]:
            from vocloud.sim.voc import voc_markdown, voc_plot

            section = voc_markdown(w, results, voc_plot(w, results, Path(o["report"])))
            with (Path(o["report"]) / "summary.md").open("a", encoding="utf-8") as fh:
                fh.write(section)
            if not o["json_out"]:
                typer.echo(section.split("\nMean bounded")[0])
    if o["json_out"]:
        sys.stdout.write(dumps(doc))
        return
    typer.echo(scenario_table(results, recorded))
    for line in warnings(results):
        typer.echo(f"\nWARNING {line}", err=True)
    skipped = loaded.report.skipped_total
    if skipped:
        typer.echo(f"\n{skipped} malformed trace line(s) skipped: {loaded.report.skipped}", err=True)
    if o["report"] is not None:
        typer.echo(f"\nreport written to {o['report']}")


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to the ``vocloud`` app (called by ``vocloud.cli.main``)."""
    app.command("simulate")(simulate)
