"""PBS Professional / OpenPBS adapter: ``qstat -f -F json``, ``pbsnodes -a -F json``, ``pbsnodes -o/-r``.

The JSON shape is PBS Pro's (18.x and later, OpenPBS): ``{"Jobs": {"<id>": {...}}}`` and
``{"nodes": {"<name>": {...}}}``, with the same attribute names and value formats as the text
``qstat -f`` (sizes like ``"8gb"``, durations like ``"02:00:00"``, times like
``"Tue Nov 14 22:13:20 2023"`` in the server's local time). Torque's ``qstat`` has no JSON
output (only ``-x`` XML); sites on Torque need an XML front-end, not provided here.

Demand: jobs in state ``Q`` (queued). ``H`` (held), ``W`` (waiting for its execution time) and
dependency holds (PBS holds dependent jobs with hold type ``s``, state ``H``) are excluded by
the state alone. Array jobs are one record; its ``array_indices_remaining`` give one job of
demand per queued subjob. Cores: ``Resource_List.ncpus`` (PBS sums it over the ``select``
chunks), else the chunks of ``select`` (``2:ncpus=4+1:ncpus=2``) or Torque-style ``nodes``
(``2:ppn=4``). Memory: ``Resource_List.mem`` (job total), else ``select`` chunk memory.

Removing a node deletes it from the server (``qmgr -c "delete node X"``): PBS elastic nodes are
created with ``qmgr -c "create node X"`` when their VM boots, so deleting is the inverse.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from vocloud.batch.base import NodeState, PendingJob, VOMapper, WorkerNode
from vocloud.batch.runner import CommandFailed, CommandRunner, Runner, expand_ranges, parse_json_object
from vocloud.errors import DriverError

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgtp]?)(b|w)?\s*$", re.I)
_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50}
_TIME_FORMAT = "%a %b %d %H:%M:%S %Y"


def parse_size_mib(value: Any, what: str = "size") -> int:
    """A PBS size (``8gb``, ``4194304kb``, ``512mb``, bare bytes; ``w`` = 8-byte words) in MiB.

    Rounded up: a job asking 1 byte more than a VM offers must not be told it fits.
    """
    if isinstance(value, int):
        return -(-value // 2**20)
    m = _SIZE.match(str(value))
    if m is None:
        raise DriverError(f"pbs: {what} is not a size: {value!r}")
    number, prefix, unit = int(m.group(1)), m.group(2).lower(), (m.group(3) or "b").lower()
    size = number << _SHIFT[prefix]
    if unit == "w":
        size *= 8
    return -(-size // 2**20)


def parse_duration_s(value: Any, what: str = "walltime") -> int:
    """A PBS duration: ``[[HH:]MM:]SS`` or plain seconds."""
    if isinstance(value, int):
        return value
    parts = str(value).strip().split(":")
    if not parts or len(parts) > 3 or not all(p.isdigit() for p in parts):
        raise DriverError(f"pbs: {what} is not a duration: {value!r}")
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return seconds


def parse_timestamp(value: Any, what: str = "qtime") -> float:
    """A PBS time attribute: epoch seconds, or the ``ctime``-style local-time string."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip()
    if text.isdigit():
        return float(text)
    try:
        return time.mktime(time.strptime(text, _TIME_FORMAT))
    except ValueError:
        raise DriverError(f"pbs: {what} is not a time: {value!r}") from None


def _chunks(select: str) -> list[tuple[int, dict[str, str]]]:
    """``2:ncpus=4:mem=8gb+1:ncpus=2`` -> [(2, {ncpus: 4, mem: 8gb}), (1, {ncpus: 2})]."""
    out = []
    for chunk in filter(None, select.split("+")):
        fields = chunk.split(":")
        counted = fields[0].isdigit()
        res = dict(f.split("=", 1) for f in (fields[1:] if counted else fields) if "=" in f)
        out.append((int(fields[0]) if counted else 1, res))
    return out


