"""Shared plumbing of the service layer: lookups, rights checks, the event log.

The service layer is the one place that enforces ACLs, quotas and the lifecycle; the REST API,
the CLI (through REST), and the later EC2/XML-RPC/OCCI front-ends all call it, so none of them
can forget a check.
"""

from __future__ import annotations

import time
from typing import Any, TypeVar

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from vocloud.errors import Forbidden, InvalidInput, NotFound
from vocloud.service.acl import ObjRef, Rule, allowed
from vocloud.service.auth import Actor
from vocloud.store.schema import Acl, Base, Event

T = TypeVar("T", bound=Base)

#: The largest id the stores hold (a signed 32-bit INTEGER column); no object has a larger one.
MAX_ID = 2**31 - 1


def is_id(text: str) -> bool:
    """ASCII digits only: ``str.isdigit`` also accepts '²' or '٣', which ``int()`` refuses or
    reads as another number."""
    return text.isascii() and text.isdigit()


def now() -> float:
    return time.time()


def load_rules(session: Session) -> list[Rule]:
    return [
        Rule(a.subject, a.resource, a.target, frozenset(a.rights.split(",")))
        for a in session.scalars(select(Acl))
    ]


def require(session: Session, actor: Actor, right: str, ref: ObjRef) -> None:
    if actor.is_admin:
        return
    if not allowed(actor, right, ref, load_rules(session)):
        raise Forbidden(f"user {actor.name} may not {right} {ref.kind} {ref.id}")


def require_admin(actor: Actor, what: str) -> None:
    if not actor.is_admin:
        raise Forbidden(f"only an administrator may {what}")


_FIND: dict[tuple[type, str, bool], Any] = {}


def find(session: Session, model: type[T], kind: str, ref: int | str, lock: bool = False) -> T:
    """An object by id (digits) or by unique name; NotFound names what was looked for."""
    column: Any
    key: int | str
    if isinstance(ref, int) or (isinstance(ref, str) and is_id(ref)):
        if len(str(ref)) > 10 or not 0 <= int(ref) <= MAX_ID:
            raise NotFound(f"{kind} {str(ref)[:20]} does not exist (ids are 0 to {MAX_ID})")
        column, key = model.id, int(ref)  # type: ignore[attr-defined]
    elif isinstance(ref, str) and ref and len(ref) <= 128 and "\x00" not in ref and hasattr(model, "name"):
        column, key = model.name, ref  # type: ignore[attr-defined]
    else:
        raise InvalidInput(f"{kind} reference must be an id or a name, got {ref!r}")
    cache_key = (model, column.key, lock)  # not the column itself: its == builds SQL
    stmt = _FIND.get(cache_key)
    if stmt is None:  # one statement per column and lock mode, built once (a hot path)
        stmt = select(model).where(column == bindparam("find_key"))
        if lock:
            stmt = stmt.with_for_update()
        _FIND[cache_key] = stmt
    obj: T | None = session.scalars(stmt, {"find_key": key}).first()
    if obj is None:
        raise NotFound(f"{kind} {ref} does not exist")
    return obj


def record(session: Session, kind: str, obj_id: int, action: str, from_state: str = "",
           to_state: str = "", message: str = "", at: float | None = None,
           host_id: int | None = None) -> None:
    session.add(Event(time=at if at is not None else now(), kind=kind, obj_id=obj_id, action=action,
                      from_state=from_state, to_state=to_state, message=message[:2000],
                      host_id=host_id))


def check_name(name: str, kind: str) -> str:
    name = name.strip()
    if not name or len(name) > 128:
        raise InvalidInput(f"{kind} name must be 1 to 128 characters")
    if not all(c.isascii() and (c.isalnum() or c in "._-") for c in name):
        raise InvalidInput(f"{kind} name {name!r} may contain only ASCII letters, digits, '.', '_' "
                           "and '-'")
    if is_id(name):
        raise InvalidInput(f"{kind} name {name!r} must not be all digits (it would look like an id)")
    return name
