"""``GET /api/v1/status``: this front-end and the store's leader (docs/ha.md). Administrators
only (``service/frontends.py``); ``app/daemon.py`` includes :func:`router`."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from vocloud.api.common import OneHopRoute, Who, ok
from vocloud.api.http import JSONResponse
from vocloud.service.frontends import FrontendService


class ThisFrontend(BaseModel):
    host: str
    pid: int
    data_dir: str
    role: str  # "leader" (runs the loops) or "follower" (serves the API)


class Leader(BaseModel):
    host: str
    pid: int
    data_dir: str
    since: float  # UNIX seconds: when this leader's term began
    epoch: int  # the term's fencing epoch (0 on SQLite: one daemon, no election)


class Status(BaseModel):
    version: str
    store: str  # "sqlite" or "postgresql"
    this: ThisFrontend
    leader: Leader | None  # None: no front-end holds the lead right now (an election is due)


def router(service: FrontendService) -> APIRouter:
    r = APIRouter(prefix="/api/v1", route_class=OneHopRoute)

    @r.get("/status", responses=ok(Status))
    def status(who: Who) -> JSONResponse:
        """Which front-end answered, and which one runs the loops (administrators only)."""
        return JSONResponse(service.status(who))

    return r
