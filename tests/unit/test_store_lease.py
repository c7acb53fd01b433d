"""The store lease's pure decision: who may take a store from whom (engine/store_lease.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vocloud.config import load_settings
from vocloud.engine.store_lease import TTL_S, Holder, parse, refusal
from vocloud.errors import InvalidInput

ME = Holder("node1", "/var/lib/vocloud", 100, 1000.0)


def test_a_free_store_is_taken() -> None:
    assert refusal(None, ME, 1000.0) is None


def test_a_live_daemon_elsewhere_keeps_the_store_and_is_named() -> None:
    other = Holder("node2", "/srv/vocloud", 4242, 990.0)
    why = refusal(other, ME, 1000.0)
    assert why is not None
    assert "pid 4242 on node2, data dir /srv/vocloud" in why
    assert "10 s ago" in why and "free 20 s from now" in why


def test_the_same_data_dir_on_another_host_is_another_daemon() -> None:
    assert refusal(Holder("node2", ME.data_dir, 7, 999.0), ME, 1000.0) is not None
    assert refusal(Holder(ME.host, "/elsewhere", 7, 999.0), ME, 1000.0) is not None


def test_a_restart_in_the_same_place_takes_over_at_once() -> None:
    # the flock on the data dir proves the earlier process dead: no waiting out the TTL
    assert refusal(Holder(ME.host, ME.data_dir, 99, 999.9), ME, 1000.0) is None


@pytest.mark.parametrize(("age", "free"), [(TTL_S - 0.5, False), (TTL_S + 0.5, True)])
def test_a_silent_holder_loses_the_store_after_the_ttl(age: float, free: bool) -> None:
    other = Holder("node2", "/srv/vocloud", 4242, 1000.0 - age)
    assert (refusal(other, ME, 1000.0) is None) is free


def test_a_heartbeat_from_the_future_counts_as_fresh() -> None:
    # clocks a little apart: never a negative "ago"
    why = refusal(Holder("node2", "/srv", 1, 1005.0), ME, 1000.0)
    assert why is not None and "0 s ago" in why


def test_records_round_trip_and_unreadable_ones_count_as_none() -> None:
    doc = {"host": "n", "data_dir": "/d", "pid": 3, "beat": 12.5}
    assert parse(json.dumps(doc)) == Holder("n", "/d", 3, 12.5)
    for bad in ("", None, "not json", "{}", json.dumps({**doc, "pid": "x"}), "[1, 2]"):
        assert parse(bad) is None, bad


def test_the_ttl_setting_is_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VOCLOUD_STORE_LEASE_TTL", "5")
    assert load_settings(tmp_path).store_lease_ttl == 5.0
    for bad, says in (("0.5", "too short"), ("-3", "too short"), ("nan", "too short"),
                      ("soon", "not a valid float")):
        monkeypatch.setenv("VOCLOUD_STORE_LEASE_TTL", bad)
        with pytest.raises(InvalidInput, match=f"store_lease_ttl.*{says}"):
            load_settings(tmp_path)
