"""REST routes of EC2 access keys, ``/api/v1/access-keys``: a thin skin over
``service/access_keys.py`` (``vocloud user keys``; docs/ec2.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from pydantic import Field

from vocloud.api import schemas as out
from vocloud.api.common import OneHopRoute, RefValue, Strict, Who, ok
from vocloud.api.http import JSONResponse
from vocloud.service.cloud import Cloud

KeyId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9]+$")]


class AccessKeyCreate(Strict):
    user: RefValue | None = Field(None, description="the user (default: you; others: administrators)")


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v1/access-keys", route_class=OneHopRoute, tags=["access-keys"])

    def cloud(request: Request) -> Cloud:
        c: Cloud = request.app.state.cloud
        return c

    @r.get("", responses=ok(list[out.AccessKeyOut]), openapi_extra={"x-errors": [404]})
    def key_list(request: Request, who: Who,
                 user: Annotated[str | None, Query(min_length=1, max_length=128)] = None) -> JSONResponse:
        return JSONResponse(cloud(request).access_keys.list(who, user))

    @r.post("", status_code=201, responses=ok(out.AccessKeyCreated, 201))
    def key_create(request: Request, who: Who, body: AccessKeyCreate) -> JSONResponse:
        return JSONResponse(cloud(request).access_keys.create(who, body.user), status_code=201)

    @r.delete("/{key_id}", status_code=204)
    def key_delete(request: Request, who: Who, key_id: KeyId) -> Response:
        cloud(request).access_keys.delete(who, key_id)
        return Response(status_code=204)

    return r
