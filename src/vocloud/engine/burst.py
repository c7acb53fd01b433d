"""The scheduler's bursting step: place tier by tier (core/burst.py) with each pool's cloud
room read from the store, and say why each VM went beyond the site.

A site without cloud hosts (every host on tier 0) places exactly as before, without reading
pools at all.
"""

from __future__ import annotations

from collections.abc import Sequence

from vocloud.core.burst import TieredResult, place_tiered, tier_of
from vocloud.core.placement import HostView, PendingVM, SchedPolicy, place
from vocloud.service.burst import cloud_room, pool_of_vms, record_bursts
from vocloud.store.db import Database


def place_bursting(db: Database, pending: Sequence[PendingVM], hosts: Sequence[HostView],
                   policy: SchedPolicy) -> TieredResult:
    if all(tier_of(h) == 0 for h in hosts):
        return TieredResult(place(pending, hosts, policy))
    with db.read() as s:
        pool_of = pool_of_vms(s, (v.id for v in pending))
        room = cloud_room(s)
    return place_tiered(pending, hosts, policy, pool_of, room)


def note_bursts(db: Database, tiered: TieredResult, at: float) -> None:
    """Pool events for the pool workers placed beyond the site this cycle."""
    if tiered.reasons:
        with db.write() as s:
            record_bursts(s, tiered.reasons, at)
