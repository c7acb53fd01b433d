"""Faults told once: the first occurrence of a fault is one log line, its repeats are counted and
summarised every few minutes, and its end is one more line (docs/faults.md).

Why: the loops retry a failing step or probe every pass (twice a second for the lifecycle), so a
fault logged on every attempt buries the one line an operator needs ("host node1 is ERROR:
connection refused") under hundreds of copies of it (issue 19: 119 identical warnings a minute
for one pending terminate). A fault is keyed by what it is about (``host:3``, ``vm:12:step``);
while it is open its repeats only bump a counter, and :meth:`FaultLog.summary` reports the
counts once per ``every`` seconds of the loop's clock.

This module keeps no state that matters for correctness: a restarted daemon starts with no open
faults and simply tells each still-present fault once more.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass

from vocloud.store.schema import Host

#: How often the repeats of open faults are summarised (seconds of the loop's clock).
SUMMARY_EVERY = 300.0
#: At most this many faults are named in one summary; the rest are counted.
SUMMARY_NAMES = 10


@dataclass
class Fault:
    """One open fault: when it was first told, what it said last, and its repeats."""

    since: float
    message: str
    level: int
    repeats: int = 0  # since the last summary
    total: int = 1  # occurrences since it opened


class FaultLog:
    """Open faults by key; thread-safe enough for the daemon (each loop thread uses its own
    keys, and a dict operation is atomic under the GIL)."""

    def __init__(self, logger: logging.Logger, clock: Callable[[], float],
                 every: float = SUMMARY_EVERY) -> None:
        self.log = logger
        self.clock = clock
        self.every = every
        self.open: dict[str, Fault] = {}
        self._last_summary: float | None = None

    def tell(self, key: str, level: int, message: str) -> bool:
        """Log ``message`` if the fault ``key`` is not open yet (and open it); else count it.
        Returns whether it was logged."""
        fault = self.open.get(key)
        if fault is not None:
            fault.repeats += 1
            fault.total += 1
            fault.message = message
            return False
        self.open[key] = Fault(self.clock(), message, level)
        self.log.log(level, "%s", message)
        return True

    def is_open(self, key: str) -> bool:
        return key in self.open

    def close(self, key: str) -> Fault | None:
        """The fault ``key`` is over; returns it (None if it was not open). The caller tells how
        it ended, with what the returned fault says (since when, how many times)."""
        return self.open.pop(key, None)

    def close_where(self, keep: Callable[[str], bool]) -> list[str]:
        """Close every open fault whose key ``keep`` rejects; returns the closed keys."""
        gone = [k for k in self.open if not keep(k)]
        for k in gone:
            del self.open[k]
        return gone

    def summary(self, force: bool = False) -> int:
        """Once per ``every`` seconds: one line naming the open faults (WARNING and above) that
        repeated, with their counts and last messages. Notices (INFO: a step waiting for its
        host) are told once and not summarised: the host's own fault already is. Returns how
        many faults it named (0: nothing logged)."""
        now = self.clock()
        if self._last_summary is None:
            self._last_summary = now
        if not force and now - self._last_summary < self.every:
            return 0
        window = now - self._last_summary
        self._last_summary = now
        busy = sorted(((k, f) for k, f in self.open.items()
                       if f.repeats and f.level >= logging.WARNING), key=lambda kf: kf[0])
        if not busy:
            return 0
        parts = [f"{k} x{f.repeats} (open {now - f.since:.0f} s): {f.message}"
                 for k, f in busy[:SUMMARY_NAMES]]
        more = len(busy) - SUMMARY_NAMES
        tail = f"; and {more} more" if more > 0 else ""
        level = max(f.level for _, f in busy)
        self.log.log(level, "still failing, repeats in the last %.0f s: %s%s", window,
                     "; ".join(parts), tail)
        for _, f in busy:
            f.repeats = 0
        return len(busy)


def waiting_host(host: Host | None, target: Host | None,
                 unreachable: Mapping[int, str]) -> tuple[str, str] | None:
    """``(name, reason)`` of the host an owed step must wait for, or None to try it now.

    A host whose last probe failed (``monitor_failures``, kept in the store, so a restarted
    daemon waits too) or that did not answer earlier in this pass is not tried: the step is
    owed, not failed, and the monitor's backoff decides when the host is asked again. Its
    return (``Reconciler._host_back``) restarts the step's clock, so a boot or shutdown gets its
    full window once the host is back.
    """
    for h in (host, target):
        if h is None:
            continue
        if h.id in unreachable:
            return h.name, unreachable[h.id]
        if h.monitor_failures:
            return h.name, h.error or "its probes fail"
    return None


def vm_keys_alive(stepping: Set[int], waited: Set[int]) -> Callable[[str], bool]:
    """Which ``vm:`` faults stay open after a lifecycle pass: a step's error while the VM still
    owes a step, a wait while it still waits. Others (``host:``) are the monitor's."""

    def keep(key: str) -> bool:
        parts = key.split(":")
        if parts[0] != "vm" or len(parts) != 3:
            return True
        vm_id = int(parts[1])
        return vm_id in waited if parts[2] == "wait" else vm_id in stepping

    return keep
