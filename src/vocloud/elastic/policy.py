"""The planner's inputs and outputs: pool policies, pool VMs, site capacity, actions, plans.

Everything here is a frozen value so that :func:`vocloud.elastic.planner.plan` can stay a pure
function: the daemon's controller loop and the simulator build these from their own state (the
store and the batch adapter, or the virtual site), call ``plan``, and carry out the actions.

Units: cores are whole cores, memory is MiB, durations are seconds, timestamps are seconds on the
caller's clock (Unix epoch in production, virtual clock in the simulator); the planner only
compares them with the ``now`` it is given.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from vocloud.errors import InvalidInput


class PoolVMState(StrEnum):
    """Where a pool VM is in its life; the legal moves are ``vocloud.elastic.failures.POOL_VM_TABLE``.

    The controller derives the state from the IaaS VM state and the batch node state together:
    REQUESTED until a host is chosen, BOOTING until the node appears in the batch system,
    then JOINED_IDLE / JOINED_BUSY by running jobs, DRAINING / DRAINED once a drain was asked
    (DRAINED = draining and empty), STOPPING while the VM is shut down, GONE when it is removed.
    FAILED is an IaaS failure (boot failure, VM vanished); DOWN is a node the batch system marks
    down.
    """

    REQUESTED = "REQUESTED"
    BOOTING = "BOOTING"
    JOINED_IDLE = "JOINED_IDLE"
    JOINED_BUSY = "JOINED_BUSY"
    DRAINING = "DRAINING"
    DRAINED = "DRAINED"
    STOPPING = "STOPPING"
    GONE = "GONE"
    FAILED = "FAILED"
    DOWN = "DOWN"


#: States that will (or already do) give the pool a worker: capacity on the way or present.
STARTING: frozenset[PoolVMState] = frozenset({PoolVMState.REQUESTED, PoolVMState.BOOTING})
JOINED: frozenset[PoolVMState] = frozenset({PoolVMState.JOINED_IDLE, PoolVMState.JOINED_BUSY})
#: States in which the VM still occupies site capacity (counted against the site VM cap).
HOLDS_CAPACITY: frozenset[PoolVMState] = frozenset(set(PoolVMState) - {PoolVMState.GONE})


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    """How one VO's pool behaves. Validated on construction, so a bad policy never plans.

    ``weight`` is the VO's fair share of scarce site capacity (2 gets twice the VMs of 1).
    ``idle_timeout_s``: a joined VM idle this long (and not needed) is drained.
    ``boot_timeout_s``: a VM not joined this long after its boot request is replaced.
    ``max_lifetime_s``: a VM older than this is drained and replaced (``None``: forever), so
    long-lived workers pick up new images and do not accumulate leaks.
    ``max_boots_per_minute``: boot requests in any 60 s window, to spare the image store and the
    batch controller a thundering herd. ``scale_down_delay_s``: after the pool's last boot, no
    idle drain for this long; a burst that pauses briefly does not drain what it just booted.
    ``min_pending_s``: a job must have waited this long to count as demand (0: react at once),
    as elastiq's waiting-jobs time, for sites whose batch scheduler runs slower than the poll.
    ``down_grace_s``: a node marked DOWN this long is reaped (a slurmd restart is not a death).
    ``worker_shape`` (:data:`WORKER_SHAPES`): ``fixed`` boots ``cores_per_vm``-core VMs and a job
    wider than one VM is never booted for; ``job`` sizes new VMs to the widest pending job, up
    to a whole host (at least ``cores_per_vm``), and ``host`` boots whole-host VMs; in both, a
    job wider than one VM spans several VMs of its VO, as on a bare-metal partition. The host's
    shape comes from :attr:`SiteCapacity.host_shape` (see ``elastic/shape.py``).
    ``headroom``: spare workers to keep beyond the queue's need, as a fraction of the busy ones
    (0.2: one idle or booting worker per five busy, rounded up); they are booted ahead of
    demand and kept from the idle timeout, so a burst finds workers ready instead of waiting a
    boot. 0 (the default): boot only for jobs that wait.
    """

    vo: str
    image: str
    cores_per_vm: int
    memory_mib_per_vm: int
    min_vms: int = 0
    max_vms: int = 10
    weight: float = 1.0
    idle_timeout_s: float = 300.0
    boot_timeout_s: float = 600.0
    max_lifetime_s: float | None = None
    max_boots_per_minute: int = 10
    scale_down_delay_s: float = 120.0
    min_pending_s: float = 0.0
    down_grace_s: float = 120.0
    worker_shape: str = "fixed"
    headroom: float = 0.0

    def __post_init__(self) -> None:
        for msg, bad in _policy_problems(self):
            if bad:
                raise InvalidInput(f"pool {self.vo!r}: {msg}", vo=self.vo)


def _policy_problems(p: PoolPolicy) -> list[tuple[str, bool]]:
    """Each rule with whether ``p`` breaks it; kept as data so the messages read as a list."""
    return [
        ("VO name must not be empty", not p.vo),
        ("image must not be empty", not p.image),
        ("cores_per_vm must be >= 1", p.cores_per_vm < 1),
        ("memory_mib_per_vm must be >= 1", p.memory_mib_per_vm < 1),
        ("min_vms must be >= 0", p.min_vms < 0),
        ("max_vms must be >= min_vms", p.max_vms < p.min_vms),
        ("weight must be > 0", not p.weight > 0),
        ("idle_timeout_s must be >= 0", p.idle_timeout_s < 0),
        ("boot_timeout_s must be > 0", p.boot_timeout_s <= 0),
        ("max_lifetime_s must be > 0", p.max_lifetime_s is not None and p.max_lifetime_s <= 0),
        ("max_boots_per_minute must be >= 1", p.max_boots_per_minute < 1),
        ("scale_down_delay_s must be >= 0", p.scale_down_delay_s < 0),
        ("min_pending_s must be >= 0", p.min_pending_s < 0),
        ("down_grace_s must be >= 0", p.down_grace_s < 0),
        (f"worker_shape must be one of {', '.join(WORKER_SHAPES)}", p.worker_shape not in WORKER_SHAPES),
        ("headroom must be between 0 and 10", not 0 <= p.headroom <= 10),
    ]


#: How a pool sizes its workers (``PoolPolicy.worker_shape``).
WORKER_SHAPES: tuple[str, ...] = ("fixed", "job", "host")


@dataclass(frozen=True, slots=True)
class PoolVM:
    """One VM of a pool, as the controller sees it now.

    ``started_at``: when its boot was requested. ``joined_at``: when its node appeared in the
    batch system. ``idle_since``: when the node last became idle (``None``: busy or unknown; an
    idle VM without it counts as idle since it joined). ``state_since``: when it entered
    ``state`` (used for the DOWN grace period). ``free_cores``/``free_memory_mib``: what a
    JOINED_BUSY or DRAINING node still has unallocated, when the batch system says (else 0:
    a busy node is assumed full, so the planner never counts capacity that may not be there).
    ``host``: where it runs, for per-host backoff; ``None`` until placed.
    ``cores``/``memory_mib``: the VM's own size when it differs from the pool's current shape
    (pools whose ``worker_shape`` follows the queue hold VMs of several sizes); 0: the pool's.
    ``busy_until``: the latest expected end of its running jobs, when known (see the field).
    """

    vm_id: int
    name: str
    state: PoolVMState
    started_at: float
    joined_at: float | None = None
    idle_since: float | None = None
    running_jobs: int = 0
    free_cores: int = 0
    free_memory_mib: int = 0
    state_since: float | None = None
    host: str | None = None
    cloud: bool = False  # runs on a cloud host (docs/bursting.md): drained before site workers
    cores: int = 0
    memory_mib: int = 0
    #: when the VM's running jobs are expected to end (their start plus time limit, as the batch
    #: system reports it), ``None`` when unknown; the planner drains the VM that frees soonest
    busy_until: float | None = None


@dataclass(frozen=True, slots=True)
class BackoffState:
    """Exponential backoff of one image or host after boot failures (see ``failures.py``).

    ``failures`` counts consecutive failures (reset by a success); ``retry_at`` is the earliest
    time a boot may be tried again. A fresh state (0 failures) never blocks.
    """

    key: str = ""
    failures: int = 0
    retry_at: float = 0.0
    last_failure: float | None = None


@dataclass(frozen=True, slots=True)
class Pool:
    """One pool as input to the planner: its policy, its VMs, and its boot history.

    ``recent_boots``: timestamps of this pool's boot requests (only the last 60 s matter; older
    ones are ignored, so the caller may pass a longer tail). ``backoff``: the backoff of the
    pool's *image* (pools sharing an image share a failing image's backoff; the caller passes
    the same state to each).
    """

    policy: PoolPolicy
    vms: tuple[PoolVM, ...] = ()
    recent_boots: tuple[float, ...] = ()
    backoff: BackoffState = BackoffState()


#: How long the oldest job spanning several VMs waits before it holds the site's reservation
#: (``SiteCapacity.reserve_after_s``, ``planner._reserving``): until then such jobs start when all
#: their VMs fit (backfill), as on a cloud; the reservation is the guard against starving them.
RESERVE_AFTER_S = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class SiteCapacity:
    """What the site can still give to pools.

    ``max_vms``: cap on pool VMs of all pools together, in every state that holds capacity.
    ``free_cores``/``free_memory_mib``: unallocated on the hosts now; VMs already placed are
    subtracted, pool VMs still REQUESTED (not yet placed) are not: the planner subtracts those
    itself. ``host_free``: optional (free cores, free MiB) per host; when given, a VM is only
    planned if some host can hold it, so the planner never asks for a VM that no host fits.
    ``rebalance``: when a pool cannot boot because the site is full, drain VMs of pools above
    their weighted share so the capacity moves to it as their jobs end (never killed). Without
    it, weights only split *new* capacity, and the VO that filled the site first keeps it for
    as long as it has jobs queued. ``host_shape``: (cores, MiB) of the largest host, the size of
    a whole-host worker for pools whose ``worker_shape`` is ``job`` or ``host``; (0, 0): unknown,
    and such pools keep their configured shape. ``reserve_after_s``: how long the oldest job
    spanning several VMs must have waited to hold the site's reservation (``RESERVE_AFTER_S``;
    0: at once, as before session 11).
    """

    max_vms: int
    free_cores: int
    free_memory_mib: int
    host_free: tuple[tuple[int, int], ...] = ()
    rebalance: bool = True
    host_shape: tuple[int, int] = (0, 0)
    reserve_after_s: float = RESERVE_AFTER_S

    @classmethod
    def from_hosts(cls, max_vms: int, host_free: tuple[tuple[int, int], ...],
                   rebalance: bool = True, host_shape: tuple[int, int] = (0, 0),
                   reserve_after_s: float = RESERVE_AFTER_S) -> SiteCapacity:
        """Capacity from per-host free (cores, MiB); the totals are their sums."""
        return cls(
            max_vms=max_vms,
            free_cores=sum(c for c, _ in host_free),
            free_memory_mib=sum(m for _, m in host_free),
            host_free=host_free,
            rebalance=rebalance,
            host_shape=host_shape,
            reserve_after_s=reserve_after_s,
        )


class DrainCause(StrEnum):
    IDLE = "IDLE"  # idle past the idle timeout and not needed
    SURPLUS = "SURPLUS"  # pool above max_vms (max lowered)
    LIFETIME = "LIFETIME"  # older than max_lifetime_s
    REBALANCE = "REBALANCE"  # pool above its weighted share while another pool is starved


class ShutdownCause(StrEnum):
    """Why a VM is shut down; the controller feeds BOOT_TIMEOUT/FAILED to the image backoff."""

    DRAINED = "DRAINED"  # drained and empty: the normal end
    BOOT_TIMEOUT = "BOOT_TIMEOUT"  # never joined within boot_timeout_s
    FAILED = "FAILED"  # the IaaS reports the VM failed
    DOWN = "DOWN"  # the batch system marks the node down past the grace period
    SURPLUS = "SURPLUS"  # not yet joined (no job can be on it) and the pool is above max

    @property
    def is_failure(self) -> bool:
        """Whether this shutdown counts against the image's (and host's) backoff."""
        return self in (ShutdownCause.BOOT_TIMEOUT, ShutdownCause.FAILED)

    @property
    def blames_host(self) -> bool:
        """Whether this shutdown counts against the VM's host backoff (a DOWN node did boot,
        so its image is fine, but the host it ran on may not be)."""
        return self.is_failure or self is ShutdownCause.DOWN


@dataclass(frozen=True, slots=True)
class Boot:
    """Request ``count`` new VMs of ``image`` for ``vo``.

    ``cores``/``memory_mib``: the size of each new VM when the pool's ``worker_shape`` chose it
    (``job``/``host``); 0: the pool's configured ``cores_per_vm``/``memory_mib_per_vm``.
    """

    vo: str
    count: int
    reason: str
    image: str = ""
    cores: int = 0
    memory_mib: int = 0


@dataclass(frozen=True, slots=True)
class Drain:
    """Drain node ``name`` (VM ``vm_id``) in the batch system: running jobs finish, no new ones."""

    vo: str
    vm_id: int
    reason: str
    name: str = ""
    cause: DrainCause = DrainCause.IDLE


@dataclass(frozen=True, slots=True)
class Shutdown:
    """Shut down and remove VM ``vm_id`` (no job runs on it: drained and empty, or never joined).

    In the pool-VM table (``failures.POOL_VM_TABLE``) this is event ``shutdown`` for a BOOTING,
    DRAINED, DOWN or FAILED VM, and ``cancel`` for a REQUESTED one (never placed: nothing to
    stop). The controller also removes the node from the batch system (``BatchSystem.remove``)
    and, when ``cause.is_failure``, records a failure on the image's backoff.
    """

    vo: str
    vm_id: int
    reason: str
    name: str = ""
    cause: ShutdownCause = ShutdownCause.DRAINED


@dataclass(frozen=True, slots=True)
class Resume:
    """Undo the drain of node ``name``: demand came back, and a resume beats a new boot."""

    vo: str
    vm_id: int
    reason: str
    name: str = ""


Action = Boot | Drain | Shutdown | Resume


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """One row of ``vocloud pool list``, plus the one-line notes behind the numbers.

    ``desired``: VMs the pool should have once this plan is carried out (booting + joined,
    draining excluded). ``running``: joined VMs (idle + busy). ``unfit_jobs``: pending jobs that
    no VM of this pool's shape can run; ``notes`` says why, and why boots were held back.
    """

    vo: str
    image: str
    pending_jobs: int
    pending_cores: int
    fitting_jobs: int
    unfit_jobs: int
    desired: int
    booting: int
    running: int
    draining: int
    idle: int
    min_vms: int
    max_vms: int
    boots: int = 0
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Plan:
    """The planner's answer: what to do now, and the per-pool picture that explains it.

    ``actions`` come ordered: per pool (by VO name) shutdowns, drains, resumes, then boots.
    ``notes`` hold site-wide decisions that are not actions (jobs of VOs without a pool, site
    full, capacity split by weight).

    ``recheck_at``: the earliest time after ``now`` at which the planner's answer may change
    with time alone, through a threshold of its own that no input timestamp marks (the
    reservation becoming due, the end of its release window); ``None``: none. The idle
    timeouts, boot timeouts, rate window and lifetimes are not in it: callers see those from the
    VMs' own timestamps. The daemon plans every cycle and may ignore it; the simulator, which
    skips polls in which nothing changed, wakes the planner at it (``sim/elastic.py``).
    """

    actions: tuple[Action, ...]
    pools: tuple[PoolStatus, ...]
    notes: tuple[str, ...] = ()
    recheck_at: float | None = None

    def for_vo(self, vo: str) -> PoolStatus | None:
        """The status row of ``vo``'s pool, if it has one."""
        return next((p for p in self.pools if p.vo == vo), None)

    def boots(self, vo: str) -> int:
        """VMs this plan boots for ``vo``."""
        return sum(a.count for a in self.actions if isinstance(a, Boot) and a.vo == vo)
