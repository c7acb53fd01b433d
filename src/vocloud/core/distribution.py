"""Who sends an image to whom: the fan-out tree of ``vocloud image distribute``, as pure decisions.

The front-end is the tree's root, but it sends an image **once**: it serves a host only while no
host holds a verified copy and no transfer that would make one is in flight. Every host that holds
the image (before the distribution or once its copy is verified) serves up to ``fanout`` children
at a time, so holders multiply each round: with ``fanout=1`` it is the binomial broadcast
(1, 2, 4, 8 … holders), with ``K`` a K-ary tree whose senders share their uplink between K
children. The tree is built as transfers finish, not fixed in advance, so a slow or failed host
delays only its own subtree and a failure is re-planned from whoever holds the image then.

Outcomes the shell reports (:class:`Outcome`):

``OK``           the child verified its copy: it becomes a holder.
``CHILD_FAILED`` the child's copy failed its checksum or the copy broke: the child is tried again
                 (from another holder if there is one), up to ``max_attempts``.
``SOURCE_BAD``   the sender's own copy no longer matches: the sender stops being a holder and is
                 redone (it joins the pending hosts); the child is tried again, not charged.
``UNREACHABLE``  the child cannot be reached: it is given up at once and reported.
``SOURCE_DOWN``  the sender could not be reached: it is given up, the child is tried again.

Nothing here does I/O or reads a clock; ``Planner`` is a value the shell mutates through
:func:`start` and :func:`finish` and asks :func:`next_transfers`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

FRONT_END = ""  # the source name of the front-end in a Transfer


class Outcome(StrEnum):
    OK = "ok"
    CHILD_FAILED = "child_failed"
    SOURCE_BAD = "source_bad"
    UNREACHABLE = "unreachable"
    SOURCE_DOWN = "source_down"


@dataclass(frozen=True, slots=True)
class Transfer:
    """One hop: ``source`` (a host name, or :data:`FRONT_END`) sends the image to ``child``."""

    source: str
    child: str


@dataclass(slots=True)
class Planner:
    """The distribution's state. ``pending`` keeps the caller's order (the tree fills in it)."""

    pending: list[str]
    holders: list[str] = field(default_factory=list)
    fanout: int = 2
    max_attempts: int = 3
    inflight: dict[str, str] = field(default_factory=dict)  # child -> source
    attempts: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # host -> why it was given up
    parent: dict[str, str] = field(default_factory=dict)  # host -> who sent its verified copy
    front_end_sends: int = 0

    def __post_init__(self) -> None:
        if self.fanout < 1:
            raise ValueError(f"fanout must be at least 1, not {self.fanout}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        seen: set[str] = set()
        for name in [*self.holders, *self.pending]:
            if not name or name in seen:
                raise ValueError(f"host {name!r} is named twice or empty")
            seen.add(name)

    @property
    def done(self) -> bool:
        return not self.pending and not self.inflight


def load(plan: Planner, source: str) -> int:
    return sum(1 for s in plan.inflight.values() if s == source)


def next_transfers(plan: Planner) -> list[Transfer]:
    """The hops to start now (already recorded as in flight): each free sender slot, least-busy
    holder first and in holder order, takes the next pending host."""
    out: list[Transfer] = []
    while plan.pending:
        slots = [(load(plan, h), i, h) for i, h in enumerate(plan.holders)
                 if load(plan, h) < plan.fanout]
        if slots:
            source = min(slots)[2]
        elif not plan.holders and not plan.inflight:
            source = FRONT_END  # nobody holds it and nobody is about to: the front-end sends it
        else:
            break
        out.append(start(plan, Transfer(source, plan.pending[0])))
    return out


def start(plan: Planner, transfer: Transfer) -> Transfer:
    plan.pending.remove(transfer.child)
    plan.inflight[transfer.child] = transfer.source
    plan.attempts[transfer.child] = plan.attempts.get(transfer.child, 0) + 1
    if transfer.source == FRONT_END:
        plan.front_end_sends += 1
    return transfer


def finish(plan: Planner, transfer: Transfer, outcome: Outcome, why: str = "") -> None:
    """Record how a hop ended and re-plan: see the module docstring for each outcome."""
    child, source = transfer.child, transfer.source
    if plan.inflight.get(child) != source:
        raise ValueError(f"{source or 'front-end'} -> {child} is not in flight")
    del plan.inflight[child]
    if outcome is Outcome.OK:
        plan.holders.append(child)
        plan.parent[child] = source
        return
    if outcome is Outcome.UNREACHABLE:
        plan.failed[child] = why or "unreachable"
        return
    if outcome in (Outcome.SOURCE_BAD, Outcome.SOURCE_DOWN):
        plan.attempts[child] -= 1  # not the child's fault
        if source in plan.holders:
            plan.holders.remove(source)
            plan.parent.pop(source, None)
            if outcome is Outcome.SOURCE_BAD:
                plan.pending.append(source)  # its copy was dropped: it needs the image again
            else:
                plan.failed[source] = why or "unreachable while serving"
    elif plan.attempts[child] >= plan.max_attempts:
        plan.failed[child] = why or "failed"
        return
    plan.pending.insert(0, child)


def tree_depth(plan: Planner) -> int:
    """Hops from the front-end (or a host that already held the image) to the deepest holder."""
    def depth(h: str) -> int:
        n, seen = 0, set()
        while h in plan.parent and h not in seen:
            seen.add(h)
            h, n = plan.parent[h], n + 1
        return n
    return max((depth(h) for h in plan.holders), default=0)


def new_planner(targets: Iterable[str], holding: Iterable[str], fanout: int,
                max_attempts: int = 3) -> Planner:
    """A plan to bring every host in ``targets`` to hold the image; those in ``holding`` already do."""
    have = list(dict.fromkeys(holding))
    want = [h for h in dict.fromkeys(targets) if h not in have]
    return Planner(pending=want, holders=have, fanout=fanout, max_attempts=max_attempts)
