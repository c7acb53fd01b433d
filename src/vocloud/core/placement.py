"""Match-making: which pending VM goes to which host, as a pure function (like OpenNebula's mm_sched).

``place`` reads no clock, does no I/O and keeps no state between calls: the daemon loop and the
simulator hand it the pending VMs (already ordered by priority and age) and a snapshot of the
hosts, and get placements plus a one-line reason for every VM left pending.

The rule it implements is the obvious one, kept verbatim in :func:`place_naive` as the benchmark
baseline and the test oracle: take the VMs in order; for each, among the hosts that satisfy its
requirements, have room and are under the per-host dispatch limit, pick the highest rank (ties:
lowest host id); then charge the VM to that host, so later VMs see the updated host.

That scan costs VMs x hosts expression evaluations (20 million for 10,000 VMs on 2,000 hosts).
:func:`place` gives the identical result far faster by exploiting four facts:

* VMs share a few templates. VMs with the same (requirements, rank) form a *family*, which
  evaluates each host once per host change and keeps one max-heap of its eligible hosts keyed
  by (rank, host id), whatever the VM shapes; a VM takes the best host of its family's heap
  that fits it instead of scanning. VMs that also share (cpu, memory) form a *signature*; a
  signature whose VMs keep meeting hosts too small for them gets a heap of its own.
* A placement changes exactly one host, and only by adding load. Heap entries carry a tag; an
  entry made before a change is stale. Where placements can only lower a rank and only turn
  requirements false (striping, load-aware, FREE_MEM-style or static ranks; decided by
  :func:`vocloud.model.expr.trend`), a stale entry overrates its host, so it is enough to
  re-evaluate it when it reaches the top (*lazy*). Where a rank can grow (packing's
  RUNNING_VMS), the hosts changed since the heap's last use are re-evaluated, once each, from
  a change log (*eager*).
* Requirement conjuncts that read only static attributes (HYPERVISOR, CLUSTER, NAME, ...) are
  evaluated once per host per cycle; hosts failing them are never looked at again.
* Whether a host fits a shape, or has reached the per-host limit, only ever changes from yes to
  no within a cycle, so a host dropped from a heap for that reason stays dropped.

Per-signature counters of matching hosts and hosts with room, brought up to date only when a VM
cannot be placed, give every pending VM its specific reason without a scan.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from vocloud.errors import ParseError
from vocloud.model.expr import Expr, compile_rank, compile_requirements, trend

__all__ = [
    "DYNAMIC_ATTRS",
    "HostView",
    "PendingVM",
    "Placement",
    "PolicyKind",
    "SchedPolicy",
    "SchedResult",
    "place",
    "place_naive",
]

#: Host attributes that change when a VM is placed during the cycle.
DYNAMIC_ATTRS = frozenset({"USED_CPU", "FREE_CPU", "USED_MEM", "FREE_MEM", "RUNNING_VMS"})


@dataclass(frozen=True, slots=True)
class HostView:
    """A host as the scheduler sees it at the start of a cycle (cores and MiB, not x100 units)."""

    id: int
    name: str
    total_cpu: float
    total_mem: int
    used_cpu: float
    used_mem: int
    running_vms: int
    attrs: Mapping[str, str | float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PendingVM:
    id: int
    cpu: float
    memory: int
    requirements: str | None = None
    rank: str | None = None


class PolicyKind(StrEnum):
    PACKING = "packing"
    STRIPING = "striping"
    LOAD_AWARE = "load-aware"
    CUSTOM = "custom"


_POLICY_RANKS = {
    PolicyKind.PACKING: "RUNNING_VMS",
    PolicyKind.STRIPING: "-RUNNING_VMS",
    PolicyKind.LOAD_AWARE: "FREE_CPU",
}


@dataclass(frozen=True)
class SchedPolicy:
    kind: PolicyKind = PolicyKind.PACKING
    rank: str | None = None
    max_dispatch: int = 0
    max_host_dispatch: int = 0

    def __post_init__(self) -> None:
        # A policy is configuration: refuse it when loaded, not halfway through a cycle.
        if self.kind is PolicyKind.CUSTOM and not (self.rank and self.rank.strip()):
            raise ValueError("a custom scheduling policy needs a rank expression")
        if self.max_dispatch < 0 or self.max_host_dispatch < 0:
            raise ValueError("dispatch limits must be >= 0 (0 means unlimited)")

    @property
    def rank_text(self) -> str:
        if self.kind is PolicyKind.CUSTOM:
            assert self.rank is not None
            return self.rank
        return _POLICY_RANKS[self.kind]


@dataclass(frozen=True)
class Placement:
    vm_id: int
    host_id: int


@dataclass(frozen=True)
class SchedResult:
    placements: list[Placement]
    unplaced: dict[int, str]


# ------------------------------------------------------------------------------ shared pieces


class _Host:
    """Mutable per-cycle state of one host; ``attrs`` is what expressions read."""

    __slots__ = ("attrs", "dispatched", "id", "name", "total_cpu", "total_mem", "used_cpu", "used_mem")

    def __init__(self, view: HostView) -> None:
        self.id = view.id
        self.name = view.name
        self.total_cpu = view.total_cpu
        self.total_mem = view.total_mem
        self.used_cpu = view.used_cpu
        self.used_mem = view.used_mem
        self.dispatched = 0
        attrs: dict[str, object] = {str(k).upper(): v for k, v in view.attrs.items()}
        attrs.update(
            NAME=view.name,
            ID=view.id,
            TOTAL_CPU=view.total_cpu,
            MAX_CPU=view.total_cpu,
            TOTAL_MEM=view.total_mem,
            MAX_MEM=view.total_mem,
            RUNNING_VMS=view.running_vms,
        )
        self.attrs = attrs
        self._sync()

    def _sync(self) -> None:
        a = self.attrs
        a["USED_CPU"] = self.used_cpu
        a["FREE_CPU"] = self.total_cpu - self.used_cpu
        a["USED_MEM"] = self.used_mem
        a["FREE_MEM"] = self.total_mem - self.used_mem

    def fits(self, cpu: float, mem: int) -> bool:
        return self.used_cpu + cpu <= self.total_cpu and self.used_mem + mem <= self.total_mem

    def charge(self, cpu: float, mem: int) -> None:
        self.used_cpu += cpu
        self.used_mem += mem
        self.dispatched += 1
        running = self.attrs["RUNNING_VMS"]
        self.attrs["RUNNING_VMS"] = (running if isinstance(running, int) else 0) + 1
        self._sync()


@dataclass(frozen=True, slots=True)
class _Spec:
    """A VM's compiled expressions, or why they could not be compiled."""

    requirements: Expr | None
    rank: Expr | None
    error: str | None = None


