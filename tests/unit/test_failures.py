"""The pool-VM failure state machine and the image/host backoff."""

from __future__ import annotations

import pytest

from vocloud.elastic.failures import (
    DEFAULT_BACKOFF,
    POOL_VM_TABLE,
    BackoffPolicy,
    PoolVMEvent,
    backoff_delay,
    blocked,
    failure_verdict,
    may_boot,
    pool_vm_next,
    record_failure,
    record_success,
)
from vocloud.elastic.policy import BackoffState, PoolPolicy, PoolVM, PoolVMState, ShutdownCause
from vocloud.errors import IllegalAction

V = PoolVMState
E = PoolVMEvent
POLICY = PoolPolicy("atlas", "img", 4, 8192, boot_timeout_s=300, down_grace_s=60)


# --- the transition table -----------------------------------------------------------------------


def test_happy_path_walks_the_whole_life() -> None:
    path = [E.PLACED, E.JOINED, E.JOB_STARTED, E.JOBS_DONE, E.JOB_STARTED, E.DRAIN, E.JOBS_DONE,
            E.SHUTDOWN, E.STOPPED]
    seen = [V.REQUESTED]
    for ev in path:
        seen.append(pool_vm_next(seen[-1], ev))
    assert seen == [V.REQUESTED, V.BOOTING, V.JOINED_IDLE, V.JOINED_BUSY, V.JOINED_IDLE,
                    V.JOINED_BUSY, V.DRAINING, V.DRAINED, V.STOPPING, V.GONE]


@pytest.mark.parametrize("state", [V.JOINED_IDLE, V.JOINED_BUSY, V.DRAINING])
def test_a_joined_worker_cannot_be_shut_down_without_draining(state: V) -> None:
    with pytest.raises(IllegalAction) as err:
        pool_vm_next(state, E.SHUTDOWN, vm_id=17)
    assert err.value.state == state.value
    assert "17" in str(err.value) and "shutdown" in str(err.value)


def test_only_vms_without_jobs_can_reach_stopping() -> None:
    # The invariant behind "never kill a running job", checked over the whole table.
    into_stopping = {st for (st, ev), nxt in POOL_VM_TABLE.items()
                     if nxt is V.STOPPING and st is not V.STOPPING}
    assert into_stopping == {V.BOOTING, V.DRAINED, V.DOWN, V.FAILED}


@pytest.mark.parametrize(("state", "event", "after"), [
    (V.REQUESTED, E.BOOT_FAILED, V.FAILED),
    (V.BOOTING, E.BOOT_TIMEOUT, V.FAILED),
    (V.BOOTING, E.BOOT_FAILED, V.FAILED),
    (V.JOINED_BUSY, E.NODE_DOWN, V.DOWN),
    (V.DOWN, E.SHUTDOWN, V.STOPPING),
    (V.DOWN, E.NODE_UP, V.JOINED_IDLE),
    (V.FAILED, E.SHUTDOWN, V.STOPPING),
    (V.DRAINED, E.LOST, V.FAILED),
    (V.DRAINING, E.RESUME, V.JOINED_BUSY),
    (V.DRAINED, E.RESUME, V.JOINED_IDLE),
    (V.JOINED_IDLE, E.DRAIN, V.DRAINED),
    (V.STOPPING, E.STOP_FAILED, V.STOPPING),
    (V.REQUESTED, E.CANCEL, V.GONE),
])
def test_failure_and_recovery_paths(state: V, event: E, after: V) -> None:
    assert pool_vm_next(state, event) is after


def test_stockout_keeps_the_request_and_marks_nothing() -> None:
    assert pool_vm_next(V.REQUESTED, E.NO_CAPACITY) is V.REQUESTED


def test_gone_is_final() -> None:
    for ev in E:
        with pytest.raises(IllegalAction):
            pool_vm_next(V.GONE, ev)


def test_unknown_event_is_illegal_not_a_crash() -> None:
    with pytest.raises(IllegalAction):
        pool_vm_next("BOOTING", "explode")


def test_every_state_but_gone_has_a_way_out() -> None:
    # No VM can get stuck where nothing moves it: that is how instances leak.
    sources = {st for (st, _), nxt in POOL_VM_TABLE.items() if nxt is not st}
    assert sources == set(V) - {V.GONE}


# --- backoff ------------------------------------------------------------------------------------


def test_backoff_grows_exponentially_and_is_capped() -> None:
    pol = BackoffPolicy(base_s=10, factor=2, max_s=100)
    delays = [backoff_delay(n, pol) for n in range(0, 8)]
    assert delays == [0, 10, 20, 40, 80, 100, 100, 100]
    assert backoff_delay(10_000, DEFAULT_BACKOFF) == DEFAULT_BACKOFF.max_s


