"""Slurm adapter: demand from ``squeue --json``, nodes from ``sinfo --json``, ops via ``scontrol``.

Parsing is split from running commands: the ``parse_*`` functions are pure (JSON in, frozen
records out) and are unit-tested on outputs recorded from a real Slurm, while
:class:`SlurmBatch` only builds argv lists and hands them to an injected runner.

Versions. Written against what Debian 12's Slurm 22.05 prints (OpenAPI plugin v0.0.38): plain
numbers (``null`` when unset), ``job_state`` as a string, node ``state`` as a lower-case base state
plus a ``state_flags`` list. Newer Slurm (v0.0.39 and later) wraps numbers as
``{"set": true, "infinite": false, "number": N}`` and prints states as lists of upper-case words;
both shapes are accepted, because a site upgrading Slurm must not silently lose its demand.
Slurm 22.05 ignores filter options (``-t``, ``-p``) when ``--json`` is given, so all filtering
happens here and the commands are kept minimal. Newer ``sinfo --json`` groups nodes into
``"sinfo"`` records; then the adapter reads ``scontrol show nodes --json`` instead, which keeps the
flat ``"nodes"`` list (``scontrol`` has no ``--json`` in 22.05).

Which pending jobs count as demand: an *allow-list* of pending reasons (:data:`DEMAND_REASONS`).
A job waiting for resources or behind higher-priority jobs is demand; a held job, one blocked on
a dependency or a begin time, or one stopped by an association/QOS limit is not, because a new
VM would not let it start and would only sit idle. Sites can pass their own list.

Removing a node. Slurm nodes of an elastic cluster are ``State=CLOUD`` nodes (or dynamic nodes)
that stay in ``slurm.conf`` for good; "remove" therefore never edits the configuration: a cloud
node is powered down (``State=POWER_DOWN``), a dynamic node (22.05+ ``slurmd -Z``) is deleted with
``scontrol delete``, and any other node is marked ``DOWN``. ``remove`` runs only after the VM is
gone (drained and empty, or dead), so no live job is lost: Slurm requeues the jobs of a dead node
itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vocloud.batch import hostlist
from vocloud.batch.base import NodeState, PendingJob, VOMapper, WorkerNode
from vocloud.batch.runner import CommandFailed, CommandRunner, Runner, parse_json_object
from vocloud.errors import DriverError, InvalidInput

#: Pending reasons that mean "would run if there were more nodes" (squeue's REASON column).
#: The long 22.05 wording of "nodes DOWN/DRAINED" is included: on an elastic cluster whose nodes
#: are all drained or powered down, that is exactly the demand the pools must answer.
#: ``PartitionConfig`` is what a job in a *feature nodeset* partition (``NodeSet=x Feature=vo_atlas``
#: + ``PartitionName=atlas Nodes=x``) waits with while no dynamic worker is registered yet, or
#: while the registered ones are too small in total: the scale-from-zero demand of a VO pool.
DEMAND_REASONS: frozenset[str] = frozenset({
    "None",
    "Priority",
    "Resources",
    "PartitionConfig",
    "PartitionNodeLimit",
    "ReqNodeNotAvail",
    "NodeDown",
    "Nodes_required_for_job_are_DOWN,_DRAINED_or_reserved_for_jobs_in_higher_priority_partitions",
})

#: Job states in which a job occupies its nodes (a node running one cannot be shut down).
_OCCUPYING = frozenset({"RUNNING", "COMPLETING", "CONFIGURING", "SUSPENDED", "STAGE_OUT"})

_REMOVE_REASON = "vocloud: node removed"


def _num(value: Any, field: str = "") -> int | None:
    """A Slurm number in either shape: ``5`` / ``null`` (22.05) or ``{"set", "number"}`` (0.0.39+).

    Unset and "infinite" both come back as ``None``: for a time limit or a memory request they
    mean "states none", which the interface reports as ``0``.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite", False):
            return None
        return _num(value.get("number"), field)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise DriverError(f"slurm: field {field or '?'} is not a number: {value!r}")


