"""AWS Signature Version 2 (the Query APIs' older scheme), the pure part.

Old EC2 clients (libcloud's ``signature_version="2"``, euca2ools, HTCondor's EC2 GAHP of its
time) sign the sorted request parameters instead of a canonical request::

    StringToSign = METHOD \\n host-header-lowercase \\n path \\n sorted, RFC 3986-encoded params

and send ``Signature`` (base64 HMAC-SHA256 or HMAC-SHA1), ``SignatureVersion=2``,
``SignatureMethod``, ``AWSAccessKeyId`` and a ``Timestamp`` or ``Expires`` as parameters.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import time
from collections.abc import Sequence
from urllib.parse import quote

METHODS = {"HmacSHA256": hashlib.sha256, "HmacSHA1": hashlib.sha1}


def string_to_sign(method: str, host: str, path: str, params: Sequence[tuple[str, str]]) -> str:
    pairs = sorted((k, v) for k, v in params if k != "Signature")
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs)
    return "\n".join((method.upper(), host.lower(), path or "/", query))


def signature(secret: str, method_name: str, text: str) -> str:
    digest = METHODS[method_name]
    return base64.b64encode(hmac.new(secret.encode(), text.encode(), digest).digest()).decode()


def parse_time(text: str) -> float | None:
    """ISO 8601 UTC as the clients send it (``2026-12-02T03:36:24Z``, with optional
    fractions), seconds since the epoch; None if unreadable."""
    core = text.strip()
    if core.endswith("Z"):
        core = core[:-1]
    core = core.split(".")[0]
    try:
        return float(calendar.timegm(time.strptime(core, "%Y-%m-%dT%H:%M:%S")))
    except ValueError:
        return None
