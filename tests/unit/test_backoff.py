"""The host monitoring backoff decision (model/backoff.py)."""

from __future__ import annotations

import math

import pytest

from vocloud.model.backoff import monitor_delay, probe_due


def test_delay_doubles_from_the_interval_and_stops_at_the_cap() -> None:
    assert [monitor_delay(n, 5, 300) for n in range(8)] == [5, 10, 20, 40, 80, 160, 300, 300]


def test_delay_for_huge_failure_counts_is_the_cap() -> None:
    assert monitor_delay(10**9, 5, 300) == 300
    assert monitor_delay(63, 0.5, 1e6) == 1e6


@pytest.mark.parametrize("failures", [0, -3])
def test_no_failure_means_the_interval(failures: int) -> None:
    assert monitor_delay(failures, 5, 300) == 5


def test_a_cap_below_the_interval_never_probes_a_failing_host_faster_than_a_healthy_one() -> None:
    assert monitor_delay(1, 60, 10) == 60
    assert monitor_delay(5, 60, 10) == 60


def test_zero_interval_stays_zero_and_never_negative() -> None:
    assert monitor_delay(4, 0, 300) == 0
    assert monitor_delay(4, -1, 300) == 0
    assert not math.isnan(monitor_delay(3, 1, 300))


def test_a_failing_host_waits_for_its_next_attempt() -> None:
    kw = {"initializing": False, "monitored_at": 0.0, "interval": 5.0, "failures": 3}
    assert not probe_due(100.0, next_at=140.0, **kw)  # type: ignore[arg-type]
    assert probe_due(140.0, next_at=140.0, **kw)  # type: ignore[arg-type]
    # next attempt cleared (an administrator enabled or updated the host): probe now
    assert probe_due(100.0, next_at=None, **kw)  # type: ignore[arg-type]


def test_a_healthy_host_follows_the_interval() -> None:
    assert not probe_due(103.0, initializing=False, monitored_at=100.0, failures=0, next_at=None,
                         interval=5.0)
    assert probe_due(105.0, initializing=False, monitored_at=100.0, failures=0, next_at=None,
                     interval=5.0)
    assert probe_due(101.0, initializing=True, monitored_at=100.0, failures=0, next_at=None,
                     interval=5.0)
    assert probe_due(0.0, initializing=False, monitored_at=None, failures=0, next_at=None,
                     interval=5.0)
