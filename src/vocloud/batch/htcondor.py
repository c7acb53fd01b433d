"""HTCondor adapter: demand from ``condor_q -json``, nodes from ``condor_status -json``.

Both tools print a JSON array of ClassAds (nothing at all when no ad matches). Values are JSON
numbers, strings and booleans; an attribute holding an unevaluated expression is printed as the
string ``"/Expr(...)/"``. Parsing (``parse_*``) is pure and tested on hand-made outputs in the
documented format; :class:`CondorBatch` only builds argv lists for an injected runner.

Demand: jobs with ``JobStatus == 1`` (Idle) in a universe that runs on execute slots (vanilla,
java, container), whose ``DeferralTime`` (HTCondor's "begin time") is not in the future. Held
jobs are ``JobStatus == 5`` and DAG children are not submitted before their parents finish, so
neither needs special treatment. ``RequestCpus``/``RequestMemory`` (MiB) give the size; when they
are expressions (common for memory that grows on retry) the adapter cannot evaluate them and
uses the constructor's defaults. Wall time is the first of ``MaxRuntime`` (seconds, CERN's
``+MaxRuntime``), ``BatchRuntime`` (seconds, HTCondor-CE) or ``MaxWallTimeMins`` (minutes, OSG).
Any string attribute of the job ad can drive the VO mapping (``AccountingGroup``, ``AcctGroup``,
``x509UserProxyVOName``, ``Owner``...).

Nodes: one :class:`~vocloud.batch.base.WorkerNode` per ``Machine`` (a worker VM), aggregating its
slots (static, partitionable and dynamic). ``condor_drain`` puts a machine into ``Draining``
(slots show ``Drained``/``Retiring`` while jobs finish, ``Drained``/``Idle`` when empty).
``remove`` turns the startd off peacefully (``condor_off -startd -peaceful``), which also
withdraws its ads; a machine whose ads are already gone needs nothing.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vocloud.batch.base import NodeState, PendingJob, VOMapper, WorkerNode
from vocloud.batch.runner import CommandFailed, CommandRunner, Runner, parse_json_list
from vocloud.errors import DriverError

#: JobUniverse values whose jobs run in execute slots (vanilla 5, java 10, container 14). Grid,
#: scheduler and local universe jobs never use a worker, so they are no demand.
SLOT_UNIVERSES: frozenset[int] = frozenset({5, 10, 14})

_EXPR = re.compile(r"^/Expr\((.*)\)/$", re.S)

#: A startd ad this old means the machine stopped reporting (ads are refreshed every 5 min).
STALE_AFTER_S = 1200.0


def _ads(payload: Any, what: str) -> list[dict[str, Any]]:
    if not isinstance(payload, list) or not all(isinstance(a, dict) for a in payload):
        raise DriverError(f"{what}: expected a JSON array of ClassAds")
    return payload


def _number(ad: Mapping[str, Any], attr: str, what: str) -> float | None:
    """A numeric attribute; ``None`` when absent or an expression the adapter cannot evaluate."""
    value = ad.get(attr)
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _EXPR.match(value.strip())
        inner = m.group(1).strip() if m else value.strip()
        try:
            return float(inner)
        except ValueError:
            if m:
                return None  # a real expression, e.g. ifThenElse(MemoryUsage ...)
    raise DriverError(f"{what}: attribute {attr} of {_ad_name(ad)} is not a number: {value!r}")


def _ad_name(ad: Mapping[str, Any]) -> str:
    if "ClusterId" in ad:
        return f"job {ad.get('ClusterId')}.{ad.get('ProcId', 0)}"
    return str(ad.get("Name", "?"))


def _required_number(ad: Mapping[str, Any], attr: str, what: str) -> float:
    value = _number(ad, attr, what)
    if value is None:
        raise DriverError(f"{what}: {_ad_name(ad)} has no {attr}")
    return value


def parse_jobs(payload: Any, mapper: VOMapper, now: float, default_cores: int = 1,
               default_memory_mib: int = 0,
               universes: Iterable[int] = SLOT_UNIVERSES) -> list[PendingJob]:
    """Pending demand from ``condor_q -json`` output (a list of job ads)."""
    what = "condor_q -json"
    allowed = frozenset(universes)
    out: list[PendingJob] = []
    for ad in _ads(payload, what):
        if _required_number(ad, "JobStatus", what) != 1:
            continue
        universe = _number(ad, "JobUniverse", what)
        if universe is not None and int(universe) not in allowed:
            continue
        deferral = _number(ad, "DeferralTime", what)
        if deferral and deferral > now:
            continue
        attrs = {k: str(v) for k, v in ad.items() if isinstance(v, str) and not _EXPR.match(v)}
        vo = mapper.vo_for(attrs)
        if vo is None:
            continue
        cores = _number(ad, "RequestCpus", what)
        memory = _number(ad, "RequestMemory", what)
        walltime = _number(ad, "MaxRuntime", what) or _number(ad, "BatchRuntime", what)
        if not walltime:
            minutes = _number(ad, "MaxWallTimeMins", what)
            walltime = minutes * 60 if minutes else 0
        out.append(PendingJob(
            id=f"{int(_required_number(ad, 'ClusterId', what))}.{int(_number(ad, 'ProcId', what) or 0)}",
            vo=vo,
            cores=int(cores) if cores is not None else default_cores,
            memory_mib=int(memory) if memory is not None else default_memory_mib,
            walltime_s=int(walltime),
            submit_time=_required_number(ad, "QDate", what),
        ))
    return out


def _classify(slots: list[dict[str, Any]], stale: bool, running: int) -> NodeState:
    states = {str(s.get("State", "")) for s in slots}
    if stale:
        return NodeState.DOWN
    if any(s.get("Draining") is True for s in slots) or "Drained" in states:
        return NodeState.DRAINING if running else NodeState.DRAINED
    if running or "Claimed" in states or "Matched" in states:
        return NodeState.BUSY
    if states == {"Unclaimed"}:
        return NodeState.IDLE
    return NodeState.UNKNOWN  # Owner (START is false), Backfill, Preempting...


def parse_slots(payload: Any, mapper: VOMapper, now: float, vo_attribute: str = "VOCloudVO",
                stale_after_s: float = STALE_AFTER_S) -> list[WorkerNode]:
    """Worker nodes (machines) from ``condor_status -startd -json`` slot ads.

    A partitionable slot advertises what is left unallocated, its dynamic slots what they hold,
    so summing ``Cpus``/``Memory`` over a machine's slots gives the machine's size whichever slot
    layout it uses. ``vo_attribute`` is a startd attribute the worker image advertises
    (``STARTD_ATTRS``); failing that, the mapper is tried on the slot ad itself.
    """
    what = "condor_status -json"
    machines: dict[str, list[dict[str, Any]]] = {}
    for ad in _ads(payload, what):
        machine = ad.get("Machine") or str(ad.get("Name", "")).rpartition("@")[2]
        if not machine:
            raise DriverError(f"{what}: slot ad without Machine or Name")
        machines.setdefault(str(machine), []).append(ad)
    out: list[WorkerNode] = []
    for machine, slots in sorted(machines.items()):
        for slot in slots:
            if "State" not in slot:
                raise DriverError(f"{what}: slot {_ad_name(slot)} has no State")
        # one claim = one job (running, or about to start: Claimed/Idle is a claim between jobs)
        running = sum(1 for s in slots if s.get("State") == "Claimed")
        heard = [h for s in slots if (h := _number(s, "LastHeardFrom", what)) is not None]
        stale = bool(heard) and now - max(heard) > stale_after_s
        state = _classify(slots, stale, running)
        total_cpus = _number(slots[0], "TotalCpus", what)
        cores = int(total_cpus) if total_cpus else int(sum(_number(s, "Cpus", what) or 0 for s in slots))
        total_mem = _number(slots[0], "TotalMemory", what)
        memory = int(total_mem) if total_mem else int(sum(_number(s, "Memory", what) or 0 for s in slots))
        free = [s for s in slots if s.get("State") == "Unclaimed"]
        idle_since = None
        if state in (NodeState.IDLE, NodeState.DRAINED):
            entered = [e for s in slots if (e := _number(s, "EnteredCurrentState", what)) is not None]
            idle_since = max(entered) if entered else None
        vo_value = next((str(s[vo_attribute]) for s in slots if isinstance(s.get(vo_attribute), str)), None)
        vo = vo_value or mapper.vo_for({k: v for k, v in slots[0].items() if isinstance(v, str)})
        reason = next((str(s["DrainReason"]) for s in slots if s.get("DrainReason")), "")
        out.append(WorkerNode(
            name=machine, state=state, cores=cores, memory_mib=memory,
            running_jobs=running,
            vo=vo, idle_since=idle_since, reason=reason,
            free_cores=int(sum(_number(s, "Cpus", what) or 0 for s in free)),
            free_memory_mib=int(sum(_number(s, "Memory", what) or 0 for s in free)),
        ))
    return out


def _quote(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.@-]+", name):
        raise DriverError(f"htcondor: refusing unusual machine name {name!r}")
    return f'"{name}"'


class CondorBatch:
    """The :class:`~vocloud.batch.base.BatchSystem` for HTCondor (command-line tools).

    ``schedd`` selects one schedd (``condor_q -name``); ``pool`` a central manager other than
    the local configuration's (``-pool``). ``clock`` is injected so tests control "now".
    """

    name = "htcondor"

    def __init__(self, mapper: VOMapper, runner: Runner | None = None, schedd: str | None = None,
                 pool: str | None = None, default_cores: int = 1, default_memory_mib: int = 0,
                 vo_attribute: str = "VOCloudVO", clock: Any = time.time) -> None:
        self.mapper = mapper
        self.runner: Runner = runner if runner is not None else CommandRunner()
        self.schedd = schedd
        self.pool = pool
        self.default_cores = default_cores
        self.default_memory_mib = default_memory_mib
        self.vo_attribute = vo_attribute
        self.clock = clock

    def _pool(self) -> list[str]:
        return ["-pool", self.pool] if self.pool else []

    def _run_list(self, argv: Sequence[str]) -> list[Any]:
        return parse_json_list(self.runner.run(argv), " ".join(argv[:2]))

    def pending(self) -> list[PendingJob]:
        argv = ["condor_q", "-allusers", *self._pool()]
        if self.schedd:
            argv += ["-name", self.schedd]
        argv += ["-constraint", "JobStatus == 1", "-json"]
        return parse_jobs(self._run_list(argv), self.mapper, float(self.clock()), self.default_cores,
                          self.default_memory_mib)

    def _slots(self, constraint: str | None = None) -> list[WorkerNode]:
        argv = ["condor_status", "-startd", *self._pool()]
        if constraint:
            argv += ["-constraint", constraint]
        argv.append("-json")
        return parse_slots(self._run_list(argv), self.mapper, float(self.clock()), self.vo_attribute)

    def nodes(self) -> list[WorkerNode]:
        return self._slots()

    def _node(self, node: str) -> WorkerNode | None:
        found = self._slots(f"Machine == {_quote(node)}")
        return found[0] if found else None

    def drain(self, node: str, reason: str) -> None:
        current = self._node(node)
        if current is None:
            raise DriverError(f"htcondor: no startd advertises machine {node}")
        if current.state in (NodeState.DRAINING, NodeState.DRAINED):
            return  # condor_drain refuses a second drain of the same machine
        self.runner.run(["condor_drain", *self._pool(), "-graceful",
                         "-reason", reason or "vocloud: drain", node])

    def resume(self, node: str) -> None:
        current = self._node(node)
        if current is None or current.state not in (NodeState.DRAINING, NodeState.DRAINED):
            return
        self.runner.run(["condor_drain", *self._pool(), "-cancel", node])

    def remove(self, node: str) -> None:
        if self._node(node) is None:
            return
        try:
            self.runner.run(["condor_off", *self._pool(), "-startd", "-peaceful", node])
        except CommandFailed as exc:
            # the VM is gone and its ads are not expired yet: nothing is left to turn off
            if "Can't find address" not in exc.stderr and "Can't connect" not in exc.stderr:
                raise
