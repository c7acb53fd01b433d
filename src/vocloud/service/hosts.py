"""Hypervisor hosts: registration, enable/disable/offline, monitoring results."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, insert, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Update

from vocloud.core.burst import CLOUD_HYPERVISORS
from vocloud.core.cloud_region import region_from
from vocloud.drivers.registry import Cap, DriverCatalog, Role, builtin_catalog
from vocloud.errors import Conflict, InvalidInput
from vocloud.model.lifecycle import (
    HOLDS_HOST,
    HOST_USER_ACTIONS,
    OWED_TERMINATE,
    HostState,
    VMState,
    host_next,
)
from vocloud.service import capacity
from vocloud.service.acl import ObjRef
from vocloud.service.auth import Actor
from vocloud.service.base import check_name, find, now, record, require, require_admin
from vocloud.service.vms import transition
from vocloud.store.db import Database
from vocloud.store.schema import VM, Event, Host
from vocloud.store.sets import among

#: hosts one ``create_many`` call may register (a site's whole inventory in one request)
MAX_HOSTS_PER_REQUEST = 10_000


@dataclass(frozen=True)
class HostSpec:
    """One host of :meth:`HostService.create_many`, as :meth:`HostService.create` takes it."""

    name: str
    vmm: str = "sim"
    transport: str = "local"
    cluster: str = "default"
    cpu: float | None = None
    memory: int | None = None
    attrs: dict[str, str] = field(default_factory=dict)


def check_transport(transport: str) -> str:
    if transport == "local":
        return transport
    if transport.startswith("ssh://") and len(transport) > len("ssh://"):
        return transport
    raise InvalidInput(f"transport must be 'local' or 'ssh://[user@]address[:port]', got {transport!r}")


#: Host attributes that take capacity away from what the monitor measures (OpenNebula's names).
#: Negative values add capacity: the site's way to overcommit a host on purpose.
RESERVED_CPU, RESERVED_MEM = "RESERVED_CPU", "RESERVED_MEM"


def reserved(attrs: dict[str, Any]) -> tuple[int, int]:
    """``(milli-CPU, MiB)`` held back from a host's measured capacity by its attributes.

    A host runs more than guests (the daemon, the batch system's own services, page cache), so
    a site keeps some of it out of the scheduler's reach; a negative value overcommits instead
    (many idle worker guests on few cores). Raises :class:`InvalidInput` naming the attribute.
    """
    out = []
    for key, limit in ((RESERVED_CPU, 4096.0), (RESERVED_MEM, 64.0 * 1024 * 1024)):
        raw = attrs.get(key)
        if raw is None or str(raw).strip() == "":
            out.append(0)
            continue
        try:
            value = float(str(raw))
        except ValueError:
            raise InvalidInput(f"host attribute {key} must be a number, got {raw!r}") from None
        if not -limit <= value <= limit or value != value:
            raise InvalidInput(f"host attribute {key} must be between {-limit:g} and {limit:g}, got {raw!r}")
        if key == RESERVED_MEM and value != int(value):
            raise InvalidInput(f"host attribute {key} is in whole MiB, got {raw!r}")
        out.append(capacity.milli(value) if key == RESERVED_CPU else int(value))
    return out[0], out[1]


def check_cloud(name: str, vmm: str, attrs: dict[str, str]) -> None:
    """A cloud region's declaration (EC2_* attributes, docs/bursting.md) is checked when set,
    not at its first monitor pass."""
    if vmm in CLOUD_HYPERVISORS:
        region_from(name, attrs)


def host_dict(h: Host) -> dict[str, Any]:
    return {
        "id": h.id, "name": h.name, "state": h.state, "vmm": h.vmm, "transport": h.transport,
        "cluster": h.cluster, "running_vms": h.running_vms,
        "total_cpu": capacity.cores(h.total_cpu_m), "alloc_cpu": capacity.cores(h.alloc_cpu_m),
        "free_cpu": capacity.cores(h.total_cpu_m - h.alloc_cpu_m),
        "total_mem": h.total_mem, "alloc_mem": h.alloc_mem, "free_mem": h.total_mem - h.alloc_mem,
        "used_cpu": capacity.cores(h.used_cpu_m), "used_mem": h.used_mem,
        "attrs": dict(h.attrs or {}), "error": h.error, "monitored_at": h.monitored_at,
        "monitoring": monitoring_dict(h, now()),
    }


def monitoring_dict(h: Host, at: float) -> dict[str, Any]:
    """The monitor's backoff on this host (model/backoff.py): all zero/None while it answers."""
    failing = h.monitor_failures > 0
    next_at = h.monitor_next_at if failing else None
    return {
        "failures": h.monitor_failures, "failing_since": h.monitor_failing_since if failing else None,
        "next_attempt_at": next_at,
        "next_attempt_in": None if next_at is None else round(max(next_at - at, 0.0), 1),
        "last_error": h.error if failing else "",
    }


class HostService:
    def __init__(self, db: Database, catalog: DriverCatalog | None = None) -> None:
        self.db = db
        #: what the daemon's drivers declare (drivers/registry.py): valid VMM names, and which
        #: of them need their capacity declared
        self.catalog = catalog or builtin_catalog()

    def create(self, actor: Actor, name: str, vmm: str = "sim", transport: str = "local",
               cluster: str = "default", cpu: float | None = None, memory: int | None = None,
               attrs: dict[str, str] | None = None) -> dict[str, Any]:
        """Register a host; ``cpu``/``memory`` declare capacity for sim hosts (real hosts are
        measured by the monitor)."""
        require_admin(actor, "register hosts")
        row = self._checked(name, vmm, transport, cluster, cpu, memory, attrs)
        with self.db.write() as s:
            if s.scalar(select(Host.id).where(Host.name == row["name"])) is not None:
                raise Conflict(f"host {row['name']} already exists")
            h = Host(**row)
            s.add(h)
            s.flush()
            record(s, "host", h.id, "create", "", h.state, f"by {actor.name}")
            return host_dict(h)

    def create_many(self, actor: Actor, hosts: Sequence[HostSpec]) -> list[dict[str, Any]]:
        """Register many hosts at once, all or nothing: every host passes the same checks as
        :meth:`create` before anything is written, then one multi-row INSERT (issue 15: 2,000
        hosts one request at a time took 17.5 s). A name taken already, or twice in the list, is
        a Conflict naming it; the unique index on the name decides races with other writers."""
        require_admin(actor, "register hosts")
        if not 1 <= len(hosts) <= MAX_HOSTS_PER_REQUEST:
            raise InvalidInput(f"give between 1 and {MAX_HOSTS_PER_REQUEST} hosts, got {len(hosts)}")
        rows = []
        for i, h in enumerate(hosts):
            try:
                rows.append(self._checked(h.name, h.vmm, h.transport, h.cluster, h.cpu, h.memory,
                                          h.attrs))
            except InvalidInput as exc:  # say which host of the list is wrong
                raise InvalidInput(f"hosts[{i}] ({h.name!r}): {exc.message}") from None
        names = [r["name"] for r in rows]
        twice = sorted(n for n, k in Counter(names).items() if k > 1)
        if twice:
            raise Conflict(f"host {twice[0]} is named more than once in the request")
        at = now()
        with self.db.write() as s:
            taken: list[str] = []
            for i in range(0, len(names), 500):
                taken += s.scalars(select(Host.name).where(Host.name.in_(names[i:i + 500])))
            if taken:
                raise Conflict(f"host {sorted(taken)[0]} already exists")
            ids = list(s.scalars(insert(Host).returning(Host.id, sort_by_parameter_order=True),
                                 [{**r, "alloc_cpu_m": 0, "alloc_mem": 0, "used_cpu_m": 0,
                                   "used_mem": 0, "running_vms": 0, "error": "",
                                   "monitor_failures": 0} for r in rows]))
            s.execute(insert(Event), [
                {"time": at, "kind": "host", "obj_id": i, "action": "create", "from_state": "",
                 "to_state": HostState.INIT.value, "message": f"by {actor.name}", "host_id": None}
                for i in ids])
            by_id: dict[int, Host] = {}
            for i in range(0, len(ids), 500):
                by_id.update((h.id, h) for h in s.scalars(select(Host).where(Host.id.in_(ids[i:i + 500]))))
            return [host_dict(by_id[i]) for i in ids]

    def _checked(self, name: str, vmm: str, transport: str, cluster: str, cpu: float | None,
                 memory: int | None, attrs: dict[str, str] | None) -> dict[str, Any]:
        """A new host's row, every value checked (InvalidInput naming what is wrong)."""
        name = check_name(name, "host")
        vmm_info = self.catalog.info(Role.VMM, vmm)
        check_transport(transport)
        if cpu is not None and not 0 < cpu <= 4096:
            raise InvalidInput(f"host CPU must be between 0 and 4096 cores, got {cpu}")
        if memory is not None and not 0 < memory <= 64 * 1024 * 1024:
            raise InvalidInput(f"host memory must be between 1 MiB and 64 TiB, got {memory} MiB")
        if vmm_info.can(Cap.DECLARED_CAPACITY) and (cpu is None or memory is None):
            raise InvalidInput(f"a {vmm} host needs --cpu and --memory (its declared capacity)")
        all_attrs = {k.upper(): str(v) for k, v in (attrs or {}).items()}
        self.catalog.for_host(name, vmm, all_attrs)  # STORAGE / NETWORK must name known drivers
        check_cloud(name, vmm, all_attrs)
        reserved_cpu_m, reserved_mem = reserved(all_attrs)
        if cpu is not None:
            all_attrs["TOTAL_CPU"] = f"{cpu:g}"
        if memory is not None:
            all_attrs["TOTAL_MEM"] = str(memory)
        return {"name": name, "vmm": vmm, "transport": transport,
                "cluster": check_name(cluster, "cluster"), "state": HostState.INIT.value,
                "attrs": all_attrs,
                "total_cpu_m": max(capacity.milli(cpu) - reserved_cpu_m, 0) if cpu else 0,
                "total_mem": max(memory - reserved_mem, 0) if memory else 0}

    def list(self, actor: Actor) -> list[dict[str, Any]]:
        with self.db.read() as s:
            return [host_dict(h) for h in s.scalars(select(Host).order_by(Host.id))]

    def show(self, actor: Actor, ref: int | str) -> dict[str, Any]:
        with self.db.read() as s:
            h = find(s, Host, "host", ref)
            require(s, actor, "USE", ObjRef("HOST", h.id))
            out = host_dict(h)
            out["vms"] = list(s.scalars(
                select(VM.id).where(VM.host_id == h.id)
                .where(VM.state.in_([st.value for st in HOLDS_HOST])).order_by(VM.id)
            ))
            return out

    def update_attrs(self, actor: Actor, ref: int | str, attrs: dict[str, str]) -> dict[str, Any]:
        """Merge attributes into a host (``onehost update``); an empty value removes one.

        Capacity follows at once for reservations: the new total is applied to the last
        measurement, so the scheduler need not wait for the next probe.
        """
        require_admin(actor, "update hosts")
        changes = {k.strip().upper(): str(v) for k, v in attrs.items()}
        if not changes or any(not k for k in changes):
            raise InvalidInput("give at least one attribute KEY=VALUE (an empty VALUE removes it)")
        with self.db.write() as s:
            h = find(s, Host, "host", ref, lock=True)
            old = dict(h.attrs or {})
            new = {k: v for k, v in {**old, **changes}.items() if v != ""}
            self.catalog.for_host(h.name, h.vmm, new)  # STORAGE / NETWORK must name known drivers
            check_cloud(h.name, h.vmm, new)
            old_cpu_m, old_mem = reserved(old)
            new_cpu_m, new_mem = reserved(new)
            h.total_cpu_m = max(h.total_cpu_m + old_cpu_m - new_cpu_m, 0)
            h.total_mem = max(h.total_mem + old_mem - new_mem, 0)
            h.attrs = new
            h.monitor_next_at = None  # a failing host is probed again at once with the new attributes
            record(s, "host", h.id, "update", h.state, h.state,
                   f"by {actor.name}: {', '.join(sorted(changes))}")
            return host_dict(h)

    def action(self, actor: Actor, ref: int | str, action: str, gone: bool = False) -> dict[str, Any]:
        """``gone`` (offline only): the host will never answer again; see :meth:`_end_owed`."""
        require_admin(actor, f"{action} hosts")
        if action not in HOST_USER_ACTIONS:
            known = ", ".join(sorted(HOST_USER_ACTIONS))
            raise InvalidInput(f"unknown host action {action!r}; one of: {known}")
        if gone and action != "offline":
            raise InvalidInput(f"gone applies to offline (and delete) only, not {action}")
        with self.db.write() as s:
            h = find(s, Host, "host", ref, lock=True)
            if gone:
                self._end_owed(s, h, actor)
            if action == "offline" and h.running_vms > 0:
                raise Conflict(f"host {h.name} still holds {h.running_vms} VMs; migrate or terminate "
                               "them before taking it offline")
            self._move(s, h, action, f"by {actor.name}")
            if action == "enable":
                h.monitor_next_at = None  # the administrator says it is fixed: probe it now
            return host_dict(h)

    def delete(self, actor: Actor, ref: int | str, gone: bool = False) -> None:
        """``gone``: the host will never answer again; see :meth:`_end_owed`."""
        require_admin(actor, "delete hosts")
        with self.db.write() as s:
            h = find(s, Host, "host", ref, lock=True)
            if gone:
                self._end_owed(s, h, actor)
            busy = s.scalar(select(func.count()).select_from(VM).where(VM.host_id == h.id)
                            .where(VM.state.in_([st.value for st in HOLDS_HOST])))
            if busy:
                raise Conflict(f"host {h.name} still holds {busy} VMs; terminate or migrate them first")
            if s.scalar(select(func.count()).select_from(VM).where(VM.host_id == h.id)
                        .where(VM.state != VMState.DONE.value)):
                raise Conflict(f"host {h.name} is still the last host of stopped VMs")
            s.execute(update(VM).where(VM.host_id == h.id).values(host_id=None))
            record(s, "host", h.id, "delete", h.state, "", f"by {actor.name}")
            s.delete(h)

    @staticmethod
    def _end_owed(s: Session, h: Host, actor: Actor) -> None:
        """The administrator declares ``h`` gone for good: the terminates its VMs owe end them
        as DONE (``host_gone``) with that reason, releasing their lease, quota and images like
        any way into DONE. Every other VM it holds was not asked to end, so it is not ended:
        the caller's check refuses (naming them) and this transaction changes nothing."""
        why = f"host {h.name} declared gone for good by {actor.name}"
        owed = s.scalars(select(VM).where(VM.host_id == h.id)
                         .where(VM.state.in_([st.value for st in OWED_TERMINATE]))
                         .order_by(VM.id).with_for_update())
        for vm in list(owed):
            transition(s, vm, "host_gone", why)
            vm.error = why
        s.flush()
        s.refresh(h)
        left = list(s.execute(select(VM.id, VM.state).where(VM.host_id == h.id)
                              .where(VM.state.in_([st.value for st in HOLDS_HOST]))
                              .order_by(VM.id)))
        if left:
            listed = ", ".join(f"{i} ({st})" for i, st in left[:20])
            raise Conflict(f"host {h.name} still holds VMs that were not asked to end: {listed}; "
                           "terminate them (they end with the host) or vm recover --delete them")

    @staticmethod
    def _move(s: Session, h: Host, action: str, message: str) -> HostState:
        old = h.state
        new = host_next(h.name, old, action)
        h.state = new.value
        if old != new.value:
            record(s, "host", h.id, action, old, new.value, message)
        return new

    def report_monitor(self, host_id: int, ok: bool, total_cpu_m: int = 0, total_mem: int = 0,
                       used_cpu_m: int = 0, used_mem: int = 0, attrs: dict[str, str] | None = None,
                       error: str = "", at: float | None = None,
                       retry_in: Callable[[int], float] | None = None) -> HostState | None:
        """Apply one monitoring probe; returns the host's new state (None if it is gone).

        A failure counts towards the host's backoff: ``retry_in(failures)`` (seconds, from
        model/backoff.py) sets when the monitor probes it next, from ``at`` (the loop's clock);
        a success clears the count.
        """
        at = now() if at is None else at
        with self.db.write() as s:
            h = s.get(Host, host_id, with_for_update=True)
            if h is None or h.state == HostState.OFFLINE:
                return None
            if ok:
                _measured(h, Probe(host_id, total_cpu_m, total_mem, used_cpu_m, used_mem,
                                   attrs or {}), at)
            else:
                h.error = error
                h.monitor_failures += 1
                h.monitor_failing_since = h.monitor_failing_since or at
                h.monitor_next_at = at + retry_in(h.monitor_failures) if retry_in is not None else None
            return self._move(s, h, "monitor_ok" if ok else "monitor_fail", error)

    def report_probes(self, probes: Sequence[Probe], at: float | None = None) -> None:
        """Apply many successful probes in one transaction: the same changes as
        :meth:`report_monitor` with ``ok=True``, OFFLINE and deleted hosts skipped.

        Set-based (issue 15: loading and flushing 2,000 ORM rows was most of a monitor pass's
        database time): per chunk of hosts, one read of the columns a probe may change (locked on
        PostgreSQL), one UPDATE of ``monitored_at`` for them all, and every other column only
        where its value changed, one executemany per set of changed columns; state changes
        (INIT or ERROR -> MONITORED) are recorded in one INSERT of events."""
        at = now() if at is None else at
        wanted = {p.host_id: p for p in probes}
        ids = sorted(wanted)
        with self.db.write() as s:
            for i in range(0, len(ids), 500):
                rows = s.execute(select(*_PROBED_COLS)
                                 .where(among(s, Host.id, ids[i:i + 500]))
                                 .where(Host.state != HostState.OFFLINE.value)
                                 .order_by(Host.id).with_for_update(key_share=True)).all()
                if not rows:
                    continue
                by_cols: dict[tuple[str, ...], list[dict[str, Any]]] = {}
                events: list[dict[str, Any]] = []
                for r in rows:
                    old = r._asdict()
                    new = measured_values(r.attrs, wanted[r.id])
                    state = host_next(r.name, r.state, "monitor_ok").value
                    if state != r.state:
                        new["state"] = state
                        events.append({"time": at, "kind": "host", "obj_id": r.id,
                                       "action": "monitor_ok", "from_state": r.state,
                                       "to_state": state, "message": "", "host_id": None})
                    diff = {k: v for k, v in new.items() if old[k] != v}
                    if diff:
                        by_cols.setdefault(tuple(sorted(diff)), []).append(
                            {"b_id": r.id, **{f"b_{k}": v for k, v in diff.items()}})
                s.execute(update(Host).where(among(s, Host.id, [r.id for r in rows]))
                          .values(monitored_at=at).execution_options(synchronize_session=False))
                for cols, params in by_cols.items():
                    s.execute(_changed_update(cols), params)
                if events:
                    s.execute(insert(Event), events)


#: what a successful probe may change on a host row, read by ``report_probes``
_PROBED_COLS = (Host.id, Host.name, Host.state, Host.attrs, Host.total_cpu_m, Host.total_mem,
                Host.used_cpu_m, Host.used_mem, Host.error, Host.monitor_failures,
                Host.monitor_failing_since, Host.monitor_next_at)
_HOSTS = cast(Table, Host.__table__)


@functools.cache
def _changed_update(cols: tuple[str, ...]) -> Update:
    """``UPDATE hosts SET <cols> WHERE id = ?`` for an executemany, built once per column set."""
    return (update(_HOSTS).where(_HOSTS.c.id == bindparam("b_id"))
            .values({c: bindparam(f"b_{c}", type_=_HOSTS.c[c].type) for c in cols}))


@dataclass(frozen=True)
class Probe:
    """What one successful monitoring probe measured on a host."""

    host_id: int
    total_cpu_m: int
    total_mem: int
    used_cpu_m: int
    used_mem: int
    attrs: dict[str, str]


def measured_values(attrs: dict[str, Any] | None, p: Probe) -> dict[str, Any]:
    """The values a successful probe gives a host row whose attributes are ``attrs`` (all but
    ``monitored_at`` and ``state``)."""
    # Attributes were validated when set, so a bad one cannot stop monitoring here.
    cpu_m, mem = reserved(attrs or {})
    return {"total_cpu_m": max(p.total_cpu_m - cpu_m, 0), "total_mem": max(p.total_mem - mem, 0),
            "used_cpu_m": p.used_cpu_m, "used_mem": p.used_mem,
            "attrs": {**(attrs or {}), **p.attrs}, "error": "", "monitor_failures": 0,
            "monitor_failing_since": None, "monitor_next_at": None}


def _measured(h: Host, p: Probe, at: float) -> None:
    """A successful probe's changes to its host row."""
    for k, v in measured_values(h.attrs, p).items():
        if getattr(h, k) != v:  # an unchanged JSON attrs is not written again
            setattr(h, k, v)
    h.monitored_at = at
