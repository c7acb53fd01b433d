"""The audit log: every state-changing call a user makes, through any front-end.

Why it cannot be forgotten: :meth:`AuditService.instrument` wraps, at the end of
``Cloud.__init__``, every public method of every service the facade holds whose first argument
is an :class:`Actor` — except reads, recognised by name (:data:`READ_PREFIXES`). A front-end
(REST today; EC2, XML-RPC, OCCI next) calls ``cloud.vms.create(actor, ...)`` and the call is
recorded, with its result (``ok`` or the error code), whether the front-end knows about auditing
or not. A new service method is audited by default; only a method *named* as a read is not.

Which front-end: the :data:`FRONTEND` context variable, which a front-end sets once per request
(``audit.FRONTEND.set("ec2")``; REST does it in its request hook). Unset, the record says
``""``. Calls the daemon's loops make as ``SYSTEM`` are not audited (the event history has
them); the pool controller acting as a VO's pool identity is.

Only the outermost audited call is recorded (``Cloud.instantiate`` -> ``vms.create`` is one
record). Records older than the retention (setting ``audit_retention_days``; 0 keeps them
forever) are pruned at most once an hour, by the call that records.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import threading
from collections.abc import Callable
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.orm import Session

from vocloud.errors import Forbidden, InvalidInput, VocloudError
from vocloud.service.accounting import parse_time
from vocloud.service.auth import SYSTEM, Actor
from vocloud.service.base import find, now
from vocloud.store.db import Database
from vocloud.store.deferred import deferred_in
from vocloud.store.schema import AuditRow, User

log = logging.getLogger("vocloud.audit")

#: The front-end serving the current request ("rest", "ec2", "xmlrpc", "occi", "ui", ...).
FRONTEND: contextvars.ContextVar[str] = contextvars.ContextVar("vocloud_frontend", default="")

#: Method names that only read (never audited): everything else taking an Actor first is.
READ_PREFIXES: tuple[str, ...] = ("list", "show", "get", "events", "log", "attributes", "find",
                                   "describe", "console")  # EC2's reads: Describe*, GetConsoleOutput

_active: contextvars.ContextVar[bool] = contextvars.ContextVar("vocloud_audit_active", default=False)

PRUNE_EVERY = 3600.0
MAX_LIMIT = 10_000


def is_read(name: str) -> bool:
    return name.startswith(READ_PREFIXES)


#: Methods whose object is the one they create (named by the result's id, not an argument).
CREATES: tuple[str, ...] = ("create", "reserve", "upload", "begin_upload")


def _ids(result: Any) -> str | None:
    if isinstance(result, dict) and isinstance(result.get("id"), int):
        return str(result["id"])
    if isinstance(result, list) and result and all(isinstance(i, int) for i in result):
        return ",".join(str(i) for i in result[:20]) + (" ..." if len(result) > 20 else "")
    return None


def _object(kind: str, name: str, args: tuple[Any, ...], result: Any) -> str:
    """Which object a call was about: what it created, else its reference argument(s)."""
    made = _ids(result) if name.startswith(CREATES) else None
    if made is not None:
        return f"{kind} {made}"[:160]
    refs = [a for a in args[:2] if isinstance(a, int | str) and not isinstance(a, bool)]
    if refs and refs[0] in ("user", "group") and len(refs) > 1:  # quotas: (scope, ref)
        return f"{kind} {refs[0]} {refs[1]}"[:160]
    if refs and not name.startswith(CREATES):
        return f"{kind} {refs[0]}"[:160]
    return kind


#: Calls whose record is written in their own transaction (``AuditService.wrap``'s
#: ``enclosing``): each makes exactly one write transaction on the store and no driver or file
#: I/O, and they are the REST mix's writes (docs/performance.md). Another method may join only
#: if that stays true of it: the block holds the store's writer lock until the call returns.
IN_CALL_TRANSACTION: frozenset[str] = frozenset({"vms.create", "vms.action"})


def _row(actor: Actor, action: str, obj: str = "", result: str = "ok", message: str = "",
         frontend: str | None = None) -> dict[str, Any]:
    return {"time": now(), "user_id": actor.user_id, "user_name": actor.name[:128],
            "group_id": actor.group_id,
            "frontend": (FRONTEND.get() if frontend is None else frontend)[:16],
            "action": action[:64], "obj": obj[:160], "result": result[:32],
            "message": message[:500]}


class _Pending:
    """One audit record waiting for the group commit."""

    __slots__ = ("done", "lead", "row")

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row
        self.done = threading.Event()
        self.lead = False  # woken to write the queue, not because it was written


_INSERT = insert(cast(Table, AuditRow.__table__))


class AuditService:
    def __init__(self, db: Database, retention_days: float = 365.0) -> None:
        self.db = db
        #: records older than this many days are pruned; 0 keeps them forever (set by app/)
        self.retention_days = retention_days
        self._pruned_at = 0.0
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._writing = False

    # ---------------------------------------------------------------- the hook
    def record(self, actor: Actor, action: str, obj: str = "", result: str = "ok",
               message: str = "", frontend: str | None = None) -> None:
        """Write one record (committed before this returns; not in the call's own transaction,
        so a refused call is recorded too). Front-ends never need to call this; it is public
        for calls that bypass the services.

        Group commit: records of concurrent calls are written together, one transaction for
        all of them (the first caller writes while the others wait, then hands the pen to the
        next waiter), so 50 concurrent clients do not queue 50 times on the store's writer
        lock for their audit records alone."""
        mine = _Pending(_row(actor, action, obj, result, message, frontend))
        if self.db.in_batch():
            # a group-commit call (store/group_commit.py): the batch holds the writer lock, so
            # the record joins the batch (a savepoint of its own) instead of the queue
            with self.db.write() as s:
                self._insert(s, mine.row)
            return
        with self._queue_lock:
            self._queue.append(mine)
            lead = not self._writing
            self._writing = True
        if not lead:
            mine.done.wait()
            if not mine.lead:
                return
        self._write_queued(mine)

    def _write_queued(self, mine: _Pending) -> None:
        """Write what is queued (``mine`` among it), then let the next waiter write the rest."""
        batch: list[_Pending] = []
        try:
            with self.db.write() as s:
                # taken once the writer lock is held: what queued while waiting for it goes too
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                # a Core insert: the ORM's bulk-insert path cost as much again (performance.md)
                s.connection().execute(_INSERT, [p.row for p in batch])
                self._prune(s, batch[-1].row["time"])
        except Exception:  # the calls already happened: never turn them into failures
            if not batch:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
            log.exception("could not write %d audit record(s), the first of %s by %s", len(batch),
                          batch[0].row["action"], batch[0].row["user_name"])
        for p in batch:
            if p is not mine:
                p.done.set()
        with self._queue_lock:
            if self._queue:
                nxt = self._queue[0]
                nxt.lead = True
                nxt.done.set()
            else:
                self._writing = False

    def _prune(self, s: Session, at: float) -> None:
        if self.retention_days > 0 and at - self._pruned_at > PRUNE_EVERY:
            self._pruned_at = at
            s.execute(delete(AuditRow).where(AuditRow.time < at - self.retention_days * 86400))

    def _in_call(self, s: Session, actor: Actor, action: str, obj: str) -> None:
        """The record of a call that succeeded, in the call's own transaction."""
        self._insert(s, _row(actor, action, obj))

    def _insert(self, s: Session, row: dict[str, Any]) -> None:
        """One record in the transaction of ``s`` (the call's, or its group-commit batch's: on
        PostgreSQL there with the batch's other records, at its end, ``store/deferred.py``)."""
        deferred = deferred_in(s)
        if deferred is not None and deferred.in_batch:
            deferred.append("audit", row, self._insert_many)
            return
        self._insert_many(s, [row])

    def _insert_many(self, s: Session, rows: list[dict[str, Any]]) -> None:
        s.connection().execute(_INSERT, rows)
        self._prune(s, rows[-1]["time"])

    def wrap(self, kind: str, name: str, method: Callable[..., Any],
             enclosing: bool = False) -> Callable[..., Any]:
        """``enclosing``: the method makes one write transaction on this store and no I/O
        after it (:data:`IN_CALL_TRANSACTION`): run it inside :meth:`Database.enclosing_write`,
        so that its record commits with its work — one writer-lock round and one commit instead
        of two. A refused or failed call is rolled back and recorded on its own, as every call is
        otherwise."""
        action = f"{kind}.{name}"

        @functools.wraps(method)
        def audited(*args: Any, **kwargs: Any) -> Any:
            actor = args[0] if args else kwargs.get("actor")
            if not isinstance(actor, Actor) or actor is SYSTEM or _active.get():
                return method(*args, **kwargs)
            token = _active.set(True)
            try:
                if enclosing:
                    with self.db.enclosing_write() as block:
                        result = method(*args, **kwargs)
                        if block.session is not None:  # else it wrote nothing: recorded below
                            self._in_call(block.session, actor, action,
                                          _object(kind, name, args[1:], result))
                            return result
                else:
                    result = method(*args, **kwargs)
            except VocloudError as exc:
                self.record(actor, action, _object(kind, name, args[1:], None), exc.code,
                            exc.message)
                raise
            except Exception as exc:
                self.record(actor, action, _object(kind, name, args[1:], None), "InternalError",
                            exc.__class__.__name__)
                raise
            finally:
                _active.reset(token)
            self.record(actor, action, _object(kind, name, args[1:], result))
            return result

        audited.__vocloud_audited__ = True  # type: ignore[attr-defined]
        return audited

    def instrument(self, service: object, kind: str) -> list[str]:
        """Wrap ``service``'s state-changing methods (instance attributes shadowing the class's);
        returns their names (tests list them)."""
        wrapped = []
        for name, member in inspect.getmembers(type(service), inspect.isfunction):
            if name.startswith("_") or is_read(name):
                continue
            params = list(inspect.signature(member).parameters.values())
            if len(params) < 2 or params[1].name != "actor":
                continue
            bound = getattr(service, name)
            if getattr(bound, "__vocloud_audited__", False):
                continue
            # only where the service writes to the audit's own store (one Database object:
            # a write of another one inside the block would wait for this one's lock)
            enclosing = (f"{kind}.{name}" in IN_CALL_TRANSACTION
                         and getattr(service, "db", None) is self.db)
            setattr(service, name, self.wrap(kind, name, bound, enclosing))
            wrapped.append(name)
        return wrapped

    def instrument_all(self, facade: object) -> dict[str, list[str]]:
        """Every service the facade holds (``cloud.vms`` -> kind ``vms``), except this one."""
        out = {}
        for attr, value in vars(facade).items():
            service = type(value).__module__.startswith("vocloud.service")
            if attr.startswith("_") or value is self or not service:
                continue
            names = self.instrument(value, attr)
            if names:
                out[attr] = names
        return out

    # ---------------------------------------------------------------- reads
    def list(self, actor: Actor, user: str | None = None, since: str | float | None = None,
             limit: int = 1000) -> list[dict[str, Any]]:
        """Newest first. Administrators see everyone's; other users their own only. ``since``:
        UNIX seconds or ISO 8601."""
        if not 1 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"limit must be between 1 and {MAX_LIMIT}", attribute="limit")
        since = parse_time(since, "since")
        with self.db.read() as s:
            stmt = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
            if user:
                uid = find(s, User, "user", user).id
                if not actor.is_admin and uid != actor.user_id:
                    raise Forbidden(f"user {actor.name} may see their own audit records only")
                stmt = stmt.where(AuditRow.user_id == uid)
            if not actor.is_admin:
                stmt = stmt.where(AuditRow.user_id == actor.user_id)
            if since is not None:
                stmt = stmt.where(AuditRow.time >= since)
            return [{"id": r.id, "time": r.time, "user": r.user_name, "user_id": r.user_id,
                     "group_id": r.group_id, "frontend": r.frontend, "action": r.action,
                     "object": r.obj, "result": r.result, "message": r.message}
                    for r in s.scalars(stmt)]
