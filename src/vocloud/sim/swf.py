"""Standard Workload Format (SWF 2.2) reader.

SWF is the Parallel Workloads Archive's format: ``;`` header comments (``Key: value``), then one
line per job with 18 whitespace-separated numeric fields, ``-1`` meaning unknown. Real archive
files are mostly clean, but copies get truncated and hand-edited traces get broken lines, so the
reader validates every line and either *skips and counts* a bad one (default: the replay goes on,
and the report says how many lines were dropped and why) or *refuses* the file (``strict=True``),
naming ``file:line`` and the reason. Nothing is dropped silently.

The reader streams: it holds one line at a time plus the growing flat ``array('d')`` of values, so
memory is ~150 bytes per job instead of a Python object per job.
"""

from __future__ import annotations

import math
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vocloud.errors import InvalidInput
from vocloud.sim.jobs import FIELD_NAMES, N_FIELDS, F, JobTable, LineIssue, ReadReport
from vocloud.sim.source import iter_lines

_HEADER_RE = re.compile(r"^;\s*([A-Za-z][A-Za-z0-9_ ]*?)\s*:\s?(.*)$")
_ID_NAME_RE = re.compile(r"^\s*(-?\d+)\s+(\S.*?)\s*$")

#: Default tolerance, in seconds, for submit times that go backwards. SWF requires jobs ordered
#: by submit time; converters that merge several logs can be a few seconds out of order, which is
#: harmless, while a jump back of hours means a corrupt or concatenated file.
DEFAULT_TIME_TRAVEL_TOLERANCE = 0.0


@dataclass(slots=True)
class SwfHeader:
    """The ``;`` header of an SWF file.

    ``fields`` keeps every ``Key: value`` line in order (keys repeat: ``Note``, ``Queue``), and the
    typed properties pick out the ones the simulator uses.
    """

    fields: dict[str, list[str]] = field(default_factory=dict)

    def add(self, key: str, value: str) -> None:
        self.fields.setdefault(key, []).append(value.strip())

    def first(self, key: str) -> str | None:
        values = self.fields.get(key)
        return values[0] if values else None

    def _int(self, key: str) -> int | None:
        raw = self.first(key)
        if raw is None:
            return None
        m = re.match(r"\s*(-?\d+)", raw.split("#", 1)[0])
        return int(m.group(1)) if m else None

    @property
    def version(self) -> str | None:
        return self.first("Version")

    @property
    def unix_start_time(self) -> int | None:
        return self._int("UnixStartTime")

    @property
    def max_procs(self) -> int | None:
        return self._int("MaxProcs")

    @property
    def max_nodes(self) -> int | None:
        return self._int("MaxNodes")

    @property
    def max_jobs(self) -> int | None:
        return self._int("MaxJobs")

    @property
    def max_runtime(self) -> int | None:
        return self._int("MaxRuntime")

    @property
    def time_zone(self) -> str | None:
        return self.first("TimeZoneString")

    @property
    def notes(self) -> list[str]:
        return list(self.fields.get("Note", []))

    def _id_names(self, key: str) -> dict[int, str]:
        out: dict[int, str] = {}
        for value in self.fields.get(key, []):
            m = _ID_NAME_RE.match(value)
            if m:
                out[int(m.group(1))] = m.group(2)
        return out

    @property
    def queues(self) -> dict[int, str]:
        """Queue number -> name, from ``; Queue: 1 test`` lines."""
        return self._id_names("Queue")

    @property
    def partitions(self) -> dict[int, str]:
        """Partition number -> name, from ``; Partition: 1 name`` lines."""
        return self._id_names("Partition")

    def to_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "unix_start_time": self.unix_start_time,
            "max_procs": self.max_procs,
            "max_nodes": self.max_nodes,
            "max_jobs": self.max_jobs,
            "time_zone": self.time_zone,
            "queues": {str(k): v for k, v in sorted(self.queues.items())},
            "partitions": {str(k): v for k, v in sorted(self.partitions.items())},
        }


@dataclass(slots=True)
class SwfTrace:
    """A parsed SWF file: header, jobs (columnar) and what was skipped."""

    header: SwfHeader
    jobs: JobTable
    report: ReadReport


