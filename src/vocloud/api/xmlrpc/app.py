"""``POST /RPC2``: OpenNebula's XML-RPC endpoint on the daemon's port.

One request: read the body (at most ``max_request_bytes``), parse it with the hardened parser
(``wire.py``), authenticate the session string (the ``one-session`` scheme of
``service/auth.py``), run the method (``methods.py``) in a worker thread, answer OpenNebula's
array: ``[true, body or id, 0]`` or ``[false, message, code, object id, 0]``. A request that is
not a method call at all (malformed XML, a DOCTYPE, too large, too deep, wrong parameter types)
gets the XML-RPC fault xmlrpc-c answers for it. Every answer is HTTP 200, as OpenNebula's.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from sqlalchemy.exc import DataError
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from vocloud.api.xmlrpc import wire
from vocloud.api.xmlrpc.methods import (
    API,
    INTERNAL,
    METHODS,
    Call,
    OneError,
    one_error,
    unknown_method,
)
from vocloud.errors import Unauthorized, VocloudError
from vocloud.service.auth import Actor, Credentials
from vocloud.service.cloud import Cloud

log = logging.getLogger("vocloud.api.xmlrpc")

PATH = "/RPC2"


def _xml(body: bytes) -> Response:
    return Response(body, media_type="text/xml")


def _failure(err: OneError) -> bytes:
    return wire.response([False, err.message, err.code, err.obj_id, 0])


def dispatch(cloud: Cloud, body: bytes) -> bytes:
    """A request body -> the response body (blocking: the service calls hit the store)."""
    try:
        call = wire.parse_call(body)
    except wire.WireError as exc:
        return wire.fault(exc.code, exc.message)
    method = call.name
    actor: Actor | None = None
    try:
        if not call.params or not isinstance(call.params[0], str):
            raise Unauthorized("the first parameter must be the session string 'USER:TOKEN'")
        actor = cloud.authenticate_with(Credentials("one-session", call.params[0]))
        fn = METHODS.get(method)
        if fn is None:
            raise unknown_method(method)
        value = fn(Call(cloud, actor, method, call.params[1:]))
        return wire.response([True, value, 0])
    except OneError as err:
        return _failure(err)
    except wire.WireError as exc:
        return wire.fault(exc.code, exc.message)
    except VocloudError as exc:
        return _failure(one_error(method, exc, actor))
    except DataError as exc:  # a value the store cannot hold: the service checks should have caught it
        log.warning("store refused a value in %s: %s", method, exc.orig)
        return _failure(OneError(API, f"[{method}] a value does not fit the store"))
    except RecursionError:
        return _failure(OneError(INTERNAL, f"[{method}] input is nested too deeply"))
    except Exception:  # a bug: logged, answered as OpenNebula's internal error
        log.exception("XML-RPC %s failed", method)
        return _failure(OneError(INTERNAL, f"[{method}] Internal error (see the daemon log)"))


def xmlrpc_router(max_request_bytes: int = 1 << 20) -> APIRouter:
    """The ``/RPC2`` route; the app's ``state.cloud`` serves it. The body limit is enforced
    here (the HTTP guard exempts this path) so that an oversized call gets an XML-RPC fault."""
    router = APIRouter()

    @router.post(PATH, include_in_schema=False)
    async def rpc2(request: Request) -> Response:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_request_bytes:
                return _xml(wire.fault(wire.LIMIT_EXCEEDED,
                                       f"XML-RPC request is larger than {max_request_bytes} bytes "
                                       "(setting max_request_bytes)"))
            chunks.append(chunk)
        cloud: Cloud = request.app.state.cloud
        return _xml(await run_in_threadpool(dispatch, cloud, b"".join(chunks)))

    return router
