"""When to probe a hypervisor host again: exponential backoff for hosts that keep failing.

Why: a host that cannot be reached (its SSH host key does not verify, it is powered off, its
address is wrong) used to be probed on every monitor pass — every second, forever — filling the
log and holding the monitor loop in SSH timeouts. A failing host is now probed after
``interval * 2^failures`` seconds, capped (``host_backoff_max``); one success resets it. The
count and the time of the next probe live on the host row, so a restarted daemon keeps the pace.

Pure functions of the host's recorded state and a time: no clock, no I/O.
"""

from __future__ import annotations

#: Above this many failures the delay is the cap anyway; it bounds ``2 ** failures``.
_MAX_EXPONENT = 62


def monitor_delay(failures: int, interval: float, cap: float) -> float:
    """Seconds from a probe to the next one after ``failures`` failed probes in a row.

    No failure: the monitor interval. Then ``interval * 2^failures``, never above
    ``max(cap, interval)`` (a cap below the interval would probe a failing host more often
    than a healthy one).
    """
    interval = max(interval, 0.0)
    if failures <= 0:
        return interval
    ceiling = max(cap, interval)
    return min(interval * 2.0 ** min(failures, _MAX_EXPONENT), ceiling)


def probe_due(now: float, *, initializing: bool, monitored_at: float | None, failures: int,
              next_at: float | None, interval: float) -> bool:
    """Whether the monitor should probe a host at ``now``.

    A failing host waits for its ``next_at``; ``next_at`` unset (an administrator enabled or
    updated the host, or the store predates backoff) means "probe now". Otherwise a host is
    probed while it initializes, when it was never measured, or once its measurement is older
    than the interval.
    """
    if failures > 0:
        return next_at is None or now >= next_at
    return initializing or monitored_at is None or now - monitored_at >= interval
