"""Which VMs may go to a leased host, and when a lease must be drained: pure decisions.

A host leased from the batch system (docs/host-leases.md) disappears when its batch job ends, so
the scheduler may give it only VMs that are known to finish before then. The scheduler already
matches VMs to hosts with requirement expressions (``core.placement``); a leased host carries its
lease end as the static attribute ``LEASE_END`` (epoch seconds), and :func:`fit_requirements`
adds one conjunct to a pending VM's own requirements:

* a VM without a ``WALLTIME``: ``!(LEASE_END > 0)`` -- ordinary hosts only (a missing attribute
  makes every comparison false, so the negation holds exactly on hosts without a lease);
* a VM with one: ``!(LEASE_END > 0) | LEASE_END >= now + walltime + margin``.

``LEASE_END`` never changes during a cycle, so the placement's static-conjunct shortcut applies.
The end is rounded up to ``quantum`` seconds so VMs of one template share one expression text
(the placement groups VMs by text). Nothing here reads a clock: ``now`` is passed in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from vocloud.model.host_lease import FINAL, JobView, LeaseState

LEASE_END = "LEASE_END"
NO_LEASE = f"!({LEASE_END} > 0)"


def fit_requirements(requirements: str | None, walltime: float | None, now: float,
                     margin: float, quantum: float = 10.0) -> str:
    """The VM's requirements plus the lease-fit conjunct (see the module docstring)."""
    if walltime is None:
        fit = NO_LEASE
    else:
        end = now + walltime + margin
        end = -(-end // quantum) * quantum if quantum > 0 else end
        fit = f"({NO_LEASE} | {LEASE_END} >= {end:.0f})"
    return fit if not (requirements and requirements.strip()) else f"({requirements}) & {fit}"


class _HasAttrs(Protocol):
    @property
    def attrs(self) -> Mapping[str, object]: ...


def lease_fit(hosts: Iterable[_HasAttrs], now: float, margin: float
              ) -> Callable[[str | None, float | None], str | None]:
    """The scheduler's requirement rewriter for one cycle: the identity when no host is leased
    (so a site without leases sees exactly the old expressions and reasons), else
    :func:`fit_requirements` at ``now``."""
    if not any(LEASE_END in h.attrs for h in hosts):
        return lambda requirements, _walltime: requirements
    return lambda requirements, walltime: fit_requirements(requirements, walltime, now, margin)


def lease_next(state: LeaseState, job: JobView, now: float, lease_end: float | None,
               drain_lead: float, ending_reported: bool, host_empty: bool) -> tuple[LeaseState, str]:
    """One lease's next state and why: the whole life cycle of a leased host in one place.

    ``drain_lead``: how long before the lease end its VMs start shutting down (time for an ACPI
    shutdown, then the hard stop the lifecycle escalates to). ``ending_reported``: the node's
    agent said the job is being ended (``scancel``, the walltime's SIGTERM). ``host_empty``: no
    VM holds the host any more.
    """
    if state in FINAL:
        return state, ""
    if state is LeaseState.SUBMITTED:
        if job is JobView.GONE:
            return LeaseState.ENDED, "the batch job ended before its node registered"
        return state, ""
    if state is LeaseState.RUNNING:
        if ending_reported:
            return LeaseState.DRAINING, "the node reported its batch job ending"
        if job is JobView.GONE:
            return LeaseState.DRAINING, "the batch job is gone"
        if lease_end is not None and now >= lease_end - drain_lead:
            return LeaseState.DRAINING, f"the lease ends in {max(lease_end - now, 0):.0f} s"
        return state, ""
    # DRAINING
    if host_empty:
        return LeaseState.ENDED, "drained: every VM shut down, the host left"
    return state, ""


def auto_lease_count(waiting: int, in_flight: int, live: int, max_nodes: int) -> int:
    """How many nodes the daemon leases now for VMs that wait for room (``host_lease_auto``):
    one at a time, only while nothing it asked for is still queued, never beyond ``max_nodes``
    live leases. A gentle ramp: each new host is used before the next is asked for."""
    if waiting <= 0 or in_flight > 0 or live >= max_nodes:
        return 0
    return 1