def _spec(requirements: str | None, rank: str | None, policy_rank: str) -> _Spec:
    req_text = requirements if requirements and requirements.strip() else None
    own_rank = rank if rank and rank.strip() else None
    try:
        req = compile_requirements(req_text) if req_text is not None else None
    except ParseError as err:
        return _Spec(None, None, f"bad SCHED_REQUIREMENTS: {_describe(err)}")
    try:
        expr = compile_rank(own_rank if own_rank is not None else policy_rank)
    except ParseError as err:
        origin = "SCHED_RANK" if own_rank is not None else "scheduler policy rank"
        return _Spec(None, None, f"bad {origin}: {_describe(err)}")
    return _Spec(req, expr)


def _describe(err: ParseError) -> str:
    return f"{err.reason} (column {err.column})"


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.3g}"


def _hosts(n: int) -> str:
    return f"{n} host" if n == 1 else f"{n} hosts"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _bad_size(vm: PendingVM) -> str | None:
    """Negative sizes would let a placement free capacity, which the fast path (rightly) assumes
    never happens; such a VM is refused rather than scheduled."""
    if vm.cpu >= 0 and vm.memory >= 0:
        return None
    return f"invalid size: {_fmt(vm.cpu)} CPU / {vm.memory} MiB"


def _limit_reason(limit: int) -> str:
    return f"dispatch limit of {limit} VMs per cycle reached"


