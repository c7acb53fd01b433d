"""One batch partition: an FCFS queue with EASY backfilling over a set of worker nodes.

EASY (Lifka, 1995) is what PBS/Maui, Slurm's backfill and most sites the traces come from
actually ran, so replaying a trace under plain FCFS would overstate waits. The rule: start jobs
from the head of the queue while they fit; when the head does not fit, give it a *reservation* at
the earliest time enough cores free up (its "shadow time", from the running jobs' estimated ends),
and let later jobs jump ahead only if they cannot delay it: they end before the shadow time, or
they use only the cores the head will not need then ("extra" cores).

Estimates are the trace's requested times (times the virtualization factor on VMs), as the
real scheduler had them. A job running past its estimate is expected to end "now". When
``span_nodes`` is true (bare-metal partitions, as in SWF's parallel machines) a job may take
cores on several nodes and cores are interchangeable; otherwise (VMs) it must fit on one node,
and the reservation is computed on core counts, which is exact for serial jobs.

The class is deliberately I/O- and clock-free: the event loop tells it ``now`` and pushes the
job-end events it returns, so the backfilling rule is tested on hand-made cases.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence


class Node:
    """A worker node (bare host or VM) as the batch system sees it."""

    __slots__ = ("cores", "draining", "free", "id", "idle_since", "jobs", "memory_mib", "until")

    def __init__(self, node_id: int, cores: int, memory_mib: int, now: float) -> None:
        self.id = node_id
        self.cores = cores
        self.memory_mib = memory_mib
        self.free = cores
        self.draining = False
        self.jobs = 0
        self.idle_since: float | None = now
        self.until = 0.0  # latest estimated end of its running jobs (0: none running)


class Cluster:
    """FCFS + EASY backfilling over nodes; see the module docstring for the rule."""

    def __init__(
        self,
        name: str,
        procs: Sequence[int],
        estimate: Sequence[float],
        runtime: Sequence[float],
        *,
        factor: float = 1.0,
        span_nodes: bool = True,
    ) -> None:
        self.name = name
        self._procs = procs
        self._estimate = estimate
        self._runtime = runtime
        self.factor = factor
        self.span_nodes = span_nodes
        self.nodes: dict[int, Node] = {}
        self.queue: deque[int] = deque()
        #: non-draining nodes with at least one free core
        self._avail: dict[int, Node] = {}
        #: job -> [(node id, cores)]
        self.alloc: dict[int, list[tuple[int, int]]] = {}
        #: job -> estimated end (for reservations)
        self.expected_end: dict[int, float] = {}
        self.free = 0  # free cores on non-draining nodes
        self.capacity = 0  # cores of non-draining nodes
        self.busy = 0  # cores running jobs, all nodes
        self.idle_node_seconds = 0.0
        self.arrivals = 0  # jobs ever submitted here: a change counter for pollers
        self.started = 0  # jobs ever started here: the other change counter of the queue
        #: nodes whose job count or drain flag changed since the owner last looked
        self.changed: set[int] = set()

    # ---------------------------------------------------------------- nodes
    def add_node(self, node_id: int, cores: int, memory_mib: int, now: float) -> Node:
        if node_id in self.nodes:
            raise ValueError(f"{self.name}: node {node_id} already present")
        node = Node(node_id, cores, memory_mib, now)
        self.nodes[node_id] = node
        self._avail[node_id] = node
        self.free += cores
        self.capacity += cores
        self.changed.add(node_id)
        return node

    def remove_node(self, node_id: int, now: float) -> None:
        """Remove an empty node; refusing a busy one is what guarantees no job is ever killed."""
        node = self.nodes[node_id]
        if node.jobs:
            raise RuntimeError(
                f"{self.name}: refusing to remove node {node_id} with {node.jobs} running job(s)"
            )
        if node.idle_since is not None:
            self.idle_node_seconds += now - node.idle_since
        if not node.draining:
            self.free -= node.free
            self.capacity -= node.cores
        self._avail.pop(node_id, None)
        del self.nodes[node_id]
        self.changed.discard(node_id)

    def set_draining(self, node_id: int, draining: bool) -> None:
        node = self.nodes[node_id]
        if node.draining == draining:
            return
        node.draining = draining
        self.changed.add(node_id)
        if draining:
            self.free -= node.free
            self.capacity -= node.cores
            self._avail.pop(node_id, None)
        else:
            self.free += node.free
            self.capacity += node.cores
            if node.free > 0:
                self._avail[node_id] = node

    # ---------------------------------------------------------------- jobs
    def submit(self, job: int) -> None:
        self.queue.append(job)
        self.arrivals += 1

    def fits_somewhere(self, job: int) -> bool:
        """Whether ``job`` could ever start on this partition's current nodes (drained or not)."""
        p = self._procs[job]
        if self.span_nodes:
            return p <= sum(n.cores for n in self.nodes.values())
        return any(n.cores >= p for n in self.nodes.values())

    def _fits_now(self, p: int) -> bool:
        if p > self.free:
            return False
        if self.span_nodes or p == 1:
            return True
        return any(n.free >= p for n in self._avail.values())

    def _start(self, job: int, now: float, out: list[tuple[int, float]]) -> None:
        p = self._procs[job]
        parts: list[tuple[int, int]] = []
        need = p
        avail = self._avail
        until = now + self._estimate[job] * self.factor
        if self.span_nodes or p == 1:
            while need:
                node = next(iter(avail.values()))
                take = node.free if node.free < need else need
                parts.append((node.id, take))
                need -= take
                self._charge(node, take, now, until)
        else:
            node = next(n for n in avail.values() if n.free >= p)
            parts.append((node.id, p))
            self._charge(node, p, now, until)
        self.free -= p
        self.busy += p
        self.started += 1
        self.alloc[job] = parts
        self.expected_end[job] = until
        out.append((job, now + self._runtime[job] * self.factor))

    def _charge(self, node: Node, cores: int, now: float, until: float) -> None:
        node.free -= cores
        if until > node.until:
            node.until = until
        if node.jobs == 0 and node.idle_since is not None:
            self.idle_node_seconds += now - node.idle_since
            node.idle_since = None
        node.jobs += 1
        self.changed.add(node.id)
        if node.free == 0:
            del self._avail[node.id]

    def finish(self, job: int, now: float) -> None:
        """Release ``job``'s cores (its end event fired)."""
        parts = self.alloc.pop(job)
        del self.expected_end[job]
        for node_id, cores in parts:
            node = self.nodes[node_id]
            node.free += cores
            node.jobs -= 1
            self.changed.add(node_id)
            if node.jobs == 0:
                node.idle_since = now
                node.until = 0.0
            if not node.draining:
                self.free += cores
                self._avail[node_id] = node
            self.busy -= cores

    def schedule(self, now: float) -> list[tuple[int, float]]:
        """Start every job the EASY rule allows at ``now``; returns ``(job, end time)`` pairs."""
        out: list[tuple[int, float]] = []
        q = self.queue
        procs = self._procs
        while q and self._fits_now(procs[q[0]]):
            self._start(q.popleft(), now, out)
        if not q or self.free == 0:
            return out
        shadow, extra = self._reservation(procs[q[0]], now)
        keep: deque[int] = deque([q[0]])
        it = iter(q)
        next(it)
        for job in it:
            p = procs[job]
            if self.free == 0 or not self._fits_now(p):
                keep.append(job)
                continue
            if now + self._estimate[job] * self.factor <= shadow:
                self._start(job, now, out)
            elif p <= extra:
                extra -= p
                self._start(job, now, out)
            else:
                keep.append(job)
        self.queue = keep
        return out

    def _reservation(self, need: int, now: float) -> tuple[float, int]:
        """The head job's shadow time and the cores it leaves spare then ("extra")."""
        if need > self.capacity:
            return math.inf, self.free
        avail = self.free
        releases: list[tuple[float, int]] = []
        for job, parts in self.alloc.items():
            cores = sum(c for n, c in parts if not self.nodes[n].draining)
            if cores:
                releases.append((max(self.expected_end[job], now), cores))
        releases.sort()
        for end, cores in releases:
            avail += cores
            if avail >= need:
                return end, avail - need
        return math.inf, self.free

    def reservation(self, now: float) -> tuple[float, int] | None:
        """The head job's reservation, for tests and reports (``None``: queue empty)."""
        if not self.queue:
            return None
        return self._reservation(self._procs[self.queue[0]], now)
