"""The fan-out planner (core/distribution.py): pure, so every path is checked without a host."""

from __future__ import annotations

import pytest

from vocloud.core.distribution import (
    FRONT_END,
    Outcome,
    Planner,
    Transfer,
    finish,
    new_planner,
    next_transfers,
    tree_depth,
)


def _drive(plan: Planner, fail: dict[str, Outcome] | None = None) -> list[list[Transfer]]:
    """Run rounds where every hop of a round ends before the next; ``fail`` once per host."""
    fail = dict(fail or {})
    rounds = []
    while not plan.done:
        hops = next_transfers(plan)
        assert hops or plan.inflight, "stuck: nothing in flight and nothing started"
        rounds.append(hops)
        for t in hops:
            finish(plan, t, fail.pop(t.child, Outcome.OK))
    return rounds


def test_the_front_end_sends_once_and_holders_double_each_round() -> None:
    plan = new_planner([f"h{i}" for i in range(1, 9)], [], fanout=1)
    rounds = _drive(plan)
    assert plan.front_end_sends == 1
    assert [len(r) for r in rounds] == [1, 1, 2, 4]  # binomial: 1 -> 2 -> 4 -> 8 holders
    assert sorted(plan.holders) == sorted(f"h{i}" for i in range(1, 9))
    assert tree_depth(plan) == 4 and not plan.failed


def test_fanout_k_serves_k_children_at_once() -> None:
    plan = new_planner([f"h{i}" for i in range(1, 8)], [], fanout=3)
    rounds = _drive(plan)
    assert [len(r) for r in rounds] == [1, 3, 3]
    assert plan.front_end_sends == 1
    assert all(sum(1 for p in plan.parent.values() if p == h) <= 6 for h in plan.holders)


def test_hosts_that_hold_it_serve_and_the_front_end_sends_nothing() -> None:
    plan = new_planner(["a", "b", "c", "d"], ["a", "b"], fanout=1)
    rounds = _drive(plan)
    assert plan.front_end_sends == 0
    assert {t.source for t in rounds[0]} == {"a", "b"}


def test_a_bad_holder_is_redone_and_its_child_tried_again_not_charged() -> None:
    plan = new_planner(["a", "b"], ["a"], fanout=1)
    (t,) = next_transfers(plan)
    assert t == Transfer("a", "b")
    finish(plan, t, Outcome.SOURCE_BAD, "its copy is damaged")
    assert plan.holders == [] and plan.pending == ["b", "a"] and plan.attempts["b"] == 0
    (t,) = next_transfers(plan)  # nobody holds it now: the front-end
    assert t == Transfer(FRONT_END, "b")
    finish(plan, t, Outcome.OK)
    assert next_transfers(plan) == [Transfer("b", "a")]


def test_a_failing_child_is_given_up_after_max_attempts_the_rest_go_on() -> None:
    plan = new_planner(["a", "b", "c"], [], fanout=1, max_attempts=2)
    failures = 0
    while not plan.done:
        for t in next_transfers(plan):
            if t.child == "b":
                failures += 1
                finish(plan, t, Outcome.CHILD_FAILED, "checksum")
            else:
                finish(plan, t, Outcome.OK)
    assert failures == 2 and plan.failed == {"b": "checksum"}
    assert sorted(plan.holders) == ["a", "c"]


def test_an_unreachable_child_is_given_up_at_once_and_a_dead_source_too() -> None:
    plan = new_planner(["a", "b", "c"], [], fanout=1)
    (t,) = next_transfers(plan)
    finish(plan, t, Outcome.UNREACHABLE, "connection refused")
    assert plan.failed == {"a": "connection refused"}
    (t,) = next_transfers(plan)
    finish(plan, t, Outcome.OK)  # b from the front-end
    (t,) = next_transfers(plan)
    assert t == Transfer("b", "c")
    finish(plan, t, Outcome.SOURCE_DOWN, "b went away")
    assert "b" in plan.failed and plan.pending == ["c"]
    (t,) = next_transfers(plan)
    assert t == Transfer(FRONT_END, "c")  # the front-end again: nobody else holds it


def test_bad_plans_are_refused() -> None:
    with pytest.raises(ValueError):
        new_planner(["a"], [], fanout=0)
    with pytest.raises(ValueError):
        Planner(pending=["a", "a"])
    with pytest.raises(ValueError):
        Planner(pending=[""])
    plan = new_planner(["a"], [], fanout=1)
    with pytest.raises(ValueError):
        finish(plan, Transfer("x", "a"), Outcome.OK)
