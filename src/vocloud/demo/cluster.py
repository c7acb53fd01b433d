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
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from rich.console import Console
from rich.live import Live
from rich.table import Table

from vocloud.client import Client, ClientError, wait_healthy
from vocloud.demo.api import Api as _Api
from vocloud.devtools.localprocs import free_port, qemu_pids_under
from vocloud.drivers.net.bridge import bridge_mac
from vocloud.errors import VocloudError

if TYPE_CHECKING:
    from vocloud.devtools.localslurm import LocalSlurm

VOS = ("atlas", "cms")
SUBNETS = tuple(f"10.{n}.0." for n in range(253, 240, -1))  # never the tests' 10.254.0.0/24
WORKER_CPUS = 1
WORKER_MIB = 512
IDLE_TIMEOUT = 5
_WORKER = re.compile(r"^(" + "|".join(VOS) + r")-wn\d+$")
FAILED_JOB_STATES = ("FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT", "BOOT_FAIL", "OUT_OF_MEMORY",
                     "DEADLINE", "PREEMPTED")


@dataclass(frozen=True, slots=True)
class Options:
    """What ``vocloud demo`` was asked for (the CLI's flags)."""

    jobs: dict[str, int] = field(default_factory=lambda: {"atlas": 6, "cms": 3})
    job_seconds: float = 15.0
    sim: bool = False
    boot_delay: float = 3.0  # a simulated worker's boot, seconds
    timeout: float = 900.0
    json: bool = False


@dataclass(frozen=True, slots=True)
class Job:
    """One demo job as the batch system reports it; times are epoch seconds."""

    id: str
    vo: str
    state: str  # PENDING, RUNNING, COMPLETED or a failure state
    submit: float | None
    start: float | None
    end: float | None
    node: str


class Batch(Protocol):
    """The demo's view of a batch system: submit a job, list the demo's jobs."""

    def submit(self, vo: str) -> str: ...

    def jobs(self) -> list[Job]: ...


class DemoError(VocloudError):
    """The demo could not finish; the message says what was awaited and what was seen."""


# -- the daemon, through its REST API ----------------------------------------------------------


