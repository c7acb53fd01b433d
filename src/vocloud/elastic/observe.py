"""What the pool controller observes, turned into pool-VM events: pure, no store, no clock.

:func:`observed_event` maps (the worker's pool state, whether it has a VM, the VM's IaaS state,
its batch node) to the next event of ``failures.POOL_VM_TABLE``; the controller
(``engine/pools.py``) applies events until it returns ``None``. Kept apart from the shell so a
test (and a simulator) can ask it without a database.
"""

from __future__ import annotations

from vocloud.batch.base import NodeState, WorkerNode
from vocloud.elastic.failures import PoolVMEvent as E
from vocloud.elastic.policy import PoolVMState as V
from vocloud.model.lifecycle import VMState

#: IaaS states of a worker VM that failed to come up.
FAILED_VM = frozenset({VMState.BOOT_FAILURE, VMState.PROLOG_FAILURE, VMState.EPILOG_FAILURE})
#: IaaS states of a worker VM that has a host (the boot is under way or done).
PLACED_VM = frozenset({VMState.PROLOG, VMState.BOOT, VMState.RUNNING, VMState.REBOOT,
                       VMState.MIGRATE})
#: Batch node states of a worker whose daemon has joined.
NODE_UP = frozenset({NodeState.IDLE, NodeState.BUSY, NodeState.DRAINING, NodeState.DRAINED})


def observed_event(state: V, bound: bool, vm: VMState | None, node: WorkerNode | None) -> E | None:
    """The next pool-VM event that what is observed implies, or ``None`` when nothing changed.

    ``bound``: the row has a VM id; ``vm``: that VM's state (``None``: the VM no longer
    exists); ``node``: the batch node of the same name (``None``: unknown to the batch system).
    Called repeatedly until it returns ``None``, so one pass can move a worker REQUESTED ->
    BOOTING -> JOINED_IDLE -> JOINED_BUSY when a whole boot happened between two passes.
    """
    gone = bound and (vm is None or vm is VMState.DONE)
    up = node is not None and node.state in NODE_UP
    if state is V.STOPPING:
        return E.STOPPED if gone or not bound else None
    if state is V.REQUESTED:
        if gone:
            return E.CANCEL
        if vm in FAILED_VM:
            return E.BOOT_FAILED
        return E.PLACED if vm in PLACED_VM else None
    if state in (V.GONE, V.FAILED):
        return None
    if gone:
        return E.LOST
    if vm in FAILED_VM:
        return E.BOOT_FAILED if state is V.BOOTING else E.LOST
    if state is V.BOOTING:
        return E.JOINED if up else None
    if state is V.DOWN:
        return E.NODE_UP if up else None
    if not up:
        return E.NODE_DOWN
    assert node is not None
    if state is V.JOINED_IDLE:
        return E.JOB_STARTED if node.running_jobs > 0 else None
    if state in (V.JOINED_BUSY, V.DRAINING):
        return E.JOBS_DONE if node.running_jobs == 0 else None
    return None