@dataclass(frozen=True, slots=True)
class _Tally:
    """What a failed search found; enough to say precisely why a VM stays pending."""

    hosts: int
    matched: int
    roomy: int
    most_cpu: _Host | None
    most_mem: _Host | None


def _reason(vm: PendingVM, req: Expr | None, tally: _Tally, host_limit: int) -> str:
    size = f"{_fmt(vm.cpu)} CPU"
    if tally.hosts == 0:
        return "no hosts available"
    if req is not None and tally.matched == 0:
        return f"SCHED_REQUIREMENTS {_quote(req.text)} matched none of {_hosts(tally.hosts)}"
    if tally.roomy == 0:
        if req is not None:
            return (
                f"requirements matched {_hosts(tally.matched)} but none has room for {size} / {vm.memory} MiB"
            )
        return f"no host has {size} and {vm.memory} MiB free ({_most_free(tally)})"
    which = "matching hosts" if req is not None else "hosts"
    return (
        f"all {tally.roomy} {which} with room for {size} / {vm.memory} MiB reached the "
        f"per-host dispatch limit of {host_limit} VMs per cycle"
    )


def _most_free(tally: _Tally) -> str:
    c, m = tally.most_cpu, tally.most_mem
    assert c is not None and m is not None
    return (
        f"most free: {_fmt(c.total_cpu - c.used_cpu)} CPU on {c.name}, "
        f"{m.total_mem - m.used_mem} MiB on {m.name}"
    )


def _free_cpu_key(h: _Host) -> tuple[float, int]:
    return (h.total_cpu - h.used_cpu, -h.id)


def _free_mem_key(h: _Host) -> tuple[int, int]:
    return (h.total_mem - h.used_mem, -h.id)


# ------------------------------------------------------------------------------- naive oracle


def place_naive(pending: Sequence[PendingVM], hosts: Sequence[HostView], policy: SchedPolicy) -> SchedResult:
    """The definition of a correct placement: for each VM, scan every host.

    Kept deliberately simple: it is the oracle the fast :func:`place` is tested against and the
    baseline the benchmark reports.
    """
    state = [_Host(h) for h in hosts]
    placements: list[Placement] = []
    unplaced: dict[int, str] = {}
    for vm in pending:
        if policy.max_dispatch and len(placements) >= policy.max_dispatch:
            unplaced[vm.id] = _limit_reason(policy.max_dispatch)
            continue
        spec = _spec(vm.requirements, vm.rank, policy.rank_text)
        error = _bad_size(vm) or spec.error
        if error is not None:
            unplaced[vm.id] = error
            continue
        best = _naive_best(vm, spec, state, policy.max_host_dispatch)
        if isinstance(best, _Host):
            best.charge(vm.cpu, vm.memory)
            placements.append(Placement(vm.id, best.id))
        else:
            unplaced[vm.id] = _reason(vm, spec.requirements, best, policy.max_host_dispatch)
    return SchedResult(placements, unplaced)


def _naive_best(vm: PendingVM, spec: _Spec, state: list[_Host], host_limit: int) -> _Host | _Tally:
    assert spec.rank is not None
    best: _Host | None = None
    best_rank = 0.0
    matched = roomy = 0
    for h in state:
        if spec.requirements is not None and not spec.requirements.matches(h.attrs):
            continue
        matched += 1
        if not h.fits(vm.cpu, vm.memory):
            continue
        roomy += 1
        if host_limit and h.dispatched >= host_limit:
            continue
        r = spec.rank.value(h.attrs)
        if best is None or r > best_rank or (r == best_rank and h.id < best.id):
            best, best_rank = h, r
    if best is not None:
        return best
    most_cpu = max(state, key=_free_cpu_key, default=None)
    most_mem = max(state, key=_free_mem_key, default=None)
    return _Tally(len(state), matched, roomy, most_cpu, most_mem)


# -------------------------------------------------------------------------------- fast version

_MATCH, _FIT, _OPEN = 1, 2, 4
_READY = _MATCH | _FIT | _OPEN


