"""Who is asking: credentials in, an :class:`Actor` out.

Authentication is pluggable. A front-end turns whatever its protocol carries into
:class:`Credentials` (a scheme name and the secret material, plus the request facts a signature
scheme needs) and hands them to the :class:`Authenticators` registry, which passes them to the
:class:`Authenticator` registered for that scheme. Every scheme answers with the same
:class:`Actor`, so the service layer never knows how a user proved who they are.

Schemes today and next:

- ``bearer`` (:class:`BearerTokens`): random 32-byte tokens shown once; only their SHA-256 is
  stored, so a copy of the database does not hand out credentials. The REST API uses it.
- ``ec2-sigv4`` (:class:`vocloud.service.access_keys.SigV4Authenticator`, the EC2 Query API):
  ``Credentials.value`` is the request's ``Authorization`` header, ``Credentials.request`` the
  request as received; the authenticator looks up the access key, unseals its secret and
  recomputes the signature (``service/sigv4.py``). Registered by :class:`~vocloud.service.cloud.Cloud`.
- ``ec2-sigv2`` (:class:`vocloud.service.access_keys.SigV2Authenticator`): EC2's older signature
  of the request parameters (``service/sigv2.py``), for old clients.
- ``one-session`` (:class:`OneSessions`, for OpenNebula XML-RPC): ``Credentials.value`` is the
  ``user:password`` session string of each call, the password being the user's bearer token.
- ``basic`` (:class:`BasicTokens`, for OpenNebula's OCCI server as libcloud speaks it): HTTP
  Basic ``user:token``; the token names the user exactly as a bearer token does, and the user
  name must be that user's. Registered by the OCCI front-end's ``mount``, not by default.

A new scheme is one class with ``scheme`` and ``authenticate``, registered with
``Authenticators.register``; no front-end or service method changes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from sqlalchemy import Connection, bindparam, select
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


@dataclass(frozen=True, slots=True)
class RequestFacts:
    """What a signature scheme signs: the request as the front-end received it."""

    method: str = ""
    path: str = ""
    query: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    body_sha256: str = ""


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a front-end extracted from a request; ``value`` is never logged."""

    scheme: str
    value: str
    request: RequestFacts | None = None

    def __repr__(self) -> str:  # keep secrets out of tracebacks and logs
        return f"Credentials(scheme={self.scheme!r}, value=<{len(self.value)} chars>)"


@runtime_checkable
class Authenticator(Protocol):
    """One authentication scheme: credentials of that scheme -> the :class:`Actor`, or
    :class:`~vocloud.errors.Unauthorized` (never another error: a front-end maps it to its
    protocol's 401)."""

    scheme: str

    def authenticate(self, session: Session, credentials: Credentials) -> Actor: ...


def new_token() -> str:
    return "vc_" + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


#: Longest token accepted; ours are 46 characters. Longer input is refused before hashing.
MAX_TOKEN = 256


def actor_of(user: User) -> Actor:
    """The Actor of a user row (every scheme ends here): a disabled user is refused."""
    if not user.enabled:
        raise Unauthorized(f"user {user.name} is disabled")
    return Actor(user.id, user.name, user.group_id, user.is_admin)


class BearerTokens:
    """``Authorization: Bearer <token>``: the token's SHA-256 names the user.

    ``on_connection``: one Core statement, so it runs on a plain connection (no ORM session
    per request: about half the cost of the lookup, docs/performance.md)."""

    scheme = "bearer"
    on_connection = True

    def authenticate(self, session: Session | Connection, credentials: Credentials) -> Actor:
        token = credentials.value
        if not token:
            raise Unauthorized("missing token: pass 'Authorization: Bearer <token>'")
        if len(token) > MAX_TOKEN or not token.isascii() or not token.isprintable():
            raise Unauthorized("invalid token")
        digest = hash_token(token)
        row = session.execute(_BY_TOKEN, {"digest": digest}).first()
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            raise Unauthorized("invalid token")
        if not row.enabled:
            raise Unauthorized(f"user {row.name} is disabled")
        return Actor(row.id, row.name, row.group_id, row.is_admin)


#: Every request's lookup, built once, Core columns only (no ORM object, no ORM compilation).
_USERS = User.__table__.c
_BY_TOKEN = (select(_USERS.id, _USERS.name, _USERS.group_id, _USERS.is_admin, _USERS.enabled,
                    _USERS.token_hash)
             .where(_USERS.token_hash == bindparam("digest")).limit(1))


