"""A throwaway Slurm controller on this machine, for ``vocloud demo`` (Debian's ``slurm-wlm``).

Why it exists: the demo must show VO pools following a *real* batch queue on one machine with
nothing configured beforehand, and must leave the machine as it found it. So everything lives in
one temp dir and is made for the run:

* ``munged --force`` with its own random key, socket, pid, seed and log files; ``slurm.conf``
  points Slurm at that socket (``AuthInfo=socket=...``), so the machine's own munge (if any) is
  never touched. The key is what worker guests need to join (``worker_context``).
* ``slurmctld -D``, configless (``SlurmctldParameters=enable_configless``) on a free port, named
  ``localhost(<addr>)`` so guests on a bridge reach it at ``addr``. No node is defined: each VO's
  partition is a *feature NodeSet* (``Feature=vo_<vo>``), empty until a worker's dynamic slurmd
  (``slurmd -Z``) registers with that feature. There is no accounting database: a job's ``-A``
  account is just a label, and the daemon maps jobs to VOs by it.

Cleanup does not trust pid files (munged daemonizes, job steps outlive their parents): every
process started here carries ``VOCLOUD_LOCALSLURM=<root>`` in its environment, and :meth:`stop`
SIGKILLs every process that has it, then removes the directory. Use it as a context manager so
that this happens on errors and Ctrl-C too.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from vocloud.devtools.localprocs import kill_all, poll_until, processes_with_env, tail_files

MARKER = "VOCLOUD_LOCALSLURM"
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol")
_JOB_FIELD = re.compile(r"\b(JobId|JobState|Account|Partition|SubmitTime|StartTime|EndTime|"
                        r"BatchHost|ExitCode|Reason)=(\S*)")
T = TypeVar("T")


def private_conf(root: Path, munge_socket: Path) -> list[str]:
    """The slurm.conf lines of a cluster kept entirely under ``root``: root daemons, its own
    munge socket, state/spool/pid/log files in ``root``, no accounting, linuxproc tracking
    (no cgroup delegation needed), a 2 s backfill pass. Shared with the test harnesses."""
    return [
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={root}/state",
        f"SlurmdSpoolDir={root}/spool/%n",
        f"SlurmctldPidFile={root}/run/slurmctld.pid",
        f"SlurmdPidFile={root}/run/slurmd-%n.pid",
        f"SlurmctldLogFile={root}/log/slurmctld.log",
        f"SlurmdLogFile={root}/log/slurmd-%n.log",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "ReturnToService=2",
        "MpiDefault=none",
        "MailProg=/bin/true",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=2",
    ]


def missing_reason() -> str | None:
    """Why this machine cannot run a local Slurm, or ``None`` if it can."""
    absent = [b for b in BINARIES if shutil.which(b) is None]
    if absent:
        return f"Slurm is not installed ({', '.join(absent)} missing; apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "a local slurmctld/munged (and qemu taps) need root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


class LocalSlurm:
    """slurmctld + munged in a temp dir, one partition per VO; ``env`` reaches it from here."""

    def __init__(self, vos: Sequence[str], ctld_addr: str = "127.0.0.1",
                 min_job_age: int = 900) -> None:
        """``ctld_addr``: the address worker guests use to reach slurmctld (a bridge's)."""
        self.vos = tuple(vos)
        self.ctld_addr = ctld_addr
        self.min_job_age = min_job_age
        self.root = Path(tempfile.mkdtemp(prefix="vocloud-localslurm-"))
        self.conf = self.root / "slurm.conf"
        self.munge_key_path = self.root / "munge" / "munge.key"
        self.munge_socket = self.root / "run" / "munge.socket"
        self.ctld_port = _free_port()
        self.slurmd_port = _free_port()
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("SLURM_", "SQUEUE_", "SINFO_", "SBATCH_"))}
        self.env.update({"SLURM_CONF": str(self.conf), MARKER: str(self.root)})
        self._ctld: subprocess.Popen[bytes] | None = None

    # -- life cycle ------------------------------------------------------------------------

    def __enter__(self) -> LocalSlurm:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def conf_server(self) -> str:
        """``host:port`` a configless slurmd fetches its configuration from."""
        return f"{self.ctld_addr}:{self.ctld_port}"

    @property
    def munge_key(self) -> bytes:
        return self.munge_key_path.read_bytes()

    def start(self) -> None:
        """Write the files, start munged and slurmctld, wait until slurmctld answers."""
        try:
            self._write_files()
            subprocess.run(
                ["munged", "--force", f"--socket={self.munge_socket}",
                 f"--key-file={self.munge_key_path}", f"--pid-file={self.root}/run/munged.pid",
                 f"--seed-file={self.root}/munge/seed", f"--log-file={self.root}/log/munged.log"],
                env=self.env, check=True, capture_output=True, timeout=30)
            with (self.root / "log" / "slurmctld.out").open("wb") as log:
                self._ctld = subprocess.Popen(["slurmctld", "-D"], env=self.env, stdout=log,
                                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                              cwd=self.root)
            self.wait_for(lambda: "UP" in self.try_run("scontrol", "ping"), 30,
                          "slurmctld to answer")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGKILL everything started here (nothing holds state worth saving), remove the dir."""
        ctld = self._ctld

        def alive() -> list[int]:  # poll() reaps slurmctld, our child
            own = [ctld.pid] if ctld is not None and ctld.poll() is None else []
            return processes_with_env(MARKER, str(self.root)) + own

        kill_all(alive, 10, interval=0.1)
        shutil.rmtree(self.root, ignore_errors=True)

    def _write_files(self) -> None:
        self.root.chmod(0o755)  # munged wants its socket's parents searchable by all
        for sub in ("munge", "run", "state", "log", "spool"):
            (self.root / sub).mkdir()
        (self.root / "munge").chmod(0o700)
        self.munge_key_path.write_bytes(os.urandom(1024))
        self.munge_key_path.chmod(0o400)
        lines = [
            "ClusterName=vocloudlocal",
            f"SlurmctldHost=localhost({self.ctld_addr})",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmctldParameters=enable_configless",
            *private_conf(self.root, self.munge_socket),
            "MaxNodeCount=64",  # room for the workers' dynamic nodes (slurmd -Z)
            f"MinJobAge={self.min_job_age}",  # finished jobs stay visible for the summary
            "SlurmdTimeout=30",
        ]
        for vo in self.vos:
            lines += [f"NodeSet={vo}_ns Feature=vo_{vo}",
                      f"PartitionName={vo} Nodes={vo}_ns MaxTime=INFINITE State=UP"]
        self.conf.write_text("\n".join(lines) + "\n")

    # -- client commands -------------------------------------------------------------------

    def try_run(self, *argv: str) -> str:
        """A Slurm client command's stdout, or ``""`` if it failed (for polling)."""
        try:
            proc = subprocess.run(list(argv), env=self.env, capture_output=True, text=True,
                                  timeout=30, check=False, cwd=self.root)
        except subprocess.TimeoutExpired:
            return ""
        return proc.stdout if proc.returncode == 0 else ""

    def run(self, *argv: str) -> str:
        """A Slurm client command's stdout; a failure raises with its stderr and the log tail."""
        proc = subprocess.run(list(argv), env=self.env, capture_output=True, text=True, timeout=60,
                              check=False, cwd=self.root)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}\n"
                               f"{self.log_tail()}")
        return proc.stdout

    def sbatch(self, *args: str, command: str) -> str:
        """Submit a batch job (output discarded, run from ``/``); returns its id."""
        out = self.run("sbatch", "--parsable", "-o", "/dev/null", "-D", "/", *args,
                       "--wrap", command)
        return out.strip().split(";")[0]

    def jobs(self) -> dict[str, dict[str, str]]:
        """Every job slurmctld still knows (``scontrol show job -o``): id -> the fields we use."""
        out = {}
        for line in self.try_run("scontrol", "-o", "show", "job").splitlines():
            fields = dict(_JOB_FIELD.findall(line))
            if "JobId" in fields:
                out[fields["JobId"]] = fields
        return out

    def nodes(self) -> dict[str, tuple[str, str]]:
        """Registered nodes: name -> (state, features)."""
        out = {}
        for line in self.try_run("sinfo", "-h", "-N", "-o", "%N %t %f").splitlines():
            parts = line.split()
            if len(parts) >= 2:
                out[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
        return out

    def wait_for(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        """Poll ``check`` until it returns something truthy; return that."""
        return poll_until(check, timeout, what, self.log_tail)

    def log_tail(self, lines: int = 10) -> str:
        return tail_files(sorted((self.root / "log").glob("*")), lines)
