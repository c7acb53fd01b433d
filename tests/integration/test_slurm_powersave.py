"""Slurm's own power saving drives vocloud: ResumeProgram/SuspendProgram/ResumeFailProgram are
the wrapper scripts ``vocloud slurm wrappers`` writes, and they call ``vocloud slurm ...`` against
a real ``vocloud serve`` (sim hosts).

The guest is faked honestly: a watcher thread plays the worker image's init. When the daemon
reports a VM named like a CLOUD node as RUNNING, it starts that node's ``slurmd -D -b -N <node>``
(``-b``: a fresh boot, which a power-up needs); when the VM leaves RUNNING it kills that slurmd
(the guest is off). So a node can register only while its VM exists, as with real guests.

The Slurm harness is reused as it is, with ``slurm.conf`` edited after it is written: the
power-saving programs replaced, short ``SuspendTime``/``ResumeTimeout``, and power saving
checked every second. Every process is cleaned up by the harness (its marker variable is in
the fake guests' environment too) and by the daemon fixture, even when a test fails.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from tests.support.cli import Daemon, clean_env, start_daemon, stop_daemon
from tests.support.slurm_harness import CLOUD_NODES, SlurmCluster, missing_reason

SUSPEND_TIME = 4
RESUME_TIMEOUT = 12
HOOK_CLI = [sys.executable, "-m", "vocloud.cli.slurm_hook"]
POWERSAVE_TOML = '[[node]]\nprefix = "c"\nvo = "lhcb"\n'


class PowerSaveCluster(SlurmCluster):
    """The harness's cluster, its power-saving programs pointing at vocloud's wrappers.

    ``parameters`` are added to ``SlurmctldParameters`` (e.g. ``enable_configless`` for guests
    that fetch their configuration, ``cloud_reg_addrs`` for nodes whose address is learnt when
    their slurmd registers).
    """

    def __init__(self, hooks: Path, resume_timeout: int = RESUME_TIMEOUT,
                 parameters: Sequence[str] = ()) -> None:
        super().__init__()
        self.hooks = hooks
        self.resume_timeout = resume_timeout
        self.parameters = tuple(parameters)

    def _write_files(self) -> None:
        super()._write_files()
        programs = {"ResumeProgram": "resume.sh", "SuspendProgram": "suspend.sh",
                    "ResumeFailProgram": "resume-fail.sh"}
        params = ",".join(("power_save_interval=1", "power_save_min_interval=0", *self.parameters))
        settings = {**{k: str(self.hooks / v) for k, v in programs.items()},
                    "SuspendTime": str(SUSPEND_TIME), "ResumeTimeout": str(self.resume_timeout),
                    "SuspendTimeout": "5", "SlurmctldParameters": params}
        lines = [ln for ln in self.conf.read_text().splitlines()
                 if ln.split("=", 1)[0] not in settings]
        lines += [f"{k}={v}" for k, v in settings.items()]
        self.conf.write_text("\n".join(lines) + "\n")


class FakeGuests:
    """Plays the worker image: slurmd up while the node's VM is RUNNING (module docstring)."""

    def __init__(self, cluster: SlurmCluster, daemon: Daemon, refuse: frozenset[str] = frozenset()):
        self.cluster, self.daemon, self.refuse = cluster, daemon, refuse
        self.slurmd: dict[str, subprocess.Popen[bytes]] = {}
        self.started_at: dict[str, float] = {}  # node -> when its VM was first seen RUNNING
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._loop, name="fake-guests", daemon=True)

    def __enter__(self) -> FakeGuests:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        for proc in self.slurmd.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    def _loop(self) -> None:
        with httpx.Client(base_url=f"{self.daemon.url}/api/v1", timeout=10,
                          headers={"Authorization": f"Bearer {self.daemon.token}"}) as c:
            while not self.stop.is_set():
                try:
                    running = {v["name"] for v in c.get("/vms").json() if v["state"] == "RUNNING"}
                except httpx.HTTPError as exc:
                    self.errors.append(str(exc))
                    running = set()
                for node in CLOUD_NODES:
                    proc = self.slurmd.get(node)
                    alive = proc is not None and proc.poll() is None
                    if node in running and not alive and node not in self.refuse:
                        self.started_at.setdefault(node, time.time())
                        log = (self.cluster.root / "log" / f"guest-{node}.out").open("ab")
                        self.slurmd[node] = subprocess.Popen(
                            ["slurmd", "-D", "-b", "-N", node], env=self.cluster.env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            cwd=self.cluster.root)
                        log.close()
                    elif node not in running and alive and proc is not None:
                        proc.kill()  # the guest powered off
                        proc.wait(10)
                self.stop.wait(0.2)


