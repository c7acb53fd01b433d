"""IBM Spectrum LSF adapter: ``bjobs -o ... -json``, ``bhosts -o ... -json``, ``badmin hclose/hopen``.

LSF prints JSON only for customized output (``-o`` with ``-json``, LSF 10.1.0.2 and later):
``{"COMMAND": "bjobs", "JOBS": n, "RECORDS": [{"JOBID": "101", "STAT": "PEND", ...}]}``, keys
being the upper-cased field names and every value a string (``""`` or ``"-"`` when unset). The
adapter asks for exactly the fields it relies on (:data:`JOB_FIELDS`, :data:`HOST_FIELDS`,
:data:`LSHOST_FIELDS`), so site-wide ``LSB_BJOBS_FORMAT`` settings cannot change what it reads.

Demand: ``STAT == "PEND"`` (a suspended pending job is ``PSUSP``). Jobs LSF itself counts as
ineligible (``PENDSTATE == "IPEND"``, with ``TRACK_ELIGIBLE_PENDINFO=Y``) are excluded; without
that setting, a pending reason naming an unsatisfied dependency or a specified start time
excludes the job. Cores: ``NREQ_SLOT`` (requested slots), else ``SLOTS``. Memory: ``MEMLIMIT``
(read in ``limit_unit`` when it carries no unit: LSF's ``LSF_UNIT_FOR_LIMITS``, KB by default).
Wall time: ``RUNTIMELIMIT`` in minutes (LSF's unit for run limits, ``[hour:]minute``).
``SUBMIT_TIME`` is local time like ``Nov 14 22:13`` (year only with ``LSB_DISPLAY_YEAR=Y``;
otherwise the most recent such date not after "now").

Hosts: state from ``bhosts``, size and boolean resources from ``lshosts``; a resource
``vo_<name>`` names the host's pool. ``drain`` closes the host (``badmin hclose -C``), ``resume``
opens it; ``remove`` takes a dynamic host out of the cluster with ``lsrmhost``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from vocloud.batch.base import NodeState, PendingJob, VOMapper, WorkerNode
from vocloud.batch.runner import CommandFailed, CommandRunner, Runner, parse_json_object
from vocloud.errors import DriverError

JOB_FIELDS = ("jobid jobindex stat pendstate user user_group queue proj_name nreq_slot slots memlimit "
              "runtimelimit submit_time pend_reason")
HOST_FIELDS = "host_name status max njobs run ssusp ususp rsv comments"
LSHOST_FIELDS = "HOST_NAME ncpus maxmem RESOURCES"

_UNITS = {"K": 10, "M": 20, "G": 30, "T": 40, "P": 50, "E": 60}
_SIZE = re.compile(r"^\s*([\d.]+)\s*([KMGTPE]?)B?(?:YTES)?\s*$", re.I)
_INELIGIBLE_REASONS = ("dependency condition", "specified start time", "begin time")


def _records(payload: Mapping[str, Any], what: str) -> list[dict[str, Any]]:
    if "ERROR" in payload:  # e.g. {"COMMAND": "bjobs", "ERROR": "No pending job found"}
        return []
    records = payload.get("RECORDS")
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DriverError(f"{what}: output has no RECORDS list")
    return records


def _blank(value: Any) -> bool:
    return value is None or str(value).strip() in ("", "-")


def parse_size_mib(value: Any, default_unit: str = "K", what: str = "memlimit") -> int:
    """An LSF memory value (``8 G``, ``4096 M``, ``2097152``) in MiB, rounded up."""
    m = _SIZE.match(str(value))
    if m is None:
        raise DriverError(f"lsf: {what} is not a size: {value!r}")
    unit = (m.group(2) or default_unit).upper()
    try:
        size = float(m.group(1)) * 2 ** _UNITS[unit]
    except (KeyError, ValueError):
        raise DriverError(f"lsf: {what} is not a size: {value!r}") from None
    return int(-(-size // 2**20))


def parse_runlimit_s(value: Any, what: str = "runtimelimit") -> int:
    """``RUNTIMELIMIT``: minutes (``120.0``, ``120.0 min``, ``120.0/hostA``) or ``hour:minute``."""
    text = str(value).strip().split("/", 1)[0].removesuffix("min").strip()
    try:
        if ":" in text:
            hours, minutes = text.split(":", 1)
            return int(hours) * 3600 + int(float(minutes) * 60)
        return int(float(text) * 60)
    except ValueError:
        raise DriverError(f"lsf: {what} is not a run limit: {value!r}") from None


def parse_submit_time(value: Any, now: float, what: str = "submit_time") -> float:
    """LSF's local-time stamp; a missing year is the latest one that is not in the future."""
    text = " ".join(t for t in str(value).split() if len(t) > 1)  # drop LSF's 1-letter flags
    for fmt in ("%b %d %H:%M:%S %Y", "%b %d %H:%M %Y"):
        try:
            return time.mktime(time.strptime(text, fmt))
        except ValueError:
            pass
    year = datetime.fromtimestamp(now).year
    for fmt in ("%b %d %H:%M:%S", "%b %d %H:%M"):
        try:
            # parse with an explicit year: a bare "Feb 29" must not fail in the parser itself
            parsed = time.strptime(f"{text} {year}", f"{fmt} %Y")
        except ValueError:
            continue
        stamp = time.mktime(parsed)
        if stamp > now + 86400:
            stamp = time.mktime(time.strptime(f"{text} {year - 1}", f"{fmt} %Y"))
        return stamp
    raise DriverError(f"lsf: {what} is not a time: {value!r}")


