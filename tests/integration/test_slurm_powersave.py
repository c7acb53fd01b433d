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
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, start_daemon, stop_daemon
from tests.support.powersave import (
    HOOK_CLI,
    POWERSAVE_TOML,
    RESUME_TIMEOUT,
    SUSPEND_TIME,
    PowerSaveCluster,
    assert_hooks_ran,
    configure_site,
    write_wrappers,
)
from tests.support.slurm_harness import CLOUD_NODES, SlurmCluster, missing_reason
from vocloud.client import ClientError


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
        with self.daemon.rest() as c:
            while not self.stop.is_set():
                try:
                    running = {v["name"] for v in c.get("/vms") if v["state"] == "RUNNING"}
                except ClientError as exc:
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
    # created as the pool's identity, never with the administrator token the hook holds
    assert (c1["user"], c1["group"]) == ("pool.lhcb", "lhcb")
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
    assert re.search(r"resume c1: vm \d+ created from template lhcb-worker \(VO lhcb, as pool.lhcb\)",
                     log), log
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
            # c2's resume-fail runs alongside (its ResumeTimeout, not after c1's whole story)
            job2 = cluster.sbatch("-p", "cloud", "-w", "c2", "-n1", command="true")
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
