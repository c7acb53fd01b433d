"""The real side of ``vocloud simulate --validate``: a workload slice through the real daemon,
real Slurm and ``sim`` VMs whose slurmd joins Slurm as a real node.

Why: a policy tried in the simulator is only worth what the simulator's model of the site is
worth. This runs the same jobs, compressed in time, through every real part the model stands
for, and records what the simulator records (per-job waits, VM boots, peak workers, idle VM
time), so :mod:`vocloud.sim.validate` can put the two side by side.

What runs (all made here, all removed on the way out; root only):

* this process moves into a network namespace of its own (``demo.netns.private_network``), so the
  bridge, veths and Slurm ports are private and vanish with it;
* a bridge ``valbr<pid>`` with ``10.253.0.1/24``; :class:`~vocloud.devtools.localslurm.LocalSlurm`
  (slurmctld + munged, configless, one feature-NodeSet partition per VO) on that address;
* ``vocloud serve`` (SQLite, ``VOCLOUD_BATCH_SYSTEM=slurm``) with ``sim`` hosts whose boot and
  shutdown delays are the validation's; one pool per VO, 1-core workers, worker shape ``fixed``;
* :class:`ValGuests` plays each worker's guest: when the daemon reports a pool VM RUNNING, it
  starts that VM's ``slurmd -D -Z`` (a dynamic node named like the VM, feature ``vo_<vo>``) in a
  network namespace of its own (``unshare --net``) with a veth on the bridge, so every worker is a
  real node at its own address, as a guest would be; when the VM leaves RUNNING the slurmd is
  killed and the veth deleted (the guest is off);
* the jobs are real ``sbatch -A <vo> -p <vo>`` jobs, submitted at their (compressed) submit times,
  each ``sleep <runtime>``; the job script stamps its start and end with sub-second precision
  (Slurm's own times have a one-second resolution, as large as the effects measured).

A sampler (every 0.2 s) follows the VMs (``GET /vms``) and Slurm's nodes (``sinfo``): peak
workers, when each VM was first seen, RUNNING, registered as a node, and the idle-node time.

Run it as its own process (``python -m vocloud.demo.valreal IN.json OUT.json``): the namespace
switch needs a process without threads.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Console

from vocloud.demo.daemon import demo_daemon
from vocloud.demo.netns import private_network
from vocloud.devtools.localslurm import LocalSlurm, missing_reason
from vocloud.devtools.netbridge import bridge, ip
from vocloud.sim.validate import ValSite

SUBNET = "10.253.0."
SAMPLE_S = 0.2
GUEST_POLL_S = 0.05
IDLE_STATES = ("idle", "drain")  # registered, no job (sinfo %t), as the simulator's idle VM time
_NODE_NAME = re.compile(r"^[a-z][a-z0-9_]*-wn\d+$")


#: Slurm's scheduling passes, compressed like everything else: its defaults (an event-driven pass
#: at most every 2 s, backfill every 30 s) are real seconds, which at x120 would be 4 and 60
#: trace minutes, a latency no site sees; 20 ms and 1 s (the least bf_interval) keep the cycle
#: well under a poll interval, and what is left is measured and reported as "dispatch".
SCHED_PARAMS = "SchedulerParameters=sched_interval=1,sched_min_interval=20000,bf_interval=1"


class ValSlurm(LocalSlurm):
    """LocalSlurm with room for every worker a run boots (each is a dynamic node record) and
    compressed scheduling passes (:data:`SCHED_PARAMS`)."""

    def _write_files(self) -> None:
        super()._write_files()
        text = self.conf.read_text().replace("MaxNodeCount=64", "MaxNodeCount=2048")
        text = re.sub(r"(?m)^SchedulerParameters=.*$", SCHED_PARAMS, text)
        self.conf.write_text(text)


@dataclass(slots=True)
class _Guest:
    proc: subprocess.Popen[bytes]
    veth: str
    addr: str


class ValGuests:
    """Plays the worker guests: one slurmd per RUNNING pool VM (module docstring)."""

    def __init__(self, slurm: LocalSlurm, bridge_name: str) -> None:
        self.slurm, self.bridge = slurm, bridge_name
        self.guests: dict[str, _Guest] = {}
        self.free = [f"{SUBNET}{i}" for i in range(250, 9, -1)]
        self.n = 0
        self.errors: list[str] = []

    def start(self, name: str, vo: str) -> None:
        self.n += 1
        host_side, guest_side = f"valh{self.n}", f"valg{self.n}"
        addr = self.free.pop()
        (self.slurm.root / "spool" / name).mkdir(exist_ok=True)
        conf = f"CPUs=1 RealMemory=200 Feature=vo_{vo}"
        script = (f"until ip link show {guest_side} >/dev/null 2>&1; do sleep 0.02; done; "
                  f"ip link set lo up && ip addr add {addr}/24 dev {guest_side} && "
                  f"ip link set {guest_side} up && exec slurmd -D -Z --conf '{conf}' -N {name}")
        log = (self.slurm.root / "log" / f"guest-{name}.out").open("wb")
        proc = subprocess.Popen(["unshare", "--net", "--", "sh", "-c", script], env=self.slurm.env,
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=self.slurm.root)
        log.close()
        # unshare(2) happens after the fork: a veth moved to the pid's namespace before then
        # would land in ours, and the guest would wait for it forever (a worker that never joins)
        own = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{proc.pid}/ns/net") != own:
                    break
            time.sleep(0.005)
        try:
            ip("link", "add", host_side, "type", "veth", "peer", "name", guest_side, "netns",
               str(proc.pid))
            ip("link", "set", host_side, "master", self.bridge, "up")
        except subprocess.CalledProcessError as exc:
            self.errors.append(f"{name}: {exc.stderr}")
        self.guests[name] = _Guest(proc, host_side, addr)

    def stop(self, name: str) -> None:
        g = self.guests.pop(name, None)
        if g is None:
            return
        if g.proc.poll() is None:
            g.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            g.proc.wait(10)
        ip("link", "del", g.veth, check=False)
        self.free.append(g.addr)

    def stop_all(self) -> None:
        for name in list(self.guests):
            self.stop(name)


@dataclass(slots=True)
class _Record:
    """What the sampler saw (module docstring); times are seconds since the run's t0."""

    seen: dict[str, float] = field(default_factory=dict)
    running: dict[str, float] = field(default_factory=dict)
    joined: dict[str, float] = field(default_factory=dict)
    left: dict[str, float] = field(default_factory=dict)
    idle_node_s: float = 0.0
    idle_until_last_end_s: float = 0.0
    peak_workers: int = 0
    peak_joined: int = 0
    alive: int = 0
    samples: list[tuple[float, int, int, int]] = field(default_factory=list)  # t, alive, joined, idle