class _Static:
    """One requirements text split into what is fixed for the cycle and what placements change."""

    __slots__ = ("dynamic", "indices", "passed")

    def __init__(self, req: Expr | None, state: list[_Host]) -> None:
        parts = req.parts() if req is not None else ()
        static = [p.predicate for p in parts if not (p.names & DYNAMIC_ATTRS)]
        dynamic = [p.predicate for p in parts if p.names & DYNAMIC_ATTRS]
        self.indices = [i for i, h in enumerate(state) if all(f(h.attrs) for f in static)]
        self.passed = bytearray(len(state))
        for i in self.indices:
            self.passed[i] = 1
        self.dynamic = _conjoin(dynamic)


def _conjoin(
    preds: list[Callable[[Mapping[str, object]], bool]],
) -> Callable[[Mapping[str, object]], bool] | None:
    if not preds:
        return None
    first, *rest = preds
    for p in rest:
        first = _both(first, p)
    return first


def _both(
    f: Callable[[Mapping[str, object]], bool], g: Callable[[Mapping[str, object]], bool]
) -> Callable[[Mapping[str, object]], bool]:
    return lambda a: f(a) and g(a)


Entry = tuple[float, int, int]  # (-rank, host index, tag); indices follow host ids

#: How many non-fitting hosts a VM may skip in its family's shared heap before its signature
#: gets a heap of its own (see :class:`_Group`).
_SKIP_LIMIT = 24


class _Family:
    """What all signatures with one (requirements, rank) pair share: per host, whether the
    requirements hold and the rank, cached per host version, and one heap of the hosts that
    match and are under the per-host dispatch limit, whatever the VM shape. VM shapes differ
    only in whether they fit, so a placement costs one re-evaluation per family, not per shape.

    The heap is kept honest in one of two ways:

    * *lazy*, when placements can only lower the rank and only turn the requirements false
      (striping, load-aware, FREE_MEM-style or static ranks): entries are tagged with the host's
      version; a stale entry can only overrate its host, so it is re-evaluated when it reaches
      the top, and hosts that never get there are never looked at again;
    * *eager* otherwise (packing's RUNNING_VMS grows): before each use the family re-evaluates
      the hosts changed since its last use, once each, from the change log, and pushes fresh
      entries tagged with a per-host stamp; entries with an older stamp are dropped on sight.
    """

    __slots__ = (
        "cursor",
        "dynamic",
        "heap",
        "lazy",
        "ok",
        "rank",
        "rank_dynamic",
        "req",
        "score",
        "seen",
        "stamp",
        "static",
        "version",
    )

    def __init__(self, spec: _Spec, static: _Static, cycle: _Cycle) -> None:
        assert spec.rank is not None
        self.req = spec.requirements
        self.static = static
        self.dynamic = static.dynamic
        self.rank = spec.rank.evaluate
        self.rank_dynamic = bool(spec.rank.names & DYNAMIC_ATTRS)
        self.lazy = _only_falls(spec.rank) and (self.req is None or _only_falls(self.req))
        self.version = cycle.version
        n = len(cycle.state)
        self.seen = [-1] * n
        self.ok = bytearray(n)
        self.score = [0.0] * n
        self.stamp = [0] * n
        self.cursor = len(cycle.changes)
        self.heap = self.entries(cycle, 0.0, 0, cycle.version if self.lazy else self.stamp)

    def refresh(self, i: int, h: _Host) -> None:
        """Brings host i's cached verdict and rank up to the host's current version."""
        self.seen[i] = self.version[i]
        ok = self.dynamic is None or self.dynamic(h.attrs)
        self.ok[i] = ok
        if ok:
            self.score[i] = self.rank(h.attrs)

    def entries(self, cycle: _Cycle, cpu: float, mem: int, tags: list[int]) -> list[Entry]:
        """A heap of the hosts that match, are under the dispatch limit and fit (cpu, mem)."""
        state, version, seen, ok, score = cycle.state, self.version, self.seen, self.ok, self.score
        limit = cycle.host_limit
        heap: list[Entry] = []
        for i in self.static.indices:
            h = state[i]
            if seen[i] != version[i]:
                self.refresh(i, h)
            if (
                ok[i]
                and h.used_cpu + cpu <= h.total_cpu
                and h.used_mem + mem <= h.total_mem
                and not (limit and h.dispatched >= limit)
            ):
                heap.append((-score[i], i, tags[i]))
        heapq.heapify(heap)
        return heap

    def top(self, cycle: _Cycle) -> int | None:
        """The index of the best host for a VM of any shape (the caller checks the fit)."""
        if self.lazy:
            return _best_lazy(self.heap, self, cycle, 0.0, 0)
        self._catch_up(cycle)
        heap, stamp = self.heap, self.stamp
        while heap:
            _, i, s = heap[0]
            if stamp[i] == s:
                return i
            heapq.heappop(heap)
        return None

    def _catch_up(self, cycle: _Cycle) -> None:
        changes = cycle.changes
        if self.cursor == len(changes):
            return
        batch = changes[self.cursor :]
        self.cursor = len(changes)
        state, passed, seen, version = cycle.state, self.static.passed, self.seen, self.version
        ok, score, stamp, heap, limit = self.ok, self.score, self.stamp, self.heap, cycle.host_limit
        for i in set(batch) if len(batch) > 1 else batch:
            if not passed[i]:
                continue
            h = state[i]
            if seen[i] != version[i]:
                self.refresh(i, h)
            stamp[i] += 1  # whatever happens next, the host's previous entry is out of date
            if (
                ok[i]
                and h.used_cpu <= h.total_cpu
                and h.used_mem <= h.total_mem
                and not (limit and h.dispatched >= limit)
            ):
                heapq.heappush(heap, (-score[i], i, stamp[i]))


