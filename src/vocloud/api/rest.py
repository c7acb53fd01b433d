"""The REST API, ``/api/v1``: a thin HTTP skin over the service layer.

Every handler authenticates, calls one service method and returns its dict; all checks live in
the service layer. Errors are ``{"error": code, "message": text}`` with a 4xx status. Responses
are serialised with orjson directly (no response-model validation), which is what keeps listing
20,000 VMs well under a quarter of a second.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field

from vocloud import __version__
from vocloud.errors import InvalidInput, VocloudError
from vocloud.model.lifecycle import HOST_TABLE, VM_TABLE, VM_USER_ACTIONS
from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud

log = logging.getLogger("vocloud.api")


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def _error(exc: VocloudError) -> JSONResponse:
    return JSONResponse(exc.to_dict(), status_code=exc.status)


# ------------------------------------------------------------------------------ request bodies
class Strict(BaseModel):
    model_config = {"extra": "forbid"}


class VMCreate(Strict):
    template: str = Field("", description="template text (OpenNebula syntax, JSON or TOML)")
    format: Literal["auto", "one", "json", "toml"] = "auto"
    count: int = Field(1, ge=1, le=10_000)
    name: str | None = None
    hold: bool = False
    cpu: float | None = Field(None, gt=0)
    memory: int | None = Field(None, gt=0, description="MiB")
    group: int | str | None = Field(None, description="create in this group (administrators only)")


class VMAction(Strict):
    action: str
    host: int | str | None = None
    enforce: bool = True


class Recover(Strict):
    op: Literal["success", "failure", "retry", "delete"]


class HostCreate(Strict):
    name: str
    vmm: str = "sim"
    transport: str = "local"
    cluster: str = "default"
    cpu: float | None = None
    memory: int | None = None
    attrs: dict[str, str] = Field(default_factory=dict)


class Action(Strict):
    action: str


class AttrsUpdate(Strict):
    attrs: dict[str, str] = Field(description="attributes to set; an empty value removes one")


class TemplateCreate(Strict):
    template: str
    format: Literal["auto", "one", "json", "toml"] = "auto"
    name: str | None = None
    public: bool = False


class Instantiate(Strict):
    count: int = Field(1, ge=1, le=10_000)
    name: str | None = None
    hold: bool = False
    extra: dict[str, str] = Field(default_factory=dict)
    group: int | str | None = Field(None, description="create in this group (administrators only)")


class ImageCreate(Strict):
    name: str
    path: str
    format: str | None = None
    persistent: bool = False
    public: bool = False
    description: str = ""


class NetworkCreate(Strict):
    template: str
    format: Literal["auto", "one", "json", "toml"] = "auto"
    group: int | str | None = Field(None, description="owning group (administrators create networks)")


class NetworkReserve(Strict):
    size: int = Field(ge=1, le=65536, description="addresses to reserve (at most max_reservation_size)")
    name: str | None = Field(None, max_length=128, description="the new network; default: derived")
    ip: str | None = Field(None, max_length=64, description="first address; default: lowest free block")
    group: int | str | None = Field(None, description="reserve for this group (administrators only)")


class LeaseOp(Strict):
    ip: str


class GroupCreate(Strict):
    name: str
    description: str = ""


class UserCreate(Strict):
    name: str
    group: int | str
    admin: bool = False


class Enable(Strict):
    enabled: bool


class QuotaSet(Strict):
    vms: int | None = None
    cpu: float | None = None
    memory: int | None = None


class AclCreate(Strict):
    subject: str
    resource: str
    target: str
    rights: str


# ------------------------------------------------------------------------------ the app
def _actor(request: Request, authorization: Annotated[str | None, Header()] = None) -> Actor:
    token = None
    if authorization:
        scheme, _, value = authorization.partition(" ")
        token = value.strip() if scheme.lower() == "bearer" else None
    cloud: Cloud = request.app.state.cloud
    return cloud.authenticate(token)


Who = Annotated[Actor, Depends(_actor)]


def create_app(cloud: Cloud, lifespan: Callable[..., Any] | None = None,
               console: Callable[[int], str] | None = None) -> FastAPI:
    app = FastAPI(title="vocloud", version=__version__, lifespan=lifespan,
                  description="vocloud REST API: hosts, VMs, images, networks, users, VO groups.")
    app.state.cloud = cloud

    @app.exception_handler(VocloudError)
    async def _vocloud_error(_req: Request, exc: VocloudError) -> Response:
        return _error(exc)

    @app.exception_handler(Exception)
    async def _bug(_req: Request, exc: Exception) -> Response:
        log.error("internal error", exc_info=exc)
        return JSONResponse({"error": "InternalError", "message": f"internal error: {exc.__class__.__name__} "
                             "(see the daemon log)"}, status_code=500)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> Response:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
        return _error(InvalidInput("; ".join(parts) or "invalid request"))

    r = APIRouter(prefix="/api/v1")

    @r.get("/health")
    def health() -> JSONResponse:
        return JSONResponse({"status": "ok", "version": __version__})

    @r.get("/lifecycle")
    def lifecycle() -> JSONResponse:
        return JSONResponse({
            "vm": [{"state": s.value, "action": a, "next": n.value} for (s, a), n in VM_TABLE.items()],
            "vm_user_actions": sorted(VM_USER_ACTIONS),
            "host": [{"state": s.value, "action": a, "next": n.value} for (s, a), n in HOST_TABLE.items()],
        })

    # ---- VMs
    @r.get("/vms")
    def vm_list(who: Who, all: bool = False, state: str | None = None,
                limit: int | None = None) -> Response:
        body = cloud.vms.list_json(who, include_done=all, state=state, limit=limit)
        return Response(body, media_type="application/json")

    @r.post("/vms", status_code=201)
    def vm_create(who: Who, body: VMCreate) -> JSONResponse:
        extra: dict[str, str] = {}
        if body.cpu is not None:
            extra["CPU"] = f"{body.cpu:g}"
        if body.memory is not None:
            extra["MEMORY"] = str(body.memory)
        ids = cloud.vms.create(who, body.template, fmt=body.format, count=body.count, name=body.name,
                               hold=body.hold, extra=extra, group=body.group)
        return JSONResponse({"ids": ids}, status_code=201)

    @r.get("/vms/{vm_id}")
    def vm_show(who: Who, vm_id: int) -> JSONResponse:
        return JSONResponse(cloud.vms.show(who, vm_id))

    @r.get("/vms/{vm_id}/log")
    def vm_log(who: Who, vm_id: int) -> JSONResponse:
        info = cloud.vms.show(who, vm_id)  # access check, and a 404 for unknown VMs
        text = console(vm_id) if console is not None else ""
        return JSONResponse({"id": vm_id, "state": info["state"], "log": text,
                             "note": "" if text else "no console log (guest not started or cleaned up)"})

    @r.post("/vms/{vm_id}/action")
    def vm_action(who: Who, vm_id: int, body: VMAction) -> JSONResponse:
        return JSONResponse(cloud.vms.action(who, vm_id, body.action, host=body.host, enforce=body.enforce))

    @r.post("/vms/{vm_id}/recover")
    def vm_recover(who: Who, vm_id: int, body: Recover) -> JSONResponse:
        return JSONResponse(cloud.vms.recover(who, vm_id, body.op))

    @r.delete("/vms/{vm_id}", status_code=204)
    def vm_delete(who: Who, vm_id: int) -> Response:
        cloud.vms.delete(who, vm_id)
        return Response(status_code=204)

    # ---- hosts
    @r.get("/hosts")
    def host_list(who: Who) -> JSONResponse:
        return JSONResponse(cloud.hosts.list(who))

    @r.post("/hosts", status_code=201)
    def host_create(who: Who, body: HostCreate) -> JSONResponse:
        return JSONResponse(cloud.hosts.create(who, body.name, body.vmm, body.transport, body.cluster,
                                               body.cpu, body.memory, body.attrs), status_code=201)

    @r.get("/hosts/{ref}")
    def host_show(who: Who, ref: str) -> JSONResponse:
        return JSONResponse(cloud.hosts.show(who, ref))

    @r.patch("/hosts/{ref}")
    def host_update(who: Who, ref: str, body: AttrsUpdate) -> JSONResponse:
        return JSONResponse(cloud.hosts.update_attrs(who, ref, body.attrs))

    @r.post("/hosts/{ref}/action")
    def host_action(who: Who, ref: str, body: Action) -> JSONResponse:
        return JSONResponse(cloud.hosts.action(who, ref, body.action))

    @r.delete("/hosts/{ref}", status_code=204)
    def host_delete(who: Who, ref: str) -> Response:
        cloud.hosts.delete(who, ref)
        return Response(status_code=204)

    # ---- templates
    @r.get("/templates")
    def template_list(who: Who) -> JSONResponse:
        return JSONResponse(cloud.templates.list(who))

    @r.post("/templates", status_code=201)
    def template_create(who: Who, body: TemplateCreate) -> JSONResponse:
        return JSONResponse(cloud.templates.create(who, body.template, body.format, body.name, body.public),
                            status_code=201)

    @r.get("/templates/{ref}")
    def template_show(who: Who, ref: str) -> JSONResponse:
        return JSONResponse(cloud.templates.get(who, ref))

    @r.post("/templates/{ref}/instantiate", status_code=201)
    def template_instantiate(who: Who, ref: str, body: Instantiate) -> JSONResponse:
        ids = cloud.instantiate(who, ref, body.count, body.name, body.hold, body.extra, body.group)
        return JSONResponse({"ids": ids}, status_code=201)

    @r.delete("/templates/{ref}", status_code=204)
    def template_delete(who: Who, ref: str) -> Response:
        cloud.templates.delete(who, ref)
        return Response(status_code=204)

    # ---- images
    @r.get("/images")
    def image_list(who: Who) -> JSONResponse:
        return JSONResponse(cloud.images.list(who))

    @r.post("/images", status_code=201)
    def image_create(who: Who, body: ImageCreate) -> JSONResponse:
        return JSONResponse(cloud.images.create(who, body.name, body.path, body.format, body.persistent,
                                                body.public, body.description), status_code=201)

    @r.get("/images/{ref}")
    def image_show(who: Who, ref: str) -> JSONResponse:
        return JSONResponse(cloud.images.show(who, ref))

    @r.post("/images/{ref}/action")
    def image_action(who: Who, ref: str, body: Action) -> JSONResponse:
        return JSONResponse(cloud.images.action(who, ref, body.action))

    @r.delete("/images/{ref}", status_code=204)
    def image_delete(who: Who, ref: str) -> Response:
        cloud.images.delete(who, ref)
        return Response(status_code=204)

    # ---- networks
    @r.get("/vnets")
    def vnet_list(who: Who) -> JSONResponse:
        return JSONResponse(cloud.networks.list(who))

    @r.post("/vnets", status_code=201)
    def vnet_create(who: Who, body: NetworkCreate) -> JSONResponse:
        return JSONResponse(cloud.networks.create(who, body.template, body.format, group=body.group),
                            status_code=201)

    @r.post("/vnets/{ref}/reserve", status_code=201)
    def vnet_reserve(who: Who, ref: str, body: NetworkReserve) -> JSONResponse:
        return JSONResponse(cloud.networks.reserve(who, ref, body.size, name=body.name, ip=body.ip,
                                                   group=body.group), status_code=201)

    @r.get("/vnets/{ref}")
    def vnet_show(who: Who, ref: str) -> JSONResponse:
        return JSONResponse(cloud.networks.show(who, ref))

    @r.post("/vnets/{ref}/hold")
    def vnet_hold(who: Who, ref: str, body: LeaseOp) -> JSONResponse:
        return JSONResponse(cloud.networks.hold(who, ref, body.ip))

    @r.post("/vnets/{ref}/release")
    def vnet_release(who: Who, ref: str, body: LeaseOp) -> JSONResponse:
        return JSONResponse(cloud.networks.hold(who, ref, body.ip, release=True))

    @r.delete("/vnets/{ref}", status_code=204)
    def vnet_delete(who: Who, ref: str) -> Response:
        cloud.networks.delete(who, ref)
        return Response(status_code=204)

    # ---- users, groups, quotas, ACLs
    @r.get("/users")
    def user_list(who: Who) -> JSONResponse:
        return JSONResponse(cloud.accounts.list_users(who))

    @r.get("/users/me")
    def user_me(who: Who) -> JSONResponse:
        return JSONResponse(cloud.accounts.show_user(who, who.user_id))

    @r.post("/users", status_code=201)
    def user_create(who: Who, body: UserCreate) -> JSONResponse:
        return JSONResponse(cloud.accounts.create_user(who, body.name, body.group, body.admin),
                            status_code=201)

    @r.get("/users/{ref}")
    def user_show(who: Who, ref: str) -> JSONResponse:
        return JSONResponse(cloud.accounts.show_user(who, ref))

    @r.post("/users/{ref}/token")
    def user_token(who: Who, ref: str) -> JSONResponse:
        return JSONResponse(cloud.accounts.new_token(who, ref))

    @r.post("/users/{ref}/enabled")
    def user_enable(who: Who, ref: str, body: Enable) -> JSONResponse:
        return JSONResponse(cloud.accounts.set_enabled(who, ref, body.enabled))

    @r.delete("/users/{ref}", status_code=204)
    def user_delete(who: Who, ref: str) -> Response:
        cloud.accounts.delete_user(who, ref)
        return Response(status_code=204)

    @r.get("/groups")
    def group_list(who: Who) -> JSONResponse:
        return JSONResponse(cloud.accounts.list_groups(who))

    @r.post("/groups", status_code=201)
    def group_create(who: Who, body: GroupCreate) -> JSONResponse:
        return JSONResponse(cloud.accounts.create_group(who, body.name, body.description), status_code=201)

    @r.get("/groups/{ref}")
    def group_show(who: Who, ref: str) -> JSONResponse:
        return JSONResponse(cloud.accounts.show_group(who, ref))

    @r.delete("/groups/{ref}", status_code=204)
    def group_delete(who: Who, ref: str) -> Response:
        cloud.accounts.delete_group(who, ref)
        return Response(status_code=204)

    @r.get("/quotas/{scope}/{ref}")
    def quota_show(who: Who, scope: str, ref: str) -> JSONResponse:
        return JSONResponse(cloud.accounts.get_quota(who, scope, ref))

    @r.put("/quotas/{scope}/{ref}")
    def quota_set(who: Who, scope: str, ref: str, body: QuotaSet) -> JSONResponse:
        return JSONResponse(cloud.accounts.set_quota(who, scope, ref, body.vms, body.cpu, body.memory))

    @r.get("/acls")
    def acl_list(who: Who) -> JSONResponse:
        return JSONResponse(cloud.accounts.list_acls(who))

    @r.post("/acls", status_code=201)
    def acl_create(who: Who, body: AclCreate) -> JSONResponse:
        return JSONResponse(cloud.accounts.create_acl(who, body.subject, body.resource, body.target,
                                                      body.rights), status_code=201)

    @r.delete("/acls/{acl_id}", status_code=204)
    def acl_delete(who: Who, acl_id: int) -> Response:
        cloud.accounts.delete_acl(who, acl_id)
        return Response(status_code=204)

    app.include_router(r)
    from vocloud.api.pools import router as pools_router  # imports Who from this module

    app.include_router(pools_router())
    return app
