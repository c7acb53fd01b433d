"""The lifecycle tables: every transition is data, every illegal action a clear error."""

from __future__ import annotations

import pytest

from vocloud.errors import IllegalAction
from vocloud.model.lifecycle import (
    FINAL,
    HOLDS_HOST,
    RECOVER_EVENTS,
    TRANSIENT,
    VM_SHORT,
    VM_TABLE,
    VM_USER_ACTIONS,
    HostState,
    ImageState,
    VMState,
    host_next,
    image_next,
    vm_allowed_actions,
    vm_next,
)


def test_every_state_has_a_short_name() -> None:
    assert set(VM_SHORT) == set(VMState)
    assert all(len(v) == 4 for v in VM_SHORT.values())


def test_done_is_final() -> None:
    assert not [a for (s, a) in VM_TABLE if s in FINAL]


def test_every_non_final_state_can_be_left() -> None:
    sources = {s for (s, _a) in VM_TABLE}
    assert set(VMState) - FINAL <= sources


def test_every_state_reaches_done() -> None:
    graph: dict[VMState, set[VMState]] = {}
    for (s, _a), n in VM_TABLE.items():
        graph.setdefault(s, set()).add(n)
    for start in VMState:
        seen, todo = {start}, [start]
        while todo:
            for n in graph.get(todo.pop(), ()):
                if n not in seen:
                    seen.add(n)
                    todo.append(n)
        assert VMState.DONE in seen, f"{start} can never reach DONE"


def test_transient_states_have_recover_events_that_exist() -> None:
    for st in TRANSIENT:
        ok, fail = RECOVER_EVENTS[st]
        assert (st, ok) in VM_TABLE and (fail is None or (st, fail) in VM_TABLE)


def test_happy_path() -> None:
    st = VMState.PENDING
    for action, expect in [("scheduled", "PROLOG"), ("prolog_ok", "BOOT"), ("boot_ok", "RUNNING"),
                           ("terminate", "SHUTDOWN"), ("shutdown_ok", "EPILOG"), ("epilog_ok", "DONE")]:
        st = vm_next(1, st, action)
        assert st == expect


def test_pending_and_hold_terminate_directly() -> None:
    assert vm_next(1, "PENDING", "terminate") == VMState.DONE
    assert vm_next(1, "HOLD", "terminate-hard") == VMState.DONE


@pytest.mark.parametrize(("state", "action"), [
    ("RUNNING", "resume"), ("PENDING", "suspend"), ("DONE", "terminate"), ("HOLD", "hold"),
    ("POWEROFF", "reboot"), ("STOPPED", "migrate"), ("BOOT", "suspend"), ("PROLOG", "poweroff"),
])
def test_illegal_action_names_state_and_action(state: str, action: str) -> None:
    with pytest.raises(IllegalAction) as exc:
        vm_next(42, state, action)
    assert exc.value.state == state
    assert exc.value.action == action
    assert f"cannot {action} VM 42: it is {state}" == exc.value.message
    assert exc.value.status == 409


def test_terminate_works_in_every_state_but_shutdowns_and_done() -> None:
    """A user terminating "everything" must not trip over VMs that are just booting."""
    for st in (VMState.PENDING, VMState.HOLD, VMState.PROLOG, VMState.BOOT, VMState.RUNNING,
               VMState.POWEROFF, VMState.SUSPENDED, VMState.STOPPED, VMState.UNDEPLOYED,
               VMState.UNKNOWN, VMState.BOOT_FAILURE, VMState.PROLOG_FAILURE):
        assert (st, "terminate") in VM_TABLE, st
    assert vm_next(1, "BOOT", "terminate") == VMState.SHUTDOWN_HARD


def test_holding_states_cover_everything_on_a_host() -> None:
    assert VMState.RUNNING in HOLDS_HOST and VMState.POWEROFF in HOLDS_HOST
    for st in (VMState.PENDING, VMState.HOLD, VMState.DONE, VMState.STOPPED, VMState.UNDEPLOYED):
        assert st not in HOLDS_HOST


def test_allowed_actions_are_user_actions() -> None:
    acts = vm_allowed_actions("RUNNING")
    assert {"terminate", "terminate-hard", "poweroff", "suspend", "stop", "reboot", "migrate"} <= set(acts)
    assert set(acts) <= VM_USER_ACTIONS
    assert vm_allowed_actions("DONE") == []


def test_host_table() -> None:
    assert host_next(1, "INIT", "monitor_ok") == HostState.MONITORED
    assert host_next(1, "MONITORED", "monitor_fail") == HostState.ERROR
    assert host_next(1, "DISABLED", "monitor_ok") == HostState.DISABLED
    assert host_next(1, "OFFLINE", "enable") == HostState.INIT
    with pytest.raises(IllegalAction, match="cannot monitor_ok host 1: it is OFFLINE"):
        host_next(1, "OFFLINE", "monitor_ok")


def test_image_table() -> None:
    assert image_next(1, "READY", "disable") == ImageState.DISABLED
    with pytest.raises(IllegalAction, match="it is USED"):
        image_next(1, "USED", "disable")
