"""Issue 19's pure parts: the lifecycle table never undoes an accepted terminate, and a fault is
told once, its repeats counted and summarised (engine/faults.py)."""

from __future__ import annotations

import logging

import pytest

from vocloud.engine.faults import SUMMARY_EVERY, FaultLog, vm_keys_alive
from vocloud.model.lifecycle import (
    FINAL,
    OWED_TERMINATE,
    VM_TABLE,
    VM_USER_ACTIONS,
    VMState,
    vm_next,
)

S = VMState


def _by_loop_events(start: VMState) -> set[VMState]:
    """Every state ``start`` can reach by loop events alone (no user's change of mind, no
    administrator's recover)."""
    seen, todo = {start}, [start]
    while todo:
        st = todo.pop()
        for (s, action), nxt in VM_TABLE.items():
            if s == st and action not in VM_USER_ACTIONS and action != "recover_delete" \
                    and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize("action", ["terminate", "terminate-hard"])
def test_no_edge_leads_from_a_requested_end_of_life_back_to_a_running_vm(action: str) -> None:
    for (st, act), first in VM_TABLE.items():
        if act != action or first in FINAL:
            continue
        reach = _by_loop_events(first)
        assert not reach & {S.RUNNING, S.UNKNOWN, S.POWEROFF, S.SUSPENDED, S.BOOT}, (st, first, reach)
        assert S.DONE in reach


def test_owed_terminates_end_only_forward() -> None:
    for st in OWED_TERMINATE:
        assert vm_next(1, st, "host_gone") == S.DONE
        assert (st, "shutdown_fail") not in VM_TABLE
    assert (S.SHUTDOWN_HARD, "shutdown_ok") in VM_TABLE


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_fault_is_told_once_counted_summarised_and_closed(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    faults = FaultLog(logging.getLogger("vocloud.test"), clock)
    caplog.set_level(logging.INFO, logger="vocloud.test")
    assert faults.tell("host:1", logging.WARNING, "host h1 is ERROR: refused")
    assert faults.summary() == 0  # the first call starts the window
    for i in range(600):  # five minutes of a loop at two passes a second
        clock.t += 0.5
        assert not faults.tell("host:1", logging.WARNING, f"host h1 is ERROR: refused ({i})")
        assert not faults.tell("vm:7:wait", logging.INFO, "VM 7 waits") or i == 0
        faults.summary()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "host h1 is ERROR: refused" and lines[1] == "VM 7 waits"
    assert len(lines) == 3, lines  # told, the wait told once, one summary
    assert lines[2].startswith("still failing, repeats in the last 300 s: host:1 x600 ")
    assert lines[2].endswith("refused (599)")  # the last message
    assert "vm:7" not in lines[2]  # INFO notices are not summarised
    faults.tell("host:1", logging.WARNING, "host h1 is ERROR: timed out")
    clock.t += SUMMARY_EVERY
    assert faults.summary() == 1  # the one repeat since the last summary
    assert faults.summary(force=True) == 0  # nothing repeated since
    fault = faults.close("host:1")
    assert fault is not None and fault.total == 602 and fault.since == 1000.0
    assert faults.close("host:1") is None
    assert faults.tell("host:1", logging.WARNING, "again")  # a new outage is told again


def test_vm_faults_close_when_the_vm_no_longer_owes_or_waits() -> None:
    keep = vm_keys_alive(stepping={1, 2}, waited={2})
    assert keep("vm:1:step") and not keep("vm:3:step")
    assert keep("vm:2:wait") and not keep("vm:1:wait")
    assert keep("host:9")
