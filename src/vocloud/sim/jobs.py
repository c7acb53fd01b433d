"""Columnar job storage shared by every trace reader.

A trace of a quarter of a million jobs held as one Python object per job costs hundreds of MiB
and makes every pass over it slow; the simulator only ever needs whole columns (submit times,
runtimes, sizes), so readers fill one ``(n, 18)`` float64 array in SWF field order instead. The
SWF layout is the lingua franca of workload archives, so other formats (HTCondor history) are
converted into it, with string attributes (owner, accounting group) interned into integer codes
plus a label table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Number of fields in an SWF 2.2 job line.
N_FIELDS = 18


class F(IntEnum):
    """Column index of each SWF 2.2 field (0-based; the standard numbers them from 1)."""

    JOB = 0
    SUBMIT = 1
    WAIT = 2
    RUNTIME = 3
    ALLOC_PROCS = 4
    AVG_CPU = 5
    USED_MEM = 6
    REQ_PROCS = 7
    REQ_TIME = 8
    REQ_MEM = 9
    STATUS = 10
    USER = 11
    GROUP = 12
    EXECUTABLE = 13
    QUEUE = 14
    PARTITION = 15
    PRECEDING = 16
    THINK = 17


#: Lower-case names of the fields, used in error messages and VO-mapping rules.
FIELD_NAMES: tuple[str, ...] = (
    "job",
    "submit",
    "wait",
    "runtime",
    "alloc_procs",
    "avg_cpu",
    "used_mem",
    "req_procs",
    "req_time",
    "req_mem",
    "status",
    "user",
    "group",
    "executable",
    "queue",
    "partition",
    "preceding",
    "think",
)


@dataclass(frozen=True, slots=True)
class Job:
    """One job as a plain record, for callers that want rows rather than columns.

    ``-1`` means unknown, as in SWF. Memory is in KiB per processor, as SWF stores it.
    """

    job: int
    submit: float
    wait: float
    runtime: float
    alloc_procs: int
    avg_cpu: float
    used_mem: float
    req_procs: int
    req_time: float
    req_mem: float
    status: int
    user: int
    group: int
    executable: int
    queue: int
    partition: int
    preceding: int
    think: float


@dataclass(frozen=True, slots=True)
class LineIssue:
    """One malformed input line: where it is and why it was skipped or refused."""

    line: int
    kind: str
    reason: str


@dataclass(slots=True)
class ReadReport:
    """What a reader skipped, so a lenient read never loses jobs silently.

    ``examples`` keeps only the first few issues: a badly broken file must not make the report
    itself as large as the trace.
    """

    source: str
    lines_read: int = 0
    jobs: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: list[LineIssue] = field(default_factory=list)
    max_examples: int = 20

    def add(self, issue: LineIssue) -> None:
        """Count one skipped line and remember it if it is among the first few."""
        self.skipped[issue.kind] = self.skipped.get(issue.kind, 0) + 1
        if len(self.examples) < self.max_examples:
            self.examples.append(issue)

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def to_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "lines_read": self.lines_read,
            "jobs": self.jobs,
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_total": self.skipped_total,
            "examples": [{"line": i.line, "kind": i.kind, "reason": i.reason} for i in self.examples],
        }


@dataclass(slots=True)
class JobTable:
    """All jobs of a trace as an ``(n, 18)`` array in SWF field order.

    ``labels`` maps a field name (``user``, ``group``, ``queue``, ``partition`` and, for HTCondor,
    ``vo``) to the text of each integer code, when the source had names; VO-mapping rules match
    against that text. A code without a label is matched as its decimal number.
    """

    data: FloatArray
    labels: dict[str, dict[int, str]] = field(default_factory=dict)
    extra: dict[str, tuple[IntArray, list[str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.data.ndim != 2 or self.data.shape[1] != N_FIELDS:
            raise ValueError(f"job table must be (n, {N_FIELDS}), got {self.data.shape}")

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def column(self, f: F) -> FloatArray:
        """One field for every job (a view, not a copy)."""
        return self.data[:, int(f)]

    def row(self, i: int) -> Job:
        """Job ``i`` as a record (slow path: tests, debugging, small traces)."""
        v = self.data[i]
        return Job(
            job=int(v[0]),
            submit=float(v[1]),
            wait=float(v[2]),
            runtime=float(v[3]),
            alloc_procs=int(v[4]),
            avg_cpu=float(v[5]),
            used_mem=float(v[6]),
            req_procs=int(v[7]),
            req_time=float(v[8]),
            req_mem=float(v[9]),
            status=int(v[10]),
            user=int(v[11]),
            group=int(v[12]),
            executable=int(v[13]),
            queue=int(v[14]),
            partition=int(v[15]),
            preceding=int(v[16]),
            think=float(v[17]),
        )

    def head(self, n: int) -> JobTable:
        """The first ``n`` jobs (``--limit``), sharing labels."""
        return JobTable(self.data[:n], self.labels, {k: (c[:n], t) for k, (c, t) in self.extra.items()})

    def label(self, name: str, code: int) -> str:
        """The text a VO rule sees for ``code`` of field ``name``."""
        if name in self.extra:
            _codes, table = self.extra[name]
            return table[code] if 0 <= code < len(table) else ""
        return self.labels.get(name, {}).get(code, str(code))


def table_from_flat(
    flat: FloatArray | list[float], labels: dict[str, dict[int, str]] | None = None
) -> JobTable:
    """Build a table from a flat row-major sequence of 18-field rows."""
    arr = np.asarray(flat, dtype=np.float64).reshape(-1, N_FIELDS)
    return JobTable(arr, labels or {})
