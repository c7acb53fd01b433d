"""REST routes of the VO pools, ``/api/v1/pools``: a thin skin over ``service/pools.py``.

Kept out of ``api/rest.py`` so the pool feature is one router the app includes
(``app.include_router(pools.router())``); authentication is the same ``Who`` dependency, and
errors are the same typed ``VocloudError`` -> 4xx JSON the app's handlers already produce.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import Field, StrictBool

from vocloud.api import schemas as out
from vocloud.api.common import MAX_MIB, Name, OneHopRoute, RefValue, Strict, Who, ok
from vocloud.api.http import JSONResponse
from vocloud.service.cloud import Cloud
from vocloud.service.pools import PoolService

#: Bounds of the pool attributes (the planner refuses what makes no sense inside them).
MAX_VMS = 100_000
MAX_SECONDS = 10.0**9
Count = Annotated[int, Field(ge=0, le=MAX_VMS)]
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS)]
WorkerShape = Annotated[str, Field(max_length=16,
                                   description="fixed | job | host: how workers are sized (docs/pools.md)")]


class PoolCreate(Strict):
    vo: Name = Field(description="the VO: an existing group's name")
    template: RefValue = Field(description="VM template (id or name) the workers boot from")
    cores: int = Field(ge=1, le=4096, description="cores per worker VM")
    memory: int = Field(ge=1, le=MAX_MIB, description="MiB per worker VM")
    min: Count | None = None
    max: Count | None = None
    weight: float | None = Field(None, ge=0, le=10.0**6)
    idle_timeout: Seconds | None = None
    boot_timeout: Seconds | None = None
    max_lifetime: Seconds | None = None
    max_boots_per_minute: Count | None = None
    scale_down_delay: Seconds | None = None
    worker_shape: WorkerShape | None = None
    headroom: float | None = Field(None, ge=0, le=10, description="spare workers per busy worker")
    prestage: Literal["off", "start", "wait", "site"] | None = Field(
        None, description="administrators only: pre-stage the image before boots "
                          "(docs/image-distribution.md); site: the daemon's pool_prestage")
    enabled: StrictBool | None = None
    burst_limit: Count | None = Field(None, description="administrators only: workers the pool may "
                                                         "run on cloud hosts (docs/bursting.md)")
    site_template: RefValue | None = Field(
        None, description="administrators only: the site template (an administrator's VM "
                          "template) merged into every worker; default: the daemon's")


class PoolUpdate(Strict):
    template: RefValue | None = None
    cores: int | None = Field(None, ge=1, le=4096)
    memory: int | None = Field(None, ge=1, le=MAX_MIB)
    min: Count | None = None
    max: Count | None = None
    weight: float | None = Field(None, ge=0, le=10.0**6)
    idle_timeout: Seconds | None = None
    boot_timeout: Seconds | None = None
    max_lifetime: Seconds | None = Field(None, description="0 clears the limit")
    max_boots_per_minute: Count | None = None
    scale_down_delay: Seconds | None = None
    worker_shape: WorkerShape | None = None
    headroom: float | None = Field(None, ge=0, le=10, description="spare workers per busy worker")
    prestage: Literal["off", "start", "wait", "site"] | None = Field(
        None, description="administrators only: pre-stage the image before boots "
                          "(docs/image-distribution.md); site: the daemon's pool_prestage")
    enabled: StrictBool | None = None
    burst_limit: Count | None = Field(None, description="administrators only: cloud workers allowed")
    site_template: RefValue | Literal[""] | None = Field(
        None, description='administrators only: the site template; "" returns to the daemon\'s')


class WorkerBoot(Strict):
    name: Name = Field(description="the VM's name: the batch node it becomes")
    cores: int | None = Field(None, ge=1, le=4096, description="default: the pool's")
    memory: int | None = Field(None, ge=1, le=MAX_MIB, description="MiB; default: the pool's")
    template: RefValue | None = Field(
        None, description="the VO template instead of the pool's (checked with the VO's rights)")
    site_template: RefValue | None = Field(
        None, description="the site template instead of the pool's or the daemon's")


VoPath = Annotated[str, Path(min_length=1, max_length=128, description="the VO (group name)")]


def _service(request: Request) -> PoolService:
    cloud: Cloud = request.app.state.cloud
    svc = getattr(cloud, "pools", None)
    return svc if isinstance(svc, PoolService) else PoolService(cloud.db)


def router() -> APIRouter:
    """The pool routes, to be included in the app built by ``api.rest.create_app``."""
    r = APIRouter(prefix="/api/v1", route_class=OneHopRoute)

    @r.get("/pools", responses=ok(list[out.PoolOut]))
    def pool_list(who: Who, request: Request) -> JSONResponse:
        return JSONResponse(_service(request).list(who))

    @r.post("/pools", status_code=201, responses=ok(out.PoolOut, 201))
    def pool_create(who: Who, request: Request, body: PoolCreate) -> JSONResponse:
        options = body.model_dump(exclude={"vo", "template", "cores", "memory"}, exclude_none=True)
        out = _service(request).create(who, body.vo, body.template, body.cores, body.memory,
                                       **options)
        return JSONResponse(out, status_code=201)

    @r.get("/pools/{vo}", responses=ok(out.PoolShow))
    def pool_show(who: Who, request: Request, vo: VoPath) -> JSONResponse:
        return JSONResponse(_service(request).show(who, vo))

    @r.patch("/pools/{vo}", responses=ok(out.PoolOut))
    def pool_update(who: Who, request: Request, vo: VoPath, body: PoolUpdate) -> JSONResponse:
        return JSONResponse(_service(request).update(who, vo, **body.model_dump(exclude_none=True)))

    @r.delete("/pools/{vo}", responses={**ok(out.PoolDeleted), **ok(out.PoolDeleted, 202)})
    def pool_delete(who: Who, request: Request, vo: VoPath, force: bool = False) -> Response:
        out = _service(request).delete(who, vo, force=force)
        return JSONResponse(out, status_code=200 if out["deleted"] else 202)

    @r.post("/pools/{vo}/workers", status_code=201, responses=ok(out.PoolWorkerBooted, 201))
    def pool_boot_worker(who: Who, request: Request, vo: VoPath, body: WorkerBoot) -> JSONResponse:
        """Administrators only: one worker outside the pool's plan (Slurm power saving),
        created as the pool's identity like every worker."""
        return JSONResponse(_service(request).boot_worker(who, vo, **body.model_dump()),
                            status_code=201)

    @r.get("/pools/{vo}/events", responses=ok(list[out.PoolEvent]))
    def pool_events(who: Who, request: Request, vo: VoPath,
                    limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> JSONResponse:
        return JSONResponse(_service(request).events(who, vo, limit=limit))

    return r