def _int(value: Any, what: str) -> int:
    try:
        return int(float(str(value)))
    except ValueError:
        raise DriverError(f"lsf: {what} is not a number: {value!r}") from None


def parse_jobs(payload: Mapping[str, Any], mapper: VOMapper, now: float,
               limit_unit: str = "K") -> list[PendingJob]:
    """Pending demand from ``bjobs -u all -p -o "<JOB_FIELDS>" -json``."""
    what = "bjobs -json"
    out: list[PendingJob] = []
    for rec in _records(payload, what):
        if "STAT" not in rec or _blank(rec.get("JOBID")):
            raise DriverError(f"{what}: record without JOBID/STAT: {rec!r}")
        if rec["STAT"] != "PEND" or rec.get("PENDSTATE") == "IPEND":
            continue
        reason = str(rec.get("PEND_REASON", "")).lower()
        if any(r in reason for r in _INELIGIBLE_REASONS):
            continue
        attrs = {
            "project": str(rec.get("PROJ_NAME", "")), "queue": str(rec.get("QUEUE", "")),
            "group": str(rec.get("USER_GROUP", "")), "user": str(rec.get("USER", "")),
        }
        vo = mapper.vo_for({k: v for k, v in attrs.items() if not _blank(v)})
        if vo is None:
            continue
        job_id = str(rec["JOBID"])
        if not _blank(rec.get("JOBINDEX")) and rec.get("JOBINDEX") != "0":
            job_id = f"{job_id}[{rec['JOBINDEX']}]"
        slots = rec.get("NREQ_SLOT") if not _blank(rec.get("NREQ_SLOT")) else rec.get("SLOTS")
        cores = 1 if _blank(slots) else _int(slots, f"slots of job {job_id}")
        memlimit = rec.get("MEMLIMIT")
        memory = 0 if _blank(memlimit) else parse_size_mib(memlimit, limit_unit, f"memlimit of job {job_id}")
        runlimit = rec.get("RUNTIMELIMIT")
        walltime = 0 if _blank(runlimit) else parse_runlimit_s(runlimit, f"runtimelimit of job {job_id}")
        if _blank(rec.get("SUBMIT_TIME")):
            raise DriverError(f"{what}: job {job_id} has no SUBMIT_TIME")
        submitted = parse_submit_time(rec["SUBMIT_TIME"], now, f"submit_time of job {job_id}")
        out.append(PendingJob(id=job_id, vo=vo, cores=cores, memory_mib=memory, walltime_s=walltime,
                              submit_time=submitted))
    return out


def classify(status: str, njobs: int) -> NodeState:
    """``bhosts`` STATUS (``ok``, ``closed_Adm``, ``closed_Full``, ``unavail``...) to :class:`NodeState`."""
    status = status.lower()
    if status in ("unavail", "unreach", "closed_lim", "closed_ego"):
        return NodeState.DOWN
    if status == "closed_adm":
        return NodeState.DRAINING if njobs else NodeState.DRAINED
    if status in ("ok", "closed_full", "closed_busy", "closed_excl") and njobs:
        return NodeState.BUSY
    if status == "ok":
        return NodeState.IDLE
    return NodeState.UNKNOWN  # closed_Lock, closed_Wind (dispatch window), closed_RC...


