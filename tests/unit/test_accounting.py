"""Accounting arithmetic (core/accounting.py) against an independent reference: the charged
intervals a VM history is generated from. Restarts, stays in UNKNOWN, repeated events at one
instant and open stretches must neither double-count nor lose time."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vocloud.core.accounting import (
    CHARGED,
    CloudRecord,
    Prices,
    Stretch,
    Usage,
    aggregate,
    apel_message,
    calendar_slices,
    overlap,
    stretches_from_events,
    total,
)

DAY = 86400.0
T0 = 1_764_547_200.0  # 2025-12-01T00:00:00Z


@dataclass
class History:
    """A VM's events and, independently, the intervals during which it held a host."""

    vm_id: int
    events: list[tuple[int, float, int, str]]
    charged: list[tuple[float, float | None]]  # None: still charged (open)
    group_id: int
    cpu_m: int
    memory: int


@st.composite
def histories(draw: st.DrawFn, vm_id: int) -> History:
    """PENDING, then lives: [PROLOG, BOOT, RUNNING, (UNKNOWN, RUNNING)*, ...] separated by
    uncharged gaps (STOPPED -> PENDING), ending DONE or still running."""
    t = T0 + draw(st.floats(0, 3 * DAY))
    eid = vm_id * 1000
    events = [(vm_id, t, eid, "PENDING")]
    charged: list[tuple[float, float | None]] = []
    lives = draw(st.integers(1, 3))
    for life in range(lives):
        t += draw(st.floats(0, DAY))  # pending (or stopped) for a while
        start = t
        steps = draw(st.lists(st.sampled_from(["PROLOG", "BOOT", "RUNNING", "UNKNOWN", "RUNNING",
                                               "POWEROFF", "SUSPENDED", "BOOT_FAILURE"]),
                              min_size=1, max_size=6))
        for state in ["PROLOG", *steps]:
            eid += 1
            events.append((vm_id, t, eid, state))
            if draw(st.booleans()):  # a second event at the very same instant (e.g. a retry)
                eid += 1
                events.append((vm_id, t, eid, state))
            t += draw(st.floats(0, DAY / 2))
        last = life == lives - 1
        if last and draw(st.booleans()):
            charged.append((start, None))  # still on its host
            break
        end_state = "DONE" if last else "STOPPED"
        eid += 1
        events.append((vm_id, t, eid, end_state))
        charged.append((start, t))
        if not last:
            eid += 1
            t += draw(st.floats(0, DAY))
            events.append((vm_id, t, eid, "PENDING"))
    draw(st.randoms()).shuffle(events)  # the store returns them in any order
    return History(vm_id, events, charged, group_id=draw(st.integers(1, 3)),
                   cpu_m=draw(st.sampled_from([500, 1000, 2000, 3300])),
                   memory=draw(st.sampled_from([256, 1024, 3000])))


def to_stretches(h: History) -> list[Stretch]:
    return [Stretch(vm_id, state, start, end, user_id=h.vm_id % 2, group_id=h.group_id, host_id=None,
                    pool_id=None, cpu_m=h.cpu_m, memory_mib=h.memory)
            for vm_id, state, start, end in stretches_from_events(h.events)]


def reference_seconds(h: History, lo: float, hi: float, now: float) -> float:
    return sum(overlap(a, now if b is None else b, lo, min(hi, now)) for a, b in h.charged)


site = st.integers(1, 6).flatmap(lambda n: st.tuples(*[histories(i + 1) for i in range(n)]))
periods = st.tuples(st.floats(T0 - DAY, T0 + 12 * DAY), st.floats(0, 12 * DAY))


@settings(max_examples=300, deadline=None)
@given(site, periods, st.floats(T0, T0 + 14 * DAY))
def test_sums_equal_the_charged_lifetimes_clipped_to_the_period(
        vms: tuple[History, ...], period: tuple[float, float], now: float) -> None:
    lo, length = period
    hi = lo + length
    stretches = [s for h in vms for s in to_stretches(h)]
    per_vm = aggregate(stretches, lo, hi, now, "vm")
    for h in vms:
        want = reference_seconds(h, lo, hi, now)
        got = per_vm[h.vm_id].seconds if h.vm_id in per_vm else 0.0
        assert got == pytest.approx(want, abs=1e-6)
        if h.vm_id in per_vm:
            u = per_vm[h.vm_id]
            assert u.core_m_seconds == pytest.approx(want * h.cpu_m, abs=1e-3)
            assert u.mib_seconds == pytest.approx(want * h.memory, abs=1e-3)
    grand = sum(reference_seconds(h, lo, hi, now) for h in vms)
    for by in ("vo", "user", "host", "pool", "day", "month"):
        assert total(aggregate(stretches, lo, hi, now, by).values()).seconds == pytest.approx(grand, abs=1e-5)


