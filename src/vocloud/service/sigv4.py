"""AWS Signature Version 4, the pure part: canonical request, string to sign, signing key.

Why here and not in the EC2 front-end: the service layer verifies signatures (the front-end only
hands over the request as received, :class:`~vocloud.service.auth.RequestFacts`), and a layer
may not import the front-ends above it. Nothing here reads a clock, a database or a socket, so
the unit tests check it against the example values AWS publishes.

The rules follow AWS's "Create a canonical request for Signature Version 4" for services other
than S3: the URI path normalised and URI-encoded once more, query parameters decoded and
re-encoded with the unreserved set ``A-Za-z0-9-_.~``, sorted by name then value; header values
trimmed with inner runs of spaces folded to one.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote_plus

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_SPACES = re.compile(r"\s+")
_AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")
#: Bounds that keep a hostile header from costing anything: AWS's own are of the same order.
MAX_SIGNED_HEADERS = 64
MAX_AUTH_HEADER = 4096


class SignatureFormatError(ValueError):
    """The Authorization header is not a SigV4 one we can read (the message says which part)."""


@dataclass(frozen=True, slots=True)
class AuthHeader:
    """``AWS4-HMAC-SHA256 Credential=AKID/20150830/us-east-1/ec2/aws4_request,
    SignedHeaders=host;x-amz-date, Signature=hex``, parsed."""

    access_key: str
    date: str  # YYYYMMDD
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def parse_authorization(header: str) -> AuthHeader:
    if len(header) > MAX_AUTH_HEADER:
        raise SignatureFormatError("the Authorization header is too long")
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise SignatureFormatError(f"unsupported signature algorithm {algorithm[:32]!r}; use {ALGORITHM}")
    parts: dict[str, str] = {}
    for item in rest.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            raise SignatureFormatError(f"malformed Authorization component {item.strip()[:40]!r}")
        parts[key.strip()] = value.strip()
    for need in ("Credential", "SignedHeaders", "Signature"):
        if need not in parts:
            raise SignatureFormatError(f"the Authorization header lacks {need}")
    cred = parts["Credential"].split("/")
    if len(cred) != 5 or cred[4] != "aws4_request" or not all(cred):
        raise SignatureFormatError("Credential must be ACCESS_KEY/DATE/REGION/SERVICE/aws4_request")
    signed = tuple(parts["SignedHeaders"].split(";"))
    if not signed or len(signed) > MAX_SIGNED_HEADERS or any(h != h.lower() or not h for h in signed):
        raise SignatureFormatError("SignedHeaders must be lower-case names separated by ';'")
    if "host" not in signed:
        raise SignatureFormatError("the host header must be signed")
    sig = parts["Signature"]
    if not re.fullmatch(r"[0-9a-f]{64}", sig):
        raise SignatureFormatError("Signature must be 64 hexadecimal digits")
    return AuthHeader(cred[0], cred[1], cred[2], cred[3], signed, sig)


def _encode(text: str) -> str:
    return quote(text, safe="-_.~")


def canonical_uri(path: str) -> str:
    """The path as sent, normalised (``.``/``..``/``//``) and encoded once more (non-S3 rule)."""
    if not path:
        return "/"
    normal = posixpath.normpath(path)
    if path.endswith("/") and normal != "/":
        normal += "/"
    if normal.startswith("//"):
        normal = "/" + normal.lstrip("/")
    return quote(normal, safe="/~")


def canonical_query(query: str) -> str:
    """Parameters decoded (``+`` as space, as form encoding sends it) and re-encoded, sorted."""
    pairs = []
    for item in query.split("&") if query else ():
        if not item:
            continue
        key, _, value = item.partition("=")
        pairs.append((_encode(unquote_plus(key)), _encode(unquote_plus(value))))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def canonical_headers(headers: Mapping[str, str], signed: tuple[str, ...]) -> str:
    lower = {k.lower(): v for k, v in headers.items()}
    lines = []
    for name in signed:
        if name not in lower:
            raise SignatureFormatError(f"signed header {name[:64]!r} is not in the request")
        lines.append(f"{name}:{_SPACES.sub(' ', lower[name].strip())}\n")
    return "".join(lines)


def canonical_request(method: str, path: str, query: str, headers: Mapping[str, str],
                      signed: tuple[str, ...], payload_sha256: str) -> str:
    return "\n".join([
        method.upper(), canonical_uri(path), canonical_query(query),
        canonical_headers(headers, signed), ";".join(signed), payload_sha256,
    ])


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    return "\n".join([ALGORITHM, amz_date, scope,
                      hashlib.sha256(canonical.encode("utf-8")).hexdigest()])


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(("AWS4" + secret).encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def signature(secret: str, auth: AuthHeader, amz_date: str, canonical: str) -> str:
    key = signing_key(secret, auth.date, auth.region, auth.service)
    return hmac.new(key, string_to_sign(amz_date, auth.scope, canonical).encode(),
                    hashlib.sha256).hexdigest()


def is_amz_date(text: str) -> bool:
    return bool(_AMZ_DATE.match(text))

