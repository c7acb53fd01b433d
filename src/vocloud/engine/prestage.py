"""The pool controller's pre-stage of a pool's image before its boots: the shell around
:func:`vocloud.core.prestage.decide` (docs/image-distribution.md, "Before a pool's boots").

:class:`Prestager` remembers, per image, the hosts known to hold it and the last distribution
it started (in memory: after a restart the first boots start one again, which finds the hosts
that hold the image at once and sends nothing to them). The controller asks :meth:`gate` once
per pass for each pool with requests waiting for a VM; the distribution runs in the
:class:`~vocloud.service.distribution.DistributionService`'s thread as the pool controller's own
act (no user asks for it, so none can point it at hosts of their choosing: the hosts are the
site's that could take the pool's workers, the image is the pool's, checked with the pool
identity's rights).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from vocloud.core.prestage import Candidate, Decision, Mode, Staging, decide
from vocloud.errors import VocloudError
from vocloud.model.lifecycle import HostState
from vocloud.service.distribution import STORING_VMMS, DistributionService
from vocloud.store.schema import Host

log = logging.getLogger("vocloud.elastic")


@dataclass(frozen=True, slots=True)
class PrestageSettings:
    """The site's defaults (``pool_prestage*`` settings); a pool's ``prestage`` overrides mode."""

    mode: Mode = Mode.WAIT
    wait_s: float = 300.0
    max_hosts: int = 64
    fanout: int = 2


@dataclass
class _Run:
    dist_id: int
    hosts: tuple[str, ...]
    started_at: float


@dataclass
class Prestager:
    distributions: DistributionService
    settings: PrestageSettings = field(default_factory=PrestageSettings)
    _holders: dict[int, set[str]] = field(default_factory=dict)  # image id -> hosts holding it
    _runs: dict[int, _Run] = field(default_factory=dict)  # image id -> last distribution

    def staging(self, image_id: int) -> Staging | None:
        """The last distribution of ``image_id`` as the pure decision sees it (and what it
        verified is remembered as held once it is over)."""
        run = self._runs.get(image_id)
        if run is None:
            return None
        view = self.distributions.peek(run.dist_id)
        if view is None:  # forgotten (the service keeps the last 50): over, nothing learnt
            return Staging(run.hosts, started_at=run.started_at, done=True)
        holders = frozenset(h["host"] for h in view["hosts"] if h.get("state") in ("verified", "held"))
        failed = frozenset(h["host"] for h in view["hosts"] if h.get("state") == "failed")
        done = view["state"] != "running"
        if done:
            self._holders.setdefault(image_id, set()).update(holders)
        return Staging(run.hosts, holders, failed, run.started_at, done)

    def gate(self, mode: Mode, pool: str, image: tuple[int, str], waiting: int,
             candidates: Sequence[Candidate], unplaced: int, now: float,
             wait_s: float) -> tuple[Decision, int | None]:
        """The decision for one pool's ``waiting`` requests, and the id of the distribution it
        started (``None``: none started this call)."""
        image_id, name = image
        d = decide(mode, name, waiting, candidates, frozenset(self._holders.get(image_id, ())),
                   self.staging(image_id), now, wait_s, self.settings.max_hosts, unplaced)
        if not d.start:
            return d, None
        try:
            dist_id = self.distributions.start_for_pool(image_id, d.start, self.settings.fanout, pool)
        except VocloudError as exc:  # e.g. the image vanished: boot as without pre-staging
            log.warning("pool %s: cannot pre-stage image %s: %s", pool, name, exc.message)
            return Decision(bind=waiting), None
        self._runs[image_id] = _Run(dist_id, d.start, now)
        return d, dist_id


def candidates(hosts: Sequence[Host], cores: int, memory_mib: int,
               avoid: Sequence[str] = ()) -> list[Candidate]:
    """The hosts that could take one of the pool's workers now, in the site's order (host id):
    MONITORED hosts whose driver keeps image files, not in the pool's host backoff, with how
    many workers of ``cores`` x ``memory_mib`` their free capacity holds."""
    out = []
    skip = set(avoid)
    for h in sorted(hosts, key=lambda h: h.id):
        if h.vmm not in STORING_VMMS or h.state != HostState.MONITORED.value or h.name in skip:
            continue
        cpu = (h.total_cpu_m - h.alloc_cpu_m) // max(cores * 1000, 1)
        mem = (h.total_mem - h.alloc_mem) // max(memory_mib, 1)
        out.append(Candidate(h.name, max(min(cpu, mem), 0)))
    return out
