"""Accounting arithmetic: VM history stretches -> usage over a period, grouped by a key.

Pure (no store, no clock): the store query (``service/accounting.py``) hands over one
:class:`Stretch` per state a VM was in, i.e. the VM's event history cut at each state change
(``start`` = the event's time, ``end`` = the next event's time, ``None`` while the VM is still in
it). Because the stretches of one VM are consecutive cuts of one timeline, every instant of a
VM's life is in exactly one stretch: a restart (STOPPED -> PENDING -> ... -> RUNNING) or a stay in
UNKNOWN adds stretches, never overlapping time, so nothing is counted twice and nothing is lost.

What is charged: the time a VM holds capacity on a host (:data:`CHARGED`, the lifecycle's
``HOLDS_HOST``: from PROLOG until its files are cleaned up, including POWEROFF, SUSPENDED and
UNKNOWN — the site keeps the cores and memory for it all that time). PENDING, HOLD, STOPPED,
UNDEPLOYED and DONE are not charged.

Units: hours, cores (milli-cores / 1000), GiB (MiB / 1024). ``cpu_hours`` are the allocated
cores times the charged hours (what the site set aside, as OpenNebula's showback counts it).
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from vocloud.model.lifecycle import HOLDS_HOST

#: The states whose time is charged: the VM holds its host's cores and memory.
CHARGED: frozenset[str] = frozenset(s.value for s in HOLDS_HOST)

#: What usage can be grouped by; ``vm`` gives one row per VM.
GROUPINGS: tuple[str, ...] = ("vo", "user", "host", "pool", "vm", "day", "month")

HOUR = 3600.0


class Stretch(NamedTuple):
    """One VM in one state from ``start`` to ``end`` (``None``: still in it). A tuple, so that
    the store's rows are used as they come (no object per row on 200,000 events)."""

    vm_id: int
    state: str
    start: float
    end: float | None
    user_id: int
    group_id: int
    host_id: int | None
    pool_id: int | None
    cpu_m: int
    memory_mib: int


@dataclass(slots=True)
class Usage:
    """Sums for one key: seconds, core-seconds and MiB-seconds (exact integers where the
    inputs are), converted to hours on the way out."""

    seconds: float = 0.0
    core_m_seconds: float = 0.0
    mib_seconds: float = 0.0
    vms: set[int] = field(default_factory=set)

    def add(self, vm_id: int, seconds: float, cpu_m: int, memory_mib: int) -> None:
        self.seconds += seconds
        self.core_m_seconds += seconds * cpu_m
        self.mib_seconds += seconds * memory_mib
        self.vms.add(vm_id)

    @property
    def vm_hours(self) -> float:
        return self.seconds / HOUR

    @property
    def cpu_hours(self) -> float:
        return self.core_m_seconds / 1000.0 / HOUR

    @property
    def gib_hours(self) -> float:
        return self.mib_seconds / 1024.0 / HOUR


@dataclass(frozen=True, slots=True)
class Prices:
    """Showback: what a core-hour and a GiB-hour of memory cost (the administrator's settings)."""

    cpu_hour: float = 0.0
    gib_hour: float = 0.0

    def cost(self, usage: Usage) -> float:
        return usage.cpu_hours * self.cpu_hour + usage.gib_hours * self.gib_hour


def overlap(start: float, end: float, lo: float, hi: float) -> float:
    """Length of [start, end) inside [lo, hi); 0 when they do not meet."""
    return max(0.0, min(end, hi) - max(start, lo))


Event = tuple[int, float, int, str]


def stretches_from_events(events: Iterable[Event]) -> Iterator[tuple[int, str, float, float | None]]:
    """``(vm_id, time, event_id, to_state)`` -> ``(vm_id, state, start, end)``: each event's
    state lasts until the VM's next event (ordered by time, then id: ties keep insertion order).

    The reference for what the store query computes with ``LEAD() OVER (PARTITION BY vm ORDER
    BY time, id)``; the property tests compare the two."""
    ordered = sorted(events, key=lambda e: (e[0], e[1], e[2]))
    for i, (vm_id, at, _eid, state) in enumerate(ordered):
        nxt = ordered[i + 1] if i + 1 < len(ordered) else None
        end = nxt[1] if nxt is not None and nxt[0] == vm_id else None
        yield vm_id, state, at, end


def _day(ts: float) -> datetime:
    """The UTC day holding ``ts``, from whole seconds: ``fromtimestamp`` rounds to the
    microsecond, and a ``ts`` just before midnight would land in the next day (no slice would
    then hold the start of a period: IndexError in ``aggregate``)."""
    whole = math.floor(ts)
    return datetime.fromtimestamp(whole - whole % 86400, UTC)


def _next_day(d: datetime) -> datetime:
    return datetime.fromtimestamp(d.timestamp() + 86400, UTC)


def _month(ts: float) -> datetime:
    return _day(ts).replace(day=1)


def _next_month(d: datetime) -> datetime:
    return d.replace(year=d.year + 1, month=1) if d.month == 12 else d.replace(month=d.month + 1)


def calendar_slices(start: float, end: float, by: str) -> Iterator[tuple[str, float, float]]:
    """[start, end) cut at UTC day or month boundaries: ``(label, slice_start, slice_end)``."""
    first, step, fmt = ((_day, _next_day, "%Y-%m-%d") if by == "day"
                        else (_month, _next_month, "%Y-%m"))
    cur = first(start)
    while cur.timestamp() < end:
        nxt = step(cur)
        lo, hi = max(start, cur.timestamp()), min(end, nxt.timestamp())
        if hi > lo:
            yield cur.strftime(fmt), lo, hi
        cur = nxt


