"""The one lifecycle table for VMs, hosts and images.

Every state change in vocloud goes through :func:`vm_next`, :func:`host_next` or
:func:`image_next`. The tables are data: a reviewer can read the whole lifecycle here, the CLI can
print it, and tests can enumerate it. An action missing from a table is refused with an
:class:`~vocloud.errors.IllegalAction` that names the object's state and the action.

VM states follow OpenNebula's flat view of STATE+LCM_STATE. User actions move a VM into a
*transient* state (PROLOG, BOOT, SHUTDOWN, ...); the lifecycle reconciler sees the transient state,
performs the idempotent driver operation, and feeds back a driver event (``*_ok``/``*_fail``).
Because the transient state is stored before any driver call, a crash at any instant is repaired
by running the loop again.
"""

from __future__ import annotations

from enum import StrEnum

from vocloud.errors import IllegalAction


class VMState(StrEnum):
    PENDING = "PENDING"
    HOLD = "HOLD"
    PROLOG = "PROLOG"
    BOOT = "BOOT"
    RUNNING = "RUNNING"
    REBOOT = "REBOOT"
    MIGRATE = "MIGRATE"
    SAVE_SUSPEND = "SAVE_SUSPEND"
    SAVE_STOP = "SAVE_STOP"
    SHUTDOWN = "SHUTDOWN"
    SHUTDOWN_HARD = "SHUTDOWN_HARD"
    SHUTDOWN_POWEROFF = "SHUTDOWN_POWEROFF"
    SHUTDOWN_UNDEPLOY = "SHUTDOWN_UNDEPLOY"
    EPILOG = "EPILOG"
    EPILOG_STOP = "EPILOG_STOP"
    EPILOG_UNDEPLOY = "EPILOG_UNDEPLOY"
    DONE = "DONE"
    POWEROFF = "POWEROFF"
    SUSPENDED = "SUSPENDED"
    STOPPED = "STOPPED"
    UNDEPLOYED = "UNDEPLOYED"
    UNKNOWN = "UNKNOWN"
    PROLOG_FAILURE = "PROLOG_FAILURE"
    BOOT_FAILURE = "BOOT_FAILURE"
    EPILOG_FAILURE = "EPILOG_FAILURE"


S = VMState

#: Short names for ``vm list`` STAT, as ``onevm list`` prints them.
VM_SHORT: dict[VMState, str] = {
    S.PENDING: "pend", S.HOLD: "hold", S.PROLOG: "prol", S.BOOT: "boot", S.RUNNING: "runn",
    S.REBOOT: "rebo", S.MIGRATE: "migr", S.SAVE_SUSPEND: "save", S.SAVE_STOP: "save",
    S.SHUTDOWN: "shut", S.SHUTDOWN_HARD: "shut", S.SHUTDOWN_POWEROFF: "shut",
    S.SHUTDOWN_UNDEPLOY: "shut", S.EPILOG: "epil", S.EPILOG_STOP: "epil", S.EPILOG_UNDEPLOY: "epil",
    S.DONE: "done", S.POWEROFF: "poff", S.SUSPENDED: "susp", S.STOPPED: "stop",
    S.UNDEPLOYED: "unde", S.UNKNOWN: "unkn", S.PROLOG_FAILURE: "fail", S.BOOT_FAILURE: "fail",
    S.EPILOG_FAILURE: "fail",
}

#: States in which the VM holds capacity on its host (CPU/memory counted as allocated).
HOLDS_HOST: frozenset[VMState] = frozenset({
    S.PROLOG, S.BOOT, S.RUNNING, S.REBOOT, S.MIGRATE, S.SAVE_SUSPEND, S.SAVE_STOP, S.SHUTDOWN,
    S.SHUTDOWN_HARD, S.SHUTDOWN_POWEROFF, S.SHUTDOWN_UNDEPLOY, S.EPILOG, S.EPILOG_STOP,
    S.EPILOG_UNDEPLOY, S.POWEROFF, S.SUSPENDED, S.UNKNOWN, S.PROLOG_FAILURE, S.BOOT_FAILURE,
    S.EPILOG_FAILURE,
})