@pytest.fixture
def slurm_available() -> None:
    """Skip (or, with ``VOCLOUD_REQUIRE_SLURM=1``, fail) before anything is started."""
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("VOCLOUD_REQUIRE_SLURM"):
            pytest.fail(reason)
        pytest.skip(reason)


def configure_site(d: Daemon, host: Sequence[str], template: str, cores: int = 2,
                   memory: int = 1000, powersave: str = POWERSAVE_TOML,
                   pool_template: str | None = None) -> None:
    """Host ``host`` (``vocloud host create`` arguments), VO ``lhcb`` with the public template
    ``template`` and its pool (the workers' shape), ``powersave.toml``, and the ``vocloud.toml``
    the hooks find the daemon's port in. ``pool_template``: the pool's own template (named
    ``lhcb-pool``) when ``template`` holds what a pool template may not (docs/pools.md)."""
    d.ok("host", "create", *host)
    d.ok("group", "create", "lhcb")
    pool_name = "lhcb-worker"
    for text in (template, pool_template):
        if text is None:
            continue
        tmpl = d.data_dir.parent / "lhcb.tmpl"
        tmpl.write_text(text)
        d.ok("template", "create", str(tmpl), "--public")
        pool_name = "lhcb-worker" if text is template else "lhcb-pool"
    d.ok("pool", "create", "lhcb", "--template", pool_name, "--cores", str(cores), "--memory",
         str(memory), "--min", "0", "--max", "2")
    (d.data_dir / "powersave.toml").write_text(powersave)
    # the daemon got its port on the command line; a site's daemon reads it from here, and
    # so do the hooks (they see nothing but the data directory)
    (d.data_dir / "vocloud.toml").write_text(f"port = {d.url.rsplit(':', 1)[1]}\n")
    d.wait_for(f"host {host[0]} monitored",
               lambda: d.api("GET", f"/hosts/{host[0]}")["state"] == "MONITORED", timeout=30)


def write_wrappers(d: Daemon, hooks: Path) -> Path:
    """``vocloud slurm wrappers HOOKS --data-dir <the daemon's>``; returns the resolved directory."""
    out = subprocess.run([*HOOK_CLI, "wrappers", str(hooks), "--data-dir", str(d.data_dir)],
                         env=clean_env(d.home), capture_output=True, text=True, timeout=60, check=True)
    assert f"ResumeProgram={hooks.resolve()}/resume.sh" in out.stdout
    return hooks.resolve()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Daemon]:
    """A daemon (no batch system: power saving alone decides) with one sim host, VO ``lhcb``,
    its pool (template and shape for the workers) and ``powersave.toml`` mapping ``c*``."""
    d = start_daemon(tmp_path)
    try:
        configure_site(d, ("sim1", "--vmm", "sim", "--cpu", "8", "--memory", "16G"),
                       'NAME="lhcb-worker"\nCPU=1\nMEMORY=512\n')
        yield d
    finally:
        stop_daemon(d)


def assert_hooks_ran(cluster: SlurmCluster, d: Daemon, c1: object, c2: object = None) -> str:
    """slurmctld ran every hook cleanly, and the hooks logged: resume + suspend of c1's VM ``c1``,
    resume-fail of c2's VM (id ``c2``, or any). Returns the power-saving log."""
    # slurmctld runs its programs with stdout/stderr closed: a hook that crashed on printing
    # after doing its work would show here as "program exit status of 1"
    ctld = (cluster.root / "log" / "slurmctld.log").read_text()
    assert "power_save: program exit status" not in ctld, ctld[-3000:]
    log = (d.data_dir / "slurm-powersave.log").read_text()
    assert re.search(rf"resume c1: vm {c1} created", log), log
    assert re.search(rf"suspend c1: vm {c1} terminate ", log), log
    assert re.search(rf"resume-fail c2: vm {c2 or '[0-9]+'} terminate-hard", log), log
    return log


def _hook(d: Daemon, verb: str, hostlist: str) -> subprocess.CompletedProcess[str]:
    """Run a hook the way slurmctld does: ``env -i``-like environment, hostlist as argv[1]."""
    env = {"PATH": "/usr/bin:/bin"}
    return subprocess.run([*HOOK_CLI, verb, "--data-dir", str(d.data_dir), hostlist], env=env,
                          capture_output=True, text=True, timeout=60, check=False)


def _vms(d: Daemon, name: str) -> list[dict[str, object]]:
    return [v for v in d.api("GET", "/vms", params={"all": "true"}) if v["name"] == name]


