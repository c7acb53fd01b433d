"""A host lease's states and its batch job as the lease loop sees it (docs/host-leases.md)."""

from __future__ import annotations

from enum import StrEnum


class LeaseState(StrEnum):
    SUBMITTED = "SUBMITTED"  # the batch job is queued (or starting); no host yet
    RUNNING = "RUNNING"  # the node registered: a host that takes VMs
    DRAINING = "DRAINING"  # its VMs are being shut down; the host takes no new ones
    ENDED = "ENDED"  # the host left (or never came); final
    FAILED = "FAILED"  # the job could not be submitted; final


FINAL = frozenset({LeaseState.ENDED, LeaseState.FAILED})


class JobView(StrEnum):
    """The batch job as the lease loop sees it."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    GONE = "GONE"  # finished, cancelled, timed out, failed, or unknown to the batch system