def _guest_loop(api: Any, guests: ValGuests, vos: set[str], t0: float, rec: _Record,
                stop: threading.Event) -> None:
    """Follow the VMs (``GET /vms``) and play their guests; its own thread, so a slow ``sinfo``
    never delays a guest's slurmd (that delay would show as boot time the simulator lacks)."""
    while not stop.is_set():
        t = time.time() - t0
        try:
            vms = api("GET", "/vms", params={"all": True})
        except Exception as exc:  # the loop must outlive one failed read
            guests.errors.append(f"GET /vms: {exc}")
            vms = []
        alive = 0
        for v in vms:
            name, state = str(v["name"]), str(v["state"])
            if not _NODE_NAME.match(name) or name.split("-wn")[0] not in vos:
                continue
            rec.seen.setdefault(name, t)
            if state not in ("DONE", "FAILED"):
                alive += 1
            if state == "RUNNING":
                if name not in rec.running:
                    rec.running[name] = t
                    guests.start(name, name.split("-wn")[0])
            elif name in rec.running and name not in rec.left:
                rec.left[name] = t
                guests.stop(name)
        rec.peak_workers = max(rec.peak_workers, alive)
        rec.alive = alive
        stop.wait(GUEST_POLL_S)


def _node_loop(slurm: LocalSlurm, t0: float, rec: _Record, stop: threading.Event) -> None:
    """Sample Slurm's nodes: when each joined, how many are idle (integrated over time)."""
    last = time.time()
    while not stop.is_set():
        nodes = slurm.nodes()
        now = time.time()
        t = now - t0
        joined = idle = 0
        for name, (state, _features) in nodes.items():
            base = state.rstrip("*~#!%$@^-")
            if state.endswith("*") or base.startswith(("down", "unk", "fail")):
                continue
            joined += 1
            rec.joined.setdefault(name, t)
            if base in IDLE_STATES:
                idle += 1
        rec.idle_node_s += idle * (now - last)
        rec.peak_joined = max(rec.peak_joined, joined)
        rec.samples.append((round(t, 3), rec.alive, joined, idle))
        last = now
        stop.wait(SAMPLE_S)


