"""The pre-stage decision (core/prestage.py): which hosts get the pool's image, which boots wait."""

from __future__ import annotations

from pathlib import Path

import pytest

from vocloud.config import load_settings
from vocloud.core.prestage import Candidate, Mode, Staging, decide, only_hosts
from vocloud.errors import InvalidInput
from vocloud.model.expr import compile_requirements

H = [Candidate(f"h{i}", 2) for i in range(1, 7)]
ALL = tuple(c.name for c in H)


def test_first_boots_start_one_distribution_to_every_candidate_and_wait() -> None:
    d = decide(Mode.WAIT, "wn", 3, H, frozenset(), None, now=100.0)
    assert d.start == ALL and d.bind == 0 and d.pin == () and d.waiting == 3
    assert d.note == "pre-staging image wn to 6 hosts: 0/6; 3 boots wait"


def test_while_it_runs_nothing_new_starts_and_boots_wait() -> None:
    st = Staging(ALL, frozenset({"h2"}), started_at=100.0)  # h2 verified: it may take 2
    d = decide(Mode.WAIT, "wn", 5, H, frozenset(), st, now=110.0)
    assert d.start == () and d.bind == 2 and d.pin == ("h2",) and d.waiting == 3
    assert d.note == ("pre-staging image wn to 6 hosts: 1/6; 3 boots wait, "
                      "2 boot on hosts that hold it")


def test_workers_already_created_take_the_holders_slots_first() -> None:
    st = Staging(ALL, frozenset({"h2"}), started_at=100.0)
    d = decide(Mode.WAIT, "wn", 5, H, frozenset(), st, now=110.0, unplaced=2)
    assert d.bind == 0 and d.pin == ()


def test_hosts_that_hold_it_take_boots_at_once_while_the_others_get_it() -> None:
    d = decide(Mode.WAIT, "wn", 3, H, frozenset({"h1"}), None, now=0.0)
    assert d.start == ALL  # h1 is in the tree: it serves, the front-end need not
    assert d.bind == 2 and d.pin == ("h1",)


def test_once_it_is_over_every_boot_goes_and_nothing_is_sent_again() -> None:
    st = Staging(ALL, frozenset(ALL[:5]), frozenset({"h6"}), started_at=100.0, done=True)
    d = decide(Mode.WAIT, "wn", 4, H, frozenset(), st, now=130.0)
    assert d == type(d)(bind=4)  # h6 failed: tried, not distributed to again, nobody waits


def test_every_candidate_holds_it_no_distribution() -> None:
    d = decide(Mode.WAIT, "wn", 4, H, frozenset(ALL), None, now=0.0)
    assert d.start == () and d.bind == 4 and d.note == ""


def test_a_new_host_gets_a_new_distribution_served_by_the_holders() -> None:
    st = Staging(ALL, frozenset(ALL), started_at=0.0, done=True)
    more = [*H, Candidate("h7", 4)]
    d = decide(Mode.WAIT, "wn", 1, more, frozenset(ALL), st, now=500.0)
    assert d.start == (*ALL, "h7") and d.bind == 1 and d.pin == ALL


def test_the_wait_is_bounded() -> None:
    st = Staging(ALL, frozenset(), started_at=100.0)
    d = decide(Mode.WAIT, "wn", 3, H, frozenset(), st, now=100.0 + 60, wait_s=60)
    assert d.bind == 3 and d.pin == () and "longer than 60 s" in d.note


def test_mode_start_distributes_without_holding_boots_and_off_does_nothing() -> None:
    d = decide(Mode.START, "wn", 3, H, frozenset(), None, now=0.0)
    assert d.start == ALL and d.bind == 3 and d.note == ""
    assert decide(Mode.OFF, "wn", 3, H, frozenset(), None, now=0.0) == type(d)(bind=3)
    assert decide(Mode.WAIT, "wn", 0, H, frozenset(), None, now=0.0).start == ()


def test_only_hosts_with_room_are_candidates_and_at_most_max_hosts() -> None:
    cands = [Candidate("full", 0), *H]
    d = decide(Mode.WAIT, "wn", 1, cands, frozenset(), None, now=0.0, max_hosts=3)
    assert d.start == ("h1", "h2", "h3")
    assert decide(Mode.WAIT, "wn", 2, [Candidate("full", 0)], frozenset(), None, 0.0).bind == 2
    assert decide(Mode.WAIT, "wn", 2, [], frozenset(), None, 0.0).bind == 2


@pytest.mark.parametrize("own", ["", 'CPU > 0'])
def test_pinned_requirements_match_only_the_holders(own: str) -> None:
    text = only_hosts(own, ["h2", "h1"])
    pred = compile_requirements(text).matches
    assert pred({"NAME": "h1", "CPU": 4}) and pred({"NAME": "h2", "CPU": 4})
    assert not pred({"NAME": "h3", "CPU": 4})
    assert only_hosts(own, []) == own


def test_the_site_settings_are_checked(tmp_path: Path) -> None:
    assert load_settings(tmp_path).pool_prestage == "wait"  # the default
    assert load_settings(tmp_path, pool_prestage="off").pool_prestage == "off"
    for bad in ({"pool_prestage": "always"}, {"pool_prestage_wait": -1.0},
                {"pool_prestage_hosts": 0}, {"pool_prestage_fanout": 17}):
        with pytest.raises(InvalidInput, match=next(iter(bad))):  # the error names the setting
            load_settings(tmp_path, **bad)