class _Group:
    """All pending VMs with one signature (requirements, rank, cpu, memory).

    A group starts *shared*: it takes the top of its family's heap, skipping (and then putting
    back) hosts too small for its shape. If one search has to skip more than ``_SKIP_LIMIT``
    hosts (big VMs on a filling site), the group gets a heap of its own that holds only hosts
    that fit its shape, so hosts that no longer fit are dropped for good: *private* (lazy
    families, same tagging) or *eager* (eager families: the group re-evaluates hosts changed
    since its last use and pushes entries tagged with its own stamps).

    ``status`` and the two counters describe each host as last evaluated, so a VM that cannot be
    placed gets its reason without a scan; they are only brought up to date when that happens
    (or continuously in eager mode, which needs them anyway).
    """

    __slots__ = (
        "cpu",
        "cursor",
        "family",
        "heap",
        "host_limit",
        "matched",
        "mem",
        "mode",
        "roomy",
        "stamp",
        "status",
        "synced",
    )

    def __init__(self, vm: PendingVM, family: _Family, cycle: _Cycle) -> None:
        self.cpu, self.mem = vm.cpu, vm.memory
        self.family = family
        self.host_limit = cycle.host_limit
        n = len(cycle.state)
        self.status = bytearray(n)
        self.stamp = [0] * n
        self.matched = self.roomy = 0
        self.cursor = 0
        self.synced = False
        self.heap: list[Entry] = []
        self.mode: Literal["shared", "private", "eager"] = "shared"

    def sync(self, cycle: _Cycle) -> None:
        """Brings ``status`` and the counters up to date: a full pass the first time, then only
        the hosts changed since the last sync, each once. Eager groups also push fresh entries."""
        changes = cycle.changes
        if not self.synced:
            self.synced = True
            self.cursor = len(changes)
            self._scan(self.family.static.indices, cycle, push=False)
        elif self.cursor != len(changes):
            batch = changes[self.cursor :]
            self.cursor = len(changes)
            self._scan(set(batch) if len(batch) > 1 else batch, cycle, push=self.mode == "eager")

    def _scan(self, indices: Iterable[int], cycle: _Cycle, push: bool) -> None:
        """Re-evaluates the given hosts; written out flat because packing runs it constantly."""
        fam, state = self.family, cycle.state
        passed, seen, ok, score, version = fam.static.passed, fam.seen, fam.ok, fam.score, fam.version
        status, stamp, heap = self.status, self.stamp, self.heap
        cpu, mem, limit, rank_dynamic = self.cpu, self.mem, self.host_limit, fam.rank_dynamic
        matched, roomy = self.matched, self.roomy
        for i in indices:
            if not passed[i]:
                continue
            h = state[i]
            if seen[i] != version[i]:
                fam.refresh(i, h)
            if not ok[i]:
                new = 0
            elif not (h.used_cpu + cpu <= h.total_cpu and h.used_mem + mem <= h.total_mem):
                new = _MATCH
            elif limit and h.dispatched >= limit:
                new = _MATCH | _FIT
            else:
                new = _READY
            old = status[i]
            if new != old:
                matched += (new & _MATCH) - (old & _MATCH)
                roomy += ((new & _FIT) - (old & _FIT)) >> 1
                status[i] = new
            if push and new == _READY and (old != _READY or rank_dynamic):
                stamp[i] += 1
                heapq.heappush(heap, (-score[i], i, stamp[i]))
        self.matched, self.roomy = matched, roomy

    def best(self, cycle: _Cycle) -> int | None:
        """The index of the host the next VM of this group goes to, or None."""
        if self.mode == "shared":
            return self._best_shared(cycle)
        if self.mode == "private":
            return _best_lazy(self.heap, self.family, cycle, self.cpu, self.mem)
        self.sync(cycle)
        return self._best_eager()

    def _best_eager(self) -> int | None:
        heap, stamp, status = self.heap, self.stamp, self.status
        while heap:
            _, i, s = heap[0]
            if stamp[i] == s and status[i] == _READY:
                return i
            heapq.heappop(heap)
        return None

    def _best_shared(self, cycle: _Cycle) -> int | None:
        fam, state = self.family, cycle.state
        heap, cpu, mem = fam.heap, self.cpu, self.mem
        skipped: list[Entry] = []
        found = None
        while len(skipped) <= _SKIP_LIMIT:
            i = fam.top(cycle)
            if i is None:
                break
            h = state[i]
            if h.used_cpu + cpu <= h.total_cpu and h.used_mem + mem <= h.total_mem:
                found = i
                break
            skipped.append(heapq.heappop(heap))
        for entry in skipped:
            heapq.heappush(heap, entry)
        if len(skipped) <= _SKIP_LIMIT:
            return found
        self._go_private(cycle)
        return self.best(cycle)

    def _go_private(self, cycle: _Cycle) -> None:
        fam = self.family
        if fam.lazy:
            self.mode = "private"
            self.heap = fam.entries(cycle, self.cpu, self.mem, cycle.version)
            return
        self.mode = "eager"
        self.sync(cycle)
        status, stamp, score = self.status, self.stamp, fam.score
        self.heap = [(-score[i], i, stamp[i]) for i in fam.static.indices if status[i] == _READY]
        heapq.heapify(self.heap)


