"""EC2 access keys: per-user key pairs (access key id + secret) and the ``ec2-sigv4`` scheme.

Why the secret is stored at all: unlike a bearer token, a Signature Version 4 signature can only
be checked by someone who holds the secret (it is an HMAC key), so a hash is not enough. It is
kept *sealed*: encrypted with Fernet (AES-128-CBC + HMAC-SHA256, the ``cryptography`` package)
under a site key that lives in a file beside the database, never in it
(``<data_dir>/access-keys.key``, mode 0600, created by the daemon on first start). A copy of the
database alone hands out no credentials; the key file and the database together do, as
``admin.token`` does. The secret is shown once, when the key is created.

The key file is deliberately not in the site-secrets directory: files there can be handed to
VMs by name (``$SECRET[name]``, engine/secrets.py), and this one must never leave the daemon.
"""

from __future__ import annotations

import calendar
import hmac
import secrets
import string
import time
from typing import Any
from urllib.parse import parse_qsl

from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import select
from sqlalchemy.orm import Session

from vocloud.errors import Conflict, InvalidInput, NotFound, Unauthorized
from vocloud.service import sigv2, sigv4
from vocloud.service.auth import Actor, Credentials, RequestFacts, actor_of
from vocloud.service.base import find, record, require_admin
from vocloud.store.db import Database
from vocloud.store.schema import AccessKey, User

#: Access key ids: "VC" + 18 upper-case letters and digits (AWS's are 20 characters too).
KEY_PREFIX = "VC"
_ALPHABET = string.ascii_uppercase + string.digits
#: A user holds at most this many keys (AWS allows two; rotation needs two at once).
MAX_KEYS_PER_USER = 10
#: How far a request's X-Amz-Date may lie from the daemon's clock (AWS: 15 minutes).
MAX_SKEW_S = 15 * 60


def new_key_id() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(18))


def new_secret() -> str:
    return secrets.token_urlsafe(30)  # 40 characters, as AWS's


class Sealer:
    """Encrypts secrets for the store with the site key (a Fernet key, urlsafe base64)."""

    def __init__(self, key: bytes | None = None) -> None:
        """No key: a random one for this process (tests, tools); keys sealed with it do not
        survive a restart. The daemon passes the key file's content."""
        self._fernet = Fernet(key or Fernet.generate_key())

    @staticmethod
    def generate() -> bytes:
        return Fernet.generate_key()

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def unseal(self, sealed: str) -> str | None:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except (InvalidToken, ValueError):
            return None  # sealed with another site key (a database copied without its key file)


def _key_dict(k: AccessKey, user: str) -> dict[str, Any]:
    return {"access_key_id": k.key_id, "user": user, "user_id": k.user_id,
            "created_at": k.created_at}


class AccessKeyService:
    def __init__(self, db: Database, sealer: Sealer | None = None) -> None:
        self.db = db
        self.sealer = sealer or Sealer()

    def _target(self, s: Session, actor: Actor, ref: int | str | None) -> User:
        user = find(s, User, "user", ref if ref is not None else actor.user_id)
        if user.id != actor.user_id:
            require_admin(actor, "manage another user's access keys")
        return user

    def create(self, actor: Actor, user: int | str | None = None) -> dict[str, Any]:
        """A new key for ``user`` (default: the actor); the only answer that holds the secret."""
        with self.db.write() as s:
            u = self._target(s, actor, user)
            n = len(s.scalars(select(AccessKey.id).where(AccessKey.user_id == u.id)).all())
            if n >= MAX_KEYS_PER_USER:
                raise Conflict(f"user {u.name} already has {n} access keys (at most "
                               f"{MAX_KEYS_PER_USER}); delete one first")
            secret = new_secret()
            key = AccessKey(key_id=new_key_id(), user_id=u.id, secret_sealed=self.sealer.seal(secret),
                            created_at=time.time())
            s.add(key)
            s.flush()
            record(s, "user", u.id, "access-key-create", message=f"{key.key_id} by {actor.name}")
            return {**_key_dict(key, u.name), "secret_access_key": secret}

    def list(self, actor: Actor, user: int | str | None = None) -> list[dict[str, Any]]:
        with self.db.read() as s:
            u = self._target(s, actor, user)
            rows = s.scalars(select(AccessKey).where(AccessKey.user_id == u.id).order_by(AccessKey.id))
            return [_key_dict(k, u.name) for k in rows]

    def delete(self, actor: Actor, key_id: str) -> None:
        with self.db.write() as s:
            key = s.scalars(select(AccessKey).where(AccessKey.key_id == key_id[:64])).first()
            if key is None or (key.user_id != actor.user_id and not actor.is_admin):
                raise NotFound(f"access key {key_id[:64]} does not exist")
            record(s, "user", key.user_id, "access-key-delete", message=f"{key.key_id} by {actor.name}")
            s.delete(key)


class _SignedRequests:
    """What both EC2 signature schemes share: the key store, a clock, and the request facts."""

    def __init__(self, keys: AccessKeyService, clock: Any = time.time) -> None:
        self.keys = keys
        self.clock = clock

    @staticmethod
    def _facts(credentials: Credentials) -> RequestFacts:
        if credentials.request is None:
            raise Unauthorized("no request to check the signature of", reason="AuthFailure")
        return credentials.request