def _cores(rl: Mapping[str, Any], what: str) -> int:
    if "ncpus" in rl:
        return _int(rl["ncpus"], what, "ncpus")
    if "select" in rl:
        return sum(n * _int(r.get("ncpus", 1), what, "ncpus") for n, r in _chunks(str(rl["select"])))
    if "nodes" in rl:  # Torque-style nodes=2:ppn=4
        return sum(n * _int(r.get("ppn", 1), what, "ppn") for n, r in _chunks(str(rl["nodes"])))
    return 1


def _memory(rl: Mapping[str, Any], cores: int, what: str) -> int:
    if "mem" in rl:
        return parse_size_mib(rl["mem"], f"{what} mem")
    if "select" in rl:
        return sum(n * parse_size_mib(r["mem"], f"{what} mem") for n, r in _chunks(str(rl["select"]))
                   if "mem" in r)
    if "pmem" in rl:  # Torque: per process
        return parse_size_mib(rl["pmem"], f"{what} pmem") * cores
    return 0


def _int(value: Any, what: str, field: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DriverError(f"pbs: {field} of {what} is not a number: {value!r}") from None


def _attrs(job: Mapping[str, Any]) -> dict[str, str]:
    """Raw attributes plus the short names a :class:`VOMapper` is usually configured with."""
    attrs = {k: str(v) for k, v in job.items() if isinstance(v, str | int)}
    owner = str(job.get("Job_Owner", "")).partition("@")[0]
    attrs.update({
        "account": str(job.get("Account_Name", "")),
        "project": str(job.get("project", "")),
        "queue": str(job.get("queue", "")),
        "group": str(job.get("egroup", "")),
        "user": str(job.get("euser", "")) or owner,
    })
    return {k: v for k, v in attrs.items() if v}


def _mapping(payload: Mapping[str, Any], key: str, what: str) -> dict[str, Any]:
    section = payload.get(key, {})
    if not isinstance(section, dict) or not all(isinstance(v, dict) for v in section.values()):
        raise DriverError(f"{what}: {key!r} is not an object of records")
    return section


def parse_jobs(payload: Mapping[str, Any], mapper: VOMapper) -> list[PendingJob]:
    """Pending demand from ``qstat -f -F json`` (no ``Jobs`` key: an empty queue)."""
    out: list[PendingJob] = []
    for job_id, job in _mapping(payload, "Jobs", "qstat -f -F json").items():
        what = f"job {job_id}"
        state = job.get("job_state")
        if state is None:
            raise DriverError(f"qstat -f -F json: {what} has no job_state")
        if state != "Q":
            continue
        vo = mapper.vo_for(_attrs(job))
        if vo is None:
            continue
        rl = job.get("Resource_List") or {}
        if not isinstance(rl, dict):
            raise DriverError(f"qstat -f -F json: Resource_List of {what} is not an object")
        cores = _cores(rl, what)
        memory = _memory(rl, cores, what)
        walltime = parse_duration_s(rl["walltime"], f"{what} walltime") if "walltime" in rl else 0
        stamp = job.get("qtime") or job.get("ctime")
        if stamp is None:
            raise DriverError(f"qstat -f -F json: {what} has no qtime")
        submit = parse_timestamp(stamp, f"{what} qtime")
        ids = [job_id]
        remaining = job.get("array_indices_remaining")
        if str(job.get("array", "")).lower() == "true" and remaining and remaining != "-":
            base, _, server = job_id.partition(".")
            prefix = base.removesuffix("[]")
            ids = [f"{prefix}[{i}].{server}" if server else f"{prefix}[{i}]"
                   for i in expand_ranges(str(remaining), f"pbs: bad array indices {remaining!r} in {what}")]
        out.extend(PendingJob(id=i, vo=vo, cores=cores, memory_mib=memory, walltime_s=walltime,
                              submit_time=submit) for i in ids)
    return out


_DOWN = frozenset({"down", "state-unknown", "stale", "unresolvable", "sleep"})
_BUSY = frozenset({"job-busy", "job-exclusive", "busy", "resv-exclusive"})


def classify(states: set[str], running: int) -> NodeState:
    """PBS node state words (comma-separated in ``state``) to :class:`NodeState`."""
    if states & {"provisioning", "wait-provisioning"}:
        return NodeState.UNKNOWN
    if states & _DOWN:
        return NodeState.DOWN
    if "offline" in states:
        return NodeState.DRAINING if running else NodeState.DRAINED
    if running or states & _BUSY:
        return NodeState.BUSY
    if states == {"free"}:
        return NodeState.IDLE
    return NodeState.UNKNOWN


def parse_nodes(payload: Mapping[str, Any], mapper: VOMapper, vo_resource: str = "vo") -> list[WorkerNode]:
    """Worker nodes from ``pbsnodes -a -F json``.

    ``jobs`` lists one entry per CPU a job holds (``"12.srv/0"``, ``"12.srv/1"``), so running jobs
    are its distinct job ids. The VO comes from a custom node resource (``resources_available.vo``,
    set with ``qmgr`` when the VM joins), else from the node's ``queue`` through the mapper.
    """
    what = "pbsnodes -a -F json"
    out: list[WorkerNode] = []
    for name, node in sorted(_mapping(payload, "nodes", what).items()):
        if "state" not in node:
            raise DriverError(f"{what}: node {name} has no state")
        states = {s.strip() for s in str(node["state"]).split(",") if s.strip()}
        jobs = {str(j).partition("/")[0] for j in node.get("jobs") or []}
        avail = node.get("resources_available") or {}
        used = node.get("resources_assigned") or {}
        cores = _int(avail.get("ncpus", node.get("pcpus", 0)), name, "ncpus")
        memory = parse_size_mib(avail.get("mem", 0), f"{name} mem")
        state = classify(states, len(jobs))
        last_used = node.get("last_used_time") or node.get("last_state_change_time")
        idle_since = float(last_used) if state in (NodeState.IDLE, NodeState.DRAINED) and last_used \
            else None
        vo = avail.get(vo_resource)
        if not vo and node.get("queue"):
            vo = mapper.vo_for({"queue": str(node["queue"])})
        out.append(WorkerNode(
            name=name, state=state, cores=cores, memory_mib=memory, running_jobs=len(jobs),
            vo=str(vo) if vo else None, idle_since=idle_since, reason=str(node.get("comment", "")),
            free_cores=max(cores - _int(used.get("ncpus", 0), name, "ncpus"), 0),
            free_memory_mib=max(memory - parse_size_mib(used.get("mem", 0), f"{name} mem"), 0),
        ))
    return out


class PBSBatch:
    """The :class:`~vocloud.batch.base.BatchSystem` for PBS Professional / OpenPBS.

    A PBS server other than the default is chosen through the runner's environment
    (``PBS_SERVER`` or ``PBS_CONF_FILE``), like every other PBS client.
    """

    name = "pbs"

    def __init__(self, mapper: VOMapper, runner: Runner | None = None, vo_resource: str = "vo") -> None:
        self.mapper = mapper
        self.runner: Runner = runner if runner is not None else CommandRunner()
        self.vo_resource = vo_resource

    def _json(self, argv: Sequence[str]) -> dict[str, Any]:
        return parse_json_object(self.runner.run(argv), " ".join(argv))

    def pending(self) -> list[PendingJob]:
        # -t would expand arrays into subjobs; the remaining-indices attribute is cheaper
        return parse_jobs(self._json(["qstat", "-f", "-F", "json"]), self.mapper)

    def nodes(self) -> list[WorkerNode]:
        return parse_nodes(self._json(["pbsnodes", "-a", "-F", "json"]), self.mapper, self.vo_resource)

    def drain(self, node: str, reason: str) -> None:
        # offlining an offline node is accepted by pbsnodes: idempotent as is
        self.runner.run(["pbsnodes", "-o", "-C", reason or "vocloud: drain", node])

    def resume(self, node: str) -> None:
        self.runner.run(["pbsnodes", "-r", "-C", "", node])

    def remove(self, node: str) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", node):
            raise DriverError(f"pbs: refusing unusual node name {node!r}")
        try:
            self.runner.run(["qmgr", "-c", f"delete node {node}"])
        except CommandFailed as exc:
            if "Unknown node" not in exc.stderr and "Unknown node" not in exc.message:
                raise