@contextlib.contextmanager
def _daemon(data_dir: Path, env_extra: dict[str, str], console: Console) -> Iterator[_Api]:
    """``vocloud serve`` as a subprocess on a fresh SQLite store; SIGTERM on the way out, as an
    init system would, then SIGKILL of any qemu it left (a daemon keeps guests across restarts,
    but the demo's guests must not outlive the demo)."""
    port = free_port()
    # The machine's own VOCLOUD_* settings (a PostgreSQL URL, a port) must not leak in; the
    # accelerator choice and the guest cache are about this machine and may.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("VOCLOUD_") or k in ("VOCLOUD_ACCEL", "VOCLOUD_CACHE")}
    env.update({"VOCLOUD_HOME": str(data_dir), "VOCLOUD_PORT": str(port),
                "VOCLOUD_LOG_LEVEL": "info", "VOCLOUD_MONITOR_INTERVAL": "2",
                "VOCLOUD_SCHEDULER_INTERVAL": "0.5", **env_extra})
    log = (data_dir / "daemon.log").open("ab")
    proc = subprocess.Popen([sys.executable, "-m", "vocloud.app.serve_main"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        if not wait_healthy(url, lambda: proc.poll() is None, 60):
            if proc.poll() is not None:
                raise DemoError(f"the daemon exited ({proc.returncode}); see {data_dir}/daemon.log")
            raise DemoError(f"the daemon did not answer within 60 s; see {data_dir}/daemon.log")
        console.print(f"daemon up: API on {url}, SQLite store in {data_dir}")
        yield _Api(Client(url, (data_dir / "admin.token").read_text().strip(), timeout=30), DemoError)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        log.close()
        left = qemu_pids_under(data_dir)
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while qemu_pids_under(data_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        console.print(f"daemon stopped (exit {proc.returncode})"
                      + (f"; killed {len(left)} qemu it left" if left else ""))


# -- the bridge the workers live on ------------------------------------------------------------


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


CLONE_NEWNET = 0x40000000


def private_network() -> str | None:
    """Move this process (and so everything it starts) into a network namespace of its own;
    ``None`` on success, else why not.

    Why: the demo's bridge and slurmctld's port then cannot collide with a daemon already running
    on this machine (tap names differ anyway: deploy ids carry each store's tag), nor its
    guests reach any network but the demo's bridge; and when the demo's last process exits, the
    kernel deletes whatever network devices are left. Python 3.11 has no ``os.unshare``: libc's.
    """
    if threading.active_count() != 1:
        return "the process already runs threads (unshare applies to one thread only)"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}"
    _ip("link", "set", "dev", "lo", "up")
    return None


def free_subnet() -> str | None:
    """The first ``10.x.0.`` prefix in :data:`SUBNETS` no address or route here uses."""
    used = _ip("-4", "-o", "addr").stdout + _ip("-4", "route").stdout
    for subnet in SUBNETS:
        if subnet not in used:
            return subnet
    return None


def ports_of(bridge: str) -> list[str]:
    """Interfaces enslaved to ``bridge`` (the workers' taps)."""
    out = _ip("-o", "link", "show", "master", bridge, check=False).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]


@contextlib.contextmanager
def _bridge(subnet: str) -> Iterator[str]:
    """A bridge holding ``<subnet>1/24`` with no NAT and no forwarding, removed with its taps."""
    name = f"vcdemo{os.getpid() % 100000}"
    try:
        # a fixed address: an unset one follows the lowest port (vocloud.drivers.net.bridge)
        _ip("link", "add", "name", name, "address", bridge_mac(name), "type", "bridge")
        _ip("addr", "add", f"{subnet}1/24", "dev", name)
        _ip("link", "set", "dev", name, "up")
        yield name
    finally:
        for tap in ports_of(name):
            _ip("link", "del", "dev", tap, check=False)
        _ip("link", "del", "dev", name, check=False)


# -- the two batch systems ---------------------------------------------------------------------


def _slurm_time(text: str | None) -> float | None:
    if not text or text in ("Unknown", "None", "N/A"):
        return None
    try:
        return time.mktime(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


class SlurmJobs:
    """Jobs on the demo's local Slurm; finished jobs are remembered once seen (the summary
    should not depend on how long slurmctld keeps them)."""

    def __init__(self, slurm: LocalSlurm, job_seconds: float) -> None:
        self.slurm = slurm
        self.job_seconds = job_seconds
        self.ids: dict[str, str] = {}
        self.final: dict[str, Job] = {}

    def submit(self, vo: str) -> str:
        limit = max(2, int(self.job_seconds // 60) + 2)
        job = self.slurm.sbatch("-A", vo, "-p", vo, "-J", f"{vo}-job", "-n1", "-c1",
                                "--mem=100", "-t", str(limit),
                                command=f"sleep {self.job_seconds:g}")
        self.ids[job] = vo
        return job

    def jobs(self) -> list[Job]:
        seen = self.slurm.jobs()
        out = []
        for job_id, vo in self.ids.items():
            if job_id in self.final:
                out.append(self.final[job_id])
                continue
            info = seen.get(job_id, {})
            state = info.get("JobState", "PENDING")
            job = Job(job_id, vo, state, _slurm_time(info.get("SubmitTime")),
                      _slurm_time(info.get("StartTime")) if state != "PENDING" else None,
                      _slurm_time(info.get("EndTime")), info.get("BatchHost", ""))
            if state == "COMPLETED" or state in FAILED_JOB_STATES:
                self.final[job_id] = job
            out.append(job)
        return out


class SimJobs:
    """Jobs on vocloud's ``sim`` batch system, shared with the daemon through its JSON file."""

    def __init__(self, path: Path, job_seconds: float) -> None:
        from vocloud.batch.sim import SimBatch

        self.batch = SimBatch(path=path)
        self.job_seconds = job_seconds

    def submit(self, vo: str) -> str:
        return self.batch.submit(vo, cores=WORKER_CPUS, memory=100, runtime=self.job_seconds)

    def jobs(self) -> list[Job]:
        out = []
        for j in self.batch.jobs():
            state = ("CANCELLED" if j.killed else "COMPLETED" if j.ended_at is not None
                     else "RUNNING" if j.started_at is not None else "PENDING")
            out.append(Job(j.id, j.vo, state, j.submit_time, j.started_at, j.ended_at,
                           j.node or ""))
        return out


# -- the live view -----------------------------------------------------------------------------


def _job_counts(jobs: list[Job], vo: str) -> str:
    mine = [j for j in jobs if j.vo == vo]
    queued = sum(1 for j in mine if j.state == "PENDING")
    running = sum(1 for j in mine if j.state in ("RUNNING", "COMPLETING", "CONFIGURING"))
    done = sum(1 for j in mine if j.state == "COMPLETED")
    return f"{queued}/{running}/{done}"


def pool_table(pools: list[dict[str, Any]], jobs: list[Job], last: dict[str, str],
               elapsed: float) -> Table:
    """The pools as ``vocloud pool list`` shows them, plus the demo's jobs and last decision."""
    t = Table(title=f"VO pools, {elapsed:.0f} s", title_justify="left")
    for col in ("VO", "IMAGE", "PENDING", "DESIRED", "BOOTING", "RUNNING", "DRAINING", "IDLE",
                "MIN", "MAX", "JOBS Q/R/D", "LAST DECISION"):
        t.add_column(col, overflow="fold")
    for p in pools:
        t.add_row(p["vo"], p["image"], str(p["pending_jobs"]), str(p["desired"]), str(p["booting"]),
                  str(p["running"]), str(p["draining"]), str(p["idle"]), str(p["min"]),
                  str(p["max"]), _job_counts(jobs, p["vo"]), last.get(p["vo"], ""))
    return t


def _sizes(pools: list[dict[str, Any]]) -> str:
    return " | ".join(f"{p['vo']}: {p['booting']} booting, {p['running']} running, "
                      f"{p['draining']} draining, {p['idle']} idle" for p in pools)


def _event_text(e: dict[str, Any]) -> str:
    return f"{e['action']}" + (f" {e['count']}" if e.get("count") else "") + f": {e['reason']}"


@dataclass
class Watch:
    """What the live loop observed, for the summary."""

    peak: dict[str, int] = field(default_factory=lambda: dict.fromkeys(VOS, 0))
    jobs_done_at: float | None = None
    events: dict[str, list[str]] = field(default_factory=lambda: {vo: [] for vo in VOS})


def watch(console: Console, api: _Api, batch: Batch, t0: float, deadline: float) -> Watch:
    """Refresh the table every second until every job completed and both pools are back to 0
    workers (every worker VM DONE); print each pool decision as it is made."""
    w = Watch()
    seen: set[tuple[Any, ...]] = set()
    last: dict[str, str] = {}
    last_sizes = ""
    interactive = console.is_terminal
    # On a terminal the table refreshes in place; in a log (CI, a pipe) each change of the pool
    # sizes is one line instead, and the table is printed once at the end.
    live = Live(console=console, refresh_per_second=4) if interactive else None
    pools: list[dict[str, Any]] = []
    jobs: list[Job] = []
    try:
        if live is not None:
            live.start()
        while True:
            pools = api("GET", "/pools")
            jobs = batch.jobs()
            for vo in VOS:
                for e in api("GET", f"/pools/{vo}/events", params={"limit": 50}):
                    key = (vo, e["time"], e["action"], e["count"], e["vm_id"], e["reason"])
                    if key in seen:
                        continue
                    seen.add(key)
                    last[vo] = _event_text(e)
                    w.events[vo].append(e["action"])
                    console.print(f"[dim]{time.time() - t0:6.1f} s[/] [bold]{vo}[/] {_event_text(e)}")
            for p in pools:
                w.peak[p["vo"]] = max(w.peak.get(p["vo"], 0),
                                      p["booting"] + p["running"] + p["draining"])
            sizes = _sizes(pools)
            if live is None and sizes != last_sizes:
                console.print(f"[dim]{time.time() - t0:6.1f} s[/] pools: {sizes}")
            last_sizes = sizes
            if live is not None:
                live.update(pool_table(pools, jobs, last, time.time() - t0))
            bad = [j for j in jobs if j.state in FAILED_JOB_STATES]
            if bad:
                raise DemoError(f"job {bad[0].id} ({bad[0].vo}) ended {bad[0].state}")
            if all(j.state == "COMPLETED" for j in jobs):
                w.jobs_done_at = w.jobs_done_at or time.time()
                vms = api("GET", "/vms", params={"all": True})
                workers = [v for v in vms if _WORKER.match(v["name"])]
                empty = all(p["booting"] + p["running"] + p["draining"] + p["idle"] == 0
                            for p in pools)
                if empty and workers and all(v["state"] == "DONE" for v in workers) and all(
                        not api("GET", f"/pools/{vo}")["vms"] for vo in VOS):
                    return w
            if time.monotonic() > deadline:
                states = {j.id: j.state for j in jobs}
                raise DemoError(f"timed out: jobs {states}; pools: {sizes}")
            time.sleep(1)
    finally:
        if live is not None:
            live.stop()
        elif pools:
            console.print(pool_table(pools, jobs, last, time.time() - t0))


# -- setting up the site -----------------------------------------------------------------------


def _policy() -> dict[str, Any]:
    return {"cores": WORKER_CPUS, "memory": WORKER_MIB, "min": 0, "max": 2,
            "idle_timeout": IDLE_TIMEOUT, "scale_down_delay": 0, "boot_timeout": 180}


def _template_text(name: str, attrs: dict[str, str], disk: str | None, nic: bool,
                   context: dict[str, str] | None) -> str:
    lines = [f'NAME="{name}"'] + [f'{k}="{v}"' for k, v in attrs.items()]
    if disk:
        lines.append(f'DISK=[IMAGE="{disk}", TARGET="vda"]')
    if nic:
        lines.append('NIC=[NETWORK="vo"]')
    if context:
        lines.append("CONTEXT=[" + ", ".join(f'{k}="{v}"' for k, v in context.items()) + "]")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Site:
    """How the two VOs' workers boot: their template attributes and the atlas image file."""

    atlas_image: Path
    attrs: Callable[[str], dict[str, str]]  # vo -> template attributes
    context: Callable[[str], dict[str, str] | None]  # vo -> CONTEXT
    nic: bool
    #: the administrator's site template (boot attributes, worker NIC, secret), if any
    site_template: str | None = None


def setup_site(console: Console, api: _Api, host: dict[str, Any], site: Site,
               bridge: str | None, subnet: str | None) -> None:
    """Register what a site admin would: the host, a vnet, two VOs, their templates, pools."""
    api("POST", "/hosts", json=host)
    if bridge and subnet:
        api("POST", "/vnets", json={"template": f'NAME="vo"\nBRIDGE="{bridge}"\n'
                                                f'AR=[IP="{subnet}10", SIZE="8"]\n'})
        console.print(f"vnet [bold]vo[/] on bridge {bridge}: leases {subnet}10-{subnet}17")
    users = {}
    for vo in VOS:
        api("POST", "/groups", json={"name": vo})
        users[vo] = api("POST", "/users", json={"name": f"{vo}-admin", "group": vo})["token"]
    # What only the site decides (how a worker boots, the worker network, the batch secret) is
    # the administrator's own, private site template; the VOs' templates hold the rest, and the
    # workers are created as each VO (docs/pools.md).
    policy = _policy()
    if site.site_template is not None:
        api("POST", "/templates", json={"name": "worker-site", "template": site.site_template})
        policy["site_template"] = "worker-site"
    # cms brings no image: the site's public standard worker template (no disk)
    api("POST", "/templates", json={"name": "std-worker", "public": True, "template": _template_text(
        "std-worker", site.attrs("cms"), None, site.nic, site.context("cms"))})
    # atlas brings its own: an image and a template owned by the VO
    atlas = api.as_user(users["atlas"])
    atlas.upload("atlas-img", site.atlas_image)  # a VO brings its image by uploading its bytes
    atlas("POST", "/templates", json={"name": "atlas-wn", "template": _template_text(
        "atlas-wn", site.attrs("atlas"), "atlas-img", site.nic, site.context("atlas"))})
    console.print("VOs [bold]atlas[/] (own image atlas-img, template atlas-wn) and [bold]cms[/] "
                  "(public standard template std-worker)")
    api("POST", "/pools", json={"vo": "atlas", "template": "atlas-wn", **policy})
    api("POST", "/pools", json={"vo": "cms", "template": "std-worker", **policy})
    console.print(f"pools: min 0, max 2, {WORKER_CPUS} core / {WORKER_MIB} MiB per worker, "
                  f"idle timeout {IDLE_TIMEOUT} s")


def _wait_monitored(api: _Api, deadline: float) -> dict[str, Any]:
    while True:
        hosts = api("GET", "/hosts")
        if hosts and all(h["state"] == "MONITORED" for h in hosts):
            return dict(hosts[0])
        if hosts and any(h["state"] == "ERROR" for h in hosts):
            raise DemoError(f"host {hosts[0]['name']} is in ERROR: {hosts[0]['error']}")
        if time.monotonic() > deadline:
            raise DemoError(f"the host was not MONITORED in time: {hosts}")
        time.sleep(0.5)


def _host_name() -> str:
    name = socket.gethostname().split(".")[0] or "localhost"
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name)


# -- the summary -------------------------------------------------------------------------------


def summarize(jobs: list[Job], vms: list[dict[str, Any]], w: Watch, t0: float, t_submit: float,
              mode: str, simulated: list[str]) -> dict[str, Any]:
    """The numbers the demo ends with (also ``--json``)."""
    waits = [j.start - j.submit for j in jobs if j.start is not None and j.submit is not None]
    workers = [v for v in vms if _WORKER.match(v["name"])]
    booted = {vo: sum(1 for v in workers if v["name"].startswith(f"{vo}-wn") and v.get("started_at"))
              for vo in VOS}
    return {
        "mode": mode,
        "simulated": simulated,
        "jobs_submitted": {vo: sum(1 for j in jobs if j.vo == vo) for vo in VOS},
        "jobs_run": {vo: sum(1 for j in jobs if j.vo == vo and j.state == "COMPLETED") for vo in VOS},
        "jobs_on_own_vo_worker": sum(1 for j in jobs if j.node.startswith(f"{j.vo}-wn")),
        "vms_booted": booted,
        "vms_booted_total": sum(booted.values()),
        "vms_done": sum(1 for v in workers if v["state"] == "DONE"),
        "peak_workers": dict(w.peak),
        "wait_mean_s": round(sum(waits) / len(waits), 1) if waits else None,
        "wait_max_s": round(max(waits), 1) if waits else None,
        "jobs_done_after_s": round((w.jobs_done_at or time.time()) - t_submit, 1),
        "pools_back_to_zero_after_s": round(time.time() - t_submit, 1),
        "total_s": round(time.time() - t0, 1),
    }


def _print_summary(console: Console, s: dict[str, Any]) -> None:
    console.rule("[bold]summary")
    run = ", ".join(f"{vo} {s['jobs_run'][vo]}/{s['jobs_submitted'][vo]}" for vo in VOS)
    vms = ", ".join(f"{vo} {s['vms_booted'][vo]}" for vo in VOS)
    console.print(f"jobs run: {run} ({s['jobs_on_own_vo_worker']} on a worker of their own VO)")
    console.print(f"VMs booted: {s['vms_booted_total']} ({vms}); peak workers "
                  + ", ".join(f"{vo} {n}" for vo, n in s["peak_workers"].items())
                  + f"; all {s['vms_done']} DONE, pools back to 0")
    console.print(f"job wait (submit -> start): mean {s['wait_mean_s']} s, max {s['wait_max_s']} s")
    console.print(f"all jobs done {s['jobs_done_after_s']} s after the burst, pools empty after "
                  f"{s['pools_back_to_zero_after_s']} s; demo total {s['total_s']} s ({s['mode']})")


# -- the two ways to run it --------------------------------------------------------------------


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
    bridge = stack.enter_context(_bridge(subnet))
    bridge_ip = subnet + "1"
    console.print(f"bridge {bridge} with {bridge_ip}/24 (no NAT, no forwarding)")
    slurm = stack.enter_context(LocalSlurm(VOS, ctld_addr=bridge_ip))
    console.print(f"local Slurm: slurmctld on {slurm.conf_server} (configless), partitions "
                  f"{', '.join(VOS)} (feature NodeSets vo_<vo>), own munged; in {slurm.root}")
    api = stack.enter_context(_daemon(data_dir, {
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
    name = _host_name()
    setup_site(console, api, {"name": name, "vmm": "qemu"},
               Site(base.base_disk, attrs, context, nic=False, site_template=site_template),
               bridge, subnet)
    deadline = time.monotonic() + opts.timeout
    host = _wait_monitored(api, deadline)
    accel = host["attrs"].get("ACCEL", "?")
    console.print(f"this machine is qemu host [bold]{name}[/]: {host['total_cpu']:g} cores, "
                  f"{host['total_mem']} MiB; workers boot under {accel} "
                  f"({host['attrs'].get('ACCEL_REASON', '')})")
    batch = SlurmJobs(slurm, opts.job_seconds)
    t_submit = _burst(console, batch, opts, "sbatch -A <vo> -p <vo>")
    w = watch(console, api, batch, t0, deadline)
    return summarize(batch.jobs(), api("GET", "/vms", params={"all": True}), w, t0, t_submit,
                     "qemu workers + local Slurm", []), None


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
    api = stack.enter_context(_daemon(data_dir, {
        "VOCLOUD_BATCH_SYSTEM": "sim", "VOCLOUD_POOL_INTERVAL": "0.5",
        "VOCLOUD_SIM_BOOT_DELAY": f"{opts.boot_delay:g}", "VOCLOUD_SIM_SHUTDOWN_DELAY": "1"},
        console))
    cores = os.cpu_count() or 1
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    image = data_dir / "atlas.img"
    image.write_bytes(b"\0" * (1 << 20))  # the VO's own (empty, raw) image: a sim VM never reads it

    def attrs(vo: str) -> dict[str, str]:
        return {"CPU": str(WORKER_CPUS), "MEMORY": str(WORKER_MIB)}

    name = _host_name()
    setup_site(console, api, {"name": name, "vmm": "sim", "cpu": cores, "memory": int(mem)},
               Site(image, attrs, lambda vo: None, nic=False), None, None)
    deadline = time.monotonic() + opts.timeout
    _wait_monitored(api, deadline)
    console.print(f"this machine is sim host [bold]{name}[/]: {cores} cores, {mem} MiB")
    batch = SimJobs(data_dir / "batch-sim.json", opts.job_seconds)
    t_submit = _burst(console, batch, opts, "sim batch")
    w = watch(console, api, batch, t0, deadline)
    return summarize(batch.jobs(), api("GET", "/vms", params={"all": True}), w, t0, t_submit,
                     "simulated workers + sim batch", [why, *simulated])


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
    _print_summary(console, summary)
    if opts.json:
        print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(run())
