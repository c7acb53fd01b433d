"""From a parsed trace to what the replay needs: one list per job attribute, plus scaling.

The event loop touches a job's submit time, run time, size and estimate millions of times; plain
Python lists index several times faster than numpy arrays for single elements, so the columns are
converted once here. Jobs that the *trace itself* never ran (cancelled before they started:
SWF run time ``-1`` or ``0`` allocated processors) are marked here with their reason; they are
counted as submitted and reported as never ran in every scenario, never silently dropped.

Scaling to a bigger site (``--scale-hosts``), two documented ways:

* ``compress`` (default): arrival times are divided by ``k = target cores / trace cores``
  around the first submit; runtimes, sizes and estimates are unchanged. The same work arrives in
  ``1/k`` of the time on ``k`` times the cores, so the offered load (core-seconds per available
  core-second) is the trace's; the job count stays the same, so the replay costs about the same.
* ``replicate``: every job is submitted ``k`` times (``k`` rounded to a whole number) at the same
  instant; same offered load, ``k`` times more jobs. Exact burst structure, but ``k`` times the
  replay cost: meant for a ``--limit`` slice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vocloud.errors import InvalidInput
from vocloud.sim.jobs import F, JobTable

CANCELLED = "cancelled in the trace before it started (run time -1 or 0 processors)"


@dataclass(slots=True)
class Workload:
    """Per-job columns for the replay (index = position in submit order)."""

    submit: list[float]
    runtime: list[float]
    procs: list[int]
    estimate: list[float]
    memory_mib: list[int]
    vo: list[int]
    vo_names: list[str]
    job_ids: list[int]
    #: job index -> reason, for jobs no scenario can run whatever the site (see module doc).
    excluded: dict[int, str] = field(default_factory=dict)
    scale_note: str = ""
    #: SWF partition code per job (index into ``partition_names``), for ``--split-partitions``
    partition: list[int] = field(default_factory=list)
    partition_names: list[str] = field(default_factory=list)
    #: the wait the trace itself recorded per job (SWF field 3; -1 unknown), for the
    #: "recorded" row beside the physical scenario
    recorded_wait: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.submit)

    @property
    def start(self) -> float:
        return self.submit[0] if self.submit else 0.0

    def core_seconds_by_vo(self) -> list[float]:
        """Trace core-seconds per VO code: the share that sizes static partitions."""
        return self.core_seconds_by(self.vo, len(self.vo_names))

    def core_seconds_by(self, key: list[int], n: int) -> list[float]:
        """Trace core-seconds per value of ``key`` (jobs the trace never ran excluded)."""
        out = [0.0] * n
        for i in range(len(self.submit)):
            if i not in self.excluded:
                out[key[i]] += self.runtime[i] * self.procs[i]
        return out


def scale_table(table: JobTable, factor: float, mode: str) -> JobTable:
    """Scale arrivals for a site ``factor`` times bigger (see module docstring)."""
    if not math.isfinite(factor) or factor <= 0:
        raise InvalidInput(f"scale factor must be > 0, got {factor}")
    if mode not in ("compress", "replicate"):
        raise InvalidInput(f"scale mode {mode!r}: use 'compress' or 'replicate'")
    if factor == 1 or len(table) == 0:
        return table
    data = table.data.copy()
    if mode == "compress":
        t0 = data[0, F.SUBMIT]
        data[:, F.SUBMIT] = t0 + (data[:, F.SUBMIT] - t0) / factor
        return JobTable(data, table.labels, table.extra)
    k = max(1, round(factor))
    rep = np.repeat(data, k, axis=0)
    copy = np.tile(np.arange(k, dtype=np.float64), len(data))
    rep[:, F.JOB] = rep[:, F.JOB] * k + copy
    extra = {name: (np.repeat(codes, k), labels) for name, (codes, labels) in table.extra.items()}
    return JobTable(rep, table.labels, extra)


def build_workload(table: JobTable, vo_codes: np.ndarray, vo_names: list[str]) -> Workload:
    """Turn a table plus VO codes into a :class:`Workload` (see module docstring for the rules)."""
    if len(vo_codes) != len(table):
        raise ValueError("one VO code per job is required")
    runtime = table.column(F.RUNTIME)
    req_procs = table.column(F.REQ_PROCS)
    alloc = table.column(F.ALLOC_PROCS)
    procs = np.where(req_procs > 0, req_procs, alloc)
    req_time = table.column(F.REQ_TIME)
    estimate = np.where(req_time > 0, req_time, np.maximum(runtime, 0.0))
    req_mem = table.column(F.REQ_MEM)
    memory = np.where(req_mem > 0, np.ceil(req_mem * np.maximum(procs, 1) / 1024.0), 0.0)
    cancelled = (runtime < 0) | (alloc == 0) | (procs <= 0)
    part_values, part_codes = np.unique(table.column(F.PARTITION).astype(np.int64), return_inverse=True)
    part_labels = table.labels.get("partition", {})
    excluded = {int(i): CANCELLED for i in np.flatnonzero(cancelled)}
    return Workload(
        submit=table.column(F.SUBMIT).tolist(),
        runtime=np.maximum(runtime, 0.0).tolist(),
        procs=np.maximum(procs, 1).astype(np.int64).tolist(),
        estimate=estimate.tolist(),
        memory_mib=memory.astype(np.int64).tolist(),
        vo=np.asarray(vo_codes, dtype=np.int64).tolist(),
        vo_names=list(vo_names),
        job_ids=table.column(F.JOB).astype(np.int64).tolist(),
        excluded=excluded,
        partition=np.asarray(part_codes, dtype=np.int64).reshape(-1).tolist(),
        partition_names=[part_labels.get(int(v), f"p{int(v)}") for v in part_values],
        recorded_wait=table.column(F.WAIT).tolist(),
    )
