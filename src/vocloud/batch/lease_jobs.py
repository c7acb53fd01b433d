"""Batch jobs that lend their node to vocloud as a transient hypervisor (docs/host-leases.md).

Two parts: :func:`lease_script`, the pure text of the job script, and one adapter per batch
system that submits, cancels and watches such jobs (:class:`SlurmLeaseJobs`; the
:class:`LeaseJobs` protocol is all the service and the lease loop need).

The job script carries the lease's **one-time token** and nothing else secret. It reaches the
agent on its standard input (a here-document), never on a command line (``ps`` shows argv to
every user of the node) nor in the environment; the script itself is readable only by the job's
owner and the batch system's administrators. The daemon's own environment (which may hold an
administrator token) is not passed to the job: ``sbatch`` runs with only ``PATH``, the locale
and the batch system's own variables (:data:`PASSED_ENV`), and the job inherits just those.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from typing import Protocol

from vocloud.batch.runner import CommandFailed
from vocloud.model.host_lease import JobView
from vocloud.model.walltime import slurm_time

JOB_PREFIX = "vocloud-lease-"
#: the daemon's environment variables a lease job may see (everything else stays in the daemon)
PASSED_ENV = ("PATH", "LANG", "LC_ALL", "SLURM_CONF", "SGE_ROOT", "SGE_CELL",
              "SGE_QMASTER_PORT", "SGE_EXECD_PORT")


def job_name(lease_id: int) -> str:
    return f"{JOB_PREFIX}{lease_id}"


def lease_script(lease_id: int, token: str, url: str, agent: Sequence[str],
                 env: Mapping[str, str] | None = None, wait_s: float = 25.0) -> str:
    """The job script: note the start time, then run the agent with the token on stdin.

    ``agent``: the argv that runs ``python -m vocloud.cli.lease_agent`` on the node;
    ``env``: variables the agent needs (PYTHONPATH); ``wait_s``: how long the agent waits, after
    the batch system's SIGTERM, for the daemon to drain its host (below the site's KillWait).
    """
    if not token.isalnum():
        raise ValueError("a lease token is letters and digits")
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in sorted((env or {}).items()))
    argv = shlex.join([*agent, "--url", url, "--lease", str(lease_id), "--wait", f"{wait_s:g}"])
    return ("#!/bin/sh\n"
            f"# vocloud host lease {lease_id}: this node is a transient hypervisor until the job ends\n"
            "started=$(date +%s)\n"
            f"{exports}"
            f"exec {argv} --started \"$started\" <<'VOCLOUD_LEASE_TOKEN'\n"
            f"{token}\n"
            "VOCLOUD_LEASE_TOKEN\n")


class LeaseJobs(Protocol):
    """What the host-lease service and loop need from a batch system."""

    def submit(self, lease_id: int, script: str, walltime_s: float, partition: str) -> str: ...

    def cancel(self, job_id: str) -> None: ...

    def states(self, job_ids: Sequence[str]) -> dict[str, JobView]: ...


_SLURM_RUNNING = {"RUNNING"}
_SLURM_PENDING = {"PENDING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED"}


def parse_squeue_states(out: str, job_ids: Sequence[str]) -> dict[str, JobView]:
    """``squeue -h -o '%i|%T'`` lines -> each asked job's view; a job not listed is GONE."""
    seen: dict[str, str] = {}
    for line in out.splitlines():
        jid, _, state = line.strip().partition("|")
        if jid:
            seen[jid] = state.strip().upper()
    out_map: dict[str, JobView] = {}
    for jid in job_ids:
        st = seen.get(jid, "")
        out_map[jid] = (JobView.RUNNING if st in _SLURM_RUNNING else
                        JobView.PENDING if st in _SLURM_PENDING else JobView.GONE)
    return out_map


def _run(argv: Sequence[str], env: Mapping[str, str], stdin: str | None = None,
         timeout: float = 60.0) -> str:
    try:
        proc = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout,
                              env={**{k: v for k, v in os.environ.items() if k in PASSED_ENV},
                                   **env}, check=False)
    except FileNotFoundError:
        raise CommandFailed(argv, f"{argv[0]}: command not found (is the batch system's client "
                                  "installed and on PATH?)") from None
    except subprocess.TimeoutExpired:
        raise CommandFailed(argv, f"{shlex.join(argv)}: no answer within {timeout:g} s") from None
    if proc.returncode != 0:
        # Grid Engine's clients print their errors on stdout (qdel: 'denied: job "7" does not
        # exist', exit 1, nothing on stderr)
        err = proc.stderr.strip() or proc.stdout.strip()
        raise CommandFailed(argv, f"{shlex.join(argv)} exited with {proc.returncode}: "
                                  f"{err or 'no output'}", returncode=proc.returncode, stderr=err)
    return proc.stdout


