"""The VO-pool planner: ``plan(demand, pools, site, now) -> Plan``, a pure function.

The daemon's controller and the simulator both call :func:`plan` once per cycle with what they
observe, and carry out the actions it returns. It reads no clock, does no I/O and iterates
nothing in an unordered way, so the same inputs always give the same plan (the simulator's
byte-identical replays depend on it).

How a pool is sized, in order:

1. **Failures first** (``failures.failure_verdict``): FAILED VMs, VMs booting past their boot
   timeout and nodes DOWN past their grace period are shut down and stop counting as capacity,
   so the demand they were booted for is booted for again (subject to the image's backoff).
2. **Demand** is the VO's pending jobs that waited at least ``min_pending_s``, grouped by shape
   (a ``Counter`` of (cores, memory)), so 100,000 jobs cost one pass plus work per *shape*.
   Jobs needing more cores or memory than one VM has are reported, never booted for.
3. **Capacity already there or on the way** absorbs demand first: idle and booting VMs (a full
   VM shape each) and busy VMs' unallocated cores/memory when the batch system reports them.
   The leftover jobs are then packed onto new VM shapes. Packing is *best-fit decreasing* on
   bins grouped by remaining capacity: jobs are taken largest first, and each shape's jobs fill
   the tightest bins that hold them, a whole group of identical bins at a time. Memory is
   counted in 1/K-ths of the VM's memory (K = VM MiB // 64, at least 64 steps): a job's memory
   is rounded up by less than 64 MiB, which keeps the number of distinct shapes small, keeps the
   fit test exact (a job that fits a VM is never called unfit), and can only over-count demand
   slightly.
4. **Resume before boot**: VMs draining or drained (and not past their lifetime) are resumed
   for the new demand before any new VM is booted: cheaper, instant, and it is what stops a
   boot/drain/boot cycle when demand dips and returns.
5. **Limits**: the pool's min/max; its boot rate (``max_boots_per_minute`` over the last 60 s of
   boot requests); its image's backoff (no boot while backing off, one probe VM at a time after).
6. **Site**: what is left of the site's VM cap and free cores/memory (and, when given, which
   host can hold a VM of the pool's shape) is split between pools by **weighted max-min
   fairness**: pools below their ``min_vms`` are served first, then one VM at a time goes to the
   pool whose level, cores of active VMs per unit of weight, is lowest (ties: VO name), until
   every pool has what it asked for or nothing more fits. A pool that cannot get a VM drops
   out; the rest keep filling. Levels count cores, not VMs, so a VO with 8-core VMs does not get
   eight times the share of one with 1-core VMs.
7. **Scale down** only what is not needed: an idle VM is drained once idle past its idle
   timeout, when no pending job would go to it, the pool is above ``min_vms``, this plan boots
   nothing for the pool, and the pool's last boot is older than ``scale_down_delay_s``. Shrinking
   is always a *drain*; a VM is shut down only once DRAINED with no running job (or when it
   never joined: failed, timed out, or a surplus request). Lowering ``max_vms`` drains the
   surplus: unplaced requests first, then idle VMs, then booting ones, then the busy VMs with
   the fewest running jobs (their jobs finish; nothing is killed).
8. **Rebalance** (``SiteCapacity.rebalance``, on by default): when the site is full and a pool
   is left short, pools above their weighted share give way: their planned resumes are
   withheld, then their VMs drained (idle first, then fewest running jobs), just enough to bring
   the levels together; the freed capacity boots the short pool's VMs as the jobs end. See
   :func:`_rebalance` for why this converges and cannot ping-pong.

Worker shapes (``PoolPolicy.worker_shape``, ``elastic/shape.py``): a ``job`` or ``host`` pool's VM
size is chosen each cycle from the queue and the largest host, and its jobs may span VMs; such a
pool's demand and capacity are counted in cores (``_absorb_cores``). A job spanning VMs is booted
for when all its VMs fit the site now (``_backfill_wide``; over several minutes if it needs more
than the boot rate; not when an older wide job of its own pool would take those VMs in the
pool's FCFS batch partition). The oldest such job that has waited ``SiteCapacity.reserve_after_s``
(a week by default) holds the site's reservation (``_reserving``): served first, it may take
capacity from pools at any level. Around it, EASY's rules across pools: while the reservation
waits for busy VMs to free, the free
capacity is lent to jobs that end before it (``_lend``, from ``PoolVM.busy_until``), wide ones
too when all their VMs fit; its drains take the VM that frees soonest, but not, while it is not
due, a VM lent to jobs that end before it (they free their cores anyway), and while its start is
far (``RELEASE_HORIZON_S``) the reserving pool's own idle VMs are released for other VOs' short
jobs and booted again when due (``_release``). A site of ``fixed`` pools plans as before.

``PoolPolicy.headroom`` keeps spare workers beyond the queue's need (a fraction of the busy
ones), booted ahead of demand and kept from the idle timeout (``_draft``).
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from vocloud.batch.base import PendingJob
from vocloud.elastic.failures import failure_verdict, is_probing, may_boot
from vocloud.elastic.policy import (
    STARTING,
    Action,
    Boot,
    Drain,
    DrainCause,
    Plan,
    Pool,
    PoolPolicy,
    PoolStatus,
    PoolVM,
    Resume,
    Shutdown,
    ShutdownCause,
    SiteCapacity,
)
from vocloud.elastic.policy import PoolVMState as V
from vocloud.elastic.shape import effective_policy_for, spans
from vocloud.errors import InvalidInput

#: Job memory is rounded up to this many MiB when grouping shapes (see module docstring).
MEMORY_QUANTUM_MIB = 64
#: The window of ``max_boots_per_minute``.
RATE_WINDOW_S = 60.0

Shape = tuple[int, int]  # (cores, memory): MiB for the site, memory units when packing jobs


# --- bin packing --------------------------------------------------------------------------------


def _fit_count(bin_: Shape, job: Shape) -> int:
    """How many jobs of shape ``job`` one bin of free ``bin_`` holds."""
    by_cores = bin_[0] // job[0]
    return by_cores if job[1] <= 0 else min(by_cores, bin_[1] // job[1])


def _fill_bins(bins: Counter[Shape], job: Shape, n: int) -> int:
    """Put ``n`` jobs of shape ``job`` into ``bins`` (mutated), tightest bins first.

    Returns how many jobs did not fit. Identical bins are filled as a group, so the cost is per
    distinct bin shape, not per bin or per job.
    """
    for key in sorted(k for k in bins if k[0] >= job[0] and k[1] >= job[1]):
        if n == 0:
            break
        count, q = bins[key], _fit_count(key, job)
        full = min(count, n // q)
        n -= full * q
        partial = n if full < count and 0 < n < q else 0
        n -= partial
        _move(bins, key, full, (key[0] - q * job[0], key[1] - q * job[1]))
        if partial:
            _move(bins, key, 1, (key[0] - partial * job[0], key[1] - partial * job[1]))
    return n


def _move(bins: Counter[Shape], src: Shape, count: int, dst: Shape) -> None:
    """Move ``count`` bins of free ``src`` to free ``dst`` (dropping bins with nothing left)."""
    if count <= 0:
        return
    bins[src] -= count
    if bins[src] == 0:
        del bins[src]
    if dst[0] > 0:
        bins[dst] += count


def _open_bins(jobs: Sequence[tuple[Shape, int]], vm: Shape, limit: int) -> tuple[int, bool]:
    """New VMs of shape ``vm`` needed for ``jobs`` (largest first), counting at most ``limit``.

    Returns (VMs needed, capped at ``limit``; whether the demand needs more than ``limit``).
    Stopping at the limit bounds the work when a queue is far deeper than the pool's max.
    """
    if not jobs:
        return 0, False
    bins: Counter[Shape] = Counter()
    opened = 0
    for job, n in jobs:
        left = _fill_bins(bins, job, n)
        if left == 0:
            continue
        q = _fit_count(vm, job)
        full, rest = divmod(left, q)
        opened += full + (1 if rest else 0)
        if opened > limit:
            return limit, True
        _move_new(bins, full, (vm[0] - q * job[0], vm[1] - q * job[1]))
        if rest:
            _move_new(bins, 1, (vm[0] - rest * job[0], vm[1] - rest * job[1]))
    return opened, False


def _move_new(bins: Counter[Shape], count: int, free: Shape) -> None:
    if count > 0 and free[0] > 0:
        bins[free] += count


# --- demand -------------------------------------------------------------------------------------


def _units(policy: PoolPolicy) -> int:
    """Memory units per VM: packing works in 1/K-ths of the VM's memory (module docstring).

    Measuring memory relative to the VM keeps the fit test exact (a job fits iff its units are
    at most K) while rounding each job's memory up by less than ``MEMORY_QUANTUM_MIB``.
    """
    mem = policy.memory_mib_per_vm
    return max(mem // MEMORY_QUANTUM_MIB, min(mem, 64))  # small VMs: still 64 steps


@dataclass(frozen=True, slots=True)
class _Demand:
    """A VO's pending jobs as shapes, split into what the pool's VM shape can and cannot run.

    Shapes here are (cores, memory units); see :func:`_units`.
    """

    pending_jobs: int
    pending_cores: int
    fitting: tuple[tuple[Shape, int], ...]  # largest first
    fitting_jobs: int
    unfit_jobs: int
    unfit_notes: tuple[str, ...]
    oldest_wide: float | None = None  # submit time of the oldest job spanning several VMs
    wide_cores: int = 0  # cores of the jobs spanning several VMs
    #: (submit time, cores, time limit in s) of those jobs, oldest first
    wide: tuple[tuple[float, int, int], ...] = ()


_NO_DEMAND = _Demand(0, 0, (), 0, 0, ())


@dataclass(frozen=True, slots=True)
class _Jobs:
    """One VO's pending jobs reduced to what planning reads: per shape, not per job.

    ``shapes``: (cores, MiB) -> jobs; ``oldest``: cores -> the oldest submit time among jobs of
    that width; ``multi``: (submit time, cores, time limit in s) of every job wider than one core,
    oldest first (the candidates for spanning VMs, see :func:`_backfill_wide`). Built in one pass over the
    jobs; a queue that has not changed since the last plan is not walked again (:func:`_jobs`).
    """

    shapes: tuple[tuple[tuple[int, int], int], ...]
    oldest: Mapping[int, float]
    widest: int
    multi: tuple[tuple[float, int, int], ...]


_NO_JOBS = _Jobs((), {}, 0, ())
#: Summaries of immutable job sequences (tuples), by identity; see :func:`_jobs`.
_JOBS_CACHE: dict[int, tuple[Sequence[PendingJob], _Jobs]] = {}
_JOBS_CACHE_MAX = 1024


def _summarize(jobs: Iterable[PendingJob]) -> _Jobs:
    shapes: Counter[tuple[int, int]] = Counter()
    oldest: dict[int, float] = {}
    multi: list[tuple[float, int, int]] = []
    for j in jobs:
        cores = j.cores if j.cores > 1 else 1
        shapes[(cores, j.memory_mib)] += 1
        t = j.submit_time
        o = oldest.get(cores)
        if o is None or t < o:
            oldest[cores] = t
        if cores > 1:
            multi.append((t, cores, j.walltime_s))
    if not shapes:
        return _NO_JOBS
    multi.sort()
    return _Jobs(tuple(sorted(shapes.items())), oldest, max(oldest), tuple(multi))


def _jobs(jobs: Sequence[PendingJob]) -> _Jobs:
    """``jobs`` summarized (:class:`_Jobs`), remembered by identity when ``jobs`` is a tuple.

    Why: the simulator plans tens of thousands of times over queues of thousands of jobs that
    mostly did not change since the previous plan; it passes the same tuple for an unchanged
    queue, and the summary is not rebuilt. A tuple of frozen ``PendingJob`` cannot change, so a
    hit is always the summary of exactly these jobs (the entry keeps the tuple alive, so its id
    cannot be reused while cached). Lists (the daemon's ``by_vo``) are summarized every call.
    The result is the same either way: plan() stays a pure function of its inputs.
    """
    if not jobs:
        return _NO_JOBS
    if type(jobs) is not tuple:
        return _summarize(jobs)
    hit = _JOBS_CACHE.get(id(jobs))
    if hit is not None and hit[0] is jobs:
        return hit[1]
    if len(_JOBS_CACHE) >= _JOBS_CACHE_MAX:
        _JOBS_CACHE.clear()
    summary = _summarize(jobs)
    _JOBS_CACHE[id(jobs)] = (jobs, summary)
    return summary


#: Time limits of immutable job sequences, by identity (as ``_JOBS_CACHE``): only ``_lend``
#: reads them, so they are built only while a reservation waits.
_WALLS_CACHE: dict[int, tuple[Sequence[PendingJob], tuple[tuple[int, ...], tuple[int, ...]]]] = {}


def _cores_within(jobs: Sequence[PendingJob], seconds: float) -> int:
    """Cores of the jobs in ``jobs`` whose time limit is at most ``seconds`` (``_lend``)."""
    hit = _WALLS_CACHE.get(id(jobs))
    if hit is None or hit[0] is not jobs:
        pairs = sorted((j.walltime_s, max(j.cores, 1)) for j in jobs)
        walls = (tuple(w for w, _ in pairs), tuple(itertools.accumulate(c for _, c in pairs)))
        if type(jobs) is tuple:
            if len(_WALLS_CACHE) >= _JOBS_CACHE_MAX:
                _WALLS_CACHE.clear()
            _WALLS_CACHE[id(jobs)] = (jobs, walls)
    else:
        walls = hit[1]
    i = bisect.bisect_right(walls[0], seconds)
    return walls[1][i - 1] if i else 0


def _demand(summary: _Jobs, policy: PoolPolicy) -> _Demand:
    """The pool's demand from its jobs' summary: work per distinct shape, not per job."""
    if not summary.shapes:
        return _NO_DEMAND
    k, vm_mem, vm_cores = _units(policy), policy.memory_mib_per_vm, policy.cores_per_vm
    fitting: Counter[Shape] = Counter()
    too_many_cores: Counter[int] = Counter()
    too_much_memory = fitting_jobs = wide_cores = pending_jobs = pending_cores = 0
    top_memory = 0
    span = spans(policy)
    for (cores, mib), n in summary.shapes:
        pending_jobs += n
        pending_cores += cores * n
        units = max(-(-mib * k // vm_mem), 0)
        if cores > vm_cores and span:
            # A job spanning VMs: whole VMs plus the remainder, memory in proportion to cores.
            whole, rest = divmod(cores, vm_cores)
            pieces = [(vm_cores, whole), (rest, 1)] if rest else [(vm_cores, whole)]
            split = [((pc, -(-units * pc // cores)), m) for pc, m in pieces]
            top_memory = max(top_memory, mib)
            if any(u > k for (_, u), _ in split):
                too_much_memory += n
                continue
            for piece, m in split:
                fitting[piece] += m * n
            fitting_jobs += n
            wide_cores += cores * n
        elif cores > vm_cores:
            too_many_cores[cores] += n
        else:
            top_memory = max(top_memory, mib)
            if units > k:
                too_much_memory += n
            else:
                fitting[(cores, units)] += n
                fitting_jobs += n
    unfit_notes = _core_notes(too_many_cores, policy)
    if too_much_memory:
        unfit_notes.append(f"{_plural(too_much_memory, 'job')} need up to {top_memory} MiB, more than a "
                           f"{vm_mem} MiB VM: not booted for")
    wide: tuple[tuple[float, int, int], ...] = ()
    oldest_wide = None
    if wide_cores:
        oldest_wide = min(t for c, t in summary.oldest.items() if c > vm_cores)
        wide = tuple(tc for tc in summary.multi if tc[1] > vm_cores)
    return _Demand(
        pending_jobs=pending_jobs,
        pending_cores=pending_cores,
        fitting=tuple(sorted(fitting.items(), key=lambda kv: (-kv[0][0], -kv[0][1]))),
        fitting_jobs=fitting_jobs,
        unfit_jobs=sum(too_many_cores.values()) + too_much_memory,
        unfit_notes=tuple(unfit_notes),
        oldest_wide=oldest_wide,
        wide_cores=wide_cores,
        wide=wide,
    )


def _pool_demand(jobs: Sequence[PendingJob], summary: _Jobs, policy: PoolPolicy, now: float) -> _Demand:
    """The demand of the jobs that count now: all of them, or those that waited ``min_pending_s``.

    Without a minimum wait every job counts, even one stamped a little in the future by a batch
    server whose clock runs ahead of ours."""
    if policy.min_pending_s > 0:
        cutoff = now - policy.min_pending_s
        return _demand(_summarize(j for j in jobs if j.submit_time <= cutoff), policy)
    if summary is _NO_JOBS:
        return _NO_DEMAND
    # the same summary (an unchanged queue) under the same policy gives the same demand
    key = (id(summary), policy)
    hit = _DEMAND_CACHE.get(key)
    if hit is not None and hit[0] is summary:
        return hit[1]
    if len(_DEMAND_CACHE) >= _JOBS_CACHE_MAX:
        _DEMAND_CACHE.clear()
    d = _demand(summary, policy)
    _DEMAND_CACHE[key] = (summary, d)
    return d


#: Demands of remembered summaries (``_JOBS_CACHE``) per policy; the entry keeps the summary
#: alive, so its id is not reused while cached.
_DEMAND_CACHE: dict[tuple[int, PoolPolicy], tuple[_Jobs, _Demand]] = {}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _core_notes(cores: Counter[int], policy: PoolPolicy) -> list[str]:
    return [
        f"{_plural(n, 'job')} need{'' if n != 1 else 's'} {c} cores, more than a "
        f"{policy.cores_per_vm}-core VM: not booted for"
        for c, n in sorted(cores.items())
    ]


def _describe_jobs(d: _Demand) -> str:
    """'12 pending 1-core jobs' or '40 pending jobs (1-8 cores)' for boot reasons."""
    cores = sorted({c for (c, _), _ in d.fitting})
    if len(cores) == 1:
        return f"{d.fitting_jobs} pending {cores[0]}-core job{'s' if d.fitting_jobs != 1 else ''}"
    if not cores:
        return "0 pending jobs"
    return f"{d.fitting_jobs} pending jobs ({cores[0]}-{cores[-1]} cores)"


# --- one pool's VMs -----------------------------------------------------------------------------

#: States in which a VM may have failed (checked by ``failure_verdict``); the rest cannot.
_MAY_FAIL: frozenset[V] = frozenset({V.FAILED, V.BOOTING, V.DOWN})
# Module-level aliases: ``V.X`` costs an enum-class attribute lookup (~0.3 us in 3.11), and
# _classify runs once per VM per plan; the simulator calls plan() hundreds of thousands of times.
_REQUESTED, _BOOTING, _IDLE, _BUSY = V.REQUESTED, V.BOOTING, V.JOINED_IDLE, V.JOINED_BUSY
_DRAINING, _DRAINED, _GONE = V.DRAINING, V.DRAINED, V.GONE
_STARTED_AT = attrgetter("started_at")


@dataclass(frozen=True, slots=True)
class _Classified:
    """A pool's VMs sorted into what the planner does with them, from one pass over them."""

    failed: tuple[Shutdown, ...]
    starting: tuple[PoolVM, ...]  # REQUESTED or BOOTING, within the boot timeout
    idle: tuple[PoolVM, ...]
    busy: tuple[PoolVM, ...]
    expired_joined: tuple[PoolVM, ...]
    resumable: tuple[PoolVM, ...]  # preference order: drained first, then fewest jobs
    drained_empty: tuple[PoolVM, ...]
    held: int  # VMs holding site capacity (every state but GONE)
    # Raw counts by state (failed ones included), for the status row.
    n_requested: int  # not yet placed on a host: not in the site's free figures
    n_booting: int
    n_idle: int
    n_busy: int
    n_draining: int  # DRAINING + DRAINED


def _classify(pool: Pool, now: float) -> _Classified:
    p = pool.policy
    lifetime = p.max_lifetime_s
    failed: list[Shutdown] = []
    starting: list[PoolVM] = []
    idle: list[PoolVM] = []
    busy: list[PoolVM] = []
    expired: list[PoolVM] = []
    resumable: list[PoolVM] = []
    drained: list[PoolVM] = []
    n_req = n_boot = n_draining = n_gone = 0
    # Identity tests and no per-VM work beyond sorting: this loop runs per VM per plan, and the
    # simulator calls plan() hundreds of thousands of times (see _REQUESTED).
    for vm in pool.vms:
        s = vm.state
        if s is _BUSY or s is _IDLE:
            if lifetime is not None and now - vm.started_at >= lifetime:
                expired.append(vm)
            elif s is _BUSY:
                busy.append(vm)
            else:
                idle.append(vm)
            continue
        if s is _REQUESTED:
            n_req += 1
        elif s is _BOOTING:
            n_boot += 1
        elif s is _DRAINING or s is _DRAINED:
            n_draining += 1
        elif s is _GONE:
            n_gone += 1
        if s in _MAY_FAIL and (verdict := failure_verdict(vm, p, now)) is not None:
            failed.append(Shutdown(p.vo, vm.vm_id, verdict.reason, vm.name, verdict.cause))
        elif s is _REQUESTED or s is _BOOTING:
            starting.append(vm)
        elif s is _DRAINING or s is _DRAINED:
            if s is _DRAINED and vm.running_jobs == 0:
                drained.append(vm)
            if lifetime is None or now - vm.started_at < lifetime:
                resumable.append(vm)
    expired_idle = sum(1 for v in expired if v.state is _IDLE)
    if len(resumable) > 1:
        resumable.sort(key=lambda v: (v.state is not _DRAINED, v.running_jobs, -v.free_cores, v.vm_id))
    return _Classified(
        failed=tuple(failed), starting=tuple(starting), idle=tuple(idle), busy=tuple(busy),
        expired_joined=tuple(expired), resumable=tuple(resumable), drained_empty=tuple(drained),
        held=len(pool.vms) - n_gone, n_requested=n_req, n_booting=n_boot,
        n_idle=len(idle) + expired_idle, n_busy=len(busy) + len(expired) - expired_idle,
        n_draining=n_draining,
    )


def _idle_for(vm: PoolVM, now: float) -> float:
    since = vm.idle_since if vm.idle_since is not None else (vm.joined_at or vm.started_at)
    return now - since


def _recent_boots(pool: Pool, now: float) -> int:
    """Boot requests in the rate window: the given history, or the VMs' own start times if more.

    Taking the larger of the two keeps the rate limit even when a caller forgets the history.
    """
    lo = now - RATE_WINDOW_S
    given = sum(1 for t in pool.recent_boots if lo < t <= now)
    return max(given, sum(1 for vm in pool.vms if lo < vm.started_at <= now))


def _last_boot(pool: Pool) -> float | None:
    """The pool's latest boot request (history or VM start), ``None`` if it never booted."""
    last = max(pool.recent_boots, default=None)
    if pool.vms:
        started = max(map(_STARTED_AT, pool.vms))
        last = started if last is None else max(last, started)
    return last


# --- one pool, before the site split ------------------------------------------------------------


@dataclass(slots=True)
class _PoolDraft:
    """Everything decided about one pool before site capacity is shared (internal, mutable)."""

    pool: Pool
    demand: _Demand
    vms: _Classified
    base_active: int  # starting + joined, not failed, not past lifetime
    resumes: list[Resume] = field(default_factory=list)
    want: int = 0  # boots wanted after pool limits (min/max, rate, backoff)
    min_deficit: int = 0  # of ``want``, boots needed to reach min_vms
    boot_reason: str = ""
    actions: list[Action] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    granted: int = 0
    unused_idle: int = 0
    active_cores: int = 0  # cores of the VMs counted in base_active, each at its own size
    reserved: bool = False  # holds the site's reservation (``_reserving``)
    needed: int = 0  # new VMs the demand needs (before limits and the site split)
    queue: Sequence[PendingJob] = ()  # the pool's pending jobs (``_lend`` reads their time limits)
    spare: int = 0  # span pools: cores of idle/booting VMs and busy VMs' free cores no job needs
    drained: int = 0  # active VMs this plan drains (set and kept by ``_rebalance``)
    drain_ids: set[int] = field(default_factory=set)  # VMs this plan drains (``_rebalance``)

    @property
    def policy(self) -> PoolPolicy:
        return self.pool.policy

    @property
    def shape(self) -> Shape:
        """The VM's (cores, MiB): what the site must hold for one more VM of this pool."""
        return (self.policy.cores_per_vm, self.policy.memory_mib_per_vm)


def _absorb(c: _Classified, d: _Demand, p: PoolPolicy) -> tuple[list[tuple[Shape, int]], int]:
    """Pack demand into capacity present or on the way; (leftover jobs, full VMs left unused)."""
    if not d.fitting:
        return [], len(c.idle) + len(c.starting)
    k = _units(p)
    full = (p.cores_per_vm, k)
    bins: Counter[Shape] = Counter()
    for vm in (*c.idle, *c.starting):  # each a whole VM of its own size (module docstring)
        if vm.cores <= 0:
            bins[full] += 1
        else:
            bins[(vm.cores, (vm.memory_mib or p.memory_mib_per_vm) * k // p.memory_mib_per_vm)] += 1
    whole = dict(bins)
    for vm in c.busy:
        if vm.free_cores > 0:
            bins[(vm.free_cores, max(vm.free_memory_mib, 0) * k // p.memory_mib_per_vm)] += 1
    leftover = [(job, left) for job, n in d.fitting if (left := _fill_bins(bins, job, n))]
    return leftover, sum(min(n, bins.get(key, 0)) for key, n in whole.items())


def _absorb_cores(c: _Classified, d: _Demand, p: PoolPolicy, headroom: int,
                  reserved: bool) -> tuple[int, bool, int, int]:
    """A pool whose jobs span VMs: (new VMs needed, capped at ``headroom``; whether capped;
    idle VMs no pending job needs; cores no pending job needs).

    Its batch partition allocates a job's cores on any of the VO's nodes (Slurm places a
    multi-node job on whatever nodes have free cores), so cores are interchangeable: the demand
    is the pending cores, the capacity the cores of idle and booting VMs (each at its own size)
    plus busy VMs' free cores. Memory is not packed here (``docs/pools.md``). Jobs spanning
    several VMs count only for the pool holding the site's reservation (``reserved``, see
    :func:`_reserving`), and there only the oldest: the reservation is for one job, or a VO
    that sends a hundred wide jobs at once would hold the whole site for all of them. The other
    wide jobs are booted for only when all of a job's VMs fit the site after everything else
    (:func:`_backfill_wide`).
    """
    want = sum(cores * n for (cores, _), n in d.fitting) - d.wide_cores
    if reserved and d.wide:
        want += d.wide[0][1]  # the reservation: the oldest wide job, not all of the pool's
    whole = [vm.cores or p.cores_per_vm for vm in (*c.idle, *c.starting)]
    have = sum(whole) + sum(max(vm.free_cores, 0) for vm in c.busy)
    if want <= have:
        spare, unused = have - want, 0
        for cores in sorted(whole[:len(c.idle)]):  # idle VMs only, smallest first
            if cores > spare:
                break
            spare -= cores
            unused += 1
        return 0, False, unused, have - want
    needed = -(-(want - have) // p.cores_per_vm)
    # the spare cores once all the needed VMs are there (``_backfill_wide`` reads it only then)
    return min(needed, headroom), needed > headroom, 0, needed * p.cores_per_vm - (want - have)


def _draft(pool: Pool, d: _Demand, now: float, reserved: bool = False) -> _PoolDraft:
    """Decide one pool's own actions and how many boots it wants, ignoring the other pools."""
    p = pool.policy
    c = _classify(pool, now)
    base_active = len(c.starting) + len(c.idle) + len(c.busy)
    room = max(p.max_vms - base_active, 0)
    spare = 0
    if spans(p):
        new_needed, capped, unused_full, spare = _absorb_cores(c, d, p, room, reserved)
    else:
        leftover, unused_full = _absorb(c, d, p)
        new_needed, capped = _open_bins(leftover, (p.cores_per_vm, _units(p)), room)
    ahead = 0
    if p.headroom > 0:
        # spare workers beyond the queue's need (PoolPolicy.headroom): booted ahead of demand
        # while fewer are unused, and kept from the idle timeout
        keep = math.ceil(p.headroom * len(c.busy) - 1e-9)
        ahead = min(max(keep - unused_full, 0), room - new_needed)
        new_needed += max(ahead, 0)
        unused_full = max(unused_full - keep, 0)
    draft = _PoolDraft(pool, d, c, base_active, reserved=reserved, spare=spare, needed=new_needed)
    if ahead > 0:
        draft.notes.append(f"headroom {p.headroom:g}: {_plural(ahead, 'spare VM')} ahead of demand "
                           f"for {len(c.busy)} busy")
    draft.active_cores = sum(vm.cores or p.cores_per_vm for group in (c.starting, c.idle, c.busy)
                             for vm in group)
    draft.notes.extend(d.unfit_notes)
    if capped:
        draft.notes.append(f"demand exceeds max {p.max_vms} VMs: booting up to the max")
    draft.actions.extend(c.failed)
    draft.actions.extend(_lifetime_drains(c, p, now))
    draft.resumes = _resumes(c, d, new_needed, base_active, p)
    if base_active > p.max_vms:
        draft.actions.extend(_surplus(c, base_active - p.max_vms, p))
        return draft
    _size_boots(draft, c, new_needed, now)
    draft.unused_idle = min(len(c.idle), unused_full)
    return draft


def _lifetime_drains(c: _Classified, p: PoolPolicy, now: float) -> list[Action]:
    return [
        Drain(p.vo, vm.vm_id,
              f"drain vm {vm.vm_id}: age {now - vm.started_at:.0f} s >= max lifetime "
              f"{p.max_lifetime_s:.0f} s; {vm.running_jobs} running jobs finish first",
              vm.name, DrainCause.LIFETIME)
        for vm in c.expired_joined
    ]


def _resumes(c: _Classified, d: _Demand, new_needed: int, base_active: int,
             p: PoolPolicy) -> list[Resume]:
    """Resume draining/drained VMs for new demand (or to reach min) instead of booting.

    Each resumed VM is counted as one VM of capacity; a draining one's share comes free as its
    jobs end, which is still sooner than a boot. Drained (empty) VMs go first.
    """
    below_min = max(p.min_vms - base_active, 0)
    n = max(min(len(c.resumable), max(new_needed, below_min), p.max_vms - base_active), 0)
    return [
        Resume(p.vo, vm.vm_id,
               f"resume vm {vm.vm_id}: {d.fitting_jobs} pending jobs need capacity; "
               f"resuming a {vm.state.value.lower()} VM instead of booting a new one", vm.name)
        for vm in c.resumable[:n]
    ]


def _surplus(c: _Classified, surplus: int, p: PoolPolicy) -> list[Action]:
    """Bring a pool above ``max_vms`` back down without touching a running job."""
    size = surplus + p.max_vms
    head = f"pool has {size} VMs > max {p.max_vms}"
    # cloud workers go first (they cost money), then the usual order
    requested = sorted((v for v in c.starting if v.state is V.REQUESTED),
                       key=lambda v: (not v.cloud, -v.started_at, -v.vm_id))
    booting = sorted((v for v in c.starting if v.state is V.BOOTING),
                     key=lambda v: (not v.cloud, -v.started_at, -v.vm_id))
    idle = sorted(c.idle, key=lambda v: (not v.cloud, v.idle_since or v.joined_at or v.started_at, v.vm_id))
    busy = sorted(c.busy, key=lambda v: (not v.cloud, v.running_jobs, v.vm_id))
    out: list[Action] = []
    for vm in [*requested, *idle, *booting, *busy][:surplus]:
        if vm.state in STARTING:
            out.append(Shutdown(p.vo, vm.vm_id, f"shutdown vm {vm.vm_id}: {head}, not yet joined",
                                vm.name, ShutdownCause.SURPLUS))
        else:
            out.append(Drain(p.vo, vm.vm_id,
                             f"drain vm {vm.vm_id}: {head}; {vm.running_jobs} running jobs finish "
                             "first", vm.name, DrainCause.SURPLUS))
    return out


def _size_boots(draft: _PoolDraft, c: _Classified, new_needed: int, now: float) -> None:
    """Set ``want``/``min_deficit``/``boot_reason``: demand and min, then rate limit and backoff."""
    p = draft.policy
    active = draft.base_active + len(draft.resumes)
    for_demand = max(new_needed - len(draft.resumes), 0)
    for_min = max(p.min_vms - active - for_demand, 0)
    want = min(for_demand + for_min, p.max_vms - active)
    if want <= 0:
        return
    allowed, why = _boot_allowance(draft.pool, c, now)
    if allowed < want:
        draft.notes.append(f"holding {want - allowed} of {want} boots: {why}")
    draft.want = min(want, allowed)
    draft.min_deficit = min(for_min, draft.want)
    draft.boot_reason = _boot_reason(draft, c, for_demand)


def _boot_allowance(pool: Pool, c: _Classified, now: float) -> tuple[int, str]:
    """How many boots the pool's rate limit and its image's backoff allow right now."""
    p = pool.policy
    ok, why = may_boot(pool.backoff, now)
    if not ok:
        return 0, why
    if is_probing(pool.backoff):
        return max(1 - len(c.starting), 0), why
    recent = _recent_boots(pool, now)
    left = max(p.max_boots_per_minute - recent, 0)
    return left, (f"rate limit: {recent} boots in the last {RATE_WINDOW_S:.0f} s, "
                  f"max {p.max_boots_per_minute}/min")


def _boot_reason(draft: _PoolDraft, c: _Classified, for_demand: int) -> str:
    """The why of a Boot, without the count (added once the site split is known)."""
    p = draft.policy
    if for_demand == 0:
        return f"pool below min {p.min_vms} VMs"
    covered = []
    if c.starting:
        covered.append(f"{len(c.starting) * p.cores_per_vm} cores already booting")
    if c.idle:
        covered.append(f"{len(c.idle)} idle VMs")
    if draft.resumes:
        covered.append(f"{len(draft.resumes)} VMs resumed")
    tail = f", {', '.join(covered)}" if covered else ""
    return f"{_describe_jobs(draft.demand)}{tail}"


# --- the site split -----------------------------------------------------------------------------


class _Site:
    """What is left of the site while the fair split hands out VMs (internal, mutable)."""

    def __init__(self, site: SiteCapacity, drafts: Sequence[_PoolDraft]) -> None:
        self.vm_room = site.max_vms - sum(d.vms.held for d in drafts)
        self.cores = site.free_cores
        self.memory = site.free_memory_mib
        self._host_free = site.host_free
        self._taken: dict[int, tuple[int, int]] = {}  # copy-on-write: hosts this plan fills
        self.cursor: dict[Shape, int] = {}
        for d in drafts:  # requested VMs are not on a host yet: not in the free figures
            for _ in range(d.vms.n_requested):
                self.take(d.shape, count_vm=False)

    def why_not(self, shape: Shape) -> str | None:
        """Why one more VM of ``shape`` cannot be had (``None``: it can)."""
        if self.vm_room < 1:
            return "site VM cap reached"
        if self.cores < shape[0] or self.memory < shape[1]:
            return f"site has {max(self.cores, 0)} free cores / {max(self.memory, 0)} MiB free"
        if self._host_free and self._host_for(shape) is None:
            return f"no host has {shape[0]} cores and {shape[1]} MiB free"
        return None

    def fits(self, shape: Shape, n: int) -> bool:
        """Whether ``n`` more VMs of ``shape`` can all be had now (first-fit over the hosts)."""
        if self.vm_room < n or self.cores < n * shape[0] or self.memory < n * shape[1]:
            return False
        if not self._host_free:
            return True
        hosts, taken, room = self._host_free, self._taken, 0
        for i in range(self.cursor.get(shape, 0), len(hosts)):
            cores, mem = taken.get(i) or hosts[i]
            if cores >= shape[0] and mem >= shape[1]:
                room += min(cores // shape[0], mem // shape[1])
                if room >= n:
                    return True
        return False

    def take(self, shape: Shape, count_vm: bool = True) -> None:
        """Account one VM of ``shape`` (first-fit host, if hosts are modelled)."""
        self.vm_room -= 1 if count_vm else 0
        self.cores -= shape[0]
        self.memory -= shape[1]
        i = self._host_for(shape) if self._host_free else None
        if i is not None:
            cores, mem = self._taken.get(i) or self._host_free[i]
            self._taken[i] = (cores - shape[0], mem - shape[1])

    def _host_for(self, shape: Shape) -> int | None:
        """First host that fits ``shape``. Free space only shrinks, so a per-shape cursor never
        needs to look back: the scan costs O(hosts) per shape for the whole plan."""
        hosts, taken, n = self._host_free, self._taken, len(self._host_free)
        i = self.cursor.get(shape, 0)
        while i < n:
            cores, mem = taken.get(i) or hosts[i]
            if cores >= shape[0] and mem >= shape[1]:
                break
            i += 1
        self.cursor[shape] = i
        return i if i < n else None


def _reserving(demands: Sequence[_Demand], now: float, after: float) -> int | None:
    """The pool holding the site's reservation (index): the one whose oldest job spanning
    several VMs is the oldest such job of all pools, once it has waited ``after`` seconds
    (``SiteCapacity.reserve_after_s``).

    Until then wide jobs start as a cloud starts them, when all their VMs fit
    (:func:`_backfill_wide`). Reserving at once (sessions 8-10) protected the widest jobs but
    cost the rest: the reserving VO's VMs stood idle for the reservation's last cores (three
    quarters of vocloud's idle VM-hours on SDSC-SP2), and every other wide job waited for its
    turn or for a lending window. The reservation is now the guard against starving a wide job
    that never finds the room by itself (docs/policies.md, session 11).

    A job wider than a pool's weighted share could otherwise wait forever, and two VOs that each
    hold half the site for a job needing all of it would wait for each other (each VM idle but
    "needed"). As EASY backfilling does on a bare-metal partition for the head of its queue, the
    oldest wide job gets its VMs first: its pool is served first in the split and may take
    capacity from pools at any level (``_rebalance``); the others keep sharing the rest by weight.
    Only one pool at a time, and always the oldest job, so every wide job's turn comes; the other
    pools boot for their narrower jobs only (a wide job waits for its turn instead of collecting
    idle VMs that the fair split would drain again).
    """
    waiting = [(d.oldest_wide, i) for i, d in enumerate(demands)
               if d.oldest_wide is not None and now - d.oldest_wide >= after]
    return min(waiting)[1] if waiting else None


def _share(drafts: Sequence[_PoolDraft], site: _Site, first: _PoolDraft | None = None) -> list[str]:
    """Weighted max-min fair split of the site: minimums first, then the rest by weight.

    ``first`` (the reserving pool, see :func:`_reserving`) is served before the others.
    """
    notes: list[str] = []
    stuck: set[int] = set()  # pools that could not get a VM: they stay out (shapes never shrink)
    for phase in ("min", "demand"):
        heap = [(-1.0 if d is first else _level(d), d.policy.vo, i) for i, d in enumerate(drafts)
                if _wants(d, phase) and i not in stuck]
        heapq.heapify(heap)
        while heap:
            _, vo, i = heapq.heappop(heap)
            d = drafts[i]
            reason = site.why_not(d.shape)
            if reason is not None:
                d.notes.append(f"holding {_still_wanted(d)} of {d.want} boots: {reason}")
                stuck.add(i)
                continue
            site.take(d.shape)
            d.granted += 1
            if _wants(d, phase):
                heapq.heappush(heap, (-1.0 if d is first else _level(d), vo, i))
    short = [d for d in drafts if d.granted < d.want]
    if short and any(d.granted for d in drafts):
        split = ", ".join(f"{d.policy.vo} {d.granted}/{d.want}" for d in drafts if d.want)
        notes.append(f"capacity scarce, boots split by weight (granted/wanted): {split}")
    return notes


#: Jobs spanning VMs that one plan considers for backfill (:func:`_backfill_wide`), oldest
#: first. Slurm's backfill scheduler bounds its look-ahead the same way (``bf_max_job_test``):
#: a plan over a queue of thousands of wide jobs stays cheap, and the oldest ones are the ones
#: a reservation would serve next anyway.
BACKFILL_DEPTH = 100


def _backfill_wide(drafts: Sequence[_PoolDraft], site: _Site, now: float,
                   horizon: float = math.inf) -> list[str]:
    """Boot for jobs spanning VMs in the pools that do not hold the reservation (EASY backfill).

    Without this only the reserving pool boots for its wide jobs, so a site whose VOs mostly
    send parallel jobs serves them one at a time while cores stand free (SDSC-SP2: 70 % of the
    jobs are wide). Here, after the fair split, each other wide job, oldest first, gets all the
    VMs it still needs *if all of them fit the site now*: a job never collects part of its VMs
    (which could wait for ever, holding capacity another job needs), the reservation is never
    delayed (it was served first, and this runs only when it got everything it asked for), and
    a pool's own limits (max, boot rate, image backoff) still hold. A job the site cannot take
    whole waits, as before, for its turn at the reservation.

    ``horizon`` (finite while the reservation still waits for its cores, see :func:`_lend`):
    only jobs whose time limit ends within it are candidates, EASY's rule that a backfilled job
    must not delay the reservation; their VMs are idle, and drained for it, by its start. Without
    this, no job spanning VMs but the reservation's got a VM while the reservation collected
    (hours at a time), and on SDSC-SP2, where 70 % of the jobs span VMs, the queue diverged.

    Two rules of session 11 (docs/policies.md): a job needing more VMs than the pool's boot rate
    allows this minute, all of which fit now, gets what the rate allows and the rest in the next
    minutes (before, such a job was never backfilled: with no reservation it starved); and a
    younger job is not booted for while an older wide job of the same pool waits that would fit
    the pool's nodes once the new VMs join: the pool's batch partition (FCFS with EASY) gives
    them to the older job, and the VMs stood idle until another VO's reservation drained them,
    to be booted again the next minute (on SDSC-SP2 a loop of tens of thousands of boots).
    """
    cands = sorted((t, d.policy.vo, cores, i, wall <= horizon) for i, d in enumerate(drafts)
                   if d.demand.wide and len(d.resumes) + d.granted >= d.needed
                   for t, cores, wall in d.demand.wide[int(d.reserved):BACKFILL_DEPTH])[:BACKFILL_DEPTH]
    blocked: dict[int, int] = {}  # pool -> fewest new VMs that did not fit (capacity only shrinks)
    older: dict[int, int] = {}  # pool -> fewest cores of an older wide job of it left waiting
    allowed: dict[int, int] = {}
    jobs: Counter[int] = Counter()
    for _, _, cores, i, in_time in cands:
        if site.cores <= 0:
            break
        d = drafts[i]
        if not in_time:  # would delay the reservation: waits, and stays ahead of younger jobs
            older[i] = min(older.get(i, cores), cores)
            continue
        if d.spare >= cores:
            d.spare -= cores  # already there: the batch system starts it; nothing to boot
            continue
        step = d.policy.cores_per_vm
        need = -(-(cores - d.spare) // step)
        if i in older and older[i] <= d.active_cores + (len(d.resumes) + d.granted + need) * step:
            # the pool's batch partition is FCFS with EASY backfill: an older job that fits its
            # nodes once these VMs join takes them (or holds them), not this one
            older[i] = min(older[i], cores)
            continue
        if need >= blocked.get(i, need + 1):
            older[i] = min(older.get(i, cores), cores)
            continue
        if i not in allowed:
            allowed[i] = _boot_allowance(d.pool, d.vms, now)[0]
        limit = d.policy.max_vms - d.base_active - len(d.resumes) - d.granted
        room = min(limit, allowed[i] - d.granted)
        if need > limit or not site.fits(d.shape, need):
            blocked[i] = need
            older[i] = min(older.get(i, cores), cores)
            continue
        take = min(need, room)
        if take <= 0:
            blocked[i] = need
            older[i] = min(older.get(i, cores), cores)
            continue
        # all its VMs fit now; more than the boot rate allows this minute are booted over the
        # next minutes (the ones booted now count as its spare cores then)
        for _ in range(take):
            site.take(d.shape)
        d.granted += take
        d.want += take
        d.spare += take * step - cores if take == need else 0
        jobs[i] += 1
        if take < need:
            blocked[i] = 0  # the rate is spent: nothing more for this pool in this plan
    for i, n in sorted(jobs.items()):
        d = drafts[i]
        d.boot_reason = d.boot_reason or _describe_jobs(d.demand)
        d.notes.append(f"backfill: booting for {_plural(n, 'job')} spanning VMs; the site has room "
                       "for all of their VMs now")
    return []


#: Lent capacity must come free this long before the reservation's expected start: a boot, a
#: poll and the batch system's own cycle fit in it.
LEND_MARGIN_S = 300.0


def _shadow(drafts: Sequence[_PoolDraft], first: _PoolDraft, free_cores: int, now: float) -> float:
    """When the reservation can expect all its cores: EASY's shadow time, from ``busy_until``.

    The reservation drains idle VMs first, then the busy ones expected to free soonest
    (:func:`_take_from_donor`), so it has its cores once enough of those have ended. A VM whose
    end is unknown (``busy_until`` None: the daemon's batch adapters do not say) counts as never:
    then the shadow is unknown and nothing is lent.
    """
    need = first.want * first.policy.cores_per_vm - max(free_cores, 0)
    if need <= 0:
        return now
    releases: list[tuple[float, int]] = []
    for d in drafts:
        if d is first:
            continue
        size = d.policy.cores_per_vm
        for v in d.vms.idle:
            releases.append((now, v.cores or size))
        for v in (*d.vms.busy, *d.vms.resumable):
            end = now if v.state is _DRAINED else (math.inf if v.busy_until is None else v.busy_until)
            releases.append((max(end, now), v.cores or size))
    releases.sort()
    for end, cores in releases:
        need -= cores
        if need <= 0:
            return end
    return math.inf


def _lend_horizon(drafts: Sequence[_PoolDraft], site: _Site, first: _PoolDraft, now: float) -> float | None:
    """Seconds from ``now`` within which lent capacity must come free (``_lend``), or ``None``
    when nothing is lent: the site can serve the reservation now, or its start is near or
    unknown."""
    if site.fits(first.shape, first.want):
        return None
    horizon = _shadow(drafts, first, site.cores, now) - now - LEND_MARGIN_S
    return horizon if 0 < horizon < math.inf else None


def _lend(drafts: Sequence[_PoolDraft], site: _Site, first: _PoolDraft, now: float,
          horizon: float | None = None) -> list[str] | None:
    """EASY backfilling across pools while the reservation waits for its cores.

    Without it, every core that frees goes to the reserving pool at once and stands idle there
    until the last one comes (hours, behind running jobs), while every other VO's jobs wait:
    on SDSC-SP2 even serial jobs waited hours. When the site cannot give the reservation all it
    wants now and its expected start is known (:func:`_shadow`), the free capacity is instead
    lent to pools for the jobs whose time limit ends ``LEND_MARGIN_S`` before that start; their
    VMs are drained for the reservation once idle. The reservation's own VMs are booted once
    the site can give all of them or its start is ``LEND_MARGIN_S`` away: booted earlier, they
    would only stand idle until its last core frees (on SDSC-SP2's first 6,000 jobs, booting them
    at once cost 3.6 times the idle VM-hours and 9 % more mean wait). ``None``: the site can
    serve the reservation now, or its start is near or unknown (the caller splits the site as
    usual, the reservation first).
    """
    if horizon is None:
        horizon = _lend_horizon(drafts, site, first, now)
    if horizon is None:
        return None
    saved = [(d.want, d.min_deficit) for d in drafts]
    lent = False
    for d in drafts:
        if d is first or d.granted >= d.want:
            d.want = d.granted if d is not first else 0
        else:
            lendable = -(-_cores_within(d.queue, horizon) // d.policy.cores_per_vm)
            d.want = min(d.want, d.granted + lendable)
            lent = lent or d.want > d.granted
        d.min_deficit = min(d.min_deficit, d.want)
    if lent:
        _share(drafts, site, None)
    for d, (want, deficit) in zip(drafts, saved, strict=True):
        d.want, d.min_deficit = want, deficit
    n = sum(d.granted for d in drafts)
    return [f"lent {n} VMs to jobs that end before VO {first.policy.vo}'s reservation can start "
            f"(expected in {horizon + LEND_MARGIN_S:.0f} s)"] if n else []


#: The reserving pool's idle VMs are released (:func:`_release`) while its reservation's expected
#: start is more than this (and the lending margin) away.
RELEASE_HORIZON_S = 8 * 3600.0


def _release(first: _PoolDraft, now: float, horizon: float) -> list[str]:
    """Give back the reserving pool's idle VMs while its reservation is far from due.

    Called while lending (``_lend``) with the reservation ``horizon + LEND_MARGIN_S`` seconds
    away, more than ``RELEASE_HORIZON_S`` (and a boot timeout) and the margin: its VMs idle past
    the idle timeout are drained, and its drained VMs are not resumed but shut down, so their
    cores are lent to other VOs' jobs that end before it (and those VMs are not drained for it,
    :func:`_lent`); it boots them again when due. Held instead, they stood idle until the
    reservation's last core freed: on SDSC-SP2 86 % of vocloud's idle VM-hours
    (docs/policies.md, session 10). The expected start comes from time limits, which jobs
    mostly undercut, so a release near it is soon booted again: released from a boot timeout
    away, SDSC-SP2's first 2,000 jobs booted 9 times as many VMs and waited 3.5 times longer;
    at 4 h its first 20,000 jobs fared worse than without a release, at 7-8 h best, at 12 h
    too few VMs were released to matter (docs/policies.md, session 10, plan4).
    """
    p = first.policy
    drained = {v.vm_id for v in first.vms.drained_empty}
    kept = [r for r in first.resumes if r.vm_id not in drained]
    dropped = len(first.resumes) - len(kept)
    first.resumes[:] = kept
    idle = [(t, v) for v in first.vms.idle if (t := _idle_for(v, now)) >= p.idle_timeout_s]
    room = max(first.base_active + len(kept) - p.min_vms, 0)
    idle.sort(key=lambda tv: (not tv[1].cloud, -tv[0], tv[1].vm_id))
    start_in = horizon + LEND_MARGIN_S
    for for_s, vm in idle[:room]:
        first.actions.append(Drain(
            p.vo, vm.vm_id,
            f"drain vm {vm.vm_id}: idle {for_s:.0f} s, and VO {p.vo}'s reservation is not due for "
            f"{start_in:.0f} s; booted again when due", vm.name, DrainCause.IDLE))
    n = min(len(idle), room)
    first.want += n + dropped
    if not n + dropped:
        return []
    return [f"released {_plural(n + dropped, 'VM')} of VO {p.vo} until its reservation is due "
            f"(in {start_in:.0f} s)"]


def _level(d: _PoolDraft) -> float:
    """A pool's share in use: the cores of its active VMs (after this plan) per unit of weight.

    VMs already there count at their own size (a pool whose ``worker_shape`` follows the queue
    holds several), resumed and new ones at the pool's current size."""
    return d.active_cores / d.policy.weight + (len(d.resumes) + d.granted) * _step(d)


def _step(d: _PoolDraft) -> float:
    """How much one VM moves a pool's level."""
    return d.policy.cores_per_vm / d.policy.weight


def _wants(d: _PoolDraft, phase: str) -> bool:
    return d.granted < (d.min_deficit if phase == "min" else d.want)


def _still_wanted(d: _PoolDraft) -> int:
    return d.want - d.granted


# --- rebalancing by drain -----------------------------------------------------------------------


def _rebalance(drafts: Sequence[_PoolDraft], first: _PoolDraft | None = None,
               spare_until: float | None = None) -> list[str]:
    """Move capacity from pools above their weighted share to pools the full site starves.

    Stateless and convergent, so it needs no memory between cycles and cannot ping-pong:

    * A *starved* pool is one the site split left short (``granted < want``). It is served, lowest
      level first, one VM at a time (``_transfer``): from capacity already on its way out
      (VMs draining or drained and not resumed: they will free their share), else by taking one
      VM from the *donor*, the pool with the highest level.
    * A transfer happens only while the starved pool, one VM up, stays at or below the donor one
      VM down; so every transfer narrows the gap and none can be undone by the next one.
    * Taking from a donor first cancels one of its planned resumes (the VM stays draining), and
      only then drains one of its joined VMs: idle ones first, then the busy one with the fewest
      running jobs, which finish first. A donor never goes below its ``min_vms`` and is never a
      pool that boots in this same plan (no boot-and-drain in one cycle).

    Draining VMs already count as capacity in transit in the next cycle, so a drain is never
    repeated for the same shortfall while its VM empties. The reserving pool (``first``, see
    :func:`_reserving`) is served first and takes from donors whatever their level.
    """
    starved = [d for d in drafts if d.granted < d.want]
    if not starved:
        return []
    for d in drafts:  # counted once here, then kept as drains are added (no rescans per transfer)
        d.drain_ids = {a.vm_id for a in d.actions if isinstance(a, Drain)}
        d.drained = sum(1 for a in d.actions if isinstance(a, Drain) and a.cause is not DrainCause.LIFETIME)
    transit = sum(d.policy.cores_per_vm * (_draining(d) - len(d.resumes) + d.drained) for d in drafts)
    gained = dict.fromkeys(range(len(starved)), 0)
    moved = 0
    while True:
        i = min((j for j in gained if starved[j].granted + gained[j] < starved[j].want),
                key=lambda j: (starved[j] is not first,
                               _level(starved[j]) + gained[j] * _step(starved[j]),
                               starved[j].policy.vo), default=None)
        if i is None:
            break
        taker = starved[i]
        if transit >= taker.policy.cores_per_vm:
            transit -= taker.policy.cores_per_vm
            gained[i] += 1
            continue
        freed = _take_from_donor(drafts, taker, _level(taker) + (gained[i] + 1) * _step(taker),
                                 reserved=taker is first,
                                 spare_until=spare_until if taker is first else None)
        if freed is None:
            del gained[i]
            continue
        transit += freed
        moved += 1
    return [f"rebalanced {moved} VMs toward pools below their weighted share"] if moved else []


def _draining(d: _PoolDraft) -> int:
    """VMs of the pool already draining or drained: capacity on its way out."""
    return d.vms.n_draining


def _take_from_donor(drafts: Sequence[_PoolDraft], taker: _PoolDraft, taker_after: float,
                     reserved: bool = False, spare_until: float | None = None) -> int | None:
    """Free one VM's cores from the highest-level pool that can spare one, or ``None``.

    ``reserved``: the taker holds the site's reservation; donors give whatever their level.
    ``spare_until``: the reservation is not due before then; busy VMs that free by then are
    lent, not drained (:func:`_lent`)."""
    donors = sorted((d for d in drafts if d is not taker and not d.granted
                     and d.base_active + len(d.resumes) - d.drained > d.policy.min_vms),
                    key=lambda d: (-(_level(d) - d.drained * _step(d)), d.policy.vo))
    if reserved and not any(d.resumes for d in donors):
        # The reservation waits for its last VM, so the VM that frees soonest is the one to
        # drain, whichever pool it is in: idle ones first (highest level first), then the busy
        # one whose jobs are expected to end first.
        idle = [d for d in donors if any(v.vm_id not in d.drain_ids for v in d.vms.idle)]
        if idle:
            donors = idle
        else:
            soonest = [(c, d) for d in donors if (c := _drain_candidate(d, spare_until)) is not None]
            donors = [d for _, d in sorted(soonest, key=lambda cd: _busy_drain_order(cd[0])[:2])]
    for d in donors:
        after = _level(d) - (d.drained + 1) * _step(d)
        if taker_after > after and not reserved:
            return None  # donors are sorted: no later one is further above
        if d.resumes:
            d.resumes.pop(0)  # drained VMs were first: cancelling those frees capacity soonest
            return d.policy.cores_per_vm
        vm = _drain_candidate(d, spare_until)
        if vm is not None:
            d.actions.append(Drain(
                d.policy.vo, vm.vm_id,
                f"drain vm {vm.vm_id}: {d.policy.vo} is above its weighted share while "
                f"{taker.policy.vo} waits ({taker.demand.fitting_jobs} pending jobs); "
                f"{vm.running_jobs} running jobs finish first", vm.name, DrainCause.REBALANCE))
            d.drained += 1
            d.drain_ids.add(vm.vm_id)
            return d.policy.cores_per_vm
    return None


def _drain_candidate(d: _PoolDraft, spare_until: float | None = None) -> PoolVM | None:
    """The joined VM whose drain costs least: idle longest, else the busy one expected to free
    soonest (``busy_until``, when the batch system tells), else the one with fewest jobs.

    ``spare_until``: busy VMs expected to free by then are not candidates (:func:`_lent`)."""
    taken = d.drain_ids
    idle = [v for v in d.vms.idle if v.vm_id not in taken]
    if idle:
        return min(idle, key=lambda v: (not v.cloud, v.idle_since or v.joined_at or v.started_at, v.vm_id))
    busy = [v for v in d.vms.busy if v.vm_id not in taken and not _lent(v, spare_until)]
    return min(busy, key=_busy_drain_order) if busy else None


def _lent(v: PoolVM, spare_until: float | None) -> bool:
    """Whether busy VM ``v`` runs only jobs expected to end by ``spare_until``: while the
    reservation is not due, such a VM is lent (``_lend``) and is not drained for it."""
    return spare_until is not None and v.busy_until is not None and v.busy_until <= spare_until


def _busy_drain_order(v: PoolVM) -> tuple[bool, float, int, int]:
    return (not v.cloud, math.inf if v.busy_until is None else v.busy_until, v.running_jobs, v.vm_id)


# --- scale down and output ----------------------------------------------------------------------


def _idle_drains(d: _PoolDraft, c: _Classified, now: float) -> list[Action]:
    """Drain idle VMs past their timeout that nothing needs; see step 7 of the module docstring."""
    p = d.policy
    if not c.idle or d.granted or d.want or d.base_active > p.max_vms:
        return []
    room = min(d.base_active + len(d.resumes) - p.min_vms, d.unused_idle)
    idle = [(_idle_for(v, now), v) for v in c.idle]
    idle = [iv for iv in idle if iv[0] >= p.idle_timeout_s]
    if room <= 0 or not idle:
        return []
    last = _last_boot(d.pool)
    if last is not None and now - last < p.scale_down_delay_s:
        return []
    idle.sort(key=lambda iv: (not iv[1].cloud, -iv[0], iv[1].vm_id))  # cloud workers first
    return [
        Drain(p.vo, vm.vm_id,
              f"drain vm {vm.vm_id}: idle {for_s:.0f} s > idle timeout "
              f"{p.idle_timeout_s:.0f} s, {d.demand.fitting_jobs} pending jobs", vm.name)
        for for_s, vm in idle[:room]
    ]


def _shrinks(actions: Iterable[Action]) -> int:
    """Active VMs (counted in ``base_active``) that these actions take out of the pool."""
    return sum(1 for a in actions
               if (isinstance(a, Drain) and a.cause is not DrainCause.LIFETIME)
               or (isinstance(a, Shutdown) and a.cause is ShutdownCause.SURPLUS))


def _finish(d: _PoolDraft, now: float) -> tuple[list[Action], PoolStatus]:
    p = d.policy
    actions = list(d.actions)
    resumed = {r.vm_id for r in d.resumes}
    actions.extend(
        Shutdown(p.vo, vm.vm_id, f"shutdown vm {vm.vm_id}: drained and empty", vm.name)
        for vm in d.vms.drained_empty if vm.vm_id not in resumed)
    actions.extend(d.resumes)
    if d.granted:
        held = f" of {d.want} wanted" if d.granted < d.want else ""
        reason = f"boot {d.granted}{held}: {d.boot_reason}"
        if spans(p):  # the size this cycle chose (shape.py); a fixed pool's is its policy's
            actions.append(Boot(p.vo, d.granted, f"{reason} ({p.cores_per_vm}-core VMs)", p.image,
                                p.cores_per_vm, p.memory_mib_per_vm))
        else:
            actions.append(Boot(p.vo, d.granted, reason, p.image))
    if len(actions) > 1:
        actions.sort(key=_action_order)
    c = d.vms
    status = PoolStatus(
        vo=p.vo, image=p.image, pending_jobs=d.demand.pending_jobs,
        pending_cores=d.demand.pending_cores, fitting_jobs=d.demand.fitting_jobs,
        unfit_jobs=d.demand.unfit_jobs,
        desired=max(d.base_active + len(d.resumes) + d.granted - _shrinks(actions), 0),
        booting=c.n_requested + c.n_booting, running=c.n_idle + c.n_busy,
        draining=c.n_draining, idle=c.n_idle,
        min_vms=p.min_vms, max_vms=p.max_vms, boots=d.granted, notes=tuple(d.notes),
    )
    return actions, status


_ORDER = {Shutdown: 0, Drain: 1, Resume: 2, Boot: 3}


def _action_order(a: Action) -> tuple[int, int]:
    return (_ORDER[type(a)], getattr(a, "vm_id", 0))


def _shaped(pool: Pool, widest: int, site: SiteCapacity) -> Pool:
    """``pool`` with the VM shape its ``worker_shape`` picks now (``elastic/shape.py``)."""
    policy = effective_policy_for(pool.policy, widest, site.host_shape)
    if policy is pool.policy:
        return pool
    return Pool(policy, pool.vms, pool.recent_boots, pool.backoff)


def plan(demand: Mapping[str, Sequence[PendingJob]], pools: Sequence[Pool], site: SiteCapacity,
         now: float) -> Plan:
    """Decide what every VO pool should do now. Pure and deterministic (module docstring).

    ``demand``: pending jobs by VO (``vocloud.batch.base.by_vo``); jobs of VOs without a pool
    are reported in ``Plan.notes``. ``pools``: one per VO (a VO twice is an InvalidInput).
    ``site``: what the site can still give. ``now``: the caller's clock, in the same unit as
    every timestamp in the inputs.
    """
    ordered = sorted(pools, key=lambda pool: pool.policy.vo)
    vos = [pool.policy.vo for pool in ordered]
    if len(set(vos)) != len(vos):
        raise InvalidInput("two pools for the same VO", vos=sorted({v for v in vos if vos.count(v) > 1}))
    queues = [demand.get(pool.policy.vo, ()) for pool in ordered]
    summaries = [_jobs(q) for q in queues]
    ordered = [_shaped(pool, s.widest, site) for pool, s in zip(ordered, summaries, strict=True)]
    demands = [_pool_demand(q, s, pool.policy, now)
               for pool, q, s in zip(ordered, queues, summaries, strict=True)]
    held = _reserving(demands, now, site.reserve_after_s)
    drafts = [_draft(pool, d, now, i == held)
              for i, (pool, d) in enumerate(zip(ordered, demands, strict=True))]
    for d, q in zip(drafts, queues, strict=True):
        d.queue = q
    first = drafts[held] if held is not None and drafts[held].want > 0 else None
    room = _Site(site, drafts)
    horizon = _lend_horizon(drafts, room, first, now) if first is not None else None
    notes = _lend(drafts, room, first, now, horizon) if horizon is not None and first is not None else None
    spare_until = recheck_at = None
    if notes is None:
        notes = _share(drafts, room, first)
    elif first is not None and horizon is not None:  # lending: the reservation is not due
        # when it becomes due, the plan changes with time alone (no input marks it)
        spare_until = recheck_at = now + horizon
        release = max(first.policy.boot_timeout_s, RELEASE_HORIZON_S)
        if horizon > release:
            notes.extend(_release(first, now, horizon))
            recheck_at = now + horizon - release  # the release window ends
    if first is None or first.granted >= first.want:
        notes.extend(_backfill_wide(drafts, room, now))
    elif horizon is not None:  # the reservation waits: wide jobs that end before it may backfill
        notes.extend(_backfill_wide(drafts, room, now, horizon))
    if first is not None and first.granted < first.want:
        # The site is full and the oldest wide job still lacks VMs: what other pools are
        # draining stays draining (no resume), so it comes free for that job.
        for d in drafts:
            if d is not first:
                d.resumes.clear()
        notes.append(f"VO {first.policy.vo} holds the site's reservation: its oldest job spanning "
                     "several VMs is the oldest waiting; its VMs come first")
    for d in drafts:
        d.actions.extend(_idle_drains(d, d.vms, now))
    if site.rebalance:
        notes.extend(_rebalance(drafts, first, spare_until))
    notes.extend(f"{_plural(len(demand[vo]), 'pending job')} of VO {vo}: no pool, not booted for"
                 for vo in sorted(set(demand) - set(vos)) if demand[vo])
    actions: list[Action] = []
    statuses: list[PoolStatus] = []
    for d in drafts:
        acts, status = _finish(d, now)
        actions.extend(acts)
        statuses.append(status)
    return Plan(tuple(actions), tuple(statuses), tuple(notes), recheck_at)