def calendar_cuts(lo: float, hi: float, by: str) -> tuple[list[float], list[str]]:
    """The UTC day or month boundaries inside [lo, hi) and the label of each slice: slice k is
    [cuts[k], cuts[k+1]) (the first starts at the boundary at or before ``lo``)."""
    cuts: list[float] = []
    labels: list[str] = []
    for label, a, _b in calendar_slices(lo, hi, by):
        cuts.append(a)
        labels.append(label)
    return cuts, labels


#: Which field of a :class:`Stretch` each grouping keys on.
KEY_FIELD: dict[str, int] = {"vm": 0, "user": 4, "vo": 5, "host": 6, "pool": 7}


def aggregate(stretches: Iterable[Stretch], lo: float, hi: float, now: float, by: str = "vo",
              charged: frozenset[str] = CHARGED) -> dict[str | int | None, Usage]:
    """Usage in [lo, hi) per key of ``by`` (:data:`GROUPINGS`). A stretch still open ends at
    ``now``; time after ``now`` is never charged (a period in the future is empty)."""
    if by not in GROUPINGS:
        raise ValueError(f"by must be one of {', '.join(GROUPINGS)}, got {by!r}")
    hi = min(hi, now)
    out: dict[str | int | None, Usage] = {}
    if hi <= lo:
        return out
    calendar = by in ("day", "month")
    cuts, labels = calendar_cuts(lo, hi, by) if calendar else ([], [])
    field_ = KEY_FIELD.get(by, 0)
    for s in stretches:
        vm_id, state, s_start, s_end = s[0], s[1], s[2], s[3]
        if state not in charged:
            continue
        start = s_start if s_start > lo else lo
        stop = hi if s_end is None or s_end > hi else s_end
        if stop <= start:
            continue
        cpu_m, memory = s[8], s[9]
        if not calendar:
            key: str | int | None = s[field_]  # type: ignore[assignment]  # an id field (KEY_FIELD)
            usage = out.get(key)
            if usage is None:
                usage = out[key] = Usage()
            usage.add(vm_id, stop - start, cpu_m, memory)
            continue
        k = bisect_right(cuts, start) - 1
        while k < len(cuts) and cuts[k] < stop:
            a = cuts[k] if cuts[k] > start else start
            b = cuts[k + 1] if k + 1 < len(cuts) and cuts[k + 1] < stop else stop
            if b > a:
                usage = out.get(labels[k])
                if usage is None:
                    usage = out[labels[k]] = Usage()
                usage.add(vm_id, b - a, cpu_m, memory)
            k += 1
    return out


def total(usages: Iterable[Usage]) -> Usage:
    """The sum of several keys' usage (the VM count counts each VM once)."""
    out = Usage()
    for u in usages:
        out.seconds += u.seconds
        out.core_m_seconds += u.core_m_seconds
        out.mib_seconds += u.mib_seconds
        out.vms |= u.vms
    return out


# ------------------------------------------------------------------------------ APEL
#: The header of an APEL cloud usage message (EGI's Cloud Usage Record, version 0.4).
APEL_HEADER = "APEL-cloud-message: v0.4"


@dataclass(frozen=True, slots=True)
class CloudRecord:
    """One VM's APEL cloud usage record (EGI Cloud Accounting Usage Record v0.4). Times are
    UNIX seconds, durations seconds, Memory MB; ``status``: started, suspended or completed."""

    vmuuid: str
    site_name: str
    machine_name: str
    local_user: str
    local_group: str
    fqan: str
    status: str
    start_time: int
    end_time: int | None
    wall_duration: int
    cpu_duration: int
    cpu_count: int
    memory_mb: int
    cloud_type: str
    cloud_compute_service: str = ""
    image_id: str = ""


def _apel_value(value: str) -> str:
    """One line per field: a newline or a ``%%`` line in a value would break the message."""
    return " ".join(value.split())


def apel_message(records: Iterable[CloudRecord]) -> str:
    """The APEL cloud message: the header once, then ``Key: value`` lines per record, each
    record ended by ``%%``."""
    lines = [APEL_HEADER]
    for r in records:
        fields: list[tuple[str, str | int]] = [
            ("VMUUID", r.vmuuid), ("SiteName", r.site_name), ("MachineName", r.machine_name),
            ("LocalUserId", r.local_user), ("LocalGroupId", r.local_group), ("FQAN", r.fqan),
            ("Status", r.status), ("StartTime", r.start_time),
        ]
        if r.end_time is not None:
            fields.append(("EndTime", r.end_time))
        fields += [("WallDuration", r.wall_duration), ("CpuDuration", r.cpu_duration),
                   ("CpuCount", r.cpu_count), ("Memory", r.memory_mb), ("CloudType", r.cloud_type)]
        if r.cloud_compute_service:
            fields.append(("CloudComputeService", r.cloud_compute_service))
        if r.image_id:
            fields.append(("ImageId", r.image_id))
        lines += [f"{k}: {_apel_value(str(v))}" for k, v in fields]
        lines.append("%%")
    return "\n".join(lines) + "\n"