def _words(value: Any) -> list[str]:
    """A state given as ``"PENDING"`` (22.05) or ``["PENDING"]`` (0.0.39+), upper-cased."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value.upper()] if value else []
    if isinstance(value, list):
        return [str(v).upper() for v in value]
    raise DriverError(f"slurm: unexpected state value {value!r}")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _records(payload: Mapping[str, Any], key: str, what: str) -> list[dict[str, Any]]:
    """The ``jobs`` / ``nodes`` list, after surfacing the ``errors`` Slurm puts in the payload."""
    errors = payload.get("errors") or []
    if errors:
        msgs = "; ".join(_text(e.get("error", e)) if isinstance(e, dict) else str(e) for e in errors)
        raise DriverError(f"{what} reported errors: {msgs}")
    records = payload.get(key)
    if not isinstance(records, list):
        raise DriverError(f"{what}: output has no {key!r} list (is this Slurm's JSON output?)")
    if not all(isinstance(r, dict) for r in records):
        raise DriverError(f"{what}: {key!r} holds non-object entries")
    return records


def _required(record: Mapping[str, Any], field: str, what: str) -> Any:
    if field not in record:
        name = record.get("job_id", record.get("name", "?"))
        raise DriverError(f"{what}: record {name} has no {field!r} field")
    return record[field]




def expand_hostlist(expr: str) -> list[str]:
    """Expand a Slurm hostlist (``n[1-3,05],gpu1``, ``r[1-2]n[1-2]``) into names.

    Running jobs list their nodes only in this compressed form. One implementation serves the
    adapter and the power-saving commands (:mod:`vocloud.batch.hostlist`); here a malformed list
    is what slurmctld printed, so it is a DriverError rather than bad user input.
    """
    try:
        return hostlist.expand(expr)
    except InvalidInput as exc:
        raise DriverError(f"slurm: malformed hostlist {expr!r}: {exc.message}") from None


def _array_task_ids(spec: str, limit: int | None) -> list[str]:
    """Task ids still pending in an array record (``0-9%3``, ``1,3,5-7:2``).

    Slurm keeps the not-yet-started tasks of an array as one record; each task is one job of
    demand, but no more than the ``%N`` throttle can ever run at once, so demand is capped there.
    """
    spec = spec.split("%", 1)[0]
    ids: list[str] = []
    for item in filter(None, spec.split(",")):
        rng, _, step_s = item.partition(":")
        lo_s, _, hi_s = rng.partition("-")
        try:
            lo, hi, step = int(lo_s), int(hi_s or lo_s), int(step_s or 1)
        except ValueError:
            raise DriverError(f"slurm: malformed array task list {spec!r}") from None
        ids.extend(str(i) for i in range(lo, hi + 1, max(step, 1)))
    if limit:
        ids = ids[:limit]
    return ids


def _job_attrs(job: Mapping[str, Any], partition: str) -> dict[str, str]:
    """The attributes a :class:`VOMapper` may look at, under the names it is configured with."""
    return {
        "account": _text(job.get("account")),
        "partition": partition,
        "qos": _text(job.get("qos")),
        "group": _text(job.get("group_name")),
        "user": _text(job.get("user_name")),
    }


def parse_pending(payload: Mapping[str, Any], mapper: VOMapper, partition: str | None = None,
                  reasons: Iterable[str] = DEMAND_REASONS) -> list[PendingJob]:
    """Pending demand from ``squeue --json`` output.

    Cores are the job's ``cpus`` (tasks x cpus-per-task, as Slurm computed it) and fall back to
    ``cpus_per_task x tasks``. Memory is the job's total: ``memory_per_node`` times its node count,
    or ``memory_per_cpu`` times its cores. Jobs the mapper places in no VO are dropped.
    """
    allowed = frozenset(reasons)
    out: list[PendingJob] = []
    for job in _records(payload, "jobs", "squeue --json"):
        if "PENDING" not in _words(_required(job, "job_state", "squeue --json")):
            continue
        reason = _text(job.get("state_reason")) or "None"
        if reason not in allowed:
            continue
        parts = [p for p in _text(job.get("partition")).split(",") if p]
        if partition is not None:
            if partition not in parts:
                continue
            part = partition
        else:
            part = parts[0] if parts else ""
        vo = mapper.vo_for(_job_attrs(job, part))
        if vo is None:
            continue
        job_id = str(_num(_required(job, "job_id", "squeue --json"), "job_id"))
        tasks = _num(job.get("tasks"), "tasks") or 1
        per_task = _num(job.get("cpus_per_task"), "cpus_per_task") or 1
        cores = _num(job.get("cpus"), "cpus") or tasks * per_task
        nodes = _num(job.get("node_count"), "node_count") or 1
        per_node = _num(job.get("memory_per_node"), "memory_per_node")
        per_cpu = _num(job.get("memory_per_cpu"), "memory_per_cpu")
        if per_node:
            memory = per_node * nodes
        elif per_cpu:
            memory = per_cpu * cores
        else:
            memory = 0
        limit_min = _num(job.get("time_limit"), "time_limit") or 0
        submit = float(_num(_required(job, "submit_time", "squeue --json"), "submit_time") or 0)
        ids = [job_id]
        array_spec = _text(job.get("array_task_string"))
        array_id = _num(job.get("array_job_id"), "array_job_id")
        if array_spec and array_id and _num(job.get("array_task_id"), "array_task_id") is None:
            cap = _num(job.get("array_max_tasks"), "array_max_tasks")
            ids = [f"{array_id}_{t}" for t in _array_task_ids(array_spec, cap)]
        out.extend(PendingJob(id=i, vo=vo, cores=cores, memory_mib=memory,
                              walltime_s=limit_min * 60, submit_time=submit) for i in ids)
    return out


def parse_running(payload: Mapping[str, Any]) -> dict[str, int]:
    """Jobs occupying each node, from ``squeue --json`` (a job on N nodes counts on each)."""
    counts: dict[str, int] = {}
    for job in _records(payload, "jobs", "squeue --json"):
        if not _OCCUPYING.intersection(_words(job.get("job_state"))):
            continue
        nodes = job.get("nodes")
        if isinstance(nodes, dict):  # 0.0.40+ may nest the allocation
            nodes = nodes.get("list") or nodes.get("nodes")
        for name in expand_hostlist(_text(nodes)):
            counts[name] = counts.get(name, 0) + 1
    return counts


def _node_words(node: Mapping[str, Any]) -> tuple[str, set[str]]:
    """(base state, flags) from 22.05 (``"idle"`` + ``state_flags``) or newer (``["IDLE", ...]``)."""
    words = _words(_required(node, "state", "sinfo --json"))
    base = words[0] if words else "UNKNOWN"
    flags = set(words[1:]) | set(_words(node.get("state_flags")))
    return base, flags


def classify(base: str, flags: set[str], busy: bool) -> NodeState:
    """Reduce Slurm's base state + flags to the interface's :class:`NodeState`.

    Order matters: a node powering up is a VM still booting (UNKNOWN, never acted on); down or
    powered down means no usable worker (DOWN); a drain flag wins over the allocation state.
    ``NOT_RESPONDING`` alone is *not* DOWN: Slurm sets it for a moment after every ``RESUME``
    until its next ping, and marks a really dead node DOWN itself after ``SlurmdTimeout``.
    """
    if "POWERING_UP" in flags or base == "FUTURE":
        return NodeState.UNKNOWN
    if base == "DOWN" or flags & {"POWERED_DOWN", "POWERING_DOWN", "POWER_DOWN"}:
        return NodeState.DOWN
    if flags & {"DRAIN", "DRAINING", "DRAINED", "FAIL"} or base in {"DRAINING", "DRAINED"}:
        return NodeState.DRAINING if busy or base == "DRAINING" else NodeState.DRAINED
    if base in {"ALLOCATED", "MIXED", "COMPLETING"} or busy:
        return NodeState.BUSY
    if base == "IDLE":
        return NodeState.IDLE
    return NodeState.UNKNOWN


def _node_vo(node: Mapping[str, Any], mapper: VOMapper, feature_prefix: str) -> str | None:
    """A node's pool: a ``vo_<name>`` feature, else its partition when VOs map from partitions."""
    features = _text(node.get("active_features")) or _text(node.get("features"))
    for feature in features.split(","):
        feature = feature.strip()
        if feature_prefix and feature.startswith(feature_prefix) and len(feature) > len(feature_prefix):
            return feature[len(feature_prefix):]
    if mapper.attribute == "partition":
        for part in node.get("partitions") or []:
            vo = mapper.vo_for({"partition": str(part)})
            if vo is not None:
                return vo
    return None