def check_line(values: list[float], last_submit: float, tolerance: float) -> tuple[str, str] | None:
    """Why an 18-value job line is invalid, as ``(kind, reason)``, or ``None`` if it is fine.

    Pure, so the rules are tested without files. ``-1`` is SWF's "unknown" and legal anywhere;
    any other negative number is corruption. The runtime gets its own kind because it is the
    one field the replay cannot do without.
    """
    for v in values:
        if not math.isfinite(v):
            return "non_numeric", f"non-finite value {v!r}"
    runtime = values[F.RUNTIME]
    if runtime < 0 and runtime != -1:
        return "negative_runtime", f"negative run time {runtime:g} (only -1 = unknown is allowed)"
    for idx, v in enumerate(values):
        if v < 0 and v != -1:
            return "negative_value", f"field {idx + 1} ({FIELD_NAMES[idx]}) is {v:g}; only -1 may be negative"
    submit = values[F.SUBMIT]
    if submit < last_submit - tolerance:
        return (
            "time_travel",
            f"submit time {submit:g} goes back {last_submit - submit:g} s before the previous job's "
            f"{last_submit:g} (tolerance {tolerance:g} s)",
        )
    return None


def parse_values(text: str) -> tuple[list[float] | None, tuple[str, str] | None]:
    """Split a job line into 18 floats, or say why it cannot be (``kind``, ``reason``)."""
    parts = text.split()
    if len(parts) != N_FIELDS:
        return None, ("field_count", f"expected {N_FIELDS} fields, found {len(parts)}")
    try:
        return [float(p) for p in parts], None
    except ValueError:
        bad = next(p for p in parts if not _is_number(p))
        col = parts.index(bad) + 1
        return None, ("non_numeric", f"field {col} ({FIELD_NAMES[col - 1]}) is not a number: {bad!r}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def iter_swf(
    path: Path,
    header: SwfHeader,
    report: ReadReport,
    *,
    strict: bool = False,
    tolerance: float = DEFAULT_TIME_TRAVEL_TOLERANCE,
    limit: int | None = None,
) -> Iterator[list[float]]:
    """Yield each valid job line's 18 values, filling ``header`` and ``report`` as it goes.

    A generator so callers that only want to stream (statistics, conversion) never hold the
    whole trace.
    """
    last_submit = -math.inf
    for lineno, text in iter_lines(path):
        report.lines_read = lineno
        stripped = text.strip()
        if not stripped:
            continue
        if stripped.startswith(";"):
            m = _HEADER_RE.match(stripped)
            if m:
                header.add(m.group(1).strip(), m.group(2))
            continue
        values, problem = parse_values(stripped)
        if problem is None and values is not None:
            problem = check_line(values, last_submit, tolerance)
        if problem is not None:
            kind, reason = problem
            if strict:
                raise InvalidInput(f"{path}:{lineno}: {reason}", path=str(path), line=lineno, kind=kind)
            report.add(LineIssue(lineno, kind, reason))
            continue
        assert values is not None
        last_submit = max(last_submit, values[F.SUBMIT])
        report.jobs += 1
        yield values
        if limit is not None and report.jobs >= limit:
            return


def read_swf(
    path: str | Path,
    *,
    strict: bool = False,
    tolerance: float = DEFAULT_TIME_TRAVEL_TOLERANCE,
    limit: int | None = None,
) -> SwfTrace:
    """Read a whole SWF file (plain or gzip) into a columnar :class:`SwfTrace`.

    ``strict`` refuses the first malformed line with :class:`InvalidInput` (``file:line: why``);
    otherwise malformed lines are skipped and counted in ``trace.report``. ``limit`` stops after
    that many valid jobs. A truncated gzip is always an error: a silently short trace would give
    plausible but wrong results.
    """
    p = Path(path)
    header = SwfHeader()
    report = ReadReport(source=str(p))
    flat = array("d")
    for values in iter_swf(p, header, report, strict=strict, tolerance=tolerance, limit=limit):
        flat.extend(values)
    data = np.frombuffer(flat, dtype=np.float64).reshape(-1, N_FIELDS).copy() if flat else np.empty(
        (0, N_FIELDS)
    )
    labels: dict[str, dict[int, str]] = {}
    if header.queues:
        labels["queue"] = header.queues
    if header.partitions:
        labels["partition"] = header.partitions
    return SwfTrace(header, JobTable(data, labels), report)
