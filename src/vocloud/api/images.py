"""REST routes of datastores and image upload: ``/api/v1/datastores``, ``/api/v1/images/upload``.

Kept out of ``api/rest.py`` (like ``api/pools.py``) so the feature is one router. The upload
route streams: it reads ``request.stream()`` and hands the bytes, a MiB at a time, to the
service's :class:`~vocloud.service.catalog.ImageUpload` in a worker thread (file write and
sha256 off the event loop), so a 1 GiB image never sits in memory and other requests keep being
served. A request-body size limit for the API must not apply to this route: its bound is the
user's image quota, enforced here before the first byte (``Content-Length``) and per chunk.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from vocloud.api import schemas as out
from vocloud.api.common import Name, OneHopRoute, RefPath, Strict, Who, ok
from vocloud.api.http import JSONResponse
from vocloud.errors import InvalidInput
from vocloud.service.catalog import ImageUpload
from vocloud.service.cloud import Cloud

UPLOAD_PATH = "/api/v1/images/upload"
BATCH = 1 << 20  # bytes handed to the writer thread at once


class DatastoreCreate(Strict):
    name: Name = Field(description="unique name")
    path: str = Field(max_length=4096, description="an existing directory on the front-end (absolute)")


_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": out.Error, "description": "bad parameter, not a qcow2/raw image, a backing file, "
                                           "a format that differs from the one declared"},
    401: {"model": out.Error, "description": "no or unknown bearer token"},
    403: {"model": out.Error, "description": "not allowed"},
    404: {"model": out.Error, "description": "no such datastore"},
    409: {"model": out.Error, "description": "name taken, image quota exceeded (QuotaExceeded), "
                                           "datastore full"},
}

_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "the image file's bytes, streamed (qcow2 or raw)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def _length(request: Request) -> int | None:
    raw = request.headers.get("content-length")
    if raw is None:
        return None
    if not raw.isascii() or not raw.strip().isdigit():
        raise InvalidInput(f"Content-Length must be a number of bytes, got {raw!r}")
    return int(raw)


def _content_type(request: Request) -> None:
    ctype = request.headers.get("content-type")
    if ctype is not None and ctype.split(";")[0].strip().lower() != "application/octet-stream":
        raise InvalidInput(f"Content-Type: the body must be application/octet-stream (the image bytes), "
                           f"got {ctype!r}")


async def _pump(request: Request, up: ImageUpload) -> None:
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) >= BATCH:
            data = bytes(buf)
            buf.clear()
            await run_in_threadpool(up.write, data)
    if buf:
        await run_in_threadpool(up.write, bytes(buf))


def router() -> APIRouter:
    """The datastore and upload routes, included by ``api.rest.create_app``."""
    r = APIRouter(prefix="/api/v1", route_class=OneHopRoute)

    def cloud_of(request: Request) -> Cloud:
        c: Cloud = request.app.state.cloud
        return c

    @r.get("/datastores", responses=ok(list[out.DatastoreOut]))
    def datastore_list(request: Request, who: Who) -> JSONResponse:
        return JSONResponse(cloud_of(request).datastores.list(who))

    @r.post("/datastores", status_code=201, responses=ok(out.DatastoreOut, 201))
    def datastore_create(request: Request, body: DatastoreCreate, who: Who) -> JSONResponse:
        return JSONResponse(cloud_of(request).datastores.create(who, body.name, body.path), status_code=201)

    @r.get("/datastores/{ref}", responses=ok(out.DatastoreOut))
    def datastore_show(request: Request, ref: RefPath, who: Who) -> JSONResponse:
        return JSONResponse(cloud_of(request).datastores.show(who, ref))

    @r.delete("/datastores/{ref}", status_code=204)
    def datastore_delete(request: Request, ref: RefPath, who: Who) -> Response:
        cloud_of(request).datastores.delete(who, ref)
        return Response(status_code=204)

    @r.post("/images/upload", status_code=201, response_model=None, openapi_extra=_UPLOAD_BODY,
            responses={201: {"model": out.ImageOut, "description": "the image, registered"}, **_ERRORS},
            summary="Upload an image's bytes into a datastore")
    async def image_upload(
        request: Request,
        who: Who,
        name: str = Query(max_length=128, description="image name (unique; letters, digits, '.', '_', '-')"),
        format: Literal["qcow2", "raw"] | None = Query(
            None, description="declared format; must be what qemu-img reads (default: what it reads)"),
        persistent: bool = Query(False, description="one VM at a time, changes kept"),
        public: bool = Query(False, description="let every group use it"),
        datastore: str = Query("default", min_length=1, max_length=128, description="datastore name or id"),
        description: str = Query("", max_length=4096, description="free text"),
    ) -> JSONResponse:
        """Register an image by uploading it: the raw bytes are the body. Size and sha256 are
        taken while streaming; the size counts against the image quota of the user and of the
        group; ``qemu-img info`` must read a standalone qcow2 or a raw image."""
        _content_type(request)
        length = _length(request)
        up = await run_in_threadpool(cloud_of(request).images.begin_upload, who, name, format, persistent,
                                     public, description, datastore, length)
        try:
            await _pump(request, up)
            if length is not None and up.sink.size != length:
                raise InvalidInput(f"the body had {up.sink.size} bytes, Content-Length said {length}")
            out = await run_in_threadpool(up.finish)
        except ClientDisconnect:
            up.abort()
            raise InvalidInput("the client went away during the upload; nothing was kept") from None
        except BaseException:  # cancelled too: abort is quick (close + unlink), done inline
            up.abort()
            raise
        return JSONResponse(out, status_code=201)

    return r