class SigV4Authenticator(_SignedRequests):
    """``ec2-sigv4``: ``Credentials.value`` is the Authorization header, ``Credentials.request``
    the request as received; the signature is recomputed with the key's secret.

    Refusals are :class:`Unauthorized` whose ``reason`` detail is EC2's own code
    (``AuthFailure``, ``SignatureDoesNotMatch``, ``RequestExpired``), so the front-end can
    answer as EC2 does without deciding anything itself."""

    scheme = "ec2-sigv4"

    def authenticate(self, session: Session, credentials: Credentials) -> Actor:
        facts = self._facts(credentials)
        try:
            auth = sigv4.parse_authorization(credentials.value)
        except sigv4.SignatureFormatError as exc:
            raise Unauthorized(str(exc), reason="AuthFailure") from None
        headers = {k.lower(): v for k, v in facts.headers.items()}
        amz_date = headers.get("x-amz-date", "")
        if not sigv4.is_amz_date(amz_date):
            raise Unauthorized("X-Amz-Date must be present, as YYYYMMDDTHHMMSSZ", reason="AuthFailure")
        if amz_date[:8] != auth.date:
            raise Unauthorized("the credential scope's date differs from X-Amz-Date",
                               reason="SignatureDoesNotMatch")
        try:
            stamp = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            raise Unauthorized("X-Amz-Date is not a date", reason="AuthFailure") from None
        if abs(self.clock() - stamp) > MAX_SKEW_S:
            raise Unauthorized(f"request timestamp {amz_date} is more than {MAX_SKEW_S // 60} "
                               "minutes from the server's time", reason="RequestExpired")
        key, secret = _key_and_secret(session, self.keys, auth.access_key)
        try:
            canonical = sigv4.canonical_request(facts.method, facts.path, facts.query, facts.headers,
                                                auth.signed_headers, facts.body_sha256)
        except sigv4.SignatureFormatError as exc:
            raise Unauthorized(str(exc), reason="SignatureDoesNotMatch") from None
        expected = sigv4.signature(secret, auth, amz_date, canonical)
        if not hmac.compare_digest(expected, auth.signature):
            raise Unauthorized("the request signature we calculated does not match the signature "
                               "you provided; check your secret access key and signing method",
                               reason="SignatureDoesNotMatch")
        return _owner(session, key)


class SigV2Authenticator(_SignedRequests):
    """``ec2-sigv2``: ``Credentials.value`` is the ``AWSAccessKeyId`` parameter,
    ``Credentials.request.query`` every parameter of the request (query string and form body),
    as received. Refusals carry EC2's codes in ``reason``, as :class:`SigV4Authenticator`'s."""

    scheme = "ec2-sigv2"

    def authenticate(self, session: Session, credentials: Credentials) -> Actor:
        facts = self._facts(credentials)
        try:
            params = parse_qsl(facts.query, keep_blank_values=True, max_num_fields=5000)
        except ValueError:
            raise Unauthorized("malformed parameters", reason="AuthFailure") from None
        p = dict(params)
        method = p.get("SignatureMethod", "")
        if p.get("SignatureVersion") != "2" or method not in sigv2.METHODS:
            raise Unauthorized("Signature Version 2 needs SignatureVersion=2 and SignatureMethod "
                               "HmacSHA256 or HmacSHA1", reason="AuthFailure")
        now = self.clock()
        if "Expires" in p:
            expires = sigv2.parse_time(p["Expires"])
            if expires is None or expires < now:
                raise Unauthorized("the request has expired (Expires)", reason="RequestExpired")
        else:
            stamp = sigv2.parse_time(p.get("Timestamp", ""))
            if stamp is None:
                raise Unauthorized("Timestamp or Expires is required", reason="AuthFailure")
            if abs(now - stamp) > MAX_SKEW_S:
                raise Unauthorized(f"request timestamp {p['Timestamp'][:32]} is more than "
                                   f"{MAX_SKEW_S // 60} minutes from the server's time",
                                   reason="RequestExpired")
        key, secret = _key_and_secret(session, self.keys, credentials.value)
        host = {k.lower(): v for k, v in facts.headers.items()}.get("host", "")
        expected = sigv2.signature(secret, method, sigv2.string_to_sign(facts.method, host, facts.path,
                                                                        params))
        if not hmac.compare_digest(expected, p.get("Signature", "")):
            raise Unauthorized("the request signature we calculated does not match the signature "
                               "you provided", reason="SignatureDoesNotMatch")
        return _owner(session, key)


def _key_and_secret(session: Session, keys: AccessKeyService, key_id: str) -> tuple[AccessKey, str]:
    """The access key and its unsealed secret, or EC2's ``AuthFailure`` (both signatures)."""
    key = session.scalars(select(AccessKey).where(AccessKey.key_id == key_id[:64])).first()
    if key is None:
        raise Unauthorized("AWS was not able to validate the provided access credentials",
                           reason="AuthFailure")
    secret = keys.sealer.unseal(key.secret_sealed)
    if secret is None:
        raise Unauthorized("this access key cannot be read with the site's key file", reason="AuthFailure")
    return key, secret


def _owner(session: Session, key: AccessKey) -> Actor:
    user = session.get(User, key.user_id)
    if user is None:
        raise Unauthorized("the access key's user is gone", reason="AuthFailure")
    return actor_of(user)


def check_key_id(text: str) -> str:
    if not text or len(text) > 64 or not text.isascii() or not text.isalnum():
        raise InvalidInput(f"{text[:64]!r} is not an access key id")
    return text
