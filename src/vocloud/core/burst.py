"""Bursting as placement tiers: the site's hosts first, a cloud only for what they cannot hold.

Every host has a *tier*: its ``BURST_TIER`` attribute, else 0 for the site's own hosts and 1
for cloud regions (``HYPERVISOR = ec2``). :func:`place_tiered` places the pending VMs on tier
0 with the ordinary match-maker (:func:`~vocloud.core.placement.place`, the site's policy and
rank inside a tier), then what is left on tier 1, and so on: a VM reaches a cloud only when no
site host could take it this cycle. A site that wants one region before another, or a partner
site's hosts before a public cloud, gives them tiers in that order.

A pool may hold at most its *burst limit* of VMs outside tier 0 (``room``): only that many of
its pending workers take part in the cloud tiers, the others wait for the site. VMs mapped to
:data:`SITE_ONLY` (users' own VMs: the cloud bills the site) never leave tier 0. Every VM placed
beyond tier 0 gets the reason it was sent there, for its event ("site full: 0 of 4 cores
free"). Pure: no clock, no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from vocloud.core.placement import HostView, PendingVM, SchedPolicy, SchedResult, place

CLOUD_HYPERVISORS = frozenset({"ec2"})
#: the ``pool_of`` key of VMs that may never leave the site (a user's own VMs: the cloud bills
#: the site, so only pool workers within their burst limit and administrators' VMs burst)
SITE_ONLY = ""


def tier_from(attrs: Mapping[str, object], vmm: str) -> int:
    """A host's tier: its BURST_TIER attribute, else 1 for a cloud VMM and 0 for the site."""
    raw = attrs.get("BURST_TIER")
    if raw is not None and str(raw).strip():
        try:
            return int(float(str(raw)))
        except ValueError:
            pass  # a bad attribute counts as the default
    return 1 if vmm in CLOUD_HYPERVISORS else 0


def tier_of(host: HostView) -> int:
    return tier_from(host.attrs, str(host.attrs.get("HYPERVISOR", "")))


@dataclass
class TieredResult:
    result: SchedResult
    #: VM id -> why it went beyond the site (for its ``scheduled`` event)
    reasons: dict[int, str] = field(default_factory=dict)
    #: VM id -> tier of the host it was placed on
    tiers: dict[int, int] = field(default_factory=dict)


def _site_free(hosts: Sequence[HostView], placed_cpu: float) -> tuple[float, float]:
    total = sum(h.total_cpu for h in hosts)
    free = sum(max(h.total_cpu - h.used_cpu, 0.0) for h in hosts) - placed_cpu
    return max(free, 0.0), total


def place_tiered(pending: Sequence[PendingVM], hosts: Sequence[HostView], policy: SchedPolicy,
                 pool_of: Mapping[int, str] | None = None,
                 room: Mapping[str, int] | None = None) -> TieredResult:
    """Place tier by tier (lowest first); ``pool_of`` maps a VM to its pool, ``room`` a pool to
    the cloud VMs it may still add (absent: no limit of its own)."""
    pool_of, room = pool_of or {}, dict(room or {})
    tiers = sorted({tier_of(h) for h in hosts})
    if len(tiers) <= 1:
        result = place(pending, hosts, policy)
        return TieredResult(result, {}, {p.vm_id: tiers[0] if tiers else 0 for p in result.placements})
    out = TieredResult(SchedResult([], {}))
    left = list(pending)
    cpu_of = {v.id: v.cpu for v in pending}
    site = [h for h in hosts if tier_of(h) == tiers[0]]
    for n, tier in enumerate(tiers):
        if not left:
            break
        budget = policy.max_dispatch - len(out.result.placements) if policy.max_dispatch else 0
        if policy.max_dispatch and budget <= 0:
            break
        candidates = left
        if n > 0:
            candidates, held = [], []
            for vm in left:
                pool = pool_of.get(vm.id)
                if pool is None or pool not in room:
                    candidates.append(vm)
                elif room[pool] > 0:
                    room[pool] -= 1
                    candidates.append(vm)
                else:
                    held.append(vm.id)
            for vm_id in held:
                why = ("only pool workers and administrators' VMs go beyond the site"
                       if pool_of[vm_id] == SITE_ONLY else f"pool {pool_of[vm_id]} is at its burst limit")
                if why not in out.result.unplaced.get(vm_id, ""):
                    out.result.unplaced[vm_id] = f"{out.result.unplaced.get(vm_id, 'site full')}; {why}"
        tier_hosts = [h for h in hosts if tier_of(h) == tier]
        res = place(candidates, tier_hosts, dataclasses.replace(policy, max_dispatch=max(budget, 0)))
        if n > 0 and res.placements:
            placed_site = sum(cpu_of[p.vm_id] for p in out.result.placements
                              if out.tiers.get(p.vm_id) == tiers[0])
            free, total = _site_free(site, placed_site)
            names = {h.id: h.name for h in tier_hosts}
            for p in res.placements:
                why = out.result.unplaced.get(p.vm_id, "no site host matches")
                out.reasons[p.vm_id] = (f"burst to {names[p.host_id]} (tier {tier}): site full: "
                                        f"{free:g} of {total:g} cores free ({why})")
        for p in res.placements:
            out.result.placements.append(p)
            out.tiers[p.vm_id] = tier
            out.result.unplaced.pop(p.vm_id, None)
        placed = {p.vm_id for p in res.placements}
        for vm_id, msg in res.unplaced.items():
            if vm_id not in out.result.unplaced or n == 0:
                out.result.unplaced[vm_id] = msg
        left = [v for v in left if v.id not in placed]
    return out
