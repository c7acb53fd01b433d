"""Parsing and printing of the quantities users type and read: sizes, durations, ID lists.

Why here and not in the commands: ``16G`` must mean the same thing for ``host create``,
``vm create`` and ``quota set``, and a malformed value must be refused the same way (one line,
exit 2) before anything is sent to the daemon.
"""

from __future__ import annotations

import re

from vocloud.cli.errors import CliError

_SIZE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_FACTOR_MIB = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 * 1024}
MAX_IDS = 10_000


def parse_size(text: str, what: str = "size", allow_unlimited: bool = False) -> int:
    """``512``, ``512M``, ``16G``, ``16GiB``, ``1.5T`` -> MiB (a bare number is MiB, as in
    OpenNebula's MEMORY). ``-1`` means unlimited where ``allow_unlimited`` (quotas)."""
    m = _SIZE.match(text)
    if m is None:
        raise CliError(f"bad {what} {text!r}: give MiB or a number with a suffix, e.g. 512, 512M, 16G")
    number, unit = float(m.group(1)), m.group(2).lower()
    if number < 0:
        if allow_unlimited and number == -1 and unit == "":
            return -1
        raise CliError(f"bad {what} {text!r}: must not be negative"
                       + (" (use -1 for unlimited)" if allow_unlimited else ""))
    mib = number * _FACTOR_MIB[unit]
    if mib != int(mib):
        raise CliError(f"bad {what} {text!r}: not a whole number of MiB")
    return int(mib)


def human_mib(mib: float | None) -> str:
    """MiB -> ``512M``, ``16G``, ``15.5G``, ``2T``: what ``onehost list`` shows."""
    if mib is None:
        return "-"
    if mib < 0:
        return "unlimited"
    for unit, factor in (("T", 1024 * 1024), ("G", 1024)):
        if mib >= factor:
            return f"{mib / factor:.1f}".removesuffix(".0") + unit
    return f"{mib:g}M"


def cores(value: float | None) -> str:
    if value is None:
        return "-"
    return "unlimited" if value < 0 else f"{value:g}"


def duration(seconds: float) -> str:
    """``0d 00h12`` (days, hours, minutes), the TIME column of ``onevm list``."""
    total = max(0, int(seconds)) // 60
    days, rest = divmod(total, 24 * 60)
    hours, minutes = divmod(rest, 60)
    return f"{days}d {hours:02d}h{minutes:02d}"


def parse_ids(refs: list[str], what: str = "VM") -> list[int]:
    """``3 5..7 9,10`` -> [3, 5, 6, 7, 9, 10], in order, without repeats."""
    out: list[int] = []
    seen: set[int] = set()
    for ref in refs:
        for part in filter(None, (p.strip() for p in ref.split(","))):
            lo_s, sep, hi_s = part.partition("..")
            try:
                lo = int(lo_s)
                hi = int(hi_s) if sep else lo
            except ValueError:
                raise CliError(f"bad {what} ID {part!r}: use a number or a range such as 3..7") from None
            if lo < 0 or hi < lo:
                raise CliError(f"bad {what} ID range {part!r}: needs 0 <= start <= end")
            if hi - lo + 1 + len(out) > MAX_IDS:
                raise CliError(f"too many {what} IDs (at most {MAX_IDS} at once)")
            for n in range(lo, hi + 1):
                if n not in seen:
                    seen.add(n)
                    out.append(n)
    if not out:
        raise CliError(f"no {what} ID given")
    return out


def parse_attrs(pairs: list[str] | None) -> dict[str, str]:
    """``--attr K=V`` options -> {"K": "V"}; keys are case-insensitive, so upper-cased."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CliError(f"bad attribute {pair!r}: use KEY=VALUE")
        out[key.strip().upper()] = value.strip()
    return out
