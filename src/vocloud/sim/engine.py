"""The discrete-event loop: a virtual clock, a heap of events, and a site that reacts to them.

One loop serves every scenario; what differs (bare hosts, static VO partitions, elastic VO pools)
lives in a :class:`Site`. Design points, each for a reason:

* **Arrivals are not in the heap.** The trace is already sorted by submit time, so arrivals are
  read from the workload's list by index and merged with the heap; a quarter of a million heap
  pushes saved.
* **Instants are processed whole.** All events at the same virtual time are applied first, then
  each partition whose state changed is scheduled once, then the site's poll (the planner and the
  VM scheduler) runs on that settled state. Job ends come before arrivals at the same instant,
  as in a real batch system that frees a slot before it looks at the queue.
* **Polls, not per-event decisions.** The site's planner runs every ``poll_interval`` virtual
  seconds, as the production controller does; this is also what keeps a 238-day replay fast.
* **Deterministic.** Ties in the heap break on a sequence number; randomness comes only from the
  ``random.Random`` the site was given.
* **It always ends.** The periodic events stop once no job is queued or running and no VM event
  is pending; a run whose queued jobs can never start (no pool can grow) stops after a stall
  limit, and those jobs are reported as still queued, with the reason.
"""

from __future__ import annotations

import heapq
import math
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from vocloud.sim.cluster import Cluster
from vocloud.sim.workload import Workload

# Event kinds, in the order they are applied within one instant.
END, GONE, JOINED, WAKE, POLL, SAMPLE = range(6)


@dataclass(slots=True)
class Sample:
    """One row of the time series (taken every ``sample_interval`` virtual seconds)."""

    t: float
    busy_cores: int
    queued: list[int]
    pool: list[int]


@dataclass(slots=True)
class RunState:
    """What the loop records for the metrics: per-job start/end and the sampled series."""

    n: int
    start: array[float] = field(default_factory=lambda: array("d"))
    end: array[float] = field(default_factory=lambda: array("d"))
    never: dict[int, str] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    busy_core_seconds: float = 0.0
    events: int = 0
    t_first: float = 0.0
    t_last: float = 0.0
    stalled: str = ""

    def __post_init__(self) -> None:
        self.start = array("d", [-1.0]) * self.n
        self.end = array("d", [-1.0]) * self.n


class Site(Protocol):
    """The scenario-specific part of the simulation (see the three implementations)."""

    name: str
    total_cores: int

    @property
    def poll_interval(self) -> float | None:
        """Virtual seconds between polls, or ``None`` for a site without a controller."""
        ...

    def clusters(self) -> list[Cluster]: ...

    def route(self, job: int) -> Cluster | str:
        """The partition that will run ``job``, or why it can never run on this site."""
        ...

    def poll(self, now: float, sim: Simulation) -> bool:
        """Run the controller; returns whether it did anything (for the stall detector)."""
        ...

    def handle(self, kind: int, payload: int, now: float, sim: Simulation) -> None: ...

    def pool_sizes(self) -> list[int]:
        """Nodes per VO right now (VMs booting or joined; hosts for static partitions)."""
        ...

    def busy(self) -> bool:
        """Whether VM events may still come (boots, shutdowns in flight)."""
        ...

    def queued_reason(self, job: int) -> str:
        """Why a job still queued at the end never started."""
        ...