#: States the lifecycle reconciler works on (a driver operation is owed).
TRANSIENT: frozenset[VMState] = frozenset({
    S.PROLOG, S.BOOT, S.REBOOT, S.MIGRATE, S.SAVE_SUSPEND, S.SAVE_STOP, S.SHUTDOWN,
    S.SHUTDOWN_HARD, S.SHUTDOWN_POWEROFF, S.SHUTDOWN_UNDEPLOY, S.EPILOG, S.EPILOG_STOP,
    S.EPILOG_UNDEPLOY,
})

#: States in which a guest is expected to be running on its host (checked by the monitor).
GUEST_UP: frozenset[VMState] = frozenset({S.RUNNING, S.REBOOT, S.MIGRATE})

FAILURES: frozenset[VMState] = frozenset({S.PROLOG_FAILURE, S.BOOT_FAILURE, S.EPILOG_FAILURE})

#: States that carry out a terminate the API accepted: the user asked for the VM's end of life,
#: so no event leads from them back to a running VM, only on to DONE (docs/faults.md).
OWED_TERMINATE: frozenset[VMState] = frozenset({S.SHUTDOWN, S.SHUTDOWN_HARD, S.EPILOG})

#: Final: the VM is gone; only ``delete`` (purge the record) remains.
FINAL: frozenset[VMState] = frozenset({S.DONE})

_TERMINATE_FROM_STOPPED = {S.PENDING: S.DONE, S.HOLD: S.DONE, S.STOPPED: S.DONE, S.UNDEPLOYED: S.DONE}
_TERMINATE_NEEDS_EPILOG = {
    S.POWEROFF: S.EPILOG, S.SUSPENDED: S.EPILOG, S.PROLOG_FAILURE: S.EPILOG,
    S.BOOT_FAILURE: S.SHUTDOWN_HARD, S.EPILOG_FAILURE: S.EPILOG,
}

