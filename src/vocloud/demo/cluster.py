"""``vocloud demo``: the README's first command — a Virtual Organization cluster on one machine.

What it shows is the point of the project: users submit jobs to the site's batch system exactly
as before, and each VO's pool of worker VMs grows with its queue and shrinks back when the queue
is gone. On one machine, with nothing configured beforehand:

* a real daemon (``vocloud serve``, SQLite in a fresh data directory, its scheduler, lifecycle,
  monitor and VO-pool loops), driven through its REST API as a site admin would;
* this machine as its ``qemu`` host; worker VMs boot the worker guest (``vocloud.guest.worker``:
  the host's own munged + slurmd over a read-only 9p root) on a bridge made for the demo
  (``10.253.0.1/24`` or the next free ``10.x`` /24; no NAT, no route anywhere else);
* a throwaway Slurm controller (:mod:`vocloud.devtools.localslurm`), configless, with one feature-NodeSet
  partition per VO: the workers' slurmd register as dynamic nodes named like their VMs;
* two VOs: ``atlas`` brings its own image and template, ``cms`` uses the site's public standard
  worker template; one pool each (min 0, max 2, short idle timeout), whose workers are created
  as the VO with the site's own additions from the administrator's site template ``worker-site``
  (how a worker boots, the worker network, the munge key by name);
* a burst of ``sbatch -A <vo> -p <vo>`` jobs; a live table of the pools (``GET /api/v1/pools``)
  and each pool's decisions as they happen; at the end a summary: jobs run, VMs booted, wait.

Everything started is stopped and removed at the end, on errors and on Ctrl-C too: the daemon
(SIGTERM), any qemu left under the data dir, the taps on the demo bridge, the bridge, slurmctld
and munged, the temp dirs.

Without root, qemu or Slurm (or with ``--sim``) the same story runs with the parts that are
missing simulated — ``sim`` VMs on a ``sim`` host and vocloud's ``sim`` batch system, whose
jobs are timers — and the demo says which parts and why. The daemon, its store, REST API,
scheduler and pool controller are the real ones in both cases.

The parts, one job each: :mod:`~vocloud.demo.base` (VOs, options, error), :mod:`~vocloud.demo.netns`
(private namespace, bridge), :mod:`~vocloud.demo.daemon` (the daemon), :mod:`~vocloud.demo.site`
(the site an administrator sets up), :mod:`~vocloud.demo.jobs` (the two batch systems),
:mod:`~vocloud.demo.watch` (the live loop) over :mod:`~vocloud.demo.views` (what it shows),
:mod:`~vocloud.demo.summary` (the numbers at the end). This module runs the scenario.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console

from vocloud.client import ClientError
from vocloud.demo.base import VOS, WORKER_CPUS, WORKER_MIB, DemoError, Options
from vocloud.demo.daemon import demo_daemon
from vocloud.demo.jobs import Batch, SimJobs, SlurmJobs
from vocloud.demo.netns import demo_bridge, free_subnet, private_network
from vocloud.demo.site import Site, host_name, machine, setup_site, wait_monitored
from vocloud.demo.summary import summarize, summary_lines
from vocloud.demo.watch import watch

__all__ = ["DemoError", "Options", "real_parts_missing", "run"]


def real_parts_missing(opts: Options) -> str | None:
    """Why the real VO cluster cannot run here (then the demo simulates), or ``None``."""
    from vocloud.devtools.localslurm import missing_reason

    if opts.sim:
        return "--sim was given"
    if os.geteuid() != 0:
        return "not root (the bridge, taps, slurmctld and munged need root)"
    for tool in ("qemu-system-x86_64", "qemu-img", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (bash scripts/setup.sh installs it)"
    return missing_reason()


def _burst(console: Console, batch: Batch, opts: Options, how: str) -> float:
    for vo in VOS:
        for _ in range(opts.jobs.get(vo, 0)):
            batch.submit(vo)
    console.print(f"submitted {', '.join(f'{n} {vo}' for vo, n in opts.jobs.items())} jobs "
                  f"({how}, sleep {opts.job_seconds:g} s each)")
    return time.time()


def _run_real(console: Console, opts: Options, data_dir: Path, t0: float,
              stack: contextlib.ExitStack) -> tuple[dict[str, Any] | None, str | None]:
    """The VO cluster on real parts; ``(None, reason)`` if a prerequisite turned out missing
    before anything was started (then the caller simulates)."""
    from vocloud.devtools.localslurm import LocalSlurm
    from vocloud.guest.build import ensure_image
    from vocloud.guest.export import ensure_export
    from vocloud.guest.worker import ensure_worker_image, worker_context

    console.print("worker guest: building or reusing (cached) — the first build downloads the "
                  "Debian kernel and busybox and takes a few minutes ...")
    t_img = time.monotonic()
    try:
        base = ensure_image()
        worker = ensure_worker_image().with_export(ensure_export("slurm").root)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        return None, f"cannot build the worker guest: {exc}"
    console.print(f"worker guest ready in {time.monotonic() - t_img:.1f} s: {worker.root}")
    # after the build: it may download packages, which the private namespace could not
    isolated = private_network()
    if isolated is None:
        console.print(f"own network namespace: the bridge, taps and Slurm ports are private to "
                      f"the demo (inspect it with nsenter --net=/proc/{os.getpid()}/ns/net)")
    else:
        console.print(f"[yellow]no private network namespace ({isolated}): using this "
                      "machine's, with a free subnet")
    subnet = free_subnet()
    if subnet is None:
        return None, "no free 10.x.0.0/24 for the demo bridge"
    bridge = stack.enter_context(demo_bridge(subnet))
    bridge_ip = subnet + "1"
    console.print(f"bridge {bridge} with {bridge_ip}/24 (no NAT, no forwarding)")
    slurm = stack.enter_context(LocalSlurm(VOS, ctld_addr=bridge_ip))
    console.print(f"local Slurm: slurmctld on {slurm.conf_server} (configless), partitions "
                  f"{', '.join(VOS)} (feature NodeSets vo_<vo>), own munged; in {slurm.root}")
    api = stack.enter_context(demo_daemon(data_dir, {
        "VOCLOUD_BATCH_SYSTEM": "slurm", "SLURM_CONF": str(slurm.conf),
        "VOCLOUD_POOL_INTERVAL": "1", "VOCLOUD_BOOT_TIMEOUT": "180",
        "VOCLOUD_SHUTDOWN_TIMEOUT": "30"}, console))
    # The munge key is a site secret: only the site template names it, the daemon puts it in
    # each worker's own seed (docs/secrets.md), so neither VO can read it from a template.
    secrets = data_dir / "secrets"
    secrets.mkdir(mode=0o700, exist_ok=True)
    (secrets / "munge").touch(mode=0o600)
    (secrets / "munge").write_bytes(slurm.munge_key)

    def attrs(vo: str) -> dict[str, str]:
        return {"CPU": str(WORKER_CPUS), "VCPU": "1", "MEMORY": str(WORKER_MIB)}

    def context(vo: str) -> dict[str, str]:
        ctx = worker_context("$NAME", b"-", conf_server=slurm.conf_server, ip="$IP", mask="24",
                             dynamic_conf=f"CPUs={WORKER_CPUS} RealMemory=200 Feature=vo_{vo}")
        del ctx["MUNGE_KEY"], ctx["MUNGE_SOCKET"]  # the site template's
        return ctx

    boot = "\n".join(f'{k}="{v}"' for k, v in worker.spec_attrs().items())
    site_template = (f'NAME="worker-site"\n{boot}\nNIC=[NETWORK="vo"]\n'
                     f'CONTEXT=[MUNGE_KEY="$SECRET[munge]", '
                     f'MUNGE_SOCKET="{slurm.munge_socket}", '
                     f'SLURMD_SPOOL_PARENT="{slurm.root / "spool"}"]\n')
    name = host_name()
    setup_site(console, api, {"name": name, "vmm": "qemu"},
               Site(base.base_disk, attrs, context, nic=False, site_template=site_template),
               bridge, subnet)
    deadline = time.monotonic() + opts.timeout
    host = wait_monitored(api, deadline)
    accel = host["attrs"].get("ACCEL", "?")
    console.print(f"this machine is qemu host [bold]{name}[/]: {host['total_cpu']:g} cores, "
                  f"{host['total_mem']} MiB; workers boot under {accel} "
                  f"({host['attrs'].get('ACCEL_REASON', '')})")
    batch = SlurmJobs(slurm, opts.job_seconds)
    t_submit = _burst(console, batch, opts, "sbatch -A <vo> -p <vo>")
    w = watch(console, api, batch, t0, deadline)
    return summarize(batch.jobs(), api("GET", "/vms", params={"all": True}), w, t0, t_submit,
                     "qemu workers + local Slurm", [], time.time()), None


def _run_sim(console: Console, opts: Options, data_dir: Path, t0: float, why: str,
             stack: contextlib.ExitStack) -> dict[str, Any]:
    """The same story with simulated workers and batch system; the daemon is still real."""
    simulated = [f"worker VMs: sim host (a boot takes {opts.boot_delay:g} s)",
                 "batch system: vocloud's sim batch (jobs are timers, nodes register when "
                 "their VM runs)"]
    console.print(f"[yellow]simulating[/] — {why}:")
    for part in simulated:
        console.print(f"  [yellow]simulated[/] {part}")
    console.print("  real: the daemon, its SQLite store, REST API, scheduler and pool controller")
    api = stack.enter_context(demo_daemon(data_dir, {
        "VOCLOUD_BATCH_SYSTEM": "sim", "VOCLOUD_POOL_INTERVAL": "0.5",
        "VOCLOUD_SIM_BOOT_DELAY": f"{opts.boot_delay:g}", "VOCLOUD_SIM_SHUTDOWN_DELAY": "1"},
        console))
    cores, mem = machine()
    image = data_dir / "atlas.img"
    image.write_bytes(b"\0" * (1 << 20))  # the VO's own (empty, raw) image: a sim VM never reads it

    def attrs(vo: str) -> dict[str, str]:
        return {"CPU": str(WORKER_CPUS), "MEMORY": str(WORKER_MIB)}

    name = host_name()
    setup_site(console, api, {"name": name, "vmm": "sim", "cpu": cores, "memory": mem},
               Site(image, attrs, lambda vo: None, nic=False), None, None)
    deadline = time.monotonic() + opts.timeout
    wait_monitored(api, deadline)
    console.print(f"this machine is sim host [bold]{name}[/]: {cores} cores, {mem} MiB")
    batch = SimJobs(data_dir / "batch-sim.json", opts.job_seconds)
    t_submit = _burst(console, batch, opts, "sim batch")
    w = watch(console, api, batch, t0, deadline)
    return summarize(batch.jobs(), api("GET", "/vms", params={"all": True}), w, t0, t_submit,
                     "simulated workers + sim batch", [why, *simulated], time.time())


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # clean up exactly as on Ctrl-C


def run(opts: Options | None = None) -> int:
    """Run the demo; 0 on success. Everything it starts is stopped and removed before it returns."""
    opts = opts or Options()
    console = Console(stderr=opts.json)
    if not console.is_terminal:
        console = Console(stderr=opts.json, width=max(console.width, 150))
    t0 = time.time()
    data_dir = Path(tempfile.mkdtemp(prefix="vocloud-demo-"))
    data_dir.chmod(0o700)  # the store and the guests' run dirs hold the munge key
    console.rule("[bold]vocloud demo: a VO cluster on this machine")
    previous = signal.signal(signal.SIGTERM, _sigterm)
    ok = False
    try:
        with contextlib.ExitStack() as stack:
            why = real_parts_missing(opts)
            summary = None
            if why is None:
                summary, why = _run_real(console, opts, data_dir, t0, stack)
            if summary is None:
                summary = _run_sim(console, opts, data_dir, t0, why or "", stack)
        ok = True
    except (DemoError, RuntimeError, OSError, subprocess.SubprocessError, ClientError) as exc:
        console.print(f"[red]demo failed: {exc.message if isinstance(exc, DemoError) else exc}")
        console.print(f"everything it started is stopped; daemon log kept: {data_dir}/daemon.log")
        return 1
    except KeyboardInterrupt:
        ok = True
        console.print("[yellow]interrupted: everything the demo started is stopped and removed")
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        for entry in data_dir.iterdir() if data_dir.exists() else ():
            if ok or entry.name != "daemon.log":  # a failed run keeps only the log, to read
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        if ok:
            data_dir.rmdir()
    parts = "daemon" if summary["simulated"] else "daemon, workers, taps, bridge, Slurm, munged"
    console.print(f"cleaned up: {parts} and {data_dir} are gone")
    console.rule("[bold]summary")
    for line in summary_lines(summary):
        console.print(line)
    if opts.json:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
