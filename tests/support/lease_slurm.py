"""A real Slurm cluster whose nodes are network-namespace hosts, for host leases.

Each node is a :class:`~tests.support.netns.NetnsHost` (its own address, its own sshd) running
``slurmd -D -N <name>`` inside its namespace (``nsenter --net``), so a batch job's processes
live in that namespace and see the daemon exactly as a real compute node sees its cloud's
front-end: at one address over the network. slurmctld runs in the root namespace and listens
on the *hub* address (the root side of the first host's veth); every namespace gets a route to
the hub through its own veth, and that is all it can reach. The vocloud daemon under test
listens on the hub address too.

Everything runs as root in a temp dir; every process carries ``VOCLOUD_LEASE_SLURM=<root>`` and
:meth:`LeaseSlurm.stop` SIGKILLs all of them (slurmstepd and job scripts outlive slurmd).
``KillWait`` is 30 s, Slurm's default, which is the agent's grace period after SIGTERM.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from tests.support.netns import NetnsHost, sh
from tests.support.ports import free_ports
from tests.support.procs import processes_with_env
from vocloud.devtools.localprocs import kill_all, poll_until, tail_files
from vocloud.devtools.localslurm import private_conf

MARKER = "VOCLOUD_LEASE_SLURM"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol")
T = TypeVar("T")


def missing_reason() -> str | None:
    absent = [b for b in BINARIES if shutil.which(b) is None]
    if absent:
        return f"Slurm not installed ({', '.join(absent)} missing): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "slurmd and namespaces need root"
    return None


class LeaseSlurm:
    """slurmctld on the hub address, one slurmd per namespace host, partition ``lease``."""

    def __init__(self, hosts: Sequence[NetnsHost], cpus: int = 2, mem_mib: int = 1000) -> None:
        self.hosts = list(hosts)
        self.hub = self.hosts[0].peer
        self.cpus, self.mem_mib = cpus, mem_mib
        self.root = Path(tempfile.mkdtemp(prefix="vocloud-lease-slurm-"))
        self.conf = self.root / "slurm.conf"
        self.munge_socket = self.root / "run" / "munge.socket"
        self.ctld_port, self.slurmd_port = free_ports(2)
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("SLURM_", "SQUEUE_", "SINFO_", "SBATCH_"))}
        self.env.update({"SLURM_CONF": str(self.conf), MARKER: str(self.root)})
        self._procs: list[subprocess.Popen[bytes]] = []

    def node(self, h: NetnsHost) -> str:
        return f"ln{h.index}"

    def start(self) -> None:
        try:
            for h in self.hosts[1:]:  # the first host's veth peer *is* the hub
                sh("ip", "-n", h.netns, "route", "replace", f"{self.hub}/32", "via", h.peer)
            self._write_files()
            subprocess.run(
                ["munged", "--force", f"--socket={self.munge_socket}",
                 f"--key-file={self.root}/munge/munge.key", f"--pid-file={self.root}/run/munged.pid",
                 f"--seed-file={self.root}/munge/seed", f"--log-file={self.root}/log/munged.log"],
                env=self.env, check=True, capture_output=True, timeout=30)
            self._spawn("slurmctld", ["slurmctld", "-D"])
            self.wait_for(lambda: "UP" in self.try_run("scontrol", "ping"), 30, "slurmctld")
            for h in self.hosts:
                self._spawn(f"slurmd-{self.node(h)}",
                            ["nsenter", f"--net=/run/netns/{h.netns}", "slurmd", "-D", "-N",
                             self.node(h)])
            self.wait_for(self._all_idle, 60, "the namespace nodes to register idle")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        def alive() -> list[int]:
            return processes_with_env(MARKER, str(self.root)) + [
                p.pid for p in self._procs if p.poll() is None]

        kill_all(alive, 10, interval=0.1)
        for h in self.hosts[1:]:
            sh("ip", "-n", h.netns, "route", "del", f"{self.hub}/32", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def _write_files(self) -> None:
        self.root.chmod(0o755)
        for sub in ("munge", "run", "state", "log", "spool"):
            (self.root / sub).mkdir()
        (self.root / "munge").chmod(0o700)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        lines = [
            "ClusterName=vocloudlease",
            f"SlurmctldHost=localhost({self.hub})",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            *private_conf(self.root, self.munge_socket),
            "SlurmdParameters=config_overrides",
            "SlurmdTimeout=30",
            "KillWait=30",
            "MinJobAge=300",
        ]
        for h in self.hosts:
            lines.append(f"NodeName={self.node(h)} NodeHostname=localhost NodeAddr={h.address} "
                         f"CPUs={self.cpus} RealMemory={self.mem_mib}")
        names = ",".join(self.node(h) for h in self.hosts)
        lines.append(f"PartitionName=lease Nodes={names} Default=YES MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")

    def _spawn(self, name: str, argv: list[str]) -> None:
        with (self.root / "log" / f"{name}.out").open("wb") as log:
            self._procs.append(subprocess.Popen(argv, env=self.env, stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                cwd=self.root))

    def _all_idle(self) -> bool:
        out = self.try_run("sinfo", "-h", "-N", "-o", "%N %t")
        states = dict(line.split() for line in out.splitlines() if line.strip())
        return all(states.get(self.node(h)) == "idle" for h in self.hosts)

    def try_run(self, *argv: str) -> str:
        proc = subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=30,
                              check=False, cwd=self.root)
        return proc.stdout if proc.returncode == 0 else ""

    def run(self, *argv: str) -> str:
        proc = subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=60,
                              check=False, cwd=self.root)
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr}\n"
                                 f"{self.log_tail()}")
        return proc.stdout

    def job_state(self, job: str) -> str:
        out = self.try_run("squeue", "-h", "-o", "%T", "-j", job)
        return out.strip() or "GONE"

    def wait_for(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        return poll_until(check, timeout, what, self.log_tail)

    def log_tail(self, lines: int = 15) -> str:
        return tail_files(sorted((self.root / "log").glob("*")), lines)