def parse_nodes(payload: Mapping[str, Any], running: Mapping[str, int], mapper: VOMapper,
                partition: str | None = None, vo_feature_prefix: str = "vo_") -> list[WorkerNode]:
    """Worker nodes from ``sinfo --json`` (22.05) or ``scontrol show nodes --json`` (newer).

    ``running`` comes from :func:`parse_running`; a node with allocated CPUs but no job seen yet
    (a race between the two commands) still counts as busy, so it is never drained as empty.
    """
    out: list[WorkerNode] = []
    for node in _records(payload, "nodes", "sinfo --json"):
        name = _text(_required(node, "name", "sinfo --json"))
        if partition is not None and partition not in (node.get("partitions") or []):
            continue
        base, flags = _node_words(node)
        jobs = running.get(name, 0)
        alloc_cpus = _num(node.get("alloc_cpus"), "alloc_cpus") or 0
        busy = jobs > 0 or alloc_cpus > 0
        state = classify(base, flags, busy)
        last_busy = _num(node.get("last_busy"), "last_busy")
        idle_since = float(last_busy) if state in (NodeState.IDLE, NodeState.DRAINED) and last_busy \
            else None
        cores = _num(node.get("cpus"), "cpus") or 0
        memory = _num(node.get("real_memory"), "real_memory") or 0
        out.append(WorkerNode(
            name=name, state=state, cores=cores, memory_mib=memory,
            running_jobs=jobs, vo=_node_vo(node, mapper, vo_feature_prefix),
            idle_since=idle_since, reason=_text(node.get("reason")),
            free_cores=max(cores - alloc_cpus, 0),
            free_memory_mib=max(memory - (_num(node.get("alloc_memory"), "alloc_memory") or 0), 0),
        ))
    return out


