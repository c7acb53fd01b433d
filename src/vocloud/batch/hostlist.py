"""Slurm hostlist expressions: ``node[1-3,05],gpu01`` <-> ``["node1", ..., "gpu01"]``.

Why a module of its own: Slurm hands its power-saving hooks (``ResumeProgram``,
``SuspendProgram``, ``ResumeFailProgram``) the nodes as one compressed hostlist in ``argv[1]``,
and those hooks run with a bare environment in which ``scontrol show hostnames`` may not find
the cluster's ``slurm.conf``. Expanding here keeps the hook free of any Slurm client, and the
pure functions are unit-tested against what ``scontrol show hostnames|hostlist`` print.

Rules, as Slurm applies them: commas outside brackets separate names; a bracket holds a
comma-separated list of numbers and ``lo-hi`` ranges; the width of ``lo`` (``01-10``) is the
zero padding of the whole range; several bracket groups in one name (``r[1-2]n[1-2]``) expand as
their cross product, leftmost varying slowest. :func:`compress` is the inverse for the common
case (one trailing number per name) and keeps zero padding apart (``n01`` and ``n1`` are two
different hosts).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from vocloud.errors import InvalidInput

#: More names than any real cluster has; an expression like ``n[1-999999999]`` is a mistake
#: that must not eat the front-end's memory.
MAX_HOSTS = 1_000_000

_NAME_OK = re.compile(r"^[A-Za-z0-9._\-]+$")
_TRAILING = re.compile(r"^(.*?)(\d+)$")


def expand(expr: str) -> list[str]:
    """All host names of ``expr``, in order, duplicates kept (as ``scontrol show hostnames``)."""
    out: list[str] = []
    for part in _split_top(expr.strip(), expr):
        part = part.strip()
        if not part:
            continue
        out.extend(_expand_part(part, expr))
        if len(out) > MAX_HOSTS:
            raise InvalidInput(f"hostlist {expr!r} names more than {MAX_HOSTS} hosts")
    return out


def _split_top(expr: str, whole: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in expr:
        if ch == "[":
            depth += 1
            if depth > 1:
                raise InvalidInput(f"hostlist {whole!r}: nested '['")
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise InvalidInput(f"hostlist {whole!r}: ']' without '['")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise InvalidInput(f"hostlist {whole!r}: '[' without ']'")
    parts.append("".join(cur))
    return parts


def _expand_part(part: str, whole: str) -> list[str]:
    """One comma-free name pattern: literal text and ``[...]`` groups, cross product."""
    names = [""]
    pos = 0
    while pos < len(part):
        start = part.find("[", pos)
        if start < 0:
            names = [n + _literal(part[pos:], whole) for n in names]
            break
        end = part.index("]", start)  # balanced: checked by _split_top
        prefix = _literal(part[pos:start], whole) if start > pos else ""
        values = _range_values(part[start + 1:end], whole)
        if len(names) * len(values) > MAX_HOSTS:
            raise InvalidInput(f"hostlist {whole!r} names more than {MAX_HOSTS} hosts")
        names = [n + prefix + v for n in names for v in values]
        pos = end + 1
    return names


def _literal(text: str, whole: str) -> str:
    if not _NAME_OK.match(text):
        raise InvalidInput(f"hostlist {whole!r}: {text!r} is not a host name")
    return text


def _range_values(body: str, whole: str) -> list[str]:
    values: list[str] = []
    for item in body.split(","):
        item = item.strip()
        lo, dash, hi = item.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise InvalidInput(f"hostlist {whole!r}: [{body}] holds {item!r}, not a number or lo-hi")
        if not dash:
            values.append(lo)
            continue
        a, b = int(lo), int(hi)
        if b < a:
            raise InvalidInput(f"hostlist {whole!r}: range {item} runs backwards")
        if b - a + 1 > MAX_HOSTS:
            raise InvalidInput(f"hostlist {whole!r} names more than {MAX_HOSTS} hosts")
        width = len(lo)
        values.extend(str(i).zfill(width) for i in range(a, b + 1))
    return values


def compress(names: Iterable[str]) -> str:
    """The shortest usual hostlist for ``names`` (sorted, duplicates dropped), as
    ``scontrol show hostlist`` prints it: ``n[1-3,5],gpu01``.

    Names are grouped by their text before a trailing number and by that number's padding;
    groups appear in the order their first name did, so the output stays stable for logs.
    """
    parsed: list[tuple[str, str | None]] = []
    widths: dict[str, set[int]] = {}
    for name in names:
        name = name.strip()
        if not name:
            continue
        m = _TRAILING.match(name)
        if m is None:
            parsed.append((name, None))
            continue
        prefix, digits = m.group(1), m.group(2)
        parsed.append((prefix, digits))
        if digits.startswith("0") and len(digits) > 1:
            widths.setdefault(prefix, set()).add(len(digits))
    order: list[tuple[str, int]] = []
    groups: dict[tuple[str, int], set[int]] = {}
    for prefix, digits in parsed:
        if digits is None:
            key = (prefix, -1)
        elif len(digits) in widths.get(prefix, ()):
            # padded, or as wide as a padded group of the same prefix (n01..n10): one group
            key = (prefix, len(digits))
        else:
            key = (prefix, 0)
        if key not in groups:
            groups[key] = set()
            order.append(key)
        if digits is not None:
            groups[key].add(int(digits))
    out: list[str] = []
    for key in order:
        if key[1] == -1:
            out.append(key[0])
            continue
        prefix, width = key
        nums = sorted(groups[key])
        if len(nums) == 1:
            out.append(prefix + str(nums[0]).zfill(width))
            continue
        out.append(f"{prefix}[{','.join(_runs(nums, width))}]")
    return ",".join(out)


def _runs(nums: list[int], width: int) -> list[str]:
    runs: list[str] = []
    start = prev = nums[0]
    for n in [*nums[1:], None]:
        if n is not None and n == prev + 1:
            prev = n
            continue
        a, b = str(start).zfill(width), str(prev).zfill(width)
        runs.append(a if start == prev else f"{a}-{b}")
        if n is not None:
            start = prev = n
    return runs