#: (state, action) -> next state. Actions are what users ask for and what loops report.
VM_TABLE: dict[tuple[VMState, str], VMState] = {
    # --- user actions -------------------------------------------------------------------------
    (S.PENDING, "hold"): S.HOLD,
    (S.HOLD, "release"): S.PENDING,
    **{(st, "terminate"): nxt for st, nxt in _TERMINATE_FROM_STOPPED.items()},
    **{(st, "terminate"): nxt for st, nxt in _TERMINATE_NEEDS_EPILOG.items()},
    (S.RUNNING, "terminate"): S.SHUTDOWN,
    # No guest is up to answer an ACPI request yet (or its host is gone): stop it hard.
    (S.BOOT, "terminate"): S.SHUTDOWN_HARD,
    (S.UNKNOWN, "terminate"): S.SHUTDOWN_HARD,
    (S.PROLOG, "terminate"): S.EPILOG,
    (S.PROLOG, "terminate-hard"): S.EPILOG,
    **{(st, "terminate-hard"): nxt for st, nxt in _TERMINATE_FROM_STOPPED.items()},
    **{(st, "terminate-hard"): nxt for st, nxt in _TERMINATE_NEEDS_EPILOG.items()},
    **{
        (st, "terminate-hard"): S.SHUTDOWN_HARD
        for st in (S.RUNNING, S.UNKNOWN, S.BOOT, S.REBOOT, S.SHUTDOWN, S.SHUTDOWN_POWEROFF,
                   S.SHUTDOWN_UNDEPLOY, S.MIGRATE)
    },
    (S.RUNNING, "poweroff"): S.SHUTDOWN_POWEROFF,
    (S.RUNNING, "poweroff-hard"): S.SHUTDOWN_POWEROFF,
    (S.UNKNOWN, "poweroff-hard"): S.SHUTDOWN_POWEROFF,
    (S.RUNNING, "undeploy"): S.SHUTDOWN_UNDEPLOY,
    (S.POWEROFF, "undeploy"): S.EPILOG_UNDEPLOY,
    (S.RUNNING, "suspend"): S.SAVE_SUSPEND,
    (S.RUNNING, "stop"): S.SAVE_STOP,
    (S.SUSPENDED, "stop"): S.EPILOG_STOP,
    (S.POWEROFF, "resume"): S.BOOT,
    (S.SUSPENDED, "resume"): S.BOOT,
    (S.UNKNOWN, "resume"): S.BOOT,
    (S.STOPPED, "resume"): S.PENDING,
    (S.UNDEPLOYED, "resume"): S.PENDING,
    (S.RUNNING, "reboot"): S.REBOOT,
    (S.RUNNING, "migrate"): S.MIGRATE,
    # recover --retry: run the failed step again
    (S.PROLOG_FAILURE, "retry"): S.PROLOG,
    (S.BOOT_FAILURE, "retry"): S.BOOT,
    (S.EPILOG_FAILURE, "retry"): S.EPILOG,
    # --- loop events --------------------------------------------------------------------------
    (S.PENDING, "scheduled"): S.PROLOG,
    (S.PROLOG, "prolog_ok"): S.BOOT,
    (S.PROLOG, "prolog_fail"): S.PROLOG_FAILURE,
    (S.BOOT, "boot_ok"): S.RUNNING,
    (S.BOOT, "boot_fail"): S.BOOT_FAILURE,
    (S.REBOOT, "reboot_ok"): S.RUNNING,
    (S.REBOOT, "reboot_fail"): S.RUNNING,
    (S.MIGRATE, "migrate_ok"): S.RUNNING,
    (S.MIGRATE, "migrate_fail"): S.RUNNING,
    (S.SAVE_SUSPEND, "save_ok"): S.SUSPENDED,
    (S.SAVE_SUSPEND, "save_fail"): S.RUNNING,
    (S.SAVE_STOP, "save_ok"): S.EPILOG_STOP,
    (S.SAVE_STOP, "save_fail"): S.RUNNING,
    # a terminate is never undone by a failure (docs/faults.md): SHUTDOWN and SHUTDOWN_HARD have
    # no shutdown_fail; the step stays owed until it is done, the user changes their mind, or
    # the administrator declares the host gone (host_gone below)
    (S.SHUTDOWN, "shutdown_ok"): S.EPILOG,
    (S.SHUTDOWN_HARD, "shutdown_ok"): S.EPILOG,
    (S.SHUTDOWN_POWEROFF, "shutdown_ok"): S.POWEROFF,
    (S.SHUTDOWN_POWEROFF, "shutdown_fail"): S.RUNNING,
    (S.SHUTDOWN_UNDEPLOY, "shutdown_ok"): S.EPILOG_UNDEPLOY,
    (S.SHUTDOWN_UNDEPLOY, "shutdown_fail"): S.RUNNING,
    (S.EPILOG, "epilog_ok"): S.DONE,
    (S.EPILOG, "epilog_fail"): S.EPILOG_FAILURE,
    (S.EPILOG_STOP, "epilog_ok"): S.STOPPED,
    (S.EPILOG_STOP, "epilog_fail"): S.EPILOG_FAILURE,
    (S.EPILOG_UNDEPLOY, "epilog_ok"): S.UNDEPLOYED,
    (S.EPILOG_UNDEPLOY, "epilog_fail"): S.EPILOG_FAILURE,
    # monitor: host lost / guest vanished, and found again
    **{(st, "lost"): S.UNKNOWN for st in (S.RUNNING, S.REBOOT, S.MIGRATE)},
    (S.UNKNOWN, "found_running"): S.RUNNING,
    (S.UNKNOWN, "found_off"): S.POWEROFF,
    (S.RUNNING, "found_off"): S.POWEROFF,
    # host offline/delete --gone: the host will never answer again; the terminates it owes end
    **{(st, "host_gone"): S.DONE for st in (S.SHUTDOWN, S.SHUTDOWN_HARD, S.EPILOG)},
    # recover --delete (administrators, for VMs whose host is gone): straight to DONE from any
    # state that is not final, releasing what the VM holds like any other way into DONE
    **{(st, "recover_delete"): S.DONE for st in S if st not in FINAL},
}

#: What ``recover --success`` / ``--failure`` mean in each transient state.
RECOVER_EVENTS: dict[VMState, tuple[str, str | None]] = {
    S.PROLOG: ("prolog_ok", "prolog_fail"),
    S.BOOT: ("boot_ok", "boot_fail"),
    S.REBOOT: ("reboot_ok", "reboot_fail"),
    S.MIGRATE: ("migrate_ok", "migrate_fail"),
    S.SAVE_SUSPEND: ("save_ok", "save_fail"),
    S.SAVE_STOP: ("save_ok", "save_fail"),
    # a terminate cannot fail back to a running VM: recover --failure is refused (--success or
    # --delete end it)
    S.SHUTDOWN: ("shutdown_ok", None),
    S.SHUTDOWN_HARD: ("shutdown_ok", None),
    S.SHUTDOWN_POWEROFF: ("shutdown_ok", "shutdown_fail"),
    S.SHUTDOWN_UNDEPLOY: ("shutdown_ok", "shutdown_fail"),
    S.EPILOG: ("epilog_ok", "epilog_fail"),
    S.EPILOG_STOP: ("epilog_ok", "epilog_fail"),
    S.EPILOG_UNDEPLOY: ("epilog_ok", "epilog_fail"),
}

