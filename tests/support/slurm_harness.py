"""A real, throwaway Slurm cluster on loopback for integration tests (Debian's ``slurm-wlm``).

Topology (what runs, all as root, all inside one temp dir under /tmp):

* ``munged --force`` with its own key, socket, pid, seed and log files; ``slurm.conf`` points
  Slurm at that socket (``AuthInfo=socket=...``), so the machine's own munge is never touched.
* ``slurmctld -D`` on a free loopback port.
* Two static nodes ``n1`` and ``n2`` (2 CPUs, 1000 MiB each), each a real ``slurmd -D -N name`` with
  ``NodeHostname=localhost`` and a distinct ``Port=``. Debian's Slurm is not built with
  ``--enable-multiple-slurmd``, yet ``-N`` plus per-node ports and per-node spool/pid files
  (``%n``) is enough for 22.05: both daemons register and run jobs. ``SlurmdParameters=
  config_overrides`` makes the configured CPUs/memory win over what the machine has, so the same
  topology works on a 1-CPU runner.
* Two ``State=CLOUD`` nodes ``c1``, ``c2`` in partition ``cloud``, with power saving on: the
  ResumeProgram starts ``slurmd -b -N <node>`` (``-b``: report the node as just booted, which a
  power-up requires), the SuspendProgram kills that slurmd. That is the elastic-cloud life cycle
  in miniature, without VMs.
* Partitions ``batch`` (default) and ``grid`` over ``n1,n2``, ``cloud`` over ``c1,c2``.
* ``MaxNodeCount`` leaves room for a dynamic node (``slurmd -Z``, :meth:`add_dynamic_node`).

Cleanup does not trust pid files: every process the harness starts (and everything those start,
down to ``slurmstepd`` and job scripts, which outlive a killed slurmd) carries the environment
variable ``VOCLOUD_SLURM_HARNESS=<root>``; teardown SIGKILLs every process whose environment has
it, then removes the directory. slurmctld gives its ResumeProgram a fresh environment, so the
script exports the marker itself before it starts a cloud node's slurmd.

Missing binaries (or not root) skip the tests with the reason; ``VOCLOUD_REQUIRE_SLURM=1``
turns that skip into a failure, for CI machines that must run them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from tests.support.ports import free_ports
from tests.support.procs import processes_with_env
from vocloud.devtools.localprocs import kill_all, poll_until, tail_files
from vocloud.devtools.localslurm import private_conf

MARKER = "VOCLOUD_SLURM_HARNESS"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")
STATIC_NODES = ("n1", "n2")
CLOUD_NODES = ("c1", "c2")
NODE_CPUS = 2
NODE_MEM_MIB = 1000

T = TypeVar("T")


def missing_reason() -> str | None:
    """Why this machine cannot run the harness, or ``None`` if it can."""
    absent = [b for b in BINARIES if shutil.which(b) is None]
    if absent:
        return f"Slurm not installed ({', '.join(absent)} missing): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "the Slurm harness runs slurmd, which needs root"
    return None


def processes_with_marker(value: str) -> list[int]:
    """Pids whose environment carries ``MARKER=value`` (our daemons and all they spawned)."""
    return processes_with_env(MARKER, value)


class SlurmCluster:
    """One running cluster; ``env`` is what a Slurm client command needs to reach it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vocloud-slurm-"))
        self.conf = self.root / "slurm.conf"
        ports = free_ports(2 + len(STATIC_NODES) + len(CLOUD_NODES))
        self.ctld_port, self.slurmd_port = ports[0], ports[1]
        self.node_ports = dict(zip(STATIC_NODES + CLOUD_NODES, ports[2:], strict=True))
        self.munge_socket = self.root / "run" / "munge.socket"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), MARKER: str(self.root)}
        for var in [k for k in self.env if k.startswith(("SLURM_", "SQUEUE_", "SINFO_", "SBATCH_"))]:
            if var != "SLURM_CONF":
                del self.env[var]
        self._procs: list[subprocess.Popen[bytes]] = []

    # -- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self._write_files()
            self._start_munge()
            self._spawn("slurmctld", ["slurmctld", "-D"])
            self.wait_for(lambda: "UP" in self._try("scontrol", "ping"), 30, "slurmctld to answer")
            for node in STATIC_NODES:
                self._spawn(f"slurmd-{node}", ["slurmd", "-D", "-N", node])
            self.wait_for(self._static_nodes_idle, 60, "n1 and n2 to register idle")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Kill everything the cluster started (SIGKILL: nothing here holds state worth saving)."""
        def alive() -> list[int]:  # poll() reaps the children among them
            return processes_with_marker(str(self.root)) + [
                p.pid for p in self._procs if p.poll() is None]

        kill_all(alive, 10, interval=0.1)
        shutil.rmtree(self.root, ignore_errors=True)

    def _write_files(self) -> None:
        self.root.chmod(0o755)  # munged wants its socket's parents searchable by all
        for sub in ("munge", "run", "state", "log", "spool"):
            (self.root / sub).mkdir()
        (self.root / "munge").chmod(0o700)
        (self.root / "run").chmod(0o755)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        for node in STATIC_NODES + CLOUD_NODES:
            (self.root / "spool" / node).mkdir()
        resume = self.root / "resume.sh"
        resume.write_text(
            "#!/bin/sh\n# ResumeProgram: 'boot' each node by starting its slurmd (-b: fresh boot)\n"
            "# slurmctld runs this with an environment of its own: re-add what teardown looks for\n"
            f"export {MARKER}={self.root} SLURM_CONF={self.conf}\n"
            f"for n in $(scontrol show hostnames \"$1\"); do slurmd -b -N \"$n\" "
            f">>{self.root}/log/resume.out 2>&1; done\n")
        suspend = self.root / "suspend.sh"
        suspend.write_text(
            "#!/bin/sh\n# SuspendProgram: 'power off' each node by killing its slurmd\n"
            f"for n in $(scontrol show hostnames \"$1\"); do "
            f"[ -f {self.root}/run/slurmd-$n.pid ] && kill -9 $(cat {self.root}/run/slurmd-$n.pid); "
            "done; exit 0\n")
        resume.chmod(0o755)
        suspend.chmod(0o755)
        lines = [
            "ClusterName=vocloudtest",
            "SlurmctldHost=localhost",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            *private_conf(self.root, self.munge_socket),
            "SlurmdParameters=config_overrides",
            "MaxNodeCount=8",  # room for dynamic nodes (slurmd -Z)
            "SlurmdTimeout=30",
            # power saving, for the CLOUD nodes only
            f"ResumeProgram={resume}",
            f"SuspendProgram={suspend}",
            "SuspendTime=3600",
            "SuspendTimeout=10",
            "ResumeTimeout=60",
            f"SuspendExcNodes={','.join(STATIC_NODES)}",
        ]
        for node in STATIC_NODES:
            lines.append(f"NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 "
                         f"Port={self.node_ports[node]} CPUs={NODE_CPUS} RealMemory={NODE_MEM_MIB}")
        for node in CLOUD_NODES:
            lines.append(f"NodeName={node} NodeHostname=localhost NodeAddr=127.0.0.1 "
                         f"Port={self.node_ports[node]} CPUs={NODE_CPUS} RealMemory={NODE_MEM_MIB} "
                         "State=CLOUD Feature=vo_lhcb")
        static = ",".join(STATIC_NODES)
        lines += [
            f"PartitionName=batch Nodes={static} Default=YES MaxTime=INFINITE State=UP",
            f"PartitionName=grid Nodes={static} MaxTime=INFINITE State=UP",
            f"PartitionName=cloud Nodes={','.join(CLOUD_NODES)} MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _start_munge(self) -> None:
        subprocess.run(
            ["munged", "--force", f"--socket={self.munge_socket}",
             f"--key-file={self.root}/munge/munge.key", f"--pid-file={self.root}/run/munged.pid",
             f"--seed-file={self.root}/munge/seed", f"--log-file={self.root}/log/munged.log"],
            env=self.env, check=True, capture_output=True, timeout=30)

    def _spawn(self, name: str, argv: Sequence[str]) -> None:
        log = (self.root / "log" / f"{name}.out").open("wb")
        self._procs.append(subprocess.Popen(list(argv), env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            cwd=self.root))
        log.close()

    def add_dynamic_node(self, name: str, cpus: int = NODE_CPUS, mem_mib: int = 500) -> None:
        """Start a dynamic node (22.05 ``slurmd -Z``): it registers itself, no slurm.conf entry.

        Dynamic slurmd listen on the global ``SlurmdPort`` (``--conf`` refuses ``Port=``), so
        only one can run per machine next to the static ones.
        """
        (self.root / "spool" / name).mkdir(exist_ok=True)
        self._spawn(f"slurmd-{name}", ["slurmd", "-D", "-Z", "--conf",
                                       f"CPUs={cpus} RealMemory={mem_mib}", "-N", name])

    def kill_slurmd(self, node: str) -> None:
        """SIGKILL one node's slurmd, as if its VM died (jobs' slurmstepd are left alone)."""
        pid = int((self.root / "run" / f"slurmd-{node}.pid").read_text().split()[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _static_nodes_idle(self) -> bool:
        out = self._try("sinfo", "-h", "-N", "-o", "%N %t", "-n", ",".join(STATIC_NODES))
        states = dict(line.split() for line in out.splitlines() if line.strip())
        return all(states.get(n) == "idle" for n in STATIC_NODES)

    # -- helpers for tests ------------------------------------------------------------------

    def _try(self, *argv: str) -> str:
        proc = subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=30,
                              check=False, cwd=self.root)
        return proc.stdout if proc.returncode == 0 else ""

    def run(self, *argv: str) -> str:
        """Run a Slurm client command against this cluster; a failure shows the logs' tail."""
        proc = subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=60,
                              check=False, cwd=self.root)
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr}\n"
                                 f"{self.log_tail()}")
        return proc.stdout

    def sbatch(self, *args: str, command: str = "sleep 600") -> str:
        """Submit a batch job, run from ``/`` (a worker VM's export tree has no host temp dirs);
        returns its id."""
        out = self.run("sbatch", "--parsable", "-o", "/dev/null", "-D", "/", *args, "--wrap", command)
        return out.strip().split(";")[0]

    def cancel_all(self) -> None:
        self._try("scancel", "--full", "-u", "root")
        self.wait_for(lambda: self._try("squeue", "-h", "-o", "%i") == "", 30,
                      "all jobs to leave the queue")

    def wait_for(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        """Poll ``check`` until it returns something truthy; return that."""
        return poll_until(check, timeout, what, self.log_tail)

    def log_tail(self, lines: int = 15) -> str:
        return tail_files(sorted((self.root / "log").glob("*")), lines)


def slurm_cluster_fixture() -> Iterator[SlurmCluster]:
    """Body of the ``slurm_cluster`` fixture: skip (or fail) without Slurm, always tear down."""
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("VOCLOUD_REQUIRE_SLURM"):
            pytest.fail(reason)
        pytest.skip(reason)
    cluster = SlurmCluster()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def record(dest: Path) -> None:
    """Capture real ``squeue``/``sinfo`` JSON into ``dest`` for the unit tests' parsers.

    Run as ``python -m tests.support.slurm_harness record tests/unit/data/batch/slurm``.
    The scenario (busy.*): n1 full, n2 half used and drained, cloud node c1 powered up, and a
    pending mix (runnable, held, dependency, begin time, unmapped account, throttled array);
    then (idle.*): all jobs gone, n2 drained and empty, c1 being powered down.
    """
    cluster = SlurmCluster()
    cluster.start()
    try:
        cluster.sbatch("-A", "atlas", "-w", "n1", "-n1", "-c2", "--mem=1000", "-t", "60")
        cluster.sbatch("-A", "cms", "-w", "n2", "-n1", "--mem=400", "-t", "60")
        cluster.wait_for(lambda: len(cluster.run("squeue", "-h", "-t", "R", "-o", "%i").split()) == 2,
                         30, "two running jobs")
        cluster.run("scontrol", "update", "NodeName=n2", "State=DRAIN", "Reason=vocloud: pool shrink")
        cluster.run("scontrol", "update", "NodeName=c1", "State=POWER_UP")
        a = cluster.sbatch("-A", "atlas", "-n1", "-c2", "--mem=500", "-t", "30")
        cluster.sbatch("-A", "cms", "-n2", "--mem-per-cpu=300", "-t", "1:00:00")
        cluster.sbatch("-A", "cms", "-p", "grid", "-n1", "--mem=100", "-t", "5")
        cluster.sbatch("-A", "lhcb", "-a", "0-4%2", "-n1", "--mem=50", "-t", "2")
        cluster.sbatch("-A", "atlas", "-H")
        cluster.sbatch("-A", "atlas", "-d", f"afterok:{a}")
        cluster.sbatch("-A", "atlas", "--begin=now+1hour")
        cluster.sbatch("-A", "alice", "-n1")
        cluster.wait_for(lambda: "None" not in cluster.run("squeue", "-h", "-t", "PD", "-o", "%r").split(),
                         30, "pending reasons to settle")
        cluster.wait_for(lambda: "idle" in cluster.run("sinfo", "-h", "-N", "-n", "c1", "-o", "%t"),
                         60, "c1 to register")
        (dest / "squeue_busy.json").write_text(cluster.run("squeue", "--all", "--json"))
        (dest / "sinfo_busy.json").write_text(cluster.run("sinfo", "--all", "--json"))
        cluster.cancel_all()
        cluster.run("scontrol", "update", "NodeName=c1", "State=POWER_DOWN")
        (dest / "squeue_empty.json").write_text(cluster.run("squeue", "--all", "--json"))
        (dest / "sinfo_idle.json").write_text(cluster.run("sinfo", "--all", "--json"))
    finally:
        cluster.stop()


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "record":
        sys.exit("usage: python -m tests.support.slurm_harness record DEST_DIR")
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    record(out)