def _stamps(d: Path) -> dict[str, tuple[float, float | None]]:
    out: dict[str, tuple[float, float | None]] = {}
    for f in d.glob("*.s"):
        with contextlib.suppress(ValueError, OSError):
            start = float(f.read_text().strip())
            e = f.with_suffix(".e")
            end = float(e.read_text().strip()) if e.exists() else None
            out[f.stem] = (start, end)
    return out


def run_real(jobs: Sequence[tuple[str, float, float]], site: ValSite, console: Console,
             timeout_s: float) -> dict[str, Any]:
    """Run ``jobs`` (vo, submit s, runtime s; real seconds from the start) on real parts."""
    vos = sorted({vo for vo, _, _ in jobs})
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"vocloud-val-{os.getpid()}"
    work.mkdir(mode=0o700)
    stamps = work / "stamps"
    stamps.mkdir()
    stamps.chmod(0o777)
    with contextlib.ExitStack() as stack:
        br = stack.enter_context(bridge(f"valbr{os.getpid() % 100000}", SUBNET))
        slurm = stack.enter_context(ValSlurm(vos, ctld_addr=SUBNET + "1", min_job_age=3600))
        api = stack.enter_context(demo_daemon(work, {
            "VOCLOUD_BATCH_SYSTEM": "slurm", "SLURM_CONF": str(slurm.conf),
            "VOCLOUD_POOL_INTERVAL": f"{site.poll_s:g}",
            "VOCLOUD_SIM_BOOT_DELAY": f"{site.boot_s:g}",
            "VOCLOUD_SIM_SHUTDOWN_DELAY": f"{site.shutdown_s:g}",
            "VOCLOUD_SCHEDULER_INTERVAL": "0.1", "VOCLOUD_LIFECYCLE_INTERVAL": "0.1",
            "VOCLOUD_BOOT_TIMEOUT": f"{site.boot_timeout_s:g}", "VOCLOUD_LOG_LEVEL": "warning"},
            console))
        guests = ValGuests(slurm, br)
        stack.callback(guests.stop_all)
        for h in range(site.hosts):
            api("POST", "/hosts", json={"name": f"valsim{h + 1}", "vmm": "sim",
                                        "cpu": site.cores_per_host, "memory": site.host_mem_mib})
        api("POST", "/templates", json={"name": "val-worker", "public": True, "template":
                                        f'NAME="val-worker"\nCPU="1"\nMEMORY="{site.vm_mem_mib}"\n'})
        site_vms = site.hosts * site.cores_per_host
        for vo in vos:
            api("POST", "/groups", json={"name": vo})
            api("POST", "/pools", json={
                "vo": vo, "template": "val-worker", "cores": 1, "memory": site.vm_mem_mib,
                "min": 0, "max": site.max_vms or site_vms, "idle_timeout": site.idle_timeout_s,
                "scale_down_delay": site.scale_down_delay_s, "boot_timeout": site.boot_timeout_s,
                "max_boots_per_minute": site.max_boots_per_minute, "worker_shape": "fixed"})
        deadline = time.monotonic() + 60
        while not all(h["state"] == "MONITORED" for h in api("GET", "/hosts")):
            if time.monotonic() > deadline:
                raise TimeoutError(f"sim hosts not MONITORED: {api('GET', '/hosts')}")
            time.sleep(0.2)
        console.print(f"real side: daemon, Slurm on {slurm.conf_server}, {site.hosts} sim hosts "
                      f"x {site.cores_per_host} cores, pools {', '.join(vos)}; {len(jobs)} jobs")
        rec = _Record()
        stop = threading.Event()
        t0 = time.time()
        threads = [threading.Thread(target=_guest_loop, name="val-guests", daemon=True,
                                    args=(api, guests, set(vos), t0, rec, stop)),
                   threading.Thread(target=_node_loop, name="val-nodes", daemon=True,
                                    args=(slurm, t0, rec, stop))]
        for th in threads:
            th.start()
            stack.callback(th.join, 10)
        stack.callback(stop.set)
        submitted: list[dict[str, Any]] = []
        order = sorted(range(len(jobs)), key=lambda i: jobs[i][1])
        for i in order:
            vo, sub, run = jobs[i]
            delay = t0 + sub - time.time()
            if delay > 0:
                time.sleep(delay)
            t_sub = time.time() - t0
            cmd = (f"date +%s.%N > {stamps}/$SLURM_JOB_ID.s; sleep {run:.3f}; "
                   f"date +%s.%N > {stamps}/$SLURM_JOB_ID.e")
            jid = slurm.sbatch("-A", vo, "-p", vo, "-J", f"val{i}", command=cmd)
            submitted.append({"index": i, "vo": vo, "planned_s": sub, "submit_s": t_sub,
                              "runtime_s": run, "job_id": jid})
        deadline = time.monotonic() + timeout_s
        while True:
            st = _stamps(stamps)
            if all(st.get(j["job_id"], (0.0, None))[1] is not None for j in submitted):
                break
            if time.monotonic() > deadline:
                missing = [j["job_id"] for j in submitted if j["job_id"] not in st]
                raise TimeoutError(f"{len(missing)} jobs never finished: {missing[:10]} ...\n"
                                   f"{slurm.log_tail()}")
            time.sleep(0.5)
        t_end = time.time()
        for j in submitted:
            start, end = st[j["job_id"]]
            j["start_s"] = start - t0
            j["end_s"] = (end or start) - t0
        vms = api("GET", "/vms", params={"all": True})
        workers = [v for v in vms if _NODE_NAME.match(str(v["name"]))]
        events = {vo: api("GET", f"/pools/{vo}/events") for vo in vos}
        stop.set()
        for th in threads:
            th.join(10)
        jobinfo = slurm.jobs()
    return {
        "jobs": sorted(submitted, key=lambda j: int(j["index"])),
        "vm_boots": len(workers),
        "workers": {n: {"seen_s": rec.seen.get(n), "running_s": rec.running.get(n),
                        "joined_s": rec.joined.get(n), "left_s": rec.left.get(n)}
                    for n in sorted({str(v["name"]) for v in workers})},
        "peak_workers": rec.peak_workers,
        "peak_joined": rec.peak_joined,
        "idle_node_s": rec.idle_node_s,
        "samples": rec.samples,
        "run_s": t_end - t0,
        "pool_events": {vo: [e["action"] for e in ev] for vo, ev in events.items()},
        "slurm_states": sorted({i.get("JobState", "?") for i in jobinfo.values()}),
        "errors": guests.errors[:20],
    }


