"""Grid Engine (Son of Grid Engine 8.1, Debian ``gridengine-*``) adapter: ``qstat -xml``, ``qmod``, ``qconf``.

Checked against a real SoGE 8.1.9 (``tests/integration/test_gridengine_batch.py``); the unit
tests' XML was captured from it (``tests/unit/data/batch/README.md``).

Demand comes from ``qstat -u '*' -s p -r -ext -urg -xml``: the pending ``job_list`` entries with
``-r`` (requested resources: ``hard_request``, ``requested_pe``, ``hard_req_queue``) and ``-ext``
(``JB_project``, ``JB_department``). ``-urg`` is there for ``JB_submission_time``: the real
``qstat`` drops the submission time from ``-ext`` listings unless ``-urg`` (or ``-pri``) is
given. Only state ``qw`` is demand: ``hqw`` is held (a user/operator hold *or* a
``-hold_jid`` dependency, which Grid Engine implements as a hold) and ``Eqw`` is in error.
A job deferred with ``qsub -a`` also lists as ``qw`` (its start time is only in
``qstat -j``), so it is counted as demand: a known limitation.
Cores are the job's slots (its parallel environment request); memory is ``h_vmem`` (else
``mem_free``, ``s_vmem``, ``virtual_free``) which Grid Engine counts *per slot*, so it is
multiplied by the slots; wall time is ``h_rt`` (else ``s_rt``; ``qstat`` prints both in
seconds). An array job's pending tasks (``tasks`` like ``3-10:1``) are one job of demand each.

Nodes come from ``qstat -f -u '*' -xml``: the queue instances (``queue@host``) of each host are
folded into one node; running jobs count each array task once. A queue instance in state ``d``
is disabled — what ``drain`` does with ``qmod -d '*@host'`` — and ``u`` means the execd does not
answer (shut down, or never started). ``remove`` takes the host out of the configured host group
and then deletes the execution host (``qconf -de``), which Grid Engine refuses while any queue
still references the host; "not a member", "no such execution host" and an unresolvable host
name (the VM and its DNS entry are gone) count as success, anything else (an unknown host
group, a host still referenced elsewhere) is an error.

**Elastic workers** (VMs whose guest runs ``sge_execd``, docs/worker.md) need two things a
Slurm dynamic node does not: Grid Engine only accepts an execd from a host it already knows as an
*execution host*, and it checks host names both ways (the qmaster reverse-resolves the execd's
address and compares it with the name the execd announces). So this adapter implements
:class:`~vocloud.batch.base.RegistersNodes`: the pool controller calls ``register(node, address,
vo)`` once the worker's VM has its lease (before the guest's execd can start), and ``register``

1. when ``hosts_file`` is set (``VOCLOUD_SGE_HOSTS_FILE``), writes ``<address> <node>`` into that
   hosts-format file (replacing any older line for the address or the name) — for sites whose
   qmaster resolves through a file vocloud may keep, rather than a DNS that already names every
   lease (then leave it unset);
2. adds the execution host (``qconf -Ae``; with ``projects <vo>`` when jobs map to VOs by
   project, so only that VO's jobs run there), "already exists" being success;
3. adds it to ``hostgroup`` (``qconf -aattr hostgroup hostlist``), whose queues then get an
   instance on it (state ``u`` until the execd reports).

``remove`` undoes all three. ``qconf -Ae`` resolves the name *on the client*, so the daemon's
machine must resolve worker names the same way the qmaster does.

The XML is parsed with the standard library: it comes from the local ``qstat`` binary, not
from the network.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from vocloud.batch.base import NodeState, PendingJob, VOMapper, WorkerNode
from vocloud.batch.runner import CommandFailed, CommandRunner, Runner, expand_ranges
from vocloud.errors import DriverError

_MEMORY_REQUESTS = ("h_vmem", "mem_free", "s_vmem", "virtual_free", "h_data")
_TIME_REQUESTS = ("h_rt", "s_rt")
_MEM = re.compile(r"^\s*([\d.]+)\s*([kKmMgGtT]?)\s*$")
_SHIFT = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}
# what qconf prints when the host is already out of the group / not an execution host (8.1.9:
# 'denied: execution host "X" does not exist', '"X" does not exist in "hostlist" of
# "hostgroup"'), or its name no longer resolves; "host group ... does not exist" is NOT one
_NOT_THERE = ('execution host "{node}" does not exist', 'does not exist in "hostlist"',
              "is not an execution host", "is not a member", 'can\'t resolve hostname "{node}"')


_EXEC_HOST = """hostname {host}
load_scaling NONE
complex_values NONE
user_lists NONE
xuser_lists NONE
projects {projects}
xprojects NONE
usage_scaling NONE
report_variables NONE
"""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]*$")
_ADDRESS = re.compile(r"^[0-9A-Fa-f.:]+$")


def _root(text: str, what: str) -> ET.Element:
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        raise DriverError(f"{what}: output is not valid XML ({exc}): {text.strip()[:80]!r}") from None


def parse_memory_mib(value: str, what: str = "memory") -> int:
    """A Grid Engine memory value (``2G``, ``512M``, ``1.5g``, bytes) in MiB, rounded up.

    Upper-case suffixes are powers of 1024, lower-case of 1000, as in ``sge_types(1)``.
    """
    m = _MEM.match(value)
    if m is None:
        raise DriverError(f"gridengine: {what} is not a memory value: {value!r}")
    number, suffix = float(m.group(1)), m.group(2)
    if suffix.isupper() or not suffix:
        size = number * 2 ** _SHIFT[suffix.lower()]
    else:
        size = number * 1000 ** (_SHIFT[suffix] // 10)
    return int(-(-size // 2**20))


def parse_time_s(value: str, what: str = "h_rt") -> int:
    """A Grid Engine time (``3600``, ``1:00:00``, ``INFINITY``) in seconds; infinity is 0."""
    text = value.strip()
    if text.upper() == "INFINITY":
        return 0
    parts = text.split(":")
    if len(parts) > 3 or not all(p.isdigit() for p in parts):
        raise DriverError(f"gridengine: {what} is not a time: {value!r}")
    seconds = 0
    for part in parts:
        seconds = seconds * 60 + int(part)
    return seconds


def _text(el: ET.Element, tag: str) -> str:
    found = el.find(tag)
    return (found.text or "").strip() if found is not None else ""


def parse_pending(text: str, mapper: VOMapper) -> list[PendingJob]:
    """Pending demand from ``qstat -u '*' -s p -r -ext -xml``."""
    what = "qstat -xml"
    root = _root(text, what)
    out: list[PendingJob] = []
    for job in root.iter("job_list"):
        number = _text(job, "JB_job_number")
        state = _text(job, "state")
        if not number or not state:
            raise DriverError(f"{what}: job_list entry without JB_job_number/state")
        if state != "qw":
            continue
        requests = {r.get("name", ""): (r.text or "").strip() for r in job.iter("hard_request")}
        attrs = {
            "project": _text(job, "JB_project"), "department": _text(job, "JB_department"),
            "user": _text(job, "JB_owner"), "queue": _text(job, "hard_req_queue").split("@")[0],
        }
        vo = mapper.vo_for({k: v for k, v in attrs.items() if v})
        if vo is None:
            continue
        slots_text = _text(job, "slots") or "1"
        if not slots_text.isdigit():
            raise DriverError(f"{what}: slots of job {number} is not a number: {slots_text!r}")
        slots = int(slots_text)
        mem_name = next((n for n in _MEMORY_REQUESTS if n in requests), None)
        memory = parse_memory_mib(requests[mem_name], f"{mem_name} of job {number}") * slots \
            if mem_name else 0
        time_name = next((n for n in _TIME_REQUESTS if n in requests), None)
        walltime = parse_time_s(requests[time_name], f"{time_name} of job {number}") if time_name else 0
        submitted = _text(job, "JB_submission_time")
        if not submitted:
            raise DriverError(f"{what}: job {number} has no JB_submission_time "
                              "(qstat drops it from -ext listings without -urg)")
        try:
            submit = datetime.fromisoformat(submitted).timestamp()  # local time, like qstat
        except ValueError:
            raise DriverError(f"{what}: JB_submission_time of job {number}: {submitted!r}") from None
        tasks = _text(job, "tasks")
        bad = f"gridengine: bad task range {tasks!r} for job {number}"
        ids = [f"{number}.{t}" for t in expand_ranges(tasks, bad)] if tasks else [number]
        out.extend(PendingJob(id=i, vo=vo, cores=slots, memory_mib=memory, walltime_s=walltime,
                              submit_time=submit) for i in ids)
    return out


def classify(states: set[str], used: int) -> NodeState:
    """Queue-instance state letters of one host (union) to :class:`NodeState`."""
    if states & {"u", "E"}:
        return NodeState.DOWN
    if "d" in states or "D" in states:
        return NodeState.DRAINING if used else NodeState.DRAINED
    if used:
        return NodeState.BUSY
    if not states - {"a"}:  # alarm (load threshold) alone still takes jobs
        return NodeState.IDLE
    return NodeState.UNKNOWN  # suspended (s, S), calendar (c, C), orphaned (o)...


def parse_hosts(text: str, vo_queue_prefix: str = "") -> list[WorkerNode]:
    """Worker nodes from ``qstat -f -u '*' -xml``, one per host over its queue instances.

    When a site runs one queue per VO named ``<prefix><vo>`` (``vo-atlas``), passing that
    prefix as ``vo_queue_prefix`` names the host's pool; ``""`` (default) leaves ``vo`` unset.
    """
    what = "qstat -f -xml"
    root = _root(text, what)
    hosts: dict[str, dict[str, Any]] = {}
    for queue in root.iter("Queue-List"):
        name = _text(queue, "name")
        if "@" not in name:
            raise DriverError(f"{what}: queue instance without queue@host name: {name!r}")
        qname, host = name.split("@", 1)
        entry = hosts.setdefault(host, {"states": set(), "used": 0, "total": 0, "resv": 0,
                                        "jobs": set(), "queues": []})
        try:
            entry["used"] += int(_text(queue, "slots_used") or 0)
            entry["resv"] += int(_text(queue, "slots_resv") or 0)
            entry["total"] += int(_text(queue, "slots_total") or 0)
        except ValueError:
            raise DriverError(f"{what}: slot counts of {name} are not numbers") from None
        entry["states"].update(_text(queue, "state"))  # "au" -> {"a", "u"}
        entry["jobs"].update((_text(j, "JB_job_number"), _text(j, "tasks"))
                             for j in queue.iter("job_list"))
        entry["queues"].append(qname)
    out: list[WorkerNode] = []
    for host, e in sorted(hosts.items()):
        vo = None
        if vo_queue_prefix:
            vo = next((q[len(vo_queue_prefix):] for q in e["queues"] if q.startswith(vo_queue_prefix)), None)
        out.append(WorkerNode(
            name=host, state=classify(e["states"], e["used"]), cores=e["total"], memory_mib=0,
            running_jobs=len(e["jobs"]), vo=vo, idle_since=None,
            reason="disabled" if "d" in e["states"] else "",
            free_cores=max(e["total"] - e["used"] - e["resv"], 0),
        ))
    return out


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[IO[str]]:
    """``path`` opened for update under an exclusive ``flock`` (created if missing)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield f


