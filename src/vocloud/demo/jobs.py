"""The demo's two batch systems behind one small interface: submit a VO's job, list the demo's
jobs. ``SlurmJobs`` drives the demo's local Slurm (``sbatch``/``scontrol``); ``SimJobs`` vocloud's
``sim`` batch system, whose jobs are timers in a JSON file the daemon shares."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from vocloud.demo.base import WORKER_CPUS

if TYPE_CHECKING:
    from vocloud.devtools.localslurm import LocalSlurm

FAILED_JOB_STATES = ("FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT", "BOOT_FAIL", "OUT_OF_MEMORY",
                     "DEADLINE", "PREEMPTED")


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


def slurm_time(text: str | None) -> float | None:
    """Epoch seconds of a Slurm timestamp (local time), ``None`` for Slurm's "no time yet"."""
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
            job = Job(job_id, vo, state, slurm_time(info.get("SubmitTime")),
                      slurm_time(info.get("StartTime")) if state != "PENDING" else None,
                      slurm_time(info.get("EndTime")), info.get("BatchHost", ""))
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