def _best_lazy(heap: list[Entry], fam: _Family, cycle: _Cycle, cpu: float, mem: int) -> int | None:
    """Pops stale tops until a current one surfaces; the hot loop of spreading policies, so it is
    written out flat. A stale host that still matches, fits (cpu, mem) and is under the
    dispatch limit goes back with its current rank."""
    version, state, limit = cycle.version, cycle.state, cycle.host_limit
    seen, ok, score = fam.seen, fam.ok, fam.score
    while heap:
        top = heap[0]
        i = top[1]
        v = version[i]
        if v == top[2]:
            return i
        h = state[i]
        if seen[i] != v:
            fam.refresh(i, h)
        if (
            ok[i]
            and h.used_cpu + cpu <= h.total_cpu
            and h.used_mem + mem <= h.total_mem
            and not (limit and h.dispatched >= limit)
        ):
            heapq.heapreplace(heap, (-score[i], i, v))
        else:
            heapq.heappop(heap)
    return None


_FALLING = {"USED_CPU": 1, "USED_MEM": 1, "RUNNING_VMS": 1, "FREE_CPU": -1, "FREE_MEM": -1}


def _only_falls(expr: Expr) -> bool:
    """True if placing VMs can only lower this rank or turn this requirement false."""
    return trend(expr, _FALLING) in (0, -1)


