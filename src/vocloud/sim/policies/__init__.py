"""Peer pool policies for the simulator: COBalD, cloudscheduler- and Vcycle-style (docs/policies.md).

Each peer is a planner with ``plan``'s signature (``base.PeerPolicy``) that the elastic site
calls in place of vocloud's; :mod:`vocloud.sim.compare` runs them side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vocloud.errors import InvalidInput
from vocloud.sim.policies.base import PeerContext, PeerPolicy

#: The tuned settings: chosen on LPC-EGEE's first 20,000 jobs to give each COBalD controller its
#: lowest mean wait among the settings tried (docs/policies.md lists them); never worse for it
#: than its defaults on that slice.
LINEAR_TUNED: dict[str, float] = {"low_utilisation": 0.7, "high_allocation": 0.8, "rate": 0.05}
RELATIVE_TUNED: dict[str, float] = {"low_utilisation": 0.7, "high_allocation": 0.9,
                                    "low_scale": 0.8, "high_scale": 1.5}


def _cobald(kind: str, settings: dict[str, Any]) -> Callable[[PeerContext], PeerPolicy]:
    def make(ctx: PeerContext) -> PeerPolicy:
        try:
            from vocloud.sim.policies import cobald_adapter
        except ImportError:
            raise InvalidInput(
                "the COBalD policies need the cobald package: pip install 'vocloud[peers]'") from None
        return cobald_adapter.Cobald(ctx, kind, **settings)
    return make


def _cloudscheduler(ctx: PeerContext) -> PeerPolicy:
    from vocloud.sim.policies.cloudscheduler import CloudScheduler
    return CloudScheduler(ctx)


def _vcycle(ctx: PeerContext) -> PeerPolicy:
    from vocloud.sim.policies.vcycle import Vcycle
    return Vcycle(ctx)


#: Peer name -> factory of a fresh policy (policies keep state: one per replay).
PEERS: dict[str, Callable[[PeerContext], PeerPolicy]] = {
    "cloudscheduler": _cloudscheduler,
    "vcycle": _vcycle,
    "cobald-linear": _cobald("linear", {}),
    "cobald-linear-tuned": _cobald("linear", LINEAR_TUNED),
    "cobald-relative": _cobald("relative", {}),
    "cobald-relative-tuned": _cobald("relative", RELATIVE_TUNED),
}
