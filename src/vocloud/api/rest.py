"""The REST API, ``/api/v1``: a thin HTTP skin over the service layer.

Every handler authenticates (``service/auth.py``'s pluggable authenticators), calls one service
method and returns its dict; all checks live in the service layer. Errors are ``{"error": code,
"message": text}`` with a 4xx status (a bug: a JSON 500, the connection kept). Responses are
serialised with orjson directly (no response-model validation), which is what keeps listing
20,000 VMs well under a quarter of a second; the response models in ``api/schemas.py`` only
document them. Request bounds (ids, counts, sizes, string lengths) are declared here so that the
OpenAPI document shows them; the service layer checks what matters again for other front-ends.
See docs/api.md.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import Field, StrictBool, StringConstraints
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from vocloud import __version__
from vocloud.api import schemas as out
from vocloud.api.access_keys import router as access_keys_router
from vocloud.api.common import (
    MAX_CPU,
    MAX_MIB,
    MAX_TEXT,
    PENDING_KEY,
    Attrs,
    Format,
    IdPath,
    Name,
    OneHopRoute,
    PendingActor,
    PendingWho,
    RefPath,
    RefValue,
    Short,
    Strict,
    Who,
    authenticates_in_call,
    check_one_hop,
    enum_of,
    in_group_commit,
    ok,
)
from vocloud.api.http import GuardMiddleware, JSONResponse
from vocloud.api.images import router as images_router
from vocloud.api.pools import router as pools_router
from vocloud.errors import InvalidInput, VocloudError
from vocloud.model.lifecycle import HOST_TABLE, HOST_USER_ACTIONS, VM_TABLE, VM_USER_ACTIONS, VMState
from vocloud.service.base import MAX_ID
from vocloud.service.cloud import Cloud
from vocloud.service.hosts import MAX_HOSTS_PER_REQUEST, HostSpec

__all__ = ["create_app"]

log = logging.getLogger("vocloud.api")


def _error(exc: VocloudError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status)




class VMCreate(Strict):
    template: str = Field("", description="template text (OpenNebula syntax, JSON or TOML)")
    format: Format = "auto"
    count: int = Field(1, ge=1, le=10_000)
    name: Name | None = None
    hold: StrictBool = False
    cpu: float | None = Field(None, gt=0, le=MAX_CPU)
    memory: int | None = Field(None, gt=0, le=MAX_MIB, description="MiB")
    group: RefValue | None = Field(None, description="create in this group (administrators only)")


class VMAction(Strict):
    action: Short = Field(json_schema_extra=enum_of(VM_USER_ACTIONS))
    host: RefValue | None = None
    enforce: StrictBool = True
    cold: StrictBool = False  # migrate only: shut down, move the disks, boot on the target


class Recover(Strict):
    op: Literal["success", "failure", "retry", "delete"]


class HostCreate(Strict):
    name: Name
    vmm: Short = "sim"
    transport: Annotated[str, StringConstraints(min_length=1, max_length=255)] = "local"
    cluster: Name = "default"
    cpu: float | None = Field(None, gt=0, le=MAX_CPU)
    memory: int | None = Field(None, gt=0, le=MAX_MIB)
    attrs: Attrs = Field(default_factory=dict)


class HostBatch(Strict):
    hosts: list[HostCreate] = Field(min_length=1, max_length=MAX_HOSTS_PER_REQUEST)


class Action(Strict):
    action: Short


class HostAction(Strict):
    action: Short = Field(json_schema_extra=enum_of(HOST_USER_ACTIONS))
    gone: StrictBool = Field(False, description="offline only: the host will never answer again; the "
                                          "terminates its VMs owe end them as DONE (docs/faults.md)")


class AttrsUpdate(Strict):
    attrs: Attrs = Field(description="attributes to set; an empty value removes one")


class TemplateCreate(Strict):
    template: str
    format: Format = "auto"
    name: Name | None = None
    public: StrictBool = False


class Instantiate(Strict):
    count: int = Field(1, ge=1, le=10_000)
    name: Name | None = None
    hold: StrictBool = False
    extra: Attrs = Field(default_factory=dict)
    group: RefValue | None = Field(None, description="create in this group (administrators only)")


class ImageCreate(Strict):
    name: Name
    path: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    format: Short | None = None
    persistent: StrictBool = False
    public: StrictBool = False
    description: Annotated[str, StringConstraints(max_length=MAX_TEXT)] = ""


class NetworkCreate(Strict):
    template: str
    format: Format = "auto"
    group: RefValue | None = Field(None, description="owning group (administrators create networks)")


class NetworkReserve(Strict):
    size: int = Field(ge=1, le=65536, description="addresses to reserve (at most max_reservation_size)")
    name: Name | None = Field(None, description="the new network; default: derived")
    ip: str | None = Field(None, max_length=64, description="first address; default: lowest free block")
    group: RefValue | None = Field(None, description="reserve for this group (administrators only)")


class LeaseOp(Strict):
    ip: Annotated[str, StringConstraints(min_length=1, max_length=64)]


class GroupCreate(Strict):
    name: Name
    description: Annotated[str, StringConstraints(max_length=MAX_TEXT)] = ""


class UserCreate(Strict):
    name: Name
    group: RefValue
    admin: StrictBool = False


class Enable(Strict):
    enabled: StrictBool


class QuotaSet(Strict):
    vms: int | None = Field(None, ge=-1, le=MAX_ID, description="-1: unlimited")
    cpu: float | None = Field(None, ge=-1, le=1_000_000, description="cores; -1: unlimited")
    memory: int | None = Field(None, ge=-1, le=1 << 40, description="MiB; -1: unlimited")
    images: int | None = Field(None, ge=-1, le=1 << 40, description="MiB of image files; -1: unlimited")


class AclCreate(Strict):
    subject: Annotated[str, StringConstraints(min_length=1, max_length=11)]
    resource: Annotated[str, StringConstraints(min_length=1, max_length=16)]
    target: Annotated[str, StringConstraints(min_length=1, max_length=11)]
    rights: Annotated[str, StringConstraints(min_length=1, max_length=64)]


# ------------------------------------------------------------------------------ the app
#: Declares the scheme in the OpenAPI document (and on every operation that depends on it); the
#: credentials themselves are read by ``_credentials`` so that any registered scheme can answer.
#: Error statuses and when each applies, added to each operation by :func:`_document_errors`.
_ERROR_TEXT = {
    400: "malformed request: a value out of range, of the wrong type, or refused by the service "
         "(the message names the attribute)",
    401: "no valid credentials",
    403: "the user lacks the right this operation needs",
    404: "no such object (or no such route)",
    409: "conflicts with the current state: name taken, object in use, illegal lifecycle action, "
         "quota exceeded, no capacity",
    413: "request body larger than the max_request_bytes setting",
    500: "a bug: logged by the daemon; the connection stays usable",
    502: "a driver (hypervisor, host transport) failed",
}


def _document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Make every operation declare the errors it can return, with the ``Error`` schema, and
    drop FastAPI's default 422 (validation errors are 400 here)."""
    comps = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        comps.pop(name, None)
    comps["Error"] = out.Error.model_json_schema(ref_template="#/components/schemas/{model}")
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            params = op.get("parameters", [])
            secured = bool(op.get("security"))
            codes = {500}
            if params or "requestBody" in op:
                codes.add(400)
            if "requestBody" in op:
                codes.add(413)
            if secured:
                codes |= {401, 403}
                if method != "get":
                    codes.add(409)
            if secured and ("{" in path or "requestBody" in op):
                codes.add(404)  # the object named in the path, or one the body refers to
            codes |= {int(c) for c in op.pop("x-errors", [])}
            for code in sorted(codes):
                responses.setdefault(str(code), {})
                responses[str(code)].setdefault("description", _ERROR_TEXT[code])
                responses[str(code)]["content"] = {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return schema


def _allowed_methods(doc: dict[str, Any], path: str) -> list[str]:
    """The methods the OpenAPI document lists for ``path`` (the ``Allow`` header of a 405; the
    route that raised it knows only its own). A literal path (``/users/me``) wins over a
    template that also matches it (``/users/{ref}``), as in routing."""
    paths: dict[str, Any] = doc.get("paths", {})
    ops = paths.get(path)
    if ops is None:
        for template, candidate in paths.items():
            if "{" in template and re.fullmatch(re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)), path):
                ops = candidate
                break
    order = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
    return [m for m in order if m.lower() in (ops or {})]