def _host_id(h: HostView) -> int:
    return h.id


class _Cycle:
    """State shared by the groups of one call to :func:`place`."""

    def __init__(self, hosts: Sequence[HostView], policy: SchedPolicy) -> None:
        # Sorted by id (stably), so a host's index breaks rank ties exactly as its id does.
        self.state = [_Host(h) for h in sorted(hosts, key=_host_id)]
        self.host_limit = policy.max_host_dispatch
        self.policy_rank = policy.rank_text
        self.changes: list[int] = []
        self.version = [0] * len(self.state)
        self.groups: dict[tuple[str | None, str | None, float, int], _Group | str] = {}
        self.statics: dict[str | None, _Static] = {}
        self.families: dict[tuple[str | None, str], _Family] = {}
        self.free_cpu: list[Entry] = []
        self.free_mem: list[Entry] = []
        for i, h in enumerate(self.state):
            self.free_cpu.append((h.used_cpu - h.total_cpu, i, 0))
            self.free_mem.append((h.used_mem - h.total_mem, i, 0))
        heapq.heapify(self.free_cpu)
        heapq.heapify(self.free_mem)

    def group(self, vm: PendingVM) -> _Group | str:
        key = (vm.requirements, vm.rank, vm.cpu, vm.memory)
        found = self.groups.get(key)
        if found is None:
            spec = _spec(vm.requirements, vm.rank, self.policy_rank)
            error = _bad_size(vm) or spec.error
            if error is not None:
                found = error
            else:
                found = _Group(vm, self._family(spec), self)
            self.groups[key] = found
        return found

    def _family(self, spec: _Spec) -> _Family:
        assert spec.rank is not None
        key = (spec.requirements.text if spec.requirements is not None else None, spec.rank.text)
        found = self.families.get(key)
        if found is None:
            found = self.families[key] = _Family(spec, self._static(spec.requirements), self)
        return found

    def _static(self, req: Expr | None) -> _Static:
        key = req.text if req is not None else None
        found = self.statics.get(key)
        if found is None:
            found = self.statics[key] = _Static(req, self.state)
        return found

    def charge(self, i: int, vm: PendingVM) -> None:
        h = self.state[i]
        h.charge(vm.cpu, vm.memory)
        self.changes.append(i)
        self.version[i] += 1
        v = self.version[i]
        heapq.heappush(self.free_cpu, (h.used_cpu - h.total_cpu, i, v))
        heapq.heappush(self.free_mem, (h.used_mem - h.total_mem, i, v))

    def most_free(self, heap: list[Entry]) -> _Host | None:
        while heap and heap[0][2] != self.version[heap[0][1]]:
            heapq.heappop(heap)
        return self.state[heap[0][1]] if heap else None

    def tally(self, g: _Group) -> _Tally:
        return _Tally(
            len(self.state), g.matched, g.roomy, self.most_free(self.free_cpu), self.most_free(self.free_mem)
        )


def place(pending: Sequence[PendingVM], hosts: Sequence[HostView], policy: SchedPolicy) -> SchedResult:
    """Places pending VMs on hosts; same result as :func:`place_naive`, without its full scans."""
    if not pending:  # the simulator calls every tick; most ticks have nothing to place
        return SchedResult([], {})
    cycle = _Cycle(hosts, policy)
    placements: list[Placement] = []
    unplaced: dict[int, str] = {}
    limit = policy.max_dispatch
    for vm in pending:
        if limit and len(placements) >= limit:
            unplaced[vm.id] = _limit_reason(limit)
            continue
        g = cycle.group(vm)
        if isinstance(g, str):
            unplaced[vm.id] = g
            continue
        i = g.best(cycle)
        if i is None:
            g.sync(cycle)
            unplaced[vm.id] = _reason(vm, g.family.req, cycle.tally(g), policy.max_host_dispatch)
            continue
        cycle.charge(i, vm)
        placements.append(Placement(vm.id, cycle.state[i].id))
    return SchedResult(placements, unplaced)