class SlurmLeaseJobs:
    """Lease jobs on Slurm: one whole node per job (``--nodes=1 --exclusive``)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        self.env = dict(env or {})

    def submit(self, lease_id: int, script: str, walltime_s: float, partition: str) -> str:
        argv = ["sbatch", "--parsable", f"--job-name={job_name(lease_id)}", "--nodes=1",
                "--exclusive", f"--time={slurm_time(walltime_s)}", "--export=ALL",
                "--output=/dev/null", "--chdir=/"]
        if partition:
            argv.append(f"--partition={partition}")
        out = _run(argv, self.env, stdin=script)
        job = out.strip().split(";")[0]
        if not job.isdigit():
            raise CommandFailed(argv, f"sbatch printed no job id: {out.strip()[:80]!r}")
        return job

    def cancel(self, job_id: str) -> None:
        try:
            _run(["scancel", job_id], self.env)
        except CommandFailed as exc:  # already gone: that is what we wanted
            if "Invalid job id" not in exc.stderr and "already completing" not in exc.stderr:
                raise

    def states(self, job_ids: Sequence[str]) -> dict[str, JobView]:
        if not job_ids:
            return {}
        try:
            out = _run(["squeue", "-h", "-o", "%i|%T", "-j", ",".join(job_ids)], self.env)
        except CommandFailed as exc:
            if "Invalid job id" not in exc.stderr:
                raise
            out = ""
        return parse_squeue_states(out, job_ids)


#: NOTIFY_S before the hard walltime (``h_rt``) Grid Engine's soft limit (``s_rt``) sends SIGUSR1,
#: and ``qdel`` of a ``-notify`` job sends SIGUSR2 the queue's notify time before SIGKILL: the
#: lease agent takes both as its SIGTERM (drain, then leave).
NOTIFY_S = 60


def parse_qstat_jobs(xml_text: str, job_ids: Sequence[str]) -> dict[str, JobView]:
    """``qstat -u '*' -xml`` -> each asked job's view; a job not listed is GONE.

    Grid Engine's state letters: ``r``/``t`` running (or being sent to the node), ``q``/``w``/
    ``h``/``s``/``S``/``T`` waiting or held or suspended; ``d`` (being deleted) and ``E`` (error)
    count as GONE: the job will not run, or not for long."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml_text) if xml_text.strip() else None
    except ET.ParseError as exc:
        raise CommandFailed(["qstat"], f"qstat -xml printed no XML: {exc}") from None
    seen: dict[str, list[str]] = {}
    if root is not None:
        for job in root.iter("job_list"):
            number = (job.findtext("JB_job_number") or "").strip()
            if number:
                seen.setdefault(number, []).append((job.findtext("state") or "").strip())

    def view(st: str) -> JobView:
        if "d" in st or "E" in st:
            return JobView.GONE
        return JobView.RUNNING if "r" in st or "t" in st else JobView.PENDING

    rank = {JobView.RUNNING: 0, JobView.PENDING: 1, JobView.GONE: 2}
    # one entry per task (array jobs, which leases never are): the most alive one counts
    return {jid: min((view(st) for st in seen.get(jid, [])), key=rank.__getitem__,
                     default=JobView.GONE) for jid in job_ids}


class GridEngineLeaseJobs:
    """Lease jobs on Grid Engine (``qsub``/``qdel``/``qstat``): one job per node.

    Grid Engine has no portable "whole node" request: ``partition`` names the queue the site
    keeps for leases (one slot per host, as Clemson's setup ran one job per node), or a
    ``-l exclusive=true`` complex does it where the site defined one (``exclusive`` option)."""

    def __init__(self, env: Mapping[str, str] | None = None, exclusive: bool = False) -> None:
        self.env = dict(env or {})
        self.exclusive = exclusive

    def submit(self, lease_id: int, script: str, walltime_s: float, partition: str) -> str:
        hard = max(int(walltime_s), 2 * NOTIFY_S)
        argv = ["qsub", "-terse", "-N", job_name(lease_id), "-S", "/bin/sh", "-notify",
                "-l", f"h_rt={hard},s_rt={hard - NOTIFY_S}", "-o", "/dev/null", "-j", "y",
                "-wd", "/"]
        if self.exclusive:
            argv += ["-l", "exclusive=true"]
        if partition:
            argv += ["-q", partition]
        out = _run(argv, self.env, stdin=script)
        job = out.strip().split(".")[0]
        if not job.isdigit():
            raise CommandFailed(argv, f"qsub printed no job id: {out.strip()[:80]!r}")
        return job

    def cancel(self, job_id: str) -> None:
        try:
            _run(["qdel", job_id], self.env)
        except CommandFailed as exc:  # already gone: that is what we wanted
            if "does not exist" not in exc.stderr:
                raise

    def states(self, job_ids: Sequence[str]) -> dict[str, JobView]:
        if not job_ids:
            return {}
        return parse_qstat_jobs(_run(["qstat", "-u", "*", "-xml"], self.env), job_ids)
