"""``vocloud simulate TRACE --validate [--jobs N] [--compress X]``: the simulator's prediction
checked against the real daemon and real Slurm on the same jobs (docs/simulator.md).

The trace-time options of ``vocloud simulate`` (``--poll-interval``, ``--boot-time``,
``--shutdown-time``, ``--idle-timeout``, ``--max-boots-per-minute``) are divided by ``X`` for
both sides, so the comparison is of the policy the user would simulate, compressed. The real side
runs as ``python -m vocloud.demo.valreal`` (root, Slurm and munge needed; it moves itself into a
private network namespace); then the simulator replays the same jobs twice: with the configured
times, and "calibrated" with the latencies the real run measured added to the boot time (VM
creation, median; slurmd registration) and to every job's hold on its worker (Slurm's dispatch,
median, and the launch overhead).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import typer

from vocloud.errors import InvalidInput
from vocloud.sim.run import LoadedTrace, SimConfig

DEFAULT_HOSTS, DEFAULT_CORES = 2, 4
DEFAULT_MAX_RUNTIME = 3600.0  # trace seconds: longer jobs are cut to it


def site_for(o: dict[str, Any], config: SimConfig, compress: float) -> Any:
    """The validation site: ``--hosts``/``--cores-per-host`` or 2 x 4; times divided by X."""
    from vocloud.sim.validate import ValSite

    if config.boot.kind != "fixed" or config.shutdown.kind != "fixed":
        raise InvalidInput("--validate needs fixed boot and shutdown times (fixed:S): the real "
                           "sim driver's delay is one number")
    k = config.knobs
    return ValSite(
        hosts=o["hosts"] or DEFAULT_HOSTS, cores_per_host=o["cores_per_host"] or DEFAULT_CORES,
        host_mem_mib=o["mem_per_host"] or 16384, poll_s=config.poll_interval / compress,
        boot_s=config.boot.a / compress, shutdown_s=config.shutdown.a / compress,
        idle_timeout_s=k.idle_timeout_s / compress, scale_down_delay_s=k.scale_down_delay_s / compress,
        boot_timeout_s=max(k.boot_timeout_s / compress, 30.0),
        max_boots_per_minute=min(math.ceil(k.max_boots_per_minute * compress), 10_000),
        max_vms=k.max_vms)


def run_real_side(jobs: list[tuple[str, float, float]], site: Any, timeout_s: float) -> dict[str, Any]:
    """The real half in its own process (it leaves this process's network alone)."""
    with tempfile.TemporaryDirectory(prefix="vocloud-val-cli-") as tmp:
        src, dst = Path(tmp) / "in.json", Path(tmp) / "out.json"
        src.write_text(json.dumps({"jobs": jobs, "site": site.to_dict(), "timeout_s": timeout_s}))
        proc = subprocess.Popen([sys.executable, "-m", "vocloud.demo.valreal", str(src), str(dst)])
        try:
            rc = proc.wait(timeout_s + 300)
        except BaseException:  # timeout or Ctrl-C: SIGTERM lets it stop the daemon and Slurm
            proc.terminate()
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
        doc: dict[str, Any] = json.loads(dst.read_text()) if dst.exists() else {}
        if rc != 0 or "skipped" in doc:
            why = doc.get("skipped") or f"the real side exited {rc}"
            raise InvalidInput(f"--validate cannot run the real side here: {why}")
        return doc


def validate(o: dict[str, Any], loaded: LoadedTrace, config: SimConfig) -> dict[str, Any]:
    """Slice, run both sides, compare; returns the comparison document."""
    from vocloud.sim.validate import compare, simulate, slice_jobs

    x = float(o["compress"])
    if not (math.isfinite(x) and x >= 1):  # before anything divides by it
        raise InvalidInput(f"--compress must be >= 1, got {o['compress']}")
    site = site_for(o, config, x)
    cores = site.hosts * site.cores_per_host
    sl = slice_jobs(loaded.workload, o["jobs"], x, o["val_max_runtime"], o["val_start"],
                    busy_cores=cores / 2)
    timeout = max(120.0, 3 * (sl.span_s + sl.work_s / cores) + 60)
    typer.echo(f"validation slice: jobs {sl.first_index}..{sl.first_index + len(sl.jobs) - 1} of "
               f"the trace's runnable jobs, {sl.span_s:,.0f} s of arrivals and runs, "
               f"{sl.work_s:,.0f} core-s at x{x:g}", err=True)
    real = run_real_side(sl.jobs, site, timeout)
    achieved = [(j["vo"], float(j["submit_s"]), float(j["runtime_s"])) for j in real["jobs"]]
    sim = simulate(achieved, site, seed=config.seed)
    from vocloud.sim.validate import latencies

    lat = latencies(real, site)
    extra = max(0.0, lat["vm_create"]["median"]) + max(0.0, lat["registration"]["mean"])
    # Slurm allocates the worker before the job script starts: the dispatch latency holds it too
    hold = max(0.0, lat["dispatch"]["median"]) + max(0.0, lat["launch"]["mean"])
    cal = simulate(achieved, site, seed=config.seed, extra_boot_s=extra, extra_run_s=hold)
    doc = compare(real, sim, site, x, calibrated=cal)
    doc["notes"] = sl.notes
    doc["slice"] = {"first_runnable_index": sl.first_index, "jobs": len(sl.jobs),
                    "span_real_s": sl.span_s, "capped": sl.capped, "wide": sl.wide}
    doc["real_run_s"] = real["run_s"]
    doc["real"] = real  # the raw record (jobs, workers, samples): the comparison can be redone
    doc["calibrated_extra_boot_s"] = extra
    doc["calibrated_extra_run_s"] = hold
    doc["per_job"]["waits_real"] = [round(w, 3) for w in
                                    (float(j["start_s"]) - float(j["submit_s"]) for j in real["jobs"])]
    doc["per_job"]["waits_sim"] = [round(w, 3) for w in sim["waits"]]
    return doc


def run_validate(o: dict[str, Any], loaded: LoadedTrace, config: SimConfig) -> None:
    """The CLI's ``--validate``: print (or ``--json``) the comparison; ``--report DIR`` keeps it."""
    from vocloud.sim.validate import report_text

    doc = validate(o, loaded, config)
    text = report_text(doc)
    if o["report"] is not None:
        out = Path(o["report"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "validation.json").write_text(json.dumps(doc, indent=1) + "\n")
        (out / "validation.md").write_text(f"# Simulator against the real system: {Path(o['trace']).name}\n\n"
                                           + text)
    if o["json_out"]:
        sys.stdout.write(json.dumps(doc, indent=1) + "\n")
        return
    typer.echo(text)
    if o["report"] is not None:
        typer.echo(f"validation written to {o['report']}/validation.md")