def parse_hosts(bhosts: Mapping[str, Any], lshosts: Mapping[str, Any], vo_prefix: str = "vo_",
                limit_unit: str = "M") -> list[WorkerNode]:
    """Worker nodes from ``bhosts -o "<HOST_FIELDS>" -json`` and ``lshosts -o "<LSHOST_FIELDS>" -json``.

    ``NJOBS`` counts slots in use and ``RUN`` running ones, so the number of jobs is not known
    exactly: ``running_jobs`` is ``RUN + SSUSP + USUSP`` slots, an upper bound that errs on the side
    of "busy". ``MAXMEM`` in ``lshosts`` has a unit (``15.6G``); bare numbers are MB.
    """
    static = {str(r.get("HOST_NAME")): r for r in _records(lshosts, "lshosts -json")}
    out: list[WorkerNode] = []
    for rec in _records(bhosts, "bhosts -json"):
        name = rec.get("HOST_NAME")
        if _blank(name) or _blank(rec.get("STATUS")):
            raise DriverError(f"bhosts -json: record without HOST_NAME/STATUS: {rec!r}")
        name = str(name)
        counts = {k: 0 if _blank(rec.get(k)) else _int(rec[k], f"{k} of {name}")
                  for k in ("MAX", "NJOBS", "RUN", "SSUSP", "USUSP", "RSV")}
        busy_slots = counts["RUN"] + counts["SSUSP"] + counts["USUSP"]
        state = classify(str(rec["STATUS"]), counts["NJOBS"])
        info = static.get(name, {})
        cores = counts["MAX"] or (0 if _blank(info.get("ncpus")) else _int(info["ncpus"], f"ncpus of {name}"))
        maxmem = info.get("maxmem")
        memory = 0 if _blank(maxmem) else parse_size_mib(maxmem, limit_unit, f"maxmem of {name}")
        resources = str(info.get("RESOURCES", "")).strip("()").split()
        vo = next((r[len(vo_prefix):] for r in resources if vo_prefix and r.startswith(vo_prefix)), None)
        out.append(WorkerNode(
            name=name, state=state, cores=cores, memory_mib=memory, running_jobs=busy_slots,
            vo=vo, idle_since=None, reason="" if _blank(rec.get("COMMENTS")) else str(rec["COMMENTS"]),
            free_cores=max(cores - counts["NJOBS"] - counts["RSV"], 0),
        ))
    return out


class LSFBatch:
    """The :class:`~vocloud.batch.base.BatchSystem` for IBM Spectrum LSF 10.1 (JSON output)."""

    name = "lsf"

    def __init__(self, mapper: VOMapper, runner: Runner | None = None, limit_unit: str = "K",
                 vo_prefix: str = "vo_", clock: Any = time.time) -> None:
        self.mapper = mapper
        self.runner: Runner = runner if runner is not None else CommandRunner()
        self.limit_unit = limit_unit
        self.vo_prefix = vo_prefix
        self.clock = clock

    def _json(self, argv: Sequence[str]) -> dict[str, Any]:
        return parse_json_object(self.runner.run(argv), f"{argv[0]} -json")

    def pending(self) -> list[PendingJob]:
        payload = self._json(["bjobs", "-u", "all", "-p", "-o", JOB_FIELDS, "-json"])
        return parse_jobs(payload, self.mapper, float(self.clock()), self.limit_unit)

    def _bhosts(self) -> dict[str, Any]:
        return self._json(["bhosts", "-o", HOST_FIELDS, "-json"])

    def nodes(self) -> list[WorkerNode]:
        lshosts = self._json(["lshosts", "-o", LSHOST_FIELDS, "-json"])
        return parse_hosts(self._bhosts(), lshosts, self.vo_prefix)

    def _admin(self, argv: list[str]) -> None:
        try:
            self.runner.run(argv)
        except CommandFailed as exc:
            if "already" not in exc.stderr.lower():  # "Host <x> is already closed/opened"
                raise

    def drain(self, node: str, reason: str) -> None:
        self._admin(["badmin", "hclose", "-C", reason or "vocloud: drain", node])

    def resume(self, node: str) -> None:
        self._admin(["badmin", "hopen", node])

    def remove(self, node: str) -> None:
        known = {str(r.get("HOST_NAME")) for r in _records(self._bhosts(), "bhosts -json")}
        if node in known:
            self.runner.run(["lsrmhost", node])
