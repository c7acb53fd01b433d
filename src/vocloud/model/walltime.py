"""Run-time lengths as batch systems write them: ``90`` (seconds), ``30:00``, ``1:30:00``,
``2-00:00:00``, or with a unit (``90s``, ``15m``, ``2h``, ``1d``).

One parser for the VM attribute ``WALLTIME`` and for ``host lease --walltime`` (docs/host-leases.md),
so a VM's known run time and a lease's length are read the same way. Pure.
"""

from __future__ import annotations

import re

from vocloud.errors import InvalidInput

#: A year: longer than any batch system's limit, short enough to keep times finite.
MAX_WALLTIME_S = 366 * 86400.0
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_CLOCK = re.compile(r"(?:(\d{1,3})-)?(\d{1,6})(?::(\d{1,2}))?(?::(\d{1,2}))?")
_UNIT = re.compile(r"(\d{1,9}(?:\.\d{1,6})?)([smhd])")


def parse_walltime(text: str, what: str = "WALLTIME") -> float:
    """Seconds in ``text``; raises :class:`InvalidInput` naming ``what`` for anything else.

    ``MM:SS`` and ``HH:MM:SS`` follow Slurm's ``--time`` (a bare number is seconds here, not
    minutes: a VM attribute reads like every other vocloud duration)."""
    raw = str(text).strip().lower()
    seconds: float | None = None
    m = _UNIT.fullmatch(raw)
    if m:
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        c = _CLOCK.fullmatch(raw)
        if c and (c.group(1) is None or c.group(3) is not None):
            days = int(c.group(1) or 0)
            parts = [int(p) for p in c.group(2, 3, 4) if p is not None]
            if len(parts) == 1:
                seconds = float(days * 86400 + parts[0])
            elif len(parts) == 2 and all(p < 60 for p in parts[1:]):
                a, b = parts
                seconds = float(days * 86400 + (a * 3600 + b * 60 if days else a * 60 + b))
            elif len(parts) == 3 and all(p < 60 for p in parts[1:]):
                h, mi, se = parts
                seconds = float(days * 86400 + h * 3600 + mi * 60 + se)
    if seconds is None:
        raise InvalidInput(f"{what} must be seconds, [D-]HH:MM:SS, MM:SS or a number with s/m/h/d, "
                           f"got {text!r}", attribute=what, value=str(text)[:80])
    if not 0 < seconds <= MAX_WALLTIME_S:
        raise InvalidInput(f"{what} must be more than 0 s and at most {MAX_WALLTIME_S:.0f} s, got "
                           f"{text!r}", attribute=what, value=str(text)[:80])
    return seconds


def slurm_time(seconds: float) -> str:
    """Slurm's ``--time`` for ``seconds``, rounded up to whole minutes (its granularity)."""
    minutes = max(1, int(-(-seconds // 60)))
    return f"{minutes // 1440}-{(minutes % 1440) // 60:02d}:{minutes % 60:02d}:00"