def _rewrite(f: IO[str], lines: list[str]) -> None:
    # In place (no rename): the file may be bind-mounted over /etc/hosts, which pins its inode.
    f.seek(0)
    f.write("".join(lines))
    f.truncate()
    f.flush()


def _names(line: str) -> list[str]:
    return line.split("#", 1)[0].split()


def set_host_entry(path: Path, address: str, name: str) -> None:
    """Make ``<address> <name>`` the only hosts-file line for that address and that name."""
    with _locked(path) as f:
        old = f.read().splitlines(keepends=True)
        keep = [ln for ln in old if not (fields := _names(ln)) or
                (fields[0] != address and name not in fields[1:])]
        if keep and not keep[-1].endswith("\n"):
            keep[-1] += "\n"
        new = [*keep, f"{address} {name}\n"]
        if new != old:
            _rewrite(f, new)


def drop_host_entry(path: Path, name: str) -> None:
    """Remove the hosts-file lines that name ``name`` (a missing file or line is success)."""
    if not path.exists():
        return
    with _locked(path) as f:
        old = f.read().splitlines(keepends=True)
        keep = [ln for ln in old if name not in _names(ln)[1:]]
        if keep != old:
            _rewrite(f, keep)


class GridEngineBatch:
    """The :class:`~vocloud.batch.base.BatchSystem` for (Son of) Grid Engine.

    ``hostgroup`` is the host group elastic hosts are added to (``@allhosts`` by default);
    ``remove`` takes the host out of it before deleting the execution host, which Grid Engine
    otherwise refuses. ``hosts_file``: the hosts-format file ``register`` keeps worker names in
    (module docstring; the daemon's ``sge_hosts_file`` setting, ``VOCLOUD_SGE_HOSTS_FILE``);
    ``None`` or ``""`` means DNS already names the workers.
    """

    name = "gridengine"

    def __init__(self, mapper: VOMapper, runner: Runner | None = None, hostgroup: str = "@allhosts",
                 vo_queue_prefix: str = "", hosts_file: Path | str | None = None) -> None:
        self.mapper = mapper
        self.runner: Runner = runner if runner is not None else CommandRunner()
        self.hostgroup = hostgroup
        self.vo_queue_prefix = vo_queue_prefix
        self.hosts_file = Path(hosts_file) if hosts_file else None

    def pending(self) -> list[PendingJob]:
        text = self.runner.run(["qstat", "-u", "*", "-s", "p", "-r", "-ext", "-urg", "-xml"])
        return parse_pending(text, self.mapper)

    def nodes(self) -> list[WorkerNode]:
        return parse_hosts(self.runner.run(["qstat", "-f", "-u", "*", "-xml"]), self.vo_queue_prefix)

    def drain(self, node: str, reason: str) -> None:
        # Grid Engine has no drain reason; disabling an already disabled queue is accepted.
        self.runner.run(["qmod", "-d", f"*@{node}"])

    def resume(self, node: str) -> None:
        self.runner.run(["qmod", "-e", f"*@{node}"])

    def _tolerant(self, argv: Sequence[str], node: str) -> None:
        try:
            self.runner.run(argv)
        except CommandFailed as exc:
            text = f"{exc.stderr} {exc.message}".lower()
            if not any(m.format(node=node).lower() in text for m in _NOT_THERE):
                raise

    def register(self, node: str, address: str, vo: str) -> None:
        """Make ``node`` (at ``address``) an execution host of ``vo`` before its execd starts.

        Idempotent: every step treats "already there" as done, so the controller may call it
        again after a crash. The name and address are checked (they end up in qconf input).
        """
        if not _NAME.match(node) or not _ADDRESS.match(address):
            raise DriverError(f"gridengine: cannot register host {node!r} at {address!r}")
        if self.hosts_file is not None:
            try:
                set_host_entry(self.hosts_file, address, node)
            except OSError as exc:
                raise DriverError(f"gridengine: cannot write {self.hosts_file}: {exc}") from None
        projects = vo if self.mapper.attribute == "project" and _NAME.match(vo) else "NONE"
        with tempfile.NamedTemporaryFile("w", prefix="vocloud-exechost-", suffix=".txt") as f:
            f.write(_EXEC_HOST.format(host=node, projects=projects))
            f.flush()
            try:
                self.runner.run(["qconf", "-Ae", f.name])
            except CommandFailed as exc:
                if "already exists" not in f"{exc.stderr} {exc.message}":
                    raise
        # "No modification because ... already exists in hostlist" exits 0
        self.runner.run(["qconf", "-aattr", "hostgroup", "hostlist", node, self.hostgroup])

    def remove(self, node: str) -> None:
        # every step runs every time (a crash may have left the host half removed); each one
        # treats "not there" as done
        self._tolerant(["qconf", "-dattr", "hostgroup", "hostlist", node, self.hostgroup], node)
        self._tolerant(["qconf", "-de", node], node)
        if self.hosts_file is not None:
            try:
                drop_host_entry(self.hosts_file, node)
            except OSError as exc:
                raise DriverError(f"gridengine: cannot write {self.hosts_file}: {exc}") from None

