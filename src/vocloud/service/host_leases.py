"""Hypervisors leased from the batch system: requests, the node's registration, the drain.

An administrator asks for N nodes for a walltime (``vocloud host lease``); each node is one batch
job (:mod:`vocloud.batch.lease_jobs`) whose script runs the lease agent
(``python -m vocloud.cli.lease_agent``). The agent registers the node as a host and, when the batch
system ends the job (``scancel``, the walltime), says so; the lease loop
(:mod:`vocloud.engine.host_leases`) drains the host and removes it.

**How a node proves who it is.** Each lease gets its own random token, made here and shown to
nobody: only its SHA-256 is stored, and the plain token goes once into that job's script
(readable by the job's owner and the batch system's administrators, never by other users; it
reaches the agent on stdin, not argv). It allows exactly two things, for that lease only:
register once (a second registration is refused), and report the job ending. It is worth
nothing after the lease ends. The administrator's token is never in a job.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select, update

from vocloud.batch.lease_jobs import LeaseJobs, lease_script
from vocloud.core.lease_fit import LEASE_END
from vocloud.drivers.registry import Cap, DriverCatalog, Role, builtin_catalog
from vocloud.errors import Conflict, DriverError, Forbidden, InvalidInput, NotFound
from vocloud.model.host_lease import FINAL, LeaseState
from vocloud.model.lifecycle import HOLDS_HOST, HostState
from vocloud.model.walltime import parse_walltime
from vocloud.service import capacity
from vocloud.service.auth import Actor
from vocloud.service.base import now, record, require_admin
from vocloud.store.db import Database
from vocloud.store.schema import VM, Host, HostLease

MAX_NODES = 64
_PARTITION = re.compile(r"[A-Za-z0-9._-]{1,128}")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def lease_dict(row: HostLease) -> dict[str, Any]:
    return {
        "id": row.id, "batch": row.batch, "job_id": row.job_id, "partition": row.partition,
        "walltime": row.walltime, "vmm": row.vmm, "state": row.state, "host_id": row.host_id,
        "host": row.host_name, "lease_end": row.lease_end, "ending_at": row.ending_at,
        "message": row.message, "created_at": row.created_at, "ended_at": row.ended_at,
    }


class HostLeaseService:
    """Leases and the token-authenticated calls of their nodes' agents."""

    def __init__(self, db: Database, jobs: Mapping[str, LeaseJobs] | None = None, url: str = "",
                 agent: Sequence[str] = (), agent_env: Mapping[str, str] | None = None,
                 agent_wait: float = 25.0, ssh_user: str = "root",
                 catalog: DriverCatalog | None = None) -> None:
        self.db = db
        self.jobs: Mapping[str, LeaseJobs] = jobs or {}
        self.url = url
        self.agent = list(agent)
        self.agent_env = dict(agent_env or {})
        self.agent_wait = agent_wait
        self.ssh_user = ssh_user
        self.catalog = catalog or builtin_catalog()

    # ------------------------------------------------------------------ administrators
    def request(self, actor: Actor, batch: str, nodes: int, walltime: str | float,
                partition: str = "", vmm: str = "qemu", cpu: float | None = None,
                memory: int | None = None) -> list[dict[str, Any]]:
        """Submit ``nodes`` lease jobs; each row says its job id or why it failed."""
        require_admin(actor, "lease hosts")
        return self.submit(batch, nodes, walltime, partition, vmm, cpu, memory, f"by {actor.name}")

    def submit(self, batch: str, nodes: int, walltime: str | float, partition: str = "",
               vmm: str = "qemu", cpu: float | None = None, memory: int | None = None,
               by: str = "") -> list[dict[str, Any]]:
        """:meth:`request` once its caller is known to be allowed (an administrator, or the
        daemon's own auto-lease for waiting VMs)."""
        if batch not in self.jobs:
            have = ", ".join(sorted(self.jobs)) or "none (set host_lease_batch)"
            raise InvalidInput(f"no batch system {batch!r} for host leases; configured: {have}")
        if isinstance(nodes, bool) or not isinstance(nodes, int) or not 1 <= nodes <= MAX_NODES:
            raise InvalidInput(f"nodes must be 1 to {MAX_NODES}, got {nodes!r}")
        seconds = parse_walltime(str(walltime), "walltime")
        if seconds < 60:
            raise InvalidInput(f"a lease's walltime is at least 60 s (the batch system counts "
                               f"minutes), got {walltime!r}")
        if partition and not _PARTITION.fullmatch(partition):
            raise InvalidInput(f"partition must be a word (letters, digits, '.', '_', '-'), got "
                               f"{partition!r}")
        info = self.catalog.info(Role.VMM, vmm)
        if cpu is not None and not 0 < cpu <= 4096:
            raise InvalidInput(f"cpu must be between 0 and 4096 cores, got {cpu}")
        if memory is not None and not 0 < memory <= 64 * 1024 * 1024:
            raise InvalidInput(f"memory must be between 1 MiB and 64 TiB, got {memory} MiB")
        if info.can(Cap.DECLARED_CAPACITY) and (cpu is None or memory is None):
            raise InvalidInput(f"leased {vmm} hosts need cpu and memory (their declared capacity)")
        if not self.url or not self.agent:
            raise InvalidInput("host leases need host_lease_url: the daemon URL the nodes reach")
        made: list[tuple[int, str]] = []
        with self.db.write() as s:
            for _ in range(nodes):
                token = secrets.token_hex(32)
                row = HostLease(batch=batch, partition=partition, walltime=seconds, vmm=vmm,
                                cpu_m=capacity.milli(cpu) if cpu else 0, memory=memory or 0,
                                state=LeaseState.SUBMITTED.value, token_hash=_hash(token),
                                created_at=now())
                s.add(row)
                s.flush()
                made.append((row.id, token))
                record(s, "lease", row.id, "request", "", row.state, by)
        for lease_id, token in made:  # outside the transaction: sbatch may take a while
            script = lease_script(lease_id, token, self.url, self.agent, self.agent_env,
                                  self.agent_wait)
            try:
                job: str | None = self.jobs[batch].submit(lease_id, script, seconds, partition)
                error = ""
            except DriverError as exc:
                job, error = None, exc.message
            with self.db.write() as s:
                got = s.get(HostLease, lease_id, with_for_update=True)
                assert got is not None
                row = got
                if job is not None:
                    row.job_id = job
                    record(s, "lease", lease_id, "submitted", row.state, row.state, f"job {job}")
                else:
                    row.state, row.message, row.ended_at = LeaseState.FAILED.value, error, now()
                    record(s, "lease", lease_id, "submit_fail", LeaseState.SUBMITTED.value,
                           row.state, error)
        with self.db.read() as s:
            return [lease_dict(self._get(s, lease_id)) for lease_id, _ in made]

    def list(self, actor: Actor, all_: bool = False) -> list[dict[str, Any]]:
        require_admin(actor, "see host leases")
        with self.db.read() as s:
            q = select(HostLease).order_by(HostLease.id)
            if not all_:
                q = q.where(HostLease.state.not_in([st.value for st in FINAL]))
            return [lease_dict(r) for r in s.scalars(q)]

    def show(self, actor: Actor, lease_id: int) -> dict[str, Any]:
        require_admin(actor, "see host leases")
        with self.db.read() as s:
            return lease_dict(self._get(s, lease_id))

    def cancel(self, actor: Actor, lease_id: int) -> dict[str, Any]:
        """End a lease early: cancel its job; the loop drains the host as for any job end."""
        require_admin(actor, "cancel host leases")
        with self.db.write() as s:
            row = self._get(s, lease_id, lock=True)
            if LeaseState(row.state) in FINAL:
                raise Conflict(f"host lease {lease_id} is already {row.state}")
            batch, job = row.batch, row.job_id
            if row.ending_at is None:
                row.ending_at = now()
            record(s, "lease", row.id, "cancel", row.state, row.state, f"by {actor.name}")
        if job and batch in self.jobs:
            self.jobs[batch].cancel(job)
        return self.show(actor, lease_id)

    @staticmethod
    def _get(s: Any, lease_id: int, lock: bool = False) -> HostLease:
        if isinstance(lease_id, bool) or not isinstance(lease_id, int) or lease_id < 1:
            raise NotFound(f"host lease {lease_id!r} not found")
        row = s.get(HostLease, lease_id, with_for_update=lock)
        if row is None:
            raise NotFound(f"host lease {lease_id} not found")
        assert isinstance(row, HostLease)
        return row

    # ------------------------------------------------------------------ the node's agent
    def _authorized(self, s: Any, lease_id: int, token: str) -> HostLease:
        """The lease whose token this is; anything else is the same 403 (no oracle)."""
        row = s.get(HostLease, lease_id, with_for_update=True) if (
            isinstance(lease_id, int) and not isinstance(lease_id, bool) and lease_id > 0) else None
        good = row is not None and isinstance(token, str) and hmac.compare_digest(
            row.token_hash, _hash(token))
        if not good or not isinstance(row, HostLease) or LeaseState(row.state) in FINAL:
            raise Forbidden("not a valid token of a live host lease")
        return row

    def register(self, lease_id: int, token: str, address: str, started: float,
                 cpu: float | None = None, memory: int | None = None) -> dict[str, Any]:
        """The node joins as host ``lease<id>``, ending at (job start + walltime)."""
        try:
            addr = ipaddress.ip_address(str(address).strip())
        except ValueError:
            raise InvalidInput(f"address must be an IP address, got {str(address)[:80]!r}") from None
        if addr.is_unspecified or addr.is_multicast or addr.is_loopback:
            raise InvalidInput(f"address {addr} cannot be reached from the daemon")
        for label, value, limit in (("cpu", cpu, 4096.0), ("memory", memory, 64.0 * 1024 * 1024)):
            if value is not None and (isinstance(value, bool) or not 0 < value <= limit):
                raise InvalidInput(f"{label} must be more than 0 and at most {limit:g}, got {value!r}")
        at = now()
        with self.db.write() as s:
            row = self._authorized(s, lease_id, token)
            if row.registered:
                raise Conflict(f"host lease {lease_id} already registered its node")
            start = min(max(float(started), row.created_at), at) if started == started else at
            end = start + row.walltime
            name = f"lease{row.id}"
            host_addr = f"[{addr}]" if addr.version == 6 else str(addr)
            cpu_m = row.cpu_m or (capacity.milli(cpu) if cpu else 0)
            mem = row.memory or memory or 0
            if self.catalog.info(Role.VMM, row.vmm).can(Cap.DECLARED_CAPACITY) and not (cpu_m and mem):
                raise InvalidInput("this lease's node must say its cpu and memory")
            if s.scalar(select(Host.id).where(Host.name == name)) is not None:
                raise Conflict(f"host {name} already exists")
            attrs: dict[str, Any] = {LEASE_END: f"{end:.0f}", "LEASE_ID": str(row.id),
                                     "LEASE_JOB": row.job_id}
            if cpu_m:
                attrs["TOTAL_CPU"] = f"{cpu_m / 1000:g}"
            if mem:
                attrs["TOTAL_MEM"] = str(mem)
            h = Host(name=name, vmm=row.vmm, transport=f"ssh://{self.ssh_user}@{host_addr}",
                     cluster="leased", state=HostState.INIT.value, attrs=attrs,
                     total_cpu_m=cpu_m, total_mem=mem)
            s.add(h)
            s.flush()
            record(s, "host", h.id, "create", "", h.state, f"leased (lease {row.id}, job {row.job_id})")
            row.registered, row.host_id, row.host_name = True, h.id, name
            row.lease_end = end
            old = row.state
            row.state = LeaseState.RUNNING.value
            record(s, "lease", row.id, "register", old, row.state, f"host {name} at {addr}")
            return lease_dict(row)

    def ending(self, lease_id: int, token: str) -> dict[str, Any]:
        """The node's job is ending (SIGTERM): drain now. Idempotent; the agent polls it until
        ``done`` (the host has left) or the batch system kills it."""
        with self.db.write() as s:
            row = self._authorized_any(s, lease_id, token)
            if row.ending_at is None and LeaseState(row.state) not in FINAL:
                row.ending_at = now()
                record(s, "lease", row.id, "ending", row.state, row.state, "reported by the node")
            return {"id": row.id, "state": row.state,
                    "done": LeaseState(row.state) in FINAL}

    def _authorized_any(self, s: Any, lease_id: int, token: str) -> HostLease:
        """As :meth:`_authorized`, but an ended lease still answers (the agent's last poll)."""
        row = s.get(HostLease, lease_id) if (
            isinstance(lease_id, int) and not isinstance(lease_id, bool) and lease_id > 0) else None
        if row is None or not isinstance(token, str) or not hmac.compare_digest(
                row.token_hash, _hash(token)):
            raise Forbidden("not a valid token of a live host lease")
        assert isinstance(row, HostLease)
        return row

    # ------------------------------------------------------------------ for the loop
    @staticmethod
    def host_busy(s: Any, host_id: int | None) -> int:
        if host_id is None:
            return 0
        return int(s.scalar(select(func.count()).select_from(VM).where(VM.host_id == host_id)
                            .where(VM.state.in_([st.value for st in HOLDS_HOST]))) or 0)

    @staticmethod
    def remove_host(s: Any, host_id: int | None, why: str) -> None:
        """The drained host leaves (as ``host delete`` would, done by the loop)."""
        if host_id is None:
            return
        h = s.get(Host, host_id, with_for_update=True)
        if h is None:
            return
        s.execute(update(VM).where(VM.host_id == h.id).values(host_id=None))
        record(s, "host", h.id, "delete", h.state, "", why)
        s.delete(h)