@settings(max_examples=200, deadline=None)
@given(site, periods, st.floats(0, 1), st.floats(T0, T0 + 14 * DAY))
def test_adjacent_periods_add_up(vms: tuple[History, ...], period: tuple[float, float], cut: float,
                                 now: float) -> None:
    lo, length = period
    hi, mid = lo + length, lo + cut * length
    stretches = [s for h in vms for s in to_stretches(h)]
    whole = total(aggregate(stretches, lo, hi, now, "vo").values())
    left = total(aggregate(stretches, lo, mid, now, "vo").values())
    right = total(aggregate(stretches, mid, hi, now, "vo").values())
    assert left.seconds + right.seconds == pytest.approx(whole.seconds, abs=1e-6)
    assert left.core_m_seconds + right.core_m_seconds == pytest.approx(whole.core_m_seconds, abs=1e-3)


def test_a_restart_and_unknown_count_once() -> None:
    h = 3600.0
    events = [(1, 0.0, 1, "PENDING"), (1, 0.0, 2, "PROLOG"), (1, 0.0, 3, "BOOT"), (1, 0.0, 4, "RUNNING"),
              (1, h, 5, "UNKNOWN"), (1, 2 * h, 6, "RUNNING"), (1, 3 * h, 7, "SAVE_STOP"),
              (1, 3 * h, 8, "EPILOG_STOP"), (1, 3 * h, 9, "STOPPED"), (1, 5 * h, 10, "PENDING"),
              (1, 5 * h, 11, "PROLOG"), (1, 5 * h, 12, "RUNNING"), (1, 6 * h, 13, "EPILOG"),
              (1, 6 * h, 14, "DONE")]
    rows = [Stretch(v, s, a, b, 1, 1, 1, None, 2000, 2048) for v, s, a, b in stretches_from_events(events)]
    u = aggregate(rows, 0.0, 100 * h, 100 * h, "vm")[1]
    assert u.vm_hours == pytest.approx(4.0)  # 3 h (1 of them UNKNOWN) + 1 h after the restart
    assert u.cpu_hours == pytest.approx(8.0)
    assert u.gib_hours == pytest.approx(8.0)
    assert Prices(cpu_hour=0.5, gib_hour=0.25).cost(u) == pytest.approx(6.0)


def test_open_stretch_ends_now_and_the_future_is_empty() -> None:
    rows = [Stretch(1, "RUNNING", 100.0, None, 1, 1, None, None, 1000, 1024)]
    assert aggregate(rows, 0, 1000, now=400, by="vm")[1].seconds == 300
    assert aggregate(rows, 500, 1000, now=400, by="vm") == {}
    assert aggregate([Stretch(1, "STOPPED", 0, None, 1, 1, None, None, 1000, 1024)], 0, 9, 9, "vm") == {}
    assert "UNKNOWN" in CHARGED and "PENDING" not in CHARGED and "DONE" not in CHARGED
    with pytest.raises(ValueError):
        aggregate(rows, 0, 1, 1, "planet")


def test_calendar_slices_cut_at_utc_days_and_months() -> None:
    start = T0 - 3600  # 2025-11-30T23:00Z
    assert [(k, b - a) for k, a, b in calendar_slices(start, start + 2 * 3600, "day")] == [
        ("2025-11-30", 3600), ("2025-12-01", 3600)]
    months = list(calendar_slices(T0 - DAY, T0 + 40 * DAY, "month"))
    assert [k for k, _, _ in months] == ["2025-11", "2025-12", "2026-01"]
    assert sum(b - a for _, a, b in months) == 41 * DAY


def test_apel_message_has_the_header_and_one_block_per_record() -> None:
    r = CloudRecord(vmuuid="vocloud-abc-7", site_name="SITE", machine_name="w\n%%", local_user="alice",
                    local_group="atlas", fqan="/atlas", status="completed", start_time=10,
                    end_time=3610, wall_duration=3600, cpu_duration=7200, cpu_count=2, memory_mb=2048,
                    cloud_type="vocloud")
    text = apel_message([r, r])
    lines = text.splitlines()
    assert lines[0] == "APEL-cloud-message: v0.4"
    assert lines.count("%%") == 2
    assert "MachineName: w %%" in lines  # a value never breaks the record structure
    assert "WallDuration: 3600" in lines and "CpuCount: 2" in lines and "EndTime: 3610" in lines
    assert all(": " in line for line in lines if line != "%%")
    assert Usage().vm_hours == 0



@pytest.mark.parametrize("by", ["day", "month"])
def test_a_period_just_before_midnight_is_charged(by: str) -> None:
    """datetime rounds a timestamp 0.3 µs before midnight onto midnight: a period of a few
    tenths of a microsecond there had no calendar slice at all (IndexError, found by hypothesis)."""
    midnight = 1_700_006_400.0  # 2023-11-15T00:00:00Z
    lo, hi = midnight - 4e-7, midnight - 1e-7
    s = Stretch(1, "RUNNING", lo - 60, None, user_id=0, group_id=1, host_id=None, pool_id=None,
                cpu_m=1000, memory_mib=512)
    got = aggregate([s], lo, hi, midnight + 7200, by)
    assert list(got) == (["2023-11-14"] if by == "day" else ["2023-11"])
    assert total(got.values()).seconds == pytest.approx(hi - lo, abs=1e-9)