def test_record_failure_blocks_until_retry_at() -> None:
    st = record_failure(BackoffState(key="img"), now=1000.0, policy=BackoffPolicy(base_s=30))
    assert (st.failures, st.retry_at, st.last_failure) == (1, 1030.0, 1000.0)
    ok, why = may_boot(st, 1029.0)
    assert not ok and "retry in 1 s" in why and "img" in why
    ok, why = may_boot(st, 1030.0)
    assert ok and "probing" in why
    st2 = record_failure(st, now=1030.0, policy=BackoffPolicy(base_s=30))
    assert st2.retry_at == 1090.0


def test_success_resets_but_keeps_the_key() -> None:
    st = record_failure(record_failure(BackoffState(key="h1"), 0.0), 5.0)
    fresh = record_success(st)
    assert fresh == BackoffState(key="h1")
    assert may_boot(fresh, 0.0) == (True, "no recent boot failures")


def test_backoffs_are_independent_per_key() -> None:
    bad = record_failure(BackoffState(key="broken-image"), 0.0)
    good = BackoffState(key="good-image")
    assert not may_boot(bad, 1.0)[0]
    assert may_boot(good, 1.0)[0]


# --- verdicts -----------------------------------------------------------------------------------


def _vm(state: V, started: float = 0.0, since: float | None = None) -> PoolVM:
    return PoolVM(1, "vc-1", state, started_at=started, state_since=since)


def test_boot_timeout_is_a_failure_counted_from_placement() -> None:
    assert failure_verdict(_vm(V.BOOTING, 0.0), POLICY, 300.0) is None
    v = failure_verdict(_vm(V.BOOTING, 0.0), POLICY, 301.0)
    assert v is not None and v.cause is ShutdownCause.BOOT_TIMEOUT and v.cause.is_failure
    # Waited 1000 s for a host (stockout), placed 10 s ago: not blamed for the stockout.
    assert failure_verdict(_vm(V.BOOTING, 0.0, since=990.0), POLICY, 1000.0) is None


def test_stockout_never_becomes_a_failure() -> None:
    assert failure_verdict(_vm(V.REQUESTED, 0.0), POLICY, 1e9) is None


def test_down_node_is_reaped_after_grace_and_is_not_an_image_failure() -> None:
    assert failure_verdict(_vm(V.DOWN, since=100.0), POLICY, 159.0) is None
    v = failure_verdict(_vm(V.DOWN, since=100.0), POLICY, 160.0)
    assert v is not None and v.cause is ShutdownCause.DOWN and not v.cause.is_failure


def test_failed_vm_is_removed() -> None:
    v = failure_verdict(_vm(V.FAILED), POLICY, 0.0)
    assert v is not None and v.cause is ShutdownCause.FAILED


def test_blocked_lists_only_keys_in_backoff_now() -> None:
    states = {"h1": record_failure(BackoffState(key="h1"), 0.0), "h2": BackoffState(key="h2")}
    assert blocked(states, 1.0) == frozenset({"h1"})
    assert blocked(states, 1e6) == frozenset()


def test_which_shutdowns_blame_image_and_host() -> None:
    assert {c for c in ShutdownCause if c.is_failure} == {ShutdownCause.BOOT_TIMEOUT,
                                                          ShutdownCause.FAILED}
    assert {c for c in ShutdownCause if c.blames_host} == {ShutdownCause.BOOT_TIMEOUT,
                                                           ShutdownCause.FAILED, ShutdownCause.DOWN}


def test_avoid_hosts_keeps_the_templates_own_requirement() -> None:
    from vocloud.elastic.failures import avoid_hosts
    from vocloud.model.expr import compile_requirements

    req = avoid_hosts('CLUSTER = "grid"', ["h2", "h1", "h1"], ["h1", "h2", "h3"])
    assert req == '(CLUSTER = "grid") & NAME != "h1" & NAME != "h2"'
    ok = compile_requirements(req).matches
    assert ok({"CLUSTER": "grid", "NAME": "h3"}) and not ok({"CLUSTER": "grid", "NAME": "h1"})
    assert not ok({"CLUSTER": "other", "NAME": "h3"})
    assert avoid_hosts("", ["h1"], ["h1", "h2"]) == 'NAME != "h1"'
    assert avoid_hosts("X > 1", [], ["h1"]) == "X > 1"
    assert avoid_hosts("X > 1", ["h1", "h2"], ["h1", "h2"]) == "X > 1"  # nothing else to use
