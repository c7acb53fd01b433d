"""REST routes of the VO pools, ``/api/v1/pools``: a thin skin over ``service/pools.py``.

Kept out of ``api/rest.py`` so the pool feature is one router the app includes
(``app.include_router(pools.router())``); authentication is the same ``Who`` dependency, and
errors are the same typed ``VocloudError`` -> 4xx JSON the app's handlers already produce.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field

from vocloud.api.rest import JSONResponse, Strict, Who
from vocloud.service.cloud import Cloud
from vocloud.service.pools import PoolService


class PoolCreate(Strict):
    vo: str = Field(description="the VO: an existing group's name")
    template: int | str = Field(description="VM template (id or name) the workers boot from")
    cores: int = Field(ge=1, description="cores per worker VM")
    memory: int = Field(ge=1, description="MiB per worker VM")
    min: int | None = None
    max: int | None = None
    weight: float | None = None
    idle_timeout: float | None = None
    boot_timeout: float | None = None
    max_lifetime: float | None = None
    max_boots_per_minute: int | None = None
    scale_down_delay: float | None = None
    enabled: bool | None = None
    site_template: int | str | None = Field(
        None, description="administrators only: the site template (an administrator's VM "
                          "template) merged into every worker; default: the daemon's")


class PoolUpdate(Strict):
    template: int | str | None = None
    cores: int | None = None
    memory: int | None = None
    min: int | None = None
    max: int | None = None
    weight: float | None = None
    idle_timeout: float | None = None
    boot_timeout: float | None = None
    max_lifetime: float | None = Field(None, description="0 clears the limit")
    max_boots_per_minute: int | None = None
    scale_down_delay: float | None = None
    enabled: bool | None = None
    site_template: int | str | None = Field(
        None, description='administrators only: the site template; "" returns to the daemon\'s')


def _service(request: Request) -> PoolService:
    cloud: Cloud = request.app.state.cloud
    svc = getattr(cloud, "pools", None)
    return svc if isinstance(svc, PoolService) else PoolService(cloud.db)


def router() -> APIRouter:
    """The pool routes, to be included in the app built by ``api.rest.create_app``."""
    r = APIRouter(prefix="/api/v1")

    @r.get("/pools")
    def pool_list(who: Who, request: Request) -> JSONResponse:
        return JSONResponse(_service(request).list(who))

    @r.post("/pools", status_code=201)
    def pool_create(who: Who, request: Request, body: PoolCreate) -> JSONResponse:
        options = body.model_dump(exclude={"vo", "template", "cores", "memory"}, exclude_none=True)
        out = _service(request).create(who, body.vo, body.template, body.cores, body.memory,
                                       **options)
        return JSONResponse(out, status_code=201)

    @r.get("/pools/{vo}")
    def pool_show(who: Who, request: Request, vo: str) -> JSONResponse:
        return JSONResponse(_service(request).show(who, vo))

    @r.patch("/pools/{vo}")
    def pool_update(who: Who, request: Request, vo: str, body: PoolUpdate) -> JSONResponse:
        return JSONResponse(_service(request).update(who, vo, **body.model_dump(exclude_none=True)))

    @r.delete("/pools/{vo}")
    def pool_delete(who: Who, request: Request, vo: str, force: bool = False) -> Response:
        out = _service(request).delete(who, vo, force=force)
        return JSONResponse(out, status_code=200 if out["deleted"] else 202)

    @r.get("/pools/{vo}/events")
    def pool_events(who: Who, request: Request, vo: str, limit: int = 100) -> JSONResponse:
        return JSONResponse(_service(request).events(who, vo, limit=limit))

    return r