class Simulation:
    """Replays ``workload`` on ``site``; call :meth:`run` once."""

    def __init__(
        self,
        workload: Workload,
        site: Site,
        *,
        sample_interval: float,
        stall_limit: float = 7 * 86400.0,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        if sample_interval <= 0:
            raise ValueError("sample_interval must be > 0")
        self.w = workload
        self.site = site
        self.sample_interval = sample_interval
        self.stall_limit = stall_limit
        self.progress = progress
        self.heap: list[tuple[float, int, int, int]] = []
        self._seq = 0
        self.live = 0  # non-periodic events in the heap
        self.state = RunState(len(workload))
        self._job_cluster: dict[int, Cluster] = {}
        self._dirty: set[Cluster] = set()
        self.now = workload.start

    # ------------------------------------------------------------------ events
    def push(self, t: float, kind: int, payload: int = 0) -> None:
        """Schedule an event; VM/job events count as live work, periodic ones do not."""
        self._seq += 1
        heapq.heappush(self.heap, (t, kind, self._seq, payload))
        if kind < POLL:
            self.live += 1

    def mark(self, cluster: Cluster) -> None:
        """Ask for ``cluster`` to be scheduled at the end of this instant (capacity changed)."""
        self._dirty.add(cluster)

    def _schedule_dirty(self, now: float) -> None:
        while self._dirty:
            # sets of objects iterate in address order: sort by name to stay deterministic
            dirty = list(self._dirty) if len(self._dirty) == 1 else sorted(self._dirty, key=lambda c: c.name)
            self._dirty.clear()
            for cluster in dirty:
                for job, end in cluster.schedule(now):
                    self.state.start[job] = now
                    self._job_cluster[job] = cluster
                    self.push(end, END, job)

    def _pending_work(self, next_arrival: int) -> bool:
        if next_arrival < len(self.w) or self.live:
            return True
        return any(c.queue or c.alloc for c in self.site.clusters()) or self.site.busy()

    # ------------------------------------------------------------------ loop
    def run(self) -> RunState:
        w, st, site = self.w, self.state, self.site
        submit = w.submit
        n = len(w)
        heap = self.heap
        st.t_first = self.now
        self.push(self.now, SAMPLE)
        if site.poll_interval:
            self.push(self.now, POLL)
        i = 0
        last_progress_t = self.now
        stall_since: float | None = None
        while True:
            t_heap = heap[0][0] if heap else math.inf
            t_arr = submit[i] if i < n else math.inf
            now = t_heap if t_heap <= t_arr else t_arr
            if now == math.inf:
                break
            self.now = now
            poll_due = sample_due = False
            while heap and heap[0][0] == now:
                _, kind, _, payload = heapq.heappop(heap)
                st.events += 1
                if kind < POLL:
                    self.live -= 1
                if kind == END:
                    cluster = self._job_cluster.pop(payload)
                    cluster.finish(payload, now)
                    st.end[payload] = now
                    st.busy_core_seconds += w.procs[payload] * (now - st.start[payload])
                    self._dirty.add(cluster)
                elif kind == POLL:
                    poll_due = True
                elif kind == SAMPLE:
                    sample_due = True
                else:
                    site.handle(kind, payload, now, self)
            while i < n and submit[i] == now:
                self._arrive(i)
                st.events += 1
                i += 1
            if self._dirty:
                self._schedule_dirty(now)
            if poll_due:
                acted = site.poll(now, self)
                self._schedule_dirty(now)
                if acted or self.live:
                    stall_since = None
                elif stall_since is None:
                    stall_since = now
            if sample_due:
                self._sample(now)
            more = (poll_due or sample_due) and self._pending_work(i)
            if poll_due and more:
                if stall_since is not None and now - stall_since >= self.stall_limit and i >= n:
                    st.stalled = f"no progress for {self.stall_limit:g} s of virtual time"
                    break
                assert site.poll_interval
                self.push(now + site.poll_interval, POLL)
            if sample_due and more:
                self.push(now + self.sample_interval, SAMPLE)
            if self.progress is not None and now - last_progress_t >= 86400.0:
                last_progress_t = now
                self.progress(now)
        st.t_last = self.now
        self._sample(self.now)
        for cluster in site.clusters():
            for job in cluster.queue:
                st.never[job] = "still queued at end: " + site.queued_reason(job)
        if self.progress is not None:
            self.progress(self.now)
        return st

    def _arrive(self, job: int) -> None:
        reason = self.w.excluded.get(job)
        if reason is not None:
            self.state.never[job] = reason
            return
        target = self.site.route(job)
        if isinstance(target, str):
            self.state.never[job] = target
            return
        target.submit(job)
        self._dirty.add(target)

    def _sample(self, now: float) -> None:
        queued = [0] * len(self.w.vo_names)
        busy = 0
        for cluster in self.site.clusters():
            busy += cluster.busy
            vo = self.w.vo
            for job in cluster.queue:
                queued[vo[job]] += 1
        self.state.samples.append(Sample(now, busy, queued, self.site.pool_sizes()))