def test_hooks_without_slurm_are_idempotent_and_fail_in_one_line(site: Daemon) -> None:
    """The commands alone, in slurmctld's bare environment: no Slurm needed."""
    d = site
    r = _hook(d, "resume", "c[1-2]")
    assert r.returncode == 0, r.stderr
    [c1], [_c2] = _vms(d, "c1"), _vms(d, "c2")
    assert c1["cpu"] == 2 and c1["memory"] == 1000  # the pool's shape, not the template's
    again = _hook(d, "resume", "c1,c2")  # Slurm may resume twice: no second VM
    assert again.returncode == 0 and "is " in again.stdout
    assert len(_vms(d, "c1")) == 1 and len(_vms(d, "c2")) == 1

    bad = _hook(d, "resume", "x1,c1")  # x1 is mapped by no rule; c1 still handled
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "x1" in bad.stderr and "Traceback" not in bad.stderr
    assert _hook(d, "resume", "c[1-").returncode == 2

    d.wait_for("c1 running", lambda: _vms(d, "c1")[0]["state"] == "RUNNING")
    assert _hook(d, "suspend", "c1").returncode == 0
    assert _hook(d, "suspend", "c1").returncode == 0  # already shutting down / gone: success
    assert _hook(d, "resume-fail", "c2").returncode == 0
    assert _hook(d, "suspend", "c9").returncode == 0  # no VM at all: already "powered down"
    d.wait_for("both VMs DONE", lambda: all(v["state"] == "DONE" for n in ("c1", "c2")
                                            for v in _vms(d, n)))
    log = (d.data_dir / "slurm-powersave.log").read_text()
    assert re.search(r"resume c1: vm \d+ created from template lhcb-worker", log)
    assert re.search(r"resume-fail c2: vm \d+ terminate-hard", log)
    assert "resume FAILED x1: no powersave rule" in log

    # the token is the one credential: a wrong one is a one-line failure, exit 2
    (d.data_dir / "powersave.toml").write_text(f'token_file = "{d.data_dir}/nope"\n' + POWERSAVE_TOML)
    r = _hook(d, "resume", "c1")
    assert r.returncode == 2 and "cannot read the vocloud token" in r.stderr


def test_slurm_power_saving_boots_and_stops_vms(slurm_available: None, site: Daemon,
                                                tmp_path: Path) -> None:
    d = site
    cluster = PowerSaveCluster(write_wrappers(d, tmp_path / "hooks"))
    cluster.start()
    try:
        with FakeGuests(cluster, d, refuse=frozenset({"c2"})) as guests:
            # -- resume: sbatch -> ResumeProgram -> VM -> guest slurmd -> job runs and completes
            t0 = time.time()
            job = cluster.sbatch("-p", "cloud", "-w", "c1", "-n1", command="sleep 1")
            assert cluster.run("sinfo", "-h", "-N", "-n", "c1", "-o", "%t").strip() != "idle"
            vm = cluster.wait_for(lambda: next(iter(_vms(d, "c1")), None), 30, "a VM named c1")
            created = time.time() - t0
            cluster.wait_for(lambda: "COMPLETED" in cluster.run("scontrol", "show", "job", job),
                             RESUME_TIMEOUT + 30, f"job {job} to complete on c1")
            completed = time.time() - t0
            assert guests.started_at["c1"] >= t0  # the node registered only after its VM ran
            # -- suspend: idle for SuspendTime -> SuspendProgram -> VM terminated (DONE)
            cluster.wait_for(lambda: _vms(d, "c1")[0]["state"] == "DONE", SUSPEND_TIME + 40,
                             "c1's VM to be DONE after SuspendTime")
            done = time.time() - t0
            cluster.wait_for(lambda: cluster.run("sinfo", "-h", "-N", "-n", "c1", "-o", "%t")
                             .strip().endswith("~"), 30, "c1 to be powered down")
            assert len(_vms(d, "c1")) == 1  # one boot for one job

            # -- resume-fail: c2's guest never starts slurmd -> ResumeTimeout -> terminate-hard
            job2 = cluster.sbatch("-p", "cloud", "-w", "c2", "-n1", command="true")
            cluster.wait_for(lambda: next(iter(_vms(d, "c2")), None), 30, "a VM named c2")
            cluster.wait_for(lambda: all(v["state"] == "DONE" for v in _vms(d, "c2")),
                             RESUME_TIMEOUT + 40, "c2's VM to be removed by ResumeFailProgram")
            cluster.run("scancel", job2)
            assert not guests.errors[-3:], guests.errors
        log = assert_hooks_ran(cluster, d, vm["id"])
        print(f"\nsbatch -> VM c1 seen {created:.1f} s, guest slurmd started "
              f"{guests.started_at['c1'] - t0:.1f} s, job COMPLETED {completed:.1f} s, "
              f"VM DONE {done:.1f} s (SuspendTime {SUSPEND_TIME} s)\nslurm-powersave.log:\n{log}")
    finally:
        cluster.stop()