#: Actions a user may request through the API (the rest are loop events).
VM_USER_ACTIONS: frozenset[str] = frozenset({
    "hold", "release", "terminate", "terminate-hard", "poweroff", "poweroff-hard", "undeploy",
    "suspend", "stop", "resume", "reboot", "migrate", "retry",
})


def vm_next(vm_id: int | str, state: VMState | str, action: str) -> VMState:
    """The state a VM in ``state`` moves to on ``action``; raises IllegalAction if not allowed."""
    st = VMState(state)
    try:
        return VM_TABLE[(st, action)]
    except KeyError:
        raise IllegalAction("VM", vm_id, st.value, action) from None


def vm_allowed_actions(state: VMState | str) -> list[str]:
    st = VMState(state)
    return sorted(a for (s, a) in VM_TABLE if s == st and a in VM_USER_ACTIONS)


class HostState(StrEnum):
    INIT = "INIT"
    MONITORED = "MONITORED"
    ERROR = "ERROR"
    DISABLED = "DISABLED"
    OFFLINE = "OFFLINE"


H = HostState

HOST_TABLE: dict[tuple[HostState, str], HostState] = {
    (H.INIT, "monitor_ok"): H.MONITORED,
    (H.INIT, "monitor_fail"): H.ERROR,
    (H.MONITORED, "monitor_ok"): H.MONITORED,
    (H.MONITORED, "monitor_fail"): H.ERROR,
    (H.ERROR, "monitor_ok"): H.MONITORED,
    (H.ERROR, "monitor_fail"): H.ERROR,
    # a disabled host is still monitored (its VMs keep running) but gets no new VMs
    (H.DISABLED, "monitor_ok"): H.DISABLED,
    (H.DISABLED, "monitor_fail"): H.DISABLED,
    **{(st, "disable"): H.DISABLED for st in (H.INIT, H.MONITORED, H.ERROR, H.DISABLED)},
    **{(st, "enable"): H.INIT for st in (H.DISABLED, H.OFFLINE)},
    (H.MONITORED, "enable"): H.MONITORED,
    (H.ERROR, "enable"): H.ERROR,
    (H.INIT, "enable"): H.INIT,
    **{(st, "offline"): H.OFFLINE for st in (H.INIT, H.MONITORED, H.ERROR, H.DISABLED, H.OFFLINE)},
}

HOST_USER_ACTIONS: frozenset[str] = frozenset({"enable", "disable", "offline"})


def host_next(host_id: int | str, state: HostState | str, action: str) -> HostState:
    st = HostState(state)
    try:
        return HOST_TABLE[(st, action)]
    except KeyError:
        raise IllegalAction("host", host_id, st.value, action) from None


class ImageState(StrEnum):
    INIT = "INIT"
    READY = "READY"
    USED = "USED"
    DISABLED = "DISABLED"
    LOCKED = "LOCKED"
    ERROR = "ERROR"


I = ImageState  # noqa: E741

IMAGE_TABLE: dict[tuple[ImageState, str], ImageState] = {
    (I.INIT, "ready"): I.READY,
    (I.INIT, "error"): I.ERROR,
    (I.LOCKED, "ready"): I.READY,
    (I.LOCKED, "error"): I.ERROR,
    (I.READY, "lock"): I.LOCKED,
    (I.READY, "use"): I.USED,
    (I.USED, "use"): I.USED,
    (I.USED, "free"): I.READY,
    (I.READY, "disable"): I.DISABLED,
    (I.ERROR, "disable"): I.DISABLED,
    (I.DISABLED, "enable"): I.READY,
    (I.ERROR, "enable"): I.READY,
    (I.READY, "enable"): I.READY,
}


def image_next(image_id: int | str, state: ImageState | str, action: str) -> ImageState:
    st = ImageState(state)
    try:
        return IMAGE_TABLE[(st, action)]
    except KeyError:
        raise IllegalAction("image", image_id, st.value, action) from None