def user_with_token(session: Session, name: str, token: str, mismatch: str) -> Actor:
    """The schemes that send ``user`` + ``token`` (OCCI's Basic, OpenNebula's session): the
    token decides who it is, exactly as a bearer token; the name must then be that user's, so a
    client configured with the wrong user fails instead of acting as the token's owner."""
    actor = BearerTokens().authenticate(session, Credentials("bearer", token))
    if not hmac.compare_digest(actor.name.encode(), name.encode()):
        raise Unauthorized(mismatch)
    return actor


_SHA1_HEX = re.compile(r"^[0-9a-fA-F]{40}$")


class BasicTokens:
    """``Authorization: Basic base64(user:token)``: the password is the user's token.

    Why only the plain token: libcloud's OpenNebula driver sends ``SHA1(token)`` as the password
    unless ``api_version="3.8", plain_auth=True``. vocloud stores only the SHA-256 of a token, and
    a SHA-1 of the token cannot be checked against that without keeping a second, SHA-1-derived
    digest per token (a schema change, and a second credential that never expires with the
    token's rotation rules). A 40-hex-digit password is therefore refused with a message that
    names the client setting to change (docs/occi.md).
    """

    scheme = "basic"

    def authenticate(self, session: Session, credentials: Credentials) -> Actor:
        raw = credentials.value.strip()
        if not raw or len(raw) > 4 * MAX_TOKEN:
            raise Unauthorized("missing or oversized Basic credentials: pass user:token")
        try:
            decoded = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise Unauthorized("Basic credentials are not base64 of user:token") from None
        name, sep, token = decoded.partition(":")
        if not sep or not name or not token:
            raise Unauthorized("Basic credentials must be user:token")
        if _SHA1_HEX.match(token):
            raise Unauthorized("a SHA1 password cannot be checked (vocloud stores only a SHA-256 of "
                               "each token): send the token itself (libcloud: api_version='3.8', "
                               "plain_auth=True)")
        return user_with_token(session, name, token, "the token does not belong to that user")


class OneSessions:
    """OpenNebula's ``USER:PASSWORD`` session string (the first parameter of every XML-RPC
    call), the password being the user's vocloud token: the token names the user, and the user
    name must be that user's. Nothing new is stored: the same SHA-256 as ``bearer``."""

    scheme = "one-session"

    def authenticate(self, session: Session, credentials: Credentials) -> Actor:
        name, sep, token = credentials.value.partition(":")
        if not sep or not name or len(name) > 128:
            raise Unauthorized("invalid session: pass 'USER:TOKEN'")
        return user_with_token(session, name, token, "invalid token")


class Authenticators:
    """The registry of schemes a site accepts, keyed by scheme name (lower case)."""

    def __init__(self, *authenticators: Authenticator) -> None:
        self._by_scheme: dict[str, Authenticator] = {}
        for a in authenticators:
            self.register(a)

    def register(self, authenticator: Authenticator) -> None:
        self._by_scheme[authenticator.scheme.lower()] = authenticator

    @property
    def schemes(self) -> list[str]:
        return sorted(self._by_scheme)

    def on_connection(self, credentials: Credentials | None) -> bool:
        """Whether ``credentials``' scheme reads the store with Core statements only, so that
        :meth:`authenticate` may be given a plain connection instead of an ORM session."""
        if credentials is None:
            return False
        auth = self._by_scheme.get(credentials.scheme.lower())
        return bool(getattr(auth, "on_connection", False))

    def authenticate(self, session: Session | Connection, credentials: Credentials | None) -> Actor:
        """``session``: a plain connection only where :meth:`on_connection` says so."""
        if credentials is None:
            raise Unauthorized("missing credentials: pass 'Authorization: Bearer <token>'")
        auth = self._by_scheme.get(credentials.scheme.lower())
        if auth is None:
            raise Unauthorized(f"authentication scheme {credentials.scheme[:32]!r} is not accepted here; "
                               f"use one of: {', '.join(self.schemes)}")
        return auth.authenticate(session, credentials)  # type: ignore[arg-type]


def default_authenticators() -> Authenticators:
    """What every site accepts today: bearer tokens, and OpenNebula sessions carrying them."""
    return Authenticators(BearerTokens(), OneSessions())


def authenticate(session: Session, token: str | None) -> Actor:
    """A bearer token -> its Actor (the shortcut the CLI-facing code and tests use)."""
    return BearerTokens().authenticate(session, Credentials("bearer", token or ""))
