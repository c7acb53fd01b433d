"""REST routes for site operations: accounting (``/api/v1/accounting``, its APEL export) and the
audit log (``/api/v1/audit``). A thin skin over ``service/accounting.py`` and
``service/audit.py``, which hold the rights checks (an administrator sees all, other users
their own). The app includes :func:`router` (``app/daemon.py``).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Receive, Scope, Send

from vocloud.api.common import OneHopRoute, Who, ok
from vocloud.api.http import JSONResponse
from vocloud.service.audit import FRONTEND
from vocloud.service.cloud import Cloud

Time = Annotated[str | None, Query(max_length=40, description="UNIX seconds or ISO 8601 (UTC unless "
                                                                "an offset is given)")]
Ref = Annotated[str | None, Query(min_length=1, max_length=128, description="id or name")]


class UsageRow(BaseModel):
    key: str | None
    id: int | None
    vms: int
    vm_hours: float
    cpu_hours: float
    gib_hours: float
    cost: float


class UsageTotal(BaseModel):
    vms: int
    vm_hours: float
    cpu_hours: float
    gib_hours: float
    cost: float


class ShowbackPrices(BaseModel):
    cpu_hour: float
    gib_hour: float


class Accounting(BaseModel):
    """Usage in [from, to) grouped by ``by``; ``cost`` = core-hours * cpu_hour + GiB-hours *
    gib_hour (the showback settings)."""

    from_: float = Field(alias="from")
    to: float
    from_iso: str
    to_iso: str
    by: str
    prices: ShowbackPrices
    rows: list[UsageRow]
    total: UsageTotal


class AuditRecord(BaseModel):
    id: int
    time: float
    user: str
    user_id: int
    group_id: int
    frontend: str
    action: str
    object: str
    result: str
    message: str


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v1", route_class=OneHopRoute)

    def cloud_of(request: Request) -> Cloud:
        c: Cloud = request.app.state.cloud
        return c

    named = {"x-errors": [404]}  # ?vo= / ?user= naming no such group or user

    @r.get("/accounting", responses=ok(Accounting), openapi_extra=named)
    def accounting(request: Request, who: Who,
                   by: Literal["vo", "user", "host", "pool", "vm", "day", "month"] = "vo",
                   from_: Annotated[str | None, Query(alias="from", max_length=40,
                                                      description="start (inclusive): UNIX seconds "
                                                      "or ISO 8601; default: the beginning")] = None,
                   to: Time = None, vo: Ref = None, user: Ref = None) -> JSONResponse:
        """VM-hours, core-hours, GiB-hours and showback cost per VO, user, host, pool, VM, day
        or month over [from, to). Users other than administrators see their own VMs only."""
        return JSONResponse(cloud_of(request).accounting.get_usage(
            who, since=from_, until=to, by=by, vo=vo, user=user))

    @r.get("/accounting/apel", responses={200: {"description": "APEL cloud usage message "
                                                               "(APEL-cloud-message: v0.4)",
                                                "content": {"text/plain": {}}}},
           openapi_extra=named)
    def accounting_apel(request: Request, who: Who,
                        from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
                        to: Time = None, vo: Ref = None, user: Ref = None) -> Response:
        """The VMs that used resources in [from, to) as APEL cloud usage records (v0.4)."""
        body = cloud_of(request).accounting.get_apel(who, since=from_, until=to, vo=vo, user=user)
        return Response(body, media_type="text/plain; charset=utf-8")

    @r.get("/audit", responses=ok(list[AuditRecord]), openapi_extra=named)
    def audit(request: Request, who: Who, user: Ref = None,
              since: Time = None,
              limit: Annotated[int, Query(ge=1, le=10_000)] = 1000) -> JSONResponse:
        """State-changing calls, newest first: administrators see all, other users their own."""
        return JSONResponse(cloud_of(request).audit.list(who, user=user, since=since, limit=limit))

    return r


#: Front-end names for the audit log, by the first segment of the request path; any other
#: front-end is named by its first segment (``/compute/...`` -> ``compute``).
FRONTENDS: dict[str, str] = {"api": "rest", "ec2": "ec2", "RPC2": "xmlrpc", "ui": "ui",
                             # OpenNebula OCCI's plain paths (api/occi/routes.py)
                             "compute": "occi", "network": "occi", "storage": "occi",
                             "instance_type": "occi"}


class FrontendTag:
    """ASGI middleware: tells the audit log which front-end serves the request
    (``service.audit.FRONTEND``), so that no front-end has to remember it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            first = str(scope.get("path", "")).lstrip("/").split("/", 1)[0]
            FRONTEND.set(FRONTENDS.get(first, first[:16]))
        await self.app(scope, receive, send)