@contextlib.contextmanager
def _cleanup_dir(path: Path) -> Iterator[None]:
    try:
        yield
    finally:
        import shutil
        shutil.rmtree(path, ignore_errors=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str]) -> int:
    """``IN.json OUT.json``: IN holds ``jobs`` ([vo, submit, runtime]), ``site`` and ``timeout_s``."""
    if len(argv) != 2:
        print("usage: python -m vocloud.demo.valreal IN.json OUT.json", file=sys.stderr)
        return 2
    why = missing_reason()
    if why is not None:
        Path(argv[1]).write_text(json.dumps({"skipped": why}))
        return 3
    # the caller may have started us in the background (SIGINT ignored) or stop us with SIGTERM:
    # both must unwind the ExitStack, which stops the daemon, Slurm and every guest
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    isolated = private_network()
    if isolated is not None:
        Path(argv[1]).write_text(json.dumps({"skipped": f"no private network namespace: {isolated}"}))
        return 3
    doc = json.loads(Path(argv[0]).read_text())
    site = ValSite(**doc["site"])
    jobs = [(str(vo), float(s), float(r)) for vo, s, r in doc["jobs"]]
    console = Console(stderr=True)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"vocloud-val-{os.getpid()}"
    with _cleanup_dir(work):
        out = run_real(jobs, site, console, float(doc.get("timeout_s", 600)))
    out["site"] = site.to_dict()
    Path(argv[1]).write_text(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
