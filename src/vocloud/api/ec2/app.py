"""The EC2 Query API as an ASGI app, mounted at ``/ec2`` by the composition root.

One request: read the parameters (query string and form body), authenticate with the
``ec2-sigv4`` scheme (the service recomputes the signature from the request as received), run
the action's handler in a worker thread (the service is synchronous), and answer EC2's XML. Every
answer carries a request id; every failure is EC2's error document with EC2's code: a
:mod:`vocloud.errors` error carries its code (``ec2_code``) or is mapped by class here, and a bug
is logged and answered ``InternalError`` (never a traceback).
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from anyio import to_thread

from vocloud.api.ec2 import protocol
from vocloud.api.ec2.actions import ACTIONS
from vocloud.api.ec2.protocol import Params, ProtocolError
from vocloud.errors import (
    Conflict,
    DriverError,
    Forbidden,
    IllegalAction,
    NoCapacity,
    NotFound,
    QuotaExceeded,
    Unauthorized,
    VocloudError,
)
from vocloud.service.auth import Credentials, RequestFacts
from vocloud.service.cloud import Cloud

log = logging.getLogger("vocloud.ec2")
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
MAX_BODY = 1 << 20

#: Real EC2 action-name prefixes: an unknown name with one of them is an operation EC2 has and
#: vocloud does not (UnsupportedOperation); any other name is not an EC2 action (InvalidAction).
_EC2_VERBS = ("Accept", "Allocate", "Assign", "Associate", "Attach", "Authorize", "Cancel", "Copy",
              "Create", "Delete", "Deregister", "Describe", "Detach", "Disable", "Disassociate",
              "Enable", "Get", "Import", "Modify", "Monitor", "Purchase", "Register", "Reject",
              "Release", "Replace", "Report", "Request", "Reset", "Restore", "Revoke", "Run",
              "Search", "Send", "Start", "Stop", "Terminate", "Unassign", "Unmonitor")


def ec2_code(exc: VocloudError) -> tuple[str, int]:
    """EC2's error code and HTTP status for a service error."""
    code = exc.details.get("ec2_code")
    if isinstance(exc, Unauthorized):
        return str(exc.details.get("reason") or "AuthFailure"), 401 if code is None else 400
    if isinstance(code, str):
        return code, 403 if code == "UnauthorizedOperation" else 400
    if isinstance(exc, Forbidden):
        return "UnauthorizedOperation", 403
    if isinstance(exc, QuotaExceeded):
        return "InstanceLimitExceeded", 400
    if isinstance(exc, IllegalAction):
        return "IncorrectInstanceState", 400
    if isinstance(exc, NoCapacity):
        return "InsufficientInstanceCapacity", 400
    if isinstance(exc, DriverError):
        return "InternalError", 500
    if isinstance(exc, NotFound | Conflict):
        return "InvalidParameterValue", 400
    return "InvalidParameterValue", 400


def _region(header: str) -> str:
    parts = header.split("Credential=", 1)[-1].split("/")
    region = parts[2] if len(parts) > 2 else ""
    ok = region.isascii() and region.replace("-", "").isalnum() and len(region) <= 32
    return region if ok else ""


class Ec2App:
    def __init__(self, cloud: Cloud, max_body: int = MAX_BODY) -> None:
        self.cloud = cloud
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request_id = str(uuid.uuid4())
        try:
            status, body = await self._handle(scope, receive, request_id)
        except ProtocolError as exc:
            status, body = exc.status, protocol.error(exc.code, exc.message, request_id)
        except VocloudError as exc:
            code, status = ec2_code(exc)
            body = protocol.error(code, exc.message, request_id)
        except Exception:  # a bug: logged, answered as EC2 does, never a traceback
            log.exception("EC2 request %s failed", request_id)
            status, body = 500, protocol.error("InternalError", "An internal error has occurred",
                                               request_id)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/xml;charset=UTF-8"),
                                (b"content-length", str(len(body)).encode()),
                                (b"x-amzn-requestid", request_id.encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _read(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise ProtocolError("InvalidRequest", "the client went away")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                raise ProtocolError("RequestEntityTooLarge", f"request body over {self.max_body} bytes", 413)
            chunks.append(chunk)
            if not msg.get("more_body"):
                return b"".join(chunks)

    async def _handle(self, scope: Scope, receive: Receive, request_id: str) -> tuple[int, bytes]:
        method = scope["method"]
        if method not in ("GET", "POST"):
            raise ProtocolError("InvalidAction", f"{method} is not used by the EC2 Query API; use POST", 405)
        body = await self._read(receive)
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            name = k.decode("latin-1").lower()
            value = v.decode("latin-1")
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        query = scope.get("query_string", b"").decode("latin-1")
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=False,
                              max_num_fields=protocol.MAX_PARAMS)
            if method == "POST" and body:
                if not headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
                    raise ProtocolError("InvalidParameterValue",
                                        "the body must be application/x-www-form-urlencoded")
                pairs += parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                                   max_num_fields=protocol.MAX_PARAMS)
        except (ValueError, UnicodeDecodeError):
            raise ProtocolError("InvalidParameterValue", "malformed query parameters") from None
        params = Params(pairs)
        auth = headers.get("authorization", "")
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        if auth:
            facts = RequestFacts(method=method, path=raw_path, query=query, headers=headers,
                                 body_sha256=hashlib.sha256(body).hexdigest())
            credentials = Credentials("ec2-sigv4", auth, facts)
        elif params.get("Signature") is not None:  # Signature Version 2: the parameters are signed
            both = "&".join(x for x in (query, body.decode("utf-8") if method == "POST" else "") if x)
            facts = RequestFacts(method=method, path=raw_path, query=both, headers=headers)
            credentials = Credentials("ec2-sigv2", params.get("AWSAccessKeyId") or "", facts)
        else:
            raise ProtocolError("AuthFailure", "the request is not signed (use Signature Version 4, "
                                "or 2)", 401)
        actor = await to_thread.run_sync(self.cloud.authenticate_with, credentials)
        action = params.get("Action")
        if not action:
            raise ProtocolError("MissingAction", "the request must contain the parameter Action")
        handler = ACTIONS.get(action)
        if handler is None:
            shown = action[:64]
            if shown.isalnum() and shown.startswith(_EC2_VERBS):
                raise ProtocolError("UnsupportedOperation", f"The operation {shown} is not supported "
                                    "by vocloud (docs/ec2.md lists what is)")
            raise ProtocolError("InvalidAction", f"The action {shown} is not valid for this web service.")
        region = _region(auth)
        out = await to_thread.run_sync(handler, self.cloud, actor, params, region)
        return 200, protocol.response(action, request_id, out)


def create_ec2_app(cloud: Cloud, max_body: int = MAX_BODY) -> Ec2App:
    return Ec2App(cloud, max_body)
