"""``SimBatch``: a small batch system in memory, for tests and the demo.

Why it exists: the elastic controller must be tested end to end (queue -> plan -> VMs -> nodes
-> jobs -> drain -> shutdown) in well under a second per scenario, on both databases, with no
daemons. SimBatch keeps exactly the semantics the controller relies on from the real adapters
(``batch/base.py``): pending jobs grouped by VO, nodes with IDLE/BUSY/DRAINING/DRAINED/DOWN,
idempotent drain/resume/remove. It is not a stub: jobs really start on free nodes of their VO
(first fit, in submit order) and finish after their runtime on an injected clock, and a node
that disappears under running jobs *kills* them, recorded in :attr:`SimBatch.killed`, so a test
can prove the controller never takes a worker away from a running job.

Nodes register the way a worker VM's batch daemon would: the harness (or the demo) calls
:meth:`SimBatch.node_up` when a pool VM reaches RUNNING, or :meth:`SimBatch.sync_nodes` with
every running worker at once; a node whose VM is gone goes DOWN.

With ``path``, the whole state is kept in one JSON file (read before and written after every
operation, under an flock), so a demo's job submitter and the daemon can share one queue.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vocloud.batch.base import NodeState, PendingJob, WorkerNode
from vocloud.errors import DriverError, InvalidInput


@dataclass(slots=True)
class SimJob:
    """One job; ``node``/``started_at`` are set when it starts, ``ended_at`` when it ends."""

    id: str
    vo: str
    cores: int
    memory_mib: int
    runtime_s: float
    submit_time: float
    node: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    killed: bool = False


@dataclass(slots=True)
class SimNode:
    """One worker node; ``draining`` is the admin flag, ``down`` the health."""

    name: str
    vo: str
    cores: int
    memory_mib: int
    draining: bool = False
    down: bool = False
    reason: str = ""
    idle_since: float | None = None
    jobs: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _State:
    next_id: int = 1
    jobs: dict[str, SimJob] = field(default_factory=dict)
    nodes: dict[str, SimNode] = field(default_factory=dict)


class SimBatch:
    """A :class:`~vocloud.batch.base.BatchSystem` whose jobs run on an injected clock."""

    name = "sim"

    def __init__(self, clock: Callable[[], float] = time.time, path: Path | None = None) -> None:
        self.clock = clock
        self.path = path
        self._st = _State()

    # ------------------------------------------------------------ persistence
    @contextmanager
    def _state(self) -> Iterator[_State]:
        """The state, advanced to ``clock()``; loaded from and saved to ``path`` when set."""
        if self.path is None:
            self._advance(self._st)
            yield self._st
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            st = self._load()
            self._advance(st)
            yield st
            self._save(st)  # advancing may have started or ended jobs: always persist

    def _load(self) -> _State:
        assert self.path is not None
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return _State()
        except (OSError, ValueError) as exc:
            raise DriverError(f"sim batch state {self.path} is unreadable: {exc}") from None
        return _State(
            next_id=int(doc["next_id"]),
            jobs={k: SimJob(**v) for k, v in doc["jobs"].items()},
            nodes={k: SimNode(**v) for k, v in doc["nodes"].items()},
        )

    def _save(self, st: _State) -> None:
        assert self.path is not None
        doc = {"next_id": st.next_id, "jobs": {k: asdict(v) for k, v in st.jobs.items()},
               "nodes": {k: asdict(v) for k, v in st.nodes.items()}}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.path)

    # ------------------------------------------------------------ the scheduler
    def _advance(self, st: _State) -> None:
        """Finish jobs whose runtime is over, then start waiting jobs on free nodes.

        Finishing is replayed in end-time order, and jobs start at the time of the event that
        freed their node, so the outcome does not depend on how often the clock is read.
        """
        now = self.clock()
        while True:
            running = [j for j in st.jobs.values() if j.started_at is not None and j.ended_at is None]
            due = sorted((j for j in running if j.started_at is not None
                          and j.started_at + j.runtime_s <= now),
                         key=lambda j: (float(j.started_at or 0) + j.runtime_s, j.id))
            self._start(st, now if not due else float(due[0].started_at or 0) + due[0].runtime_s)
            if not due:
                return
            job = due[0]
            end = float(job.started_at or 0) + job.runtime_s
            job.ended_at = end
            node = st.nodes.get(job.node or "")
            if node is not None and job.id in node.jobs:
                node.jobs.remove(job.id)
                if not node.jobs:
                    node.idle_since = end

    def _start(self, st: _State, at: float) -> None:
        waiting = sorted((j for j in st.jobs.values() if j.started_at is None and not j.killed),
                         key=lambda j: (j.submit_time, _num(j.id)))
        for job in waiting:
            if job.submit_time > at:
                continue
            for node in sorted(st.nodes.values(), key=lambda n: n.name):
                if node.vo != job.vo or node.draining or node.down:
                    continue
                cores, mem = _free(st, node)
                if cores >= job.cores and mem >= job.memory_mib:
                    job.node, job.started_at = node.name, at
                    node.jobs.append(job.id)
                    node.idle_since = None
                    break

    # ------------------------------------------------------------ for the harness
    def submit(self, vo: str, cores: int = 1, memory: int = 0, runtime: float = 60.0) -> str:
        """Queue a job of ``vo``; returns its id. It starts once a node of its VO has room."""
        if not vo:
            raise InvalidInput("a job needs a VO")
        if cores < 1 or memory < 0 or runtime < 0:
            raise InvalidInput("a job needs cores >= 1, memory >= 0 and runtime >= 0")
        with self._state() as st:
            job_id = str(st.next_id)
            st.next_id += 1
            st.jobs[job_id] = SimJob(job_id, vo, cores, memory, runtime, self.clock())
            self._start(st, self.clock())
            return job_id

    def node_up(self, name: str, vo: str, cores: int, memory: int) -> None:
        """A worker's batch daemon registered (or came back). Idempotent."""
        with self._state() as st:
            node = st.nodes.get(name)
            if node is None:
                st.nodes[name] = SimNode(name, vo, cores, memory, idle_since=self.clock())
            elif node.down:
                node.down, node.reason, node.idle_since = False, "", self.clock()
            self._start(st, self.clock())

    def node_down(self, name: str, reason: str = "not responding") -> None:
        """The worker stopped answering: its running jobs are lost (killed)."""
        with self._state() as st:
            node = st.nodes.get(name)
            if node is not None and not node.down:
                self._kill(st, node)
                node.down, node.reason = True, reason

    def sync_nodes(self, up: Mapping[str, tuple[str, int, int]]) -> None:
        """Make the registered nodes match the running workers ``{name: (vo, cores, MiB)}``.

        A node not in ``up`` goes DOWN (its VM is gone, and its jobs with it): exactly what a
        real batch system sees when a worker is switched off under it. A node already DOWN
        stays down (a dead batch daemon does not come back because its VM still runs; use
        :meth:`node_up`).
        """
        with self._state() as st:
            now = self.clock()
            for name, (vo, cores, memory) in up.items():
                if name not in st.nodes:
                    st.nodes[name] = SimNode(name, vo, cores, memory, idle_since=now)
            for node in st.nodes.values():
                if node.name not in up and not node.down:
                    self._kill(st, node)
                    node.down, node.reason = True, "worker VM is gone"
            self._start(st, now)

    def _kill(self, st: _State, node: SimNode) -> None:
        now = self.clock()
        for job_id in node.jobs:
            job = st.jobs[job_id]
            job.killed, job.ended_at = True, now
        node.jobs.clear()
        node.idle_since = now

    def jobs(self) -> list[SimJob]:
        """Every job, in submit order (copies)."""
        with self._state() as st:
            return [SimJob(**asdict(j)) for j in sorted(st.jobs.values(), key=lambda j: _num(j.id))]

    @property
    def killed(self) -> list[str]:
        """Ids of jobs that were killed under a node that went away: must stay empty."""
        return [j.id for j in self.jobs() if j.killed]

    @property
    def finished(self) -> list[str]:
        """Ids of jobs that ran to completion."""
        return [j.id for j in self.jobs() if j.ended_at is not None and not j.killed]

    # ------------------------------------------------------------ BatchSystem
    def pending(self) -> list[PendingJob]:
        with self._state() as st:
            return [PendingJob(j.id, j.vo, j.cores, j.memory_mib, int(j.runtime_s), j.submit_time)
                    for j in sorted(st.jobs.values(), key=lambda j: _num(j.id))
                    if j.started_at is None and not j.killed]

    def nodes(self) -> list[WorkerNode]:
        with self._state() as st:
            out = []
            for node in sorted(st.nodes.values(), key=lambda n: n.name):
                cores, mem = _free(st, node)
                out.append(WorkerNode(
                    name=node.name, state=_node_state(node), cores=node.cores,
                    memory_mib=node.memory_mib, running_jobs=len(node.jobs), vo=node.vo,
                    idle_since=node.idle_since if not node.jobs else None, reason=node.reason,
                    free_cores=cores, free_memory_mib=mem))
            return out

    def drain(self, node: str, reason: str) -> None:
        with self._state() as st:
            n = self._node(st, node)
            n.draining, n.reason = True, reason or "drain"

    def resume(self, node: str) -> None:
        with self._state() as st:
            n = self._node(st, node)
            n.draining, n.reason = False, "" if not n.down else n.reason
            self._start(st, self.clock())

    def remove(self, node: str) -> None:
        """Forget ``node``; a missing node is success. Jobs still on it are killed, as a real
        batch system would when the host under them is deleted."""
        with self._state() as st:
            n = st.nodes.pop(node, None)
            if n is not None:
                self._kill(st, n)

    @staticmethod
    def _node(st: _State, name: str) -> SimNode:
        try:
            return st.nodes[name]
        except KeyError:
            # As scontrol: an unknown node name is an error, not a silent success.
            raise DriverError(f"sim batch: invalid node name specified: {name}") from None


def _num(job_id: str) -> int:
    return int(job_id) if job_id.isdigit() else 0


def _free(st: _State, node: SimNode) -> tuple[int, int]:
    used = [st.jobs[j] for j in node.jobs]
    return (node.cores - sum(j.cores for j in used),
            node.memory_mib - sum(j.memory_mib for j in used))


def _node_state(node: SimNode) -> NodeState:
    if node.down:
        return NodeState.DOWN
    if node.draining:
        return NodeState.DRAINING if node.jobs else NodeState.DRAINED
    return NodeState.BUSY if node.jobs else NodeState.IDLE


def as_dict(job: SimJob) -> dict[str, Any]:
    """A job as JSON-ready data (for the demo's summary)."""
    return asdict(job)
