"""Failure handling for pool VMs, as one state machine plus exponential backoff.

Three failure kinds, three different answers, because treating them alike is how autoscalers
either leak instances or give up on a healthy image:

* **A boot that fails or never joins** the batch system within ``boot_timeout_s``: the VM is
  shut down and removed (never leaked), the image's backoff (and the host's) grows, and the
  planner boots a replacement once the backoff allows. While an image backs off, other pools
  boot as usual: backoff is keyed by image, not site-wide.
* **A worker the batch system marks DOWN** past ``down_grace_s``: reaped (shut down, removed
  from the batch system); it counts against the host, not the image, since it did join once.
* **A stockout** (no host has room): the request stays REQUESTED and is retried on the next
  cycle; nothing is marked failed and no backoff grows, because nothing is broken.

Backoff is a circuit breaker: after a failure no boot until ``retry_at``; then one *probe* boot
(the planner allows a single VM of that image in flight); its success resets the state, its
failure doubles the wait, up to a cap. Deterministic on purpose (no jitter), so the simulator
replays byte for byte.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from vocloud.elastic.policy import BackoffState, PoolPolicy, PoolVM, ShutdownCause
from vocloud.elastic.policy import PoolVMState as V
from vocloud.errors import IllegalAction


class PoolVMEvent(StrEnum):
    """What the controller observes (or decides) about one pool VM."""

    PLACED = "placed"  # the IaaS scheduler put it on a host
    NO_CAPACITY = "no_capacity"  # stockout: no host has room, retry later
    JOINED = "joined"  # its node appeared in the batch system
    JOB_STARTED = "job_started"
    JOBS_DONE = "jobs_done"  # no job runs on it any more
    DRAIN = "drain"
    RESUME = "resume"
    SHUTDOWN = "shutdown"
    STOPPED = "stopped"  # the VM is gone from the hypervisor and the batch system
    STOP_FAILED = "stop_failed"  # try again next cycle (driver operations are idempotent)
    CANCEL = "cancel"  # a request never placed is withdrawn
    BOOT_FAILED = "boot_failed"
    BOOT_TIMEOUT = "boot_timeout"
    LOST = "lost"  # the IaaS no longer finds it
    NODE_DOWN = "node_down"
    NODE_UP = "node_up"


E = PoolVMEvent

_LIVE = (V.BOOTING, V.JOINED_IDLE, V.JOINED_BUSY, V.DRAINING, V.DRAINED, V.DOWN)
_NODE = (V.JOINED_IDLE, V.JOINED_BUSY, V.DRAINING, V.DRAINED)

#: (state, event) -> next state. Note what is absent: no SHUTDOWN from JOINED_IDLE/JOINED_BUSY or
#: DRAINING: a worker that joined is only shut down once DRAINED (or DOWN/FAILED, when no job can
#: run on it). That absence is the "never kill a running job" guarantee, enforced as data.
POOL_VM_TABLE: dict[tuple[V, E], V] = {
    (V.REQUESTED, E.PLACED): V.BOOTING,
    (V.REQUESTED, E.NO_CAPACITY): V.REQUESTED,
    (V.REQUESTED, E.CANCEL): V.GONE,
    (V.REQUESTED, E.BOOT_FAILED): V.FAILED,
    (V.REQUESTED, E.BOOT_TIMEOUT): V.FAILED,
    (V.BOOTING, E.JOINED): V.JOINED_IDLE,
    (V.BOOTING, E.BOOT_FAILED): V.FAILED,
    (V.BOOTING, E.BOOT_TIMEOUT): V.FAILED,
    (V.BOOTING, E.SHUTDOWN): V.STOPPING,  # surplus: not joined, so no job can be on it
    (V.JOINED_IDLE, E.JOB_STARTED): V.JOINED_BUSY,
    (V.JOINED_BUSY, E.JOB_STARTED): V.JOINED_BUSY,
    (V.JOINED_BUSY, E.JOBS_DONE): V.JOINED_IDLE,
    (V.JOINED_IDLE, E.DRAIN): V.DRAINED,  # nothing runs: drained at once
    (V.JOINED_BUSY, E.DRAIN): V.DRAINING,
    (V.DRAINING, E.JOBS_DONE): V.DRAINED,
    (V.DRAINING, E.RESUME): V.JOINED_BUSY,
    (V.DRAINED, E.RESUME): V.JOINED_IDLE,
    (V.DRAINING, E.DRAIN): V.DRAINING,
    (V.DRAINED, E.DRAIN): V.DRAINED,
    (V.DRAINED, E.SHUTDOWN): V.STOPPING,
    (V.DOWN, E.SHUTDOWN): V.STOPPING,  # reap
    (V.FAILED, E.SHUTDOWN): V.STOPPING,  # remove the failed VM: never leak it
    (V.DOWN, E.NODE_UP): V.JOINED_IDLE,
    (V.STOPPING, E.STOPPED): V.GONE,
    (V.STOPPING, E.STOP_FAILED): V.STOPPING,
    (V.STOPPING, E.SHUTDOWN): V.STOPPING,
    **{(st, E.NODE_DOWN): V.DOWN for st in _NODE},
    **{(st, E.LOST): V.FAILED for st in _LIVE},
}


def pool_vm_next(state: V | str, event: E | str, vm_id: int | str = "?") -> V:
    """The state a pool VM in ``state`` moves to on ``event``; IllegalAction if not allowed."""
    st = V(state)
    try:
        return POOL_VM_TABLE[(st, E(event))]
    except (KeyError, ValueError):
        raise IllegalAction("pool VM", vm_id, st.value, str(event)) from None


# --- backoff ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """Wait ``base_s * factor**(failures-1)`` after the n-th consecutive failure, at most ``max_s``."""

    base_s: float = 30.0
    factor: float = 2.0
    max_s: float = 1800.0


DEFAULT_BACKOFF = BackoffPolicy()


def backoff_delay(failures: int, policy: BackoffPolicy = DEFAULT_BACKOFF) -> float:
    """Seconds to wait after ``failures`` consecutive failures (0 for none)."""
    if failures <= 0:
        return 0.0
    # Cap the exponent before computing: 2.0**2000 overflows, and the cap is reached long before.
    exp = min(failures - 1, 64)
    return float(min(policy.max_s, policy.base_s * policy.factor**exp))


def record_failure(state: BackoffState, now: float,
                   policy: BackoffPolicy = DEFAULT_BACKOFF) -> BackoffState:
    """One more consecutive failure at ``now``: the next boot waits longer."""
    failures = state.failures + 1
    return replace(state, failures=failures, retry_at=now + backoff_delay(failures, policy),
                   last_failure=now)


def record_success(state: BackoffState) -> BackoffState:
    """A VM of this image (on this host) joined: forget the failures."""
    return BackoffState(key=state.key)


def may_boot(state: BackoffState, now: float) -> tuple[bool, str]:
    """Whether a boot may be tried now, and a one-line reason for the operator."""
    if state.failures == 0:
        return True, "no recent boot failures"
    label = f"{state.key} " if state.key else ""
    if now < state.retry_at:
        return False, (f"backing off {label}after {state.failures} boot failure(s): "
                       f"retry in {state.retry_at - now:.0f} s")
    return True, f"probing {label}after {state.failures} boot failure(s): one boot at a time"


def blocked(states: Mapping[str, BackoffState], now: float) -> frozenset[str]:
    """Keys (hosts, images) that may not be used now: for the scheduler to skip failing hosts.

    Per-host backoff is applied at placement, not by the planner: the planner asks for VMs, the
    scheduler chooses hosts, and a host in backoff is simply not offered, so the other hosts
    take the boots and no pool is held back by one bad host.
    """
    return frozenset(k for k, st in states.items() if not may_boot(st, now)[0])


def avoid_hosts(requirements: str, avoid: Iterable[str], usable: Iterable[str]) -> str:
    """SCHED_REQUIREMENTS for a new pool VM that keeps it off the hosts in backoff.

    ``usable``: the hosts that could take VMs now. When every one of them is in backoff the
    requirement is left as it is: a VM pinned away from every host would wait for nothing, so
    the site's hosts are tried again (the pool's own boot timeout still guards the VM).
    """
    names = sorted(set(avoid))
    if not names or set(usable) <= set(names):
        return requirements
    clause = " & ".join(f'NAME != "{n}"' for n in names)
    return f"({requirements}) & {clause}" if requirements.strip() else clause


def is_probing(state: BackoffState) -> bool:
    """After failures the image is on probation: one VM in flight until one joins."""
    return state.failures > 0


# --- verdicts the planner applies to each VM ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """A VM to remove because it failed, and why (a one-line reason for ``pool events``)."""

    cause: ShutdownCause
    reason: str


def failure_verdict(vm: PoolVM, policy: PoolPolicy, now: float) -> Verdict | None:
    """Whether ``vm`` has failed and must be removed (and replaced), or ``None`` if it is fine.

    A stockout is deliberately not a failure: a REQUESTED VM (no host has room) waits however
    long the site stays full, and the IaaS scheduler retries it every cycle. The boot timer
    starts when the VM is placed (``state_since`` of BOOTING, else its request time), so a VM
    that waited out a stockout is not blamed for it.
    """
    if vm.state is V.FAILED:
        return Verdict(ShutdownCause.FAILED, f"shutdown vm {vm.vm_id}: failed, replacing it")
    if vm.state is V.BOOTING:
        age = now - (vm.state_since if vm.state_since is not None else vm.started_at)
        if age > policy.boot_timeout_s:
            return Verdict(ShutdownCause.BOOT_TIMEOUT,
                           f"shutdown vm {vm.vm_id}: booting {age:.0f} s > boot timeout "
                           f"{policy.boot_timeout_s:.0f} s, never joined; replacing it")
    if vm.state is V.DOWN:
        since = vm.state_since if vm.state_since is not None else now
        if now - since >= policy.down_grace_s:
            return Verdict(ShutdownCause.DOWN,
                           f"shutdown vm {vm.vm_id}: node down {now - since:.0f} s >= grace "
                           f"{policy.down_grace_s:.0f} s; reaping it")
    return None