def create_app(cloud: Cloud, lifespan: Callable[..., Any] | None = None,
               console: Callable[[int], str] | None = None,
               max_request_bytes: int = 1 << 20) -> FastAPI:
    app = FastAPI(title="vocloud", version=__version__, lifespan=lifespan,
                  description="vocloud REST API: hosts, VMs, images, networks, users, VO groups "
                              "and VO pools. Errors are `{\"error\": code, \"message\": text}`. "
                              "See docs/api.md.")
    app.state.cloud = cloud
    if console is not None:
        cloud.set_console_reader(console)
    app.add_middleware(GuardMiddleware, max_body=max_request_bytes)

    @app.exception_handler(VocloudError)
    async def _vocloud_error(_req: Request, exc: VocloudError) -> Response:
        return _error(exc)

    @app.exception_handler(DataError)
    async def _data_error(_req: Request, exc: DataError) -> Response:
        # last line of defence: a value the store cannot hold (the service checks should have
        # caught it; the log says which statement, the client gets a 400, not a 500)
        log.warning("store refused a value: %s", exc.orig)
        return _error(InvalidInput(f"a value does not fit the store: {str(exc.orig).splitlines()[0][:200]}"))

    @app.exception_handler(RequestValidationError)
    async def _validation(req: Request, exc: RequestValidationError) -> Response:
        pending = getattr(req.state, PENDING_KEY, None)
        if isinstance(pending, PendingActor) and pending.actor is None:
            # credentials first, as when authentication ran before validation: 401, not 400
            try:
                await run_in_threadpool(pending.resolve)
            except VocloudError as refused:
                return _error(refused)
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
        return _error(InvalidInput("; ".join(parts)[:2000] or "invalid request"))

    @app.exception_handler(RecursionError)
    async def _too_deep(_req: Request, _exc: RecursionError) -> Response:
        # narrow guard: a template nested thousands deep exhausts the parsers' recursion (the
        # template parser's own depth limit belongs to model/template.py)
        return _error(InvalidInput("input is nested too deeply"))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(req: Request, exc: StarletteHTTPException) -> Response:
        codes = {400: "InvalidInput", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                 405: "MethodNotAllowed", 413: "PayloadTooLarge"}
        headers = dict(exc.headers or {})
        message = str(exc.detail)
        if exc.status_code == 405:
            allowed = _allowed_methods(app.openapi(), req.url.path)
            headers["Allow"] = ", ".join(allowed)
            message = f"{req.method} is not allowed on {req.url.path}; use {', '.join(allowed)}"
        elif exc.status_code == 404:
            message = f"no such route: {req.url.path[:200]}"
        return JSONResponse({"error": codes.get(exc.status_code, "HTTPError"), "message": message},
                            status_code=exc.status_code, headers=headers)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _document_errors(get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    r = APIRouter(prefix="/api/v1", route_class=OneHopRoute)

    @r.get("/health", responses=ok(out.Health))
    def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    @r.get("/lifecycle", responses=ok(out.Lifecycle))
    def lifecycle() -> JSONResponse:
        return JSONResponse({
            "vm": [{"state": s.value, "action": a, "next": n.value} for (s, a), n in VM_TABLE.items()],
            "vm_user_actions": sorted(VM_USER_ACTIONS),
            "host": [{"state": s.value, "action": a, "next": n.value} for (s, a), n in HOST_TABLE.items()],
        })

    @r.get("/attributes", responses=ok(out.Attributes))
    def attributes(who: Who) -> JSONResponse:
        """The VM template attributes vocloud understands, and who may set each (security.md)."""
        return JSONResponse(cloud.attributes(who))

    # ---- VMs
    @r.get("/vms", responses=ok(list[out.VMRow]))
    def vm_list(who: Who, all: bool = False,
                state: Annotated[str | None, Query(
                    max_length=32, json_schema_extra=enum_of(st.value for st in VMState))] = None,
                limit: Annotated[int | None, Query(ge=0, le=1_000_000)] = None) -> Response:
        body = cloud.vms.list_json(who, include_done=all, state=state, limit=limit)
        return Response(body, media_type="application/json")

    # The two writes 50 clients make most: many to one transaction (store/group_commit.py),
    # authenticated in that call, no worker thread (docs/performance.md, session 12).
    @r.post("/vms", status_code=201, responses=ok(out.Ids, 201))
    @authenticates_in_call
    async def vm_create(who: PendingWho, body: VMCreate) -> JSONResponse:
        extra: dict[str, str] = {}
        if body.cpu is not None:
            extra["CPU"] = repr(body.cpu)  # every digit: the service rounds up to hundredths
        if body.memory is not None:
            extra["MEMORY"] = str(body.memory)
        ids = await in_group_commit(cloud, who, lambda actor: cloud.vms.create(
            actor, body.template, fmt=body.format, count=body.count, name=body.name,
            hold=body.hold, extra=extra, group=body.group))
        return JSONResponse({"ids": ids}, status_code=201)

    @r.get("/vms/{vm_id}", responses=ok(out.VMShow))
    def vm_show(who: Who, vm_id: IdPath) -> JSONResponse:
        return JSONResponse(cloud.vms.show(who, vm_id))

    @r.get("/vms/{vm_id}/log", responses=ok(out.ConsoleLog), openapi_extra={"x-errors": [502]})
    def vm_log(who: Who, vm_id: IdPath) -> JSONResponse:
        return JSONResponse(cloud.console.log(who, vm_id))

    @r.post("/vms/{vm_id}/action", responses=ok(out.VMActionResult))
    @authenticates_in_call
    async def vm_action(who: PendingWho, vm_id: IdPath, body: VMAction) -> JSONResponse:
        return JSONResponse(await in_group_commit(cloud, who, lambda actor: cloud.vms.action(
            actor, vm_id, body.action, host=body.host, enforce=body.enforce, cold=body.cold)))

    @r.post("/vms/{vm_id}/recover", responses=ok(out.VMActionResult))
    def vm_recover(who: Who, vm_id: IdPath, body: Recover) -> JSONResponse:
        return JSONResponse(cloud.vms.recover(who, vm_id, body.op))

    @r.delete("/vms/{vm_id}", status_code=204)
    def vm_delete(who: Who, vm_id: IdPath) -> Response:
        cloud.vms.delete(who, vm_id)
        return Response(status_code=204)

    # ---- hosts
    @r.get("/hosts", responses=ok(list[out.Host]))
    def host_list(who: Who) -> JSONResponse:
        return JSONResponse(cloud.hosts.list(who))

    @r.post("/hosts", status_code=201, responses=ok(out.Host, 201))
    def host_create(who: Who, body: HostCreate) -> JSONResponse:
        return JSONResponse(cloud.hosts.create(who, body.name, body.vmm, body.transport, body.cluster,
                                               body.cpu, body.memory, body.attrs), status_code=201)

    @r.post("/hosts/batch", status_code=201, responses=ok(list[out.Host], 201))
    def host_create_many(who: Who, body: HostBatch) -> JSONResponse:
        """Register many hosts in one request, all or nothing (docs/performance.md)."""
        specs = [HostSpec(h.name, h.vmm, h.transport, h.cluster, h.cpu, h.memory, h.attrs)
                 for h in body.hosts]
        return JSONResponse(cloud.hosts.create_many(who, specs), status_code=201)

    @r.get("/hosts/{ref}", responses=ok(out.HostShow))
    def host_show(who: Who, ref: RefPath) -> JSONResponse:
        return JSONResponse(cloud.hosts.show(who, ref))

    @r.patch("/hosts/{ref}", responses=ok(out.Host))
    def host_update(who: Who, ref: RefPath, body: AttrsUpdate) -> JSONResponse:
        return JSONResponse(cloud.hosts.update_attrs(who, ref, body.attrs))

    @r.post("/hosts/{ref}/action", responses=ok(out.Host))
    def host_action(who: Who, ref: RefPath, body: HostAction) -> JSONResponse:
        return JSONResponse(cloud.hosts.action(who, ref, body.action, gone=body.gone))

    @r.delete("/hosts/{ref}", status_code=204)
    def host_delete(who: Who, ref: RefPath, gone: bool = False) -> Response:
        cloud.hosts.delete(who, ref, gone=gone)
        return Response(status_code=204)

    # ---- templates
    @r.get("/templates", responses=ok(list[out.TemplateOut]))
    def template_list(who: Who) -> JSONResponse:
        return JSONResponse(cloud.templates.list(who))

    @r.post("/templates", status_code=201, responses=ok(out.TemplateOut, 201))
    def template_create(who: Who, body: TemplateCreate) -> JSONResponse:
        return JSONResponse(cloud.templates.create(who, body.template, body.format, body.name, body.public),
                            status_code=201)

    @r.get("/templates/{ref}", responses=ok(out.TemplateOut))
    def template_show(who: Who, ref: RefPath) -> JSONResponse:
        return JSONResponse(cloud.templates.get(who, ref))

    @r.post("/templates/{ref}/instantiate", status_code=201, responses=ok(out.Ids, 201))
    def template_instantiate(who: Who, ref: RefPath, body: Instantiate) -> JSONResponse:
        ids = cloud.instantiate(who, ref, body.count, body.name, body.hold, body.extra, body.group)
        return JSONResponse({"ids": ids}, status_code=201)

    @r.delete("/templates/{ref}", status_code=204)
    def template_delete(who: Who, ref: RefPath) -> Response:
        cloud.templates.delete(who, ref)
        return Response(status_code=204)

    # ---- images
    @r.get("/images", responses=ok(list[out.ImageOut]))
    def image_list(who: Who) -> JSONResponse:
        return JSONResponse(cloud.images.list(who))

    @r.post("/images", status_code=201, responses=ok(out.ImageOut, 201))
    def image_create(who: Who, body: ImageCreate) -> JSONResponse:
        return JSONResponse(cloud.images.create(who, body.name, body.path, body.format, body.persistent,
                                                body.public, body.description), status_code=201)

    @r.get("/images/{ref}", responses=ok(out.ImageOut))
    def image_show(who: Who, ref: RefPath) -> JSONResponse:
        return JSONResponse(cloud.images.show(who, ref))

    @r.post("/images/{ref}/action", responses=ok(out.ImageOut))
    def image_action(who: Who, ref: RefPath, body: Action) -> JSONResponse:
        return JSONResponse(cloud.images.action(who, ref, body.action))

    @r.delete("/images/{ref}", status_code=204)
    def image_delete(who: Who, ref: RefPath) -> Response:
        cloud.images.delete(who, ref)
        return Response(status_code=204)

    # ---- networks
    @r.get("/vnets", responses=ok(list[out.NetworkOut]))
    def vnet_list(who: Who) -> JSONResponse:
        return JSONResponse(cloud.networks.list(who))

    @r.post("/vnets", status_code=201, responses=ok(out.NetworkOut, 201))
    def vnet_create(who: Who, body: NetworkCreate) -> JSONResponse:
        return JSONResponse(cloud.networks.create(who, body.template, body.format, group=body.group),
                            status_code=201)

    @r.post("/vnets/{ref}/reserve", status_code=201, responses=ok(out.NetworkOut, 201))
    def vnet_reserve(who: Who, ref: RefPath, body: NetworkReserve) -> JSONResponse:
        return JSONResponse(cloud.networks.reserve(who, ref, body.size, name=body.name, ip=body.ip,
                                                   group=body.group), status_code=201)

    @r.get("/vnets/{ref}", responses=ok(out.NetworkShow))
    def vnet_show(who: Who, ref: RefPath) -> JSONResponse:
        return JSONResponse(cloud.networks.show(who, ref))

    @r.post("/vnets/{ref}/hold", responses=ok(out.NetworkShow))
    def vnet_hold(who: Who, ref: RefPath, body: LeaseOp) -> JSONResponse:
        return JSONResponse(cloud.networks.hold(who, ref, body.ip))

    @r.post("/vnets/{ref}/release", responses=ok(out.NetworkShow))
    def vnet_release(who: Who, ref: RefPath, body: LeaseOp) -> JSONResponse:
        return JSONResponse(cloud.networks.hold(who, ref, body.ip, release=True))

    @r.delete("/vnets/{ref}", status_code=204)
    def vnet_delete(who: Who, ref: RefPath) -> Response:
        cloud.networks.delete(who, ref)
        return Response(status_code=204)

    # ---- users, groups, quotas, ACLs
    @r.get("/users", responses=ok(list[out.UserOut]))
    def user_list(who: Who) -> JSONResponse:
        return JSONResponse(cloud.accounts.list_users(who))

    @r.get("/users/me", responses=ok(out.UserShow))
    def user_me(who: Who) -> JSONResponse:
        return JSONResponse(cloud.accounts.show_user(who, who.user_id))

    @r.post("/users", status_code=201, responses=ok(out.UserCreated, 201))
    def user_create(who: Who, body: UserCreate) -> JSONResponse:
        return JSONResponse(cloud.accounts.create_user(who, body.name, body.group, body.admin),
                            status_code=201)

    @r.get("/users/{ref}", responses=ok(out.UserShow))
    def user_show(who: Who, ref: RefPath) -> JSONResponse:
        return JSONResponse(cloud.accounts.show_user(who, ref))

    @r.post("/users/{ref}/token", responses=ok(out.TokenOut))
    def user_token(who: Who, ref: RefPath) -> JSONResponse:
        return JSONResponse(cloud.accounts.new_token(who, ref))

    @r.post("/users/{ref}/enabled", responses=ok(out.UserOut))
    def user_enable(who: Who, ref: RefPath, body: Enable) -> JSONResponse:
        return JSONResponse(cloud.accounts.set_enabled(who, ref, body.enabled))

    @r.delete("/users/{ref}", status_code=204)
    def user_delete(who: Who, ref: RefPath) -> Response:
        cloud.accounts.delete_user(who, ref)
        return Response(status_code=204)

    @r.get("/groups", responses=ok(list[out.GroupRow]))
    def group_list(who: Who) -> JSONResponse:
        return JSONResponse(cloud.accounts.list_groups(who))

    @r.post("/groups", status_code=201, responses=ok(out.GroupOut, 201))
    def group_create(who: Who, body: GroupCreate) -> JSONResponse:
        return JSONResponse(cloud.accounts.create_group(who, body.name, body.description), status_code=201)

    @r.get("/groups/{ref}", responses=ok(out.GroupShow))
    def group_show(who: Who, ref: RefPath) -> JSONResponse:
        return JSONResponse(cloud.accounts.show_group(who, ref))

    @r.delete("/groups/{ref}", status_code=204)
    def group_delete(who: Who, ref: RefPath) -> Response:
        cloud.accounts.delete_group(who, ref)
        return Response(status_code=204)

    @r.get("/quotas/{scope}/{ref}", responses=ok(out.QuotaOut))
    def quota_show(who: Who, scope: Literal["user", "group"], ref: RefPath) -> JSONResponse:
        return JSONResponse(cloud.accounts.get_quota(who, scope, ref))

    @r.put("/quotas/{scope}/{ref}", responses=ok(out.QuotaOut))
    def quota_set(who: Who, scope: Literal["user", "group"], ref: RefPath, body: QuotaSet) -> JSONResponse:
        return JSONResponse(cloud.accounts.set_quota(who, scope, ref, body.vms, body.cpu, body.memory,
                                                     body.images))

    @r.get("/acls", responses=ok(list[out.AclOut]))
    def acl_list(who: Who) -> JSONResponse:
        return JSONResponse(cloud.accounts.list_acls(who))

    @r.post("/acls", status_code=201, responses=ok(out.AclOut, 201))
    def acl_create(who: Who, body: AclCreate) -> JSONResponse:
        return JSONResponse(cloud.accounts.create_acl(who, body.subject, body.resource, body.target,
                                                      body.rights), status_code=201)

    @r.delete("/acls/{acl_id}", status_code=204)
    def acl_delete(who: Who, acl_id: IdPath) -> Response:
        cloud.accounts.delete_acl(who, acl_id)
        return Response(status_code=204)

    app.include_router(r)

    app.include_router(pools_router())
    app.include_router(images_router())  # datastores, image upload
    app.include_router(access_keys_router())  # EC2 access keys (docs/ec2.md)
    check_one_hop(app)
    return app