class SlurmBatch:
    """The :class:`~vocloud.batch.base.BatchSystem` for Slurm (22.05 and newer).

    ``partition`` restricts both demand and nodes to one partition, for sites whose elastic
    nodes live in a partition of their own next to static ones.
    """

    name = "slurm"

    def __init__(self, mapper: VOMapper, runner: Runner | None = None, partition: str | None = None,
                 demand_reasons: Iterable[str] = DEMAND_REASONS, vo_feature_prefix: str = "vo_") -> None:
        self.mapper = mapper
        self.runner: Runner = runner if runner is not None else CommandRunner()
        self.partition = partition
        self.demand_reasons = frozenset(demand_reasons)
        self.vo_feature_prefix = vo_feature_prefix

    def _json(self, argv: Sequence[str]) -> dict[str, Any]:
        return parse_json_object(self.runner.run(argv), " ".join(argv))

    def _queue(self) -> dict[str, Any]:
        # --all: jobs in hidden partitions (elastic partitions often are) are demand too.
        return self._json(["squeue", "--all", "--json"])

    def _node_payload(self) -> dict[str, Any]:
        payload = self._json(["sinfo", "--all", "--json"])
        if "nodes" not in payload and "sinfo" in payload:
            payload = self._json(["scontrol", "show", "nodes", "--json"])
        return payload

    def pending(self) -> list[PendingJob]:
        return parse_pending(self._queue(), self.mapper, self.partition, self.demand_reasons)

    def nodes(self) -> list[WorkerNode]:
        payload = self._node_payload()
        running = parse_running(self._queue())
        return parse_nodes(payload, running, self.mapper, self.partition, self.vo_feature_prefix)

    def _update(self, node: str, *settings: str) -> None:
        self.runner.run(["scontrol", "update", f"NodeName={node}", *settings])

    def drain(self, node: str, reason: str) -> None:
        # Slurm refuses a drain without a reason; draining a drained node is accepted as is.
        self._update(node, "State=DRAIN", f"Reason={reason or 'vocloud: drain'}")

    def resume(self, node: str) -> None:
        try:
            self._update(node, "State=RESUME")
        except CommandFailed as exc:
            # Slurm answers RESUME on a node that is not drained/down with this error: the
            # node already takes jobs, which is what the caller wants.
            if "Invalid node state specified" not in exc.stderr:
                raise

    def remove(self, node: str) -> None:
        record = next((n for n in _records(self._node_payload(), "nodes", "sinfo --json")
                       if _text(n.get("name")) == node), None)
        if record is None:
            return  # unknown (or a hidden powered-down cloud node): nothing to forget
        base, flags = _node_words(record)
        try:
            if flags & {"DYNAMIC_NORM", "DYNAMIC"}:
                self.runner.run(["scontrol", "delete", f"NodeName={node}"])
            elif "CLOUD" in flags:
                if flags & {"POWERED_DOWN", "POWERING_DOWN", "POWER_DOWN"}:
                    return
                self._update(node, "State=POWER_DOWN", f"Reason={_REMOVE_REASON}")
            elif base != "DOWN":
                self._update(node, "State=DOWN", f"Reason={_REMOVE_REASON}")
        except CommandFailed as exc:
            if "Invalid node name specified" not in exc.stderr:
                raise
