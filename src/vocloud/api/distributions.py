"""REST routes of image distribution (docs/image-distribution.md), administrators only:
``POST /api/v1/images/{ref}/distribute`` starts one (202, it runs in the daemon),
``GET /api/v1/distributions[/{id}]`` follows it. A thin skin over ``service/distribution.py``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field, StringConstraints

from vocloud.api.common import OneHopRoute, RefPath, Strict, Who, ok
from vocloud.api.http import JSONResponse
from vocloud.service.distribution import MAX_FANOUT, MAX_HOSTS, DistributionService

DistPath = Annotated[int, Path(ge=1, le=2**31, description="distribution id")]
HostName = Annotated[str, StringConstraints(min_length=1, max_length=128)]


class DistributeRequest(Strict):
    hosts: list[HostName] | None = Field(
        None, max_length=MAX_HOSTS, description="host names (default: every enabled qemu host)")
    fanout: int = Field(2, ge=1, le=MAX_FANOUT,
                        description="children each holder serves at once")


class DistributionOut(BaseModel):
    id: int
    image_id: int
    image: str
    fanout: int
    by: str = ""
    state: str
    started_at: float
    ended_at: float | None
    error: str
    hosts: list[dict[str, Any]]
    result: dict[str, Any] | None


def _service(request: Request) -> DistributionService:
    svc = getattr(request.app.state, "distributions", None)
    if not isinstance(svc, DistributionService):
        svc = DistributionService(request.app.state.cloud.db)  # no drivers: refuses to start
        request.app.state.distributions = svc
    return svc


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v1", route_class=OneHopRoute)

    @r.post("/images/{ref}/distribute", status_code=202, responses=ok(DistributionOut, 202))
    def image_distribute(who: Who, request: Request, ref: RefPath,
                         body: DistributeRequest) -> JSONResponse:
        """Pre-stage the image's base onto hosts by a fan-out tree (administrators)."""
        out = _service(request).start(who, ref, body.hosts, body.fanout)
        return JSONResponse(out, status_code=202)

    @r.get("/distributions", responses=ok(list[DistributionOut]))
    def distribution_list(who: Who, request: Request) -> JSONResponse:
        return JSONResponse(_service(request).list(who))

    @r.get("/distributions/{dist_id}", responses=ok(DistributionOut))
    def distribution_show(who: Who, request: Request, dist_id: DistPath) -> JSONResponse:
        return JSONResponse(_service(request).show(who, dist_id))

    return r
