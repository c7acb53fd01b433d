"""Who is asking: tokens in, an :class:`Actor` out.

Tokens are random 32-byte strings shown once; only their SHA-256 is stored, so a copy of the
database does not hand out credentials.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from vocloud.errors import Unauthorized
from vocloud.store.schema import User


@dataclass(frozen=True, slots=True)
class Actor:
    user_id: int
    name: str
    group_id: int
    is_admin: bool


#: Used by the daemon's own loops: they act with full rights.
SYSTEM = Actor(user_id=0, name="system", group_id=0, is_admin=True)


def new_token() -> str:
    return "vc_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def authenticate(session: Session, token: str | None) -> Actor:
    if not token:
        raise Unauthorized("missing token: pass 'Authorization: Bearer <token>'")
    user = session.scalars(select(User).where(User.token_hash == hash_token(token))).first()
    if user is None:
        raise Unauthorized("invalid token")
    if not user.enabled:
        raise Unauthorized(f"user {user.name} is disabled")
    return Actor(user.id, user.name, user.group_id, user.is_admin)
