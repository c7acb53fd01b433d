"""HTCondor job history reader (``condor_history -json`` or a CSV export of the same attributes).

OSG and WLCG sites run HTCondor, whose accounting lives in the job history, not in SWF. This
reader converts each finished job into the same 18-column table the SWF reader fills, so the
simulator has one input type. Attributes used (ClassAd names):

========================  ====================================================================
``ClusterId``/``ProcId``  job number (``ClusterId * 100000 + ProcId``)
``QDate``                 submit time (epoch s; the trace starts at the earliest QDate)
``JobStartDate``          start -> wait time; absent = the job never started
``RemoteWallClockTime``   run time; else ``CompletionDate - JobStartDate``
``RequestCpus``           processors (default 1)
``RequestMemory``         MiB per job (stored as SWF KiB per processor)
``MaxWallTimeMins``       requested time, when the site sets one
``JobStatus``             4 completed -> SWF 1, 3 removed -> SWF 5, else SWF 0
``Owner``                 user (interned)
``AcctGroup``             group (interned; falls back to ``AccountingGroup``)
``x509UserProxyVOName``   the ``vo`` field for ``--vo-map vo``
========================  ====================================================================

Input: a JSON array, one JSON object per line, or CSV with a header row (detected from the first
non-blank character). A record without a numeric ``QDate`` is malformed: skipped and counted, or
refused with ``strict=True``, naming the record's line.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vocloud.errors import InvalidInput
from vocloud.sim.jobs import N_FIELDS, F, JobTable, LineIssue, ReadReport
from vocloud.sim.source import iter_lines


@dataclass(slots=True)
class CondorTrace:
    """Jobs from an HTCondor history; ``start_time`` is the earliest QDate (epoch s)."""

    jobs: JobTable
    report: ReadReport
    start_time: float


class _Interner:
    def __init__(self) -> None:
        self.codes: dict[str, int] = {}

    def code(self, value: object) -> int:
        if value is None or value == "":
            return -1
        text = str(value)
        return self.codes.setdefault(text, len(self.codes))

    def labels(self) -> dict[int, str]:
        # -1 (attribute absent) reads as empty text, so no rule mistakes it for a name
        return {-1: "", **{c: t for t, c in self.codes.items()}}

    def table(self) -> list[str]:
        return list(self.codes)


def _num(rec: Mapping[str, Any], key: str) -> float | None:
    raw = rec.get(key)
    if raw is None or raw == "":
        return None
    try:
        v = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{key} is not a number: {raw!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{key} is not finite: {raw!r}")
    return v


def _records(path: Path) -> Iterator[tuple[int, Mapping[str, Any] | str]]:
    """Yield ``(line, record)``; a record that cannot be decoded is yielded as an error string."""
    lines = list(iter_lines(path))
    first = next((t.lstrip() for _, t in lines if t.strip()), "")
    if first.startswith("["):
        text = "\n".join(t for _, t in lines)
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}", path=str(path)) from None
        if not isinstance(doc, list):
            raise InvalidInput(f"{path}: expected a JSON array of job records")
        # json keeps no line numbers per element; the record's 1-based index is the next best.
        for i, rec in enumerate(doc, start=1):
            yield i, rec if isinstance(rec, dict) else f"record {i} is not a JSON object"
    elif first.startswith("{"):
        for n, t in lines:
            if not t.strip():
                continue
            try:
                rec = json.loads(t)
            except json.JSONDecodeError as exc:
                yield n, f"not valid JSON: {exc.msg}"
                continue
            yield n, rec if isinstance(rec, dict) else "not a JSON object"
    else:
        reader = csv.DictReader(io.StringIO("\n".join(t for _, t in lines)))
        for row in reader:
            n = reader.line_num
            if None in row:
                yield n, f"more fields than the header's {len(reader.fieldnames or [])}"
                continue
            yield n, row


def convert_record(rec: Mapping[str, Any]) -> tuple[list[float], dict[str, object]]:
    """One history record -> 18 SWF values (user/group/vo still as text in the second item).

    Raises ValueError with the reason when the record is unusable.
    """
    qdate = _num(rec, "QDate")
    if qdate is None:
        raise ValueError("no QDate (submit time)")
    cluster = _num(rec, "ClusterId") or 0.0
    proc = _num(rec, "ProcId") or 0.0
    start = _num(rec, "JobStartDate")
    done = _num(rec, "CompletionDate")
    wall = _num(rec, "RemoteWallClockTime")
    cpus = _num(rec, "RequestCpus") or 1.0
    mem = _num(rec, "RequestMemory")
    maxwall = _num(rec, "MaxWallTimeMins")
    status = _num(rec, "JobStatus")
    if cpus < 1:
        raise ValueError(f"RequestCpus is {cpus:g}")
    for key, v in (("RemoteWallClockTime", wall), ("QDate", qdate), ("JobStartDate", start),
                   ("CompletionDate", done), ("RequestMemory", mem)):
        if v is not None and v < 0:
            raise ValueError(f"negative {key} {v:g}")
    runtime = -1.0
    if wall is not None and wall > 0:
        runtime = wall
    elif start and done and done >= start:
        runtime = done - start
    started = bool(start) or runtime > 0
    wait = (start - qdate) if start and start >= qdate else -1.0
    values = [-1.0] * N_FIELDS
    values[F.JOB] = cluster * 100000 + proc
    values[F.SUBMIT] = qdate
    values[F.WAIT] = wait
    values[F.RUNTIME] = runtime if started else -1.0
    values[F.ALLOC_PROCS] = cpus if started else 0.0
    values[F.REQ_PROCS] = cpus
    values[F.REQ_TIME] = maxwall * 60 if maxwall and maxwall > 0 else -1.0
    values[F.REQ_MEM] = mem * 1024 / cpus if mem and mem > 0 else -1.0
    values[F.STATUS] = {4: 1.0, 3: 5.0}.get(int(status) if status is not None else 4, 0.0)
    text = {
        "user": rec.get("Owner") or rec.get("User"),
        "group": rec.get("AcctGroup") or rec.get("AccountingGroup"),
        "vo": rec.get("x509UserProxyVOName"),
    }
    return values, text


def read_condor_history(path: str | Path, *, strict: bool = False, limit: int | None = None) -> CondorTrace:
    """Read an HTCondor history export into a :class:`CondorTrace` (submit times from 0)."""
    p = Path(path)
    report = ReadReport(source=str(p))
    users, groups, vos = _Interner(), _Interner(), _Interner()
    rows: list[list[float]] = []
    vo_codes: list[int] = []
    for n, rec in _records(p):
        report.lines_read = n
        try:
            if isinstance(rec, str):
                raise ValueError(rec)
            values, text = convert_record(rec)
        except ValueError as exc:
            if strict:
                raise InvalidInput(f"{p}:{n}: {exc}", path=str(p), line=n) from None
            report.add(LineIssue(n, "bad_record", str(exc)))
            continue
        values[F.USER] = users.code(text["user"])
        values[F.GROUP] = groups.code(text["group"])
        vo_codes.append(vos.code(text["vo"]))
        rows.append(values)
        report.jobs += 1
        if limit is not None and report.jobs >= limit:
            break
    data = np.array(rows, dtype=np.float64).reshape(-1, N_FIELDS)
    vo_arr = np.array(vo_codes, dtype=np.int64)
    # condor_history lists newest first; the simulator needs submit order.
    order = np.argsort(data[:, F.SUBMIT], kind="stable")
    data, vo_arr = data[order], vo_arr[order]
    start = float(data[0, F.SUBMIT]) if len(data) else 0.0
    data[:, F.SUBMIT] -= start
    table = JobTable(
        data,
        labels={"user": users.labels(), "group": groups.labels()},
        extra={"vo": (vo_arr, vos.table())},
    )
    return CondorTrace(table, report, start)
