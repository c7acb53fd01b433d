"""Pre-staging a pool's image before its boots (issue 18), as one pure decision.

When a VO pool is about to create workers, the controller asks :func:`decide` what to do with
the requests it holds (``waiting``), given the hosts that could take a worker of this pool (in
the site's order, each with how many such workers it fits) and what the controller knows of the
image on them (hosts that hold it, the distribution it started last, if any):

* mode ``off``: create every worker now (each boot then stages the image itself: the front-end
  pushes it to every host a worker lands on that lacks it);
* some candidate lacks the image and no distribution to it is running or was tried: **start
  one** distribution of the image to the candidates (at most ``max_hosts``; hosts that hold it
  serve the others, so the front-end sends it about once);
* while it runs, mode ``start`` creates every worker now, mode ``wait`` creates only as many as
  fit on hosts that already hold the image (pinned to those hosts) and holds the rest back,
  until the distribution ends or ``wait_s`` has passed since it started (then all go: a slow
  tree must not keep a pool from growing; the boot pushes what is still missing).

Hosts a distribution gave up on (unreachable, checksum failures) count as tried: they are not
distributed to again by the same distribution round, so a broken host never holds boots back.
Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum


class Mode(StrEnum):
    OFF = "off"
    START = "start"  # distribute, but do not hold boots back
    WAIT = "wait"  # distribute, and hold boots back (except onto holders) until it is over


DEFAULT_MODE = Mode.WAIT
DEFAULT_WAIT_S = 300.0
DEFAULT_MAX_HOSTS = 64


@dataclass(frozen=True, slots=True)
class Candidate:
    """A host that could take this pool's workers now: ``slots`` of them fit."""

    name: str
    slots: int


@dataclass(frozen=True, slots=True)
class Staging:
    """The last distribution started for this image: its hosts, who holds the image now
    (verified or held before), who it gave up on, when it started, and whether it is over."""

    hosts: tuple[str, ...]
    holders: frozenset[str] = frozenset()
    failed: frozenset[str] = frozenset()
    started_at: float = 0.0
    done: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    """``start``: hosts to distribute to now (empty: none); ``bind``: requests to create now;
    ``pin``: when not empty, the requests created now must go to these hosts only; ``note``:
    why boots wait (for the pool's events), empty when none does."""

    bind: int
    start: tuple[str, ...] = ()
    pin: tuple[str, ...] = ()
    note: str = ""
    waiting: int = field(default=0)


def decide(mode: Mode, image: str, waiting: int, candidates: Sequence[Candidate],
           holders: frozenset[str], staging: Staging | None, now: float,
           wait_s: float = DEFAULT_WAIT_S, max_hosts: int = DEFAULT_MAX_HOSTS,
           unplaced: int = 0) -> Decision:
    """What to do with ``waiting`` worker requests of a pool booting ``image`` (module docstring).

    ``holders``: hosts known to hold the image outside ``staging`` (earlier distributions);
    ``unplaced``: this pool's workers already created but not yet on a host (they will take
    holders' slots first, so they are subtracted from what may be pinned to holders now).
    """
    if waiting <= 0:
        return Decision(bind=0)
    if mode is Mode.OFF:
        return Decision(bind=waiting)
    cands = [c for c in candidates if c.slots > 0][:max(max_hosts, 0)]
    have = set(holders) | (set(staging.holders) if staging else set())
    tried = set(staging.hosts) if staging else set()
    running = staging is not None and not staging.done
    lacking = [c.name for c in cands if c.name not in have and c.name not in tried]
    start: tuple[str, ...] = ()
    if lacking and not running:
        start = tuple(c.name for c in cands)  # holders among them serve the others
        staging = Staging(hosts=start, holders=frozenset(have & set(start)), started_at=now)
        running = True
    if not running or mode is Mode.START:
        return Decision(bind=waiting, start=start)
    assert staging is not None
    if now - staging.started_at >= wait_s:
        return Decision(bind=waiting, start=start,
                        note=f"pre-staging image {image} takes longer than {wait_s:.0f} s: "
                             f"booting {waiting} without waiting")
    on_holders = [c for c in cands if c.name in have]
    room = max(sum(c.slots for c in on_holders) - max(unplaced, 0), 0)
    bind = min(waiting, room)
    got = len(set(staging.hosts) & have)
    note = (f"pre-staging image {image} to {len(staging.hosts)} hosts: {got}/{len(staging.hosts)}"
            f"; {waiting - bind} boots wait")
    if bind:
        note += f", {bind} boot on hosts that hold it"
    return Decision(bind=bind, start=start, pin=tuple(c.name for c in on_holders) if bind else (),
                    note=note, waiting=waiting - bind)


def only_hosts(requirements: str, names: Sequence[str]) -> str:
    """SCHED_REQUIREMENTS that keep a worker on ``names`` (the hosts holding the image) on top
    of ``requirements``; unchanged when ``names`` is empty."""
    if not names:
        return requirements
    clause = " | ".join(f'NAME = "{n}"' for n in sorted(set(names)))
    return f"({requirements}) & ({clause})" if requirements.strip() else f"({clause})"
