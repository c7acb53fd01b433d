"""The host-lease loop: follow each lease's batch job, drain its host in time, let it leave.

Level-triggered like the other loops: each pass reads the live leases from the store and their
jobs from the batch system, asks :func:`vocloud.core.lease_fit.lease_next` what to do, and takes
that step. Draining = the host is disabled (no new VMs) and each VM on it is asked to
``terminate``: an ACPI shutdown first, which the lifecycle loop escalates to a hard stop after
``shutdown_timeout`` (engine/reconcile.py). A drained host is removed and its job cancelled if
it still runs (the node goes back to the batch system early).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import func, select

from vocloud.batch.lease_jobs import LeaseJobs
from vocloud.core.lease_fit import auto_lease_count, lease_next
from vocloud.errors import IllegalAction, VocloudError
from vocloud.model.host_lease import FINAL, JobView, LeaseState
from vocloud.model.lifecycle import HOLDS_HOST, HostState, VMState, host_next
from vocloud.service.base import record
from vocloud.service.host_leases import HostLeaseService
from vocloud.service.vms import transition
from vocloud.store.db import Database
from vocloud.store.schema import VM, Host, HostLease

log = logging.getLogger("vocloud.engine.leases")
SUBMIT_GRACE = 300.0  # a lease still without a job id after this long was never submitted


class LeaseLoop:
    def __init__(self, db: Database, jobs: Mapping[str, LeaseJobs], drain_lead: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.jobs = jobs
        self.drain_lead = drain_lead
        self.clock = clock

    def reconcile_once(self) -> None:
        with self.db.read() as s:
            live = [(r.id, r.batch, r.job_id) for r in s.scalars(
                select(HostLease).where(HostLease.state.not_in([st.value for st in FINAL])))]
        if not live:
            return
        views: dict[tuple[str, str], JobView] = {}
        for batch in {b for _, b, _ in live}:
            ids = [j for _, b, j in live if b == batch and j]
            if batch in self.jobs and ids:
                for j, v in self.jobs[batch].states(ids).items():
                    views[(batch, j)] = v
        for lease_id, batch, job in live:
            # no job id yet: being submitted right now (or the daemon died mid-way: see _step)
            try:
                self._step(lease_id, views.get((batch, job), JobView.PENDING))
            except VocloudError as exc:
                log.warning("host lease %s: %s", lease_id, exc.message)

    def _step(self, lease_id: int, job: JobView) -> None:
        at = self.clock()
        cancel: tuple[str, str] | None = None
        with self.db.write() as s:
            row = s.get(HostLease, lease_id, with_for_update=True)
            if row is None or LeaseState(row.state) in FINAL:
                return
            old = LeaseState(row.state)
            if not row.job_id and at - row.created_at > SUBMIT_GRACE:
                job = JobView.GONE  # its submission never finished (the daemon stopped mid-way)
            busy = HostLeaseService.host_busy(s, row.host_id)
            new, why = lease_next(old, job, at, row.lease_end, self.drain_lead,
                                  row.ending_at is not None, busy == 0)
            if new is LeaseState.DRAINING and old is not new and busy == 0:  # nothing to drain
                new, why = LeaseState.ENDED, f"{why}; no VM to drain"
            if new is not old:
                row.state = new.value
                record(s, "lease", row.id, new.value.lower(), old.value, new.value, why, at=at)
                log.info("host lease %s: %s -> %s (%s)", row.id, old.value, new.value, why)
            if new is LeaseState.DRAINING:
                self._drain(s, row, why or "draining")
            if new in FINAL:
                row.ended_at = at
                HostLeaseService.remove_host(s, row.host_id, f"lease {row.id} ended: {why}")
                if job is not JobView.GONE and row.job_id:
                    cancel = (row.batch, row.job_id)
        if cancel is not None and cancel[0] in self.jobs:
            self.jobs[cancel[0]].cancel(cancel[1])

    @staticmethod
    def _drain(s: object, row: HostLease, why: str) -> None:
        """Disable the host and ask every VM on it to shut down (again each pass: a VM that was
        still booting is asked once it can be)."""
        from sqlalchemy.orm import Session

        assert isinstance(s, Session)
        h = s.get(Host, row.host_id, with_for_update=True) if row.host_id is not None else None
        if h is None:
            return
        if h.state != HostState.DISABLED.value:
            old = h.state
            h.state = host_next(h.name, old, "disable").value
            record(s, "host", h.id, "disable", old, h.state, f"lease {row.id} draining: {why}")
        for vm in s.scalars(select(VM).where(VM.host_id == h.id)
                            .where(VM.state.in_([st.value for st in HOLDS_HOST]))
                            .with_for_update()):
            try:
                transition(s, vm, "terminate", f"host lease {row.id} ends: {why}")
            except IllegalAction:
                continue  # already shutting down, or in a step that cannot be interrupted


@dataclass(frozen=True)
class AutoLease:
    """``host_lease_auto``: lease nodes by itself when VMs with a known end wait for room."""

    batch: str
    nodes: int
    walltime: float
    partition: str = ""
    vmm: str = "qemu"
    cpu: float | None = None
    memory: int | None = None
    grace: float = 30.0  # a VM waits this long before it counts


class AutoLeaser:
    """One pass: count the VMs that wait and could run on a new lease; lease one node."""

    def __init__(self, db: Database, service: HostLeaseService, auto: AutoLease, drain_lead: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.db, self.service, self.auto, self.drain_lead = db, service, auto, drain_lead
        self.clock = clock

    def once(self) -> int:
        at = self.clock()
        longest = self.auto.walltime - self.drain_lead - 60  # a minute for the node to come
        with self.db.read() as s:
            waiting = int(s.scalar(
                select(func.count()).select_from(VM).where(VM.state == VMState.PENDING.value)
                .where(VM.walltime.is_not(None)).where(VM.walltime <= longest)
                .where(VM.state_changed_at <= at - self.auto.grace)) or 0)
            live = list(s.scalars(select(HostLease.state).where(
                HostLease.state.not_in([st.value for st in FINAL]))))
        n = auto_lease_count(waiting, live.count(LeaseState.SUBMITTED.value), len(live),
                             self.auto.nodes)
        if n:
            a = self.auto
            rows = self.service.submit(a.batch, n, a.walltime, a.partition, a.vmm, a.cpu, a.memory,
                                       f"auto-lease: {waiting} VMs waiting for room")
            log.info("auto-lease: %s VMs wait; leased %s", waiting, [r["id"] for r in rows])
        return n
