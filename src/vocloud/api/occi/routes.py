"""OpenNebula's OCCI server (2.x-3.8 flavour) on the daemon's port, for apache-libcloud's
``OpenNebulaNodeDriver``: ``/compute``, ``/network``, ``/storage``, ``/instance_type``.

A front-end and nothing more: it authenticates through ``service/auth.py`` (HTTP Basic
``user:token``, :class:`~vocloud.service.auth.BasicTokens`), turns each request into one service
call, renders the answer with :mod:`.documents` and maps ``vocloud.errors`` to OpenNebula's
plain-text errors. Status codes are OpenNebula's: 201 create, 202 state change, 204 delete.

The paths are exactly the ones libcloud requests; they are plain routes (no prefix mount), so
they cannot shadow ``/api/v1``, ``/RPC2``, ``/ec2/``, ``/metrics`` or ``/ui/``, and they are not
part of the REST OpenAPI document.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.exc import DataError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Router

from vocloud.api.occi import documents as doc
from vocloud.errors import IllegalAction, InvalidInput, NotFound, Unauthorized, VocloudError
from vocloud.model.attributes import check_template
from vocloud.model.instance_types import InstanceType
from vocloud.model.template import Template, parse_template
from vocloud.service.auth import Actor, BasicTokens, Credentials
from vocloud.service.cloud import Cloud

log = logging.getLogger("vocloud.occi")

XML = "application/xml; charset=utf-8"
_REALM = 'Basic realm="vocloud OCCI"'


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes = b""


#: A handler's ``(actor, base URL, ident, body)``: ``ident`` is the id from the path, or for a
#: collection VERBOSE when the query asks ``?verbose=...`` (OpenNebula's full listing).
Handler = Callable[[Actor, str, str, bytes], Reply]
VERBOSE = "verbose"


class Occi:
    """The OCCI operations, each ``(actor, base URL, id from the path, body) -> Reply``."""

    def __init__(self, cloud: Cloud, types: Mapping[str, InstanceType], site: Template | None) -> None:
        self.cloud = cloud
        self.types = dict(types)
        self.site = site

    # ------------------------------------------------------------------ compute
    def list_computes(self, actor: Actor, base: str, ident: str, _body: bytes) -> Reply:
        rows = self.cloud.vms.list(actor)
        if ident != VERBOSE:
            return Reply(200, doc.collection("compute", rows, base))
        shown = []
        for row in rows:
            try:
                shown.append(doc.compute_elem(self.cloud.vms.show(actor, row["id"]), base, self.types))
            except NotFound:  # purged between the list and the show
                continue
        return Reply(200, doc.verbose_collection("compute", shown))

    def _compute(self, actor: Actor, base: str, vm_id: int) -> bytes:
        return doc.compute(self.cloud.vms.show(actor, vm_id), base, self.types)

    def create_compute(self, actor: Actor, base: str, _ident: str, body: bytes) -> Reply:
        req = doc.parse_compute(body)
        names = ", ".join(sorted(self.types))
        if req.instance_type is None:
            raise InvalidInput(f"INSTANCE_TYPE is required; one of: {names}")
        itype = self.types.get(req.instance_type)
        if itype is None:
            raise InvalidInput(f"Bad instance type {req.instance_type[:64]!r}; one of: {names}")
        text = orjson.dumps(doc.compute_template(req, itype)).decode()
        (vm_id,) = self.cloud.vms.create(actor, text, fmt="json", name=req.name, site=self.site)
        return Reply(201, self._compute(actor, base, vm_id))

    def show_compute(self, actor: Actor, base: str, ident: str, _body: bytes) -> Reply:
        return Reply(200, self._compute(actor, base, _id("compute", ident)))

    def update_compute(self, actor: Actor, base: str, ident: str, body: bytes) -> Reply:
        vm_id = _id("compute", ident)
        wanted = doc.parse_compute_update(body)
        current = doc.occi_state(self.cloud.vms.show(actor, vm_id)["state"])
        if wanted is None:
            return Reply(200, self._compute(actor, base, vm_id))
        if wanted in doc.UNSUPPORTED_STATES:
            raise InvalidInput(doc.UNSUPPORTED_STATES[wanted])
        action = doc.STATE_ACTIONS.get(wanted)
        if action is None:
            if wanted in doc.ONE_VM_STATES:
                if wanted == current:
                    return Reply(200, self._compute(actor, base, vm_id))
                raise _Refused(f"The state of the resource cannot be changed from {current} to {wanted}.")
            raise InvalidInput(f'Invalid state: "{wanted[:32]}"; one of: '
                               f"{', '.join(sorted(doc.STATE_ACTIONS))}")
        try:
            self.cloud.vms.action(actor, vm_id, action)
        except IllegalAction:
            raise _Refused(f"The state of the resource cannot be changed from {current} to "
                           f"{wanted}.") from None
        return Reply(202, self._compute(actor, base, vm_id))

    def delete_compute(self, actor: Actor, _base: str, ident: str, _body: bytes) -> Reply:
        """OpenNebula's ``finalize``: the VM goes away at once (here: a hard terminate)."""
        vm_id = _id("compute", ident)
        try:
            self.cloud.vms.action(actor, vm_id, "terminate-hard")
        except IllegalAction as exc:
            raise _Refused(f"compute {vm_id} is {exc.state} and cannot be deleted") from None
        return Reply(204)

    # ------------------------------------------------------------------ storage, network
    def list_storage(self, actor: Actor, base: str, ident: str, _body: bytes) -> Reply:
        rows = self.cloud.images.list(actor)
        if ident == VERBOSE:
            return Reply(200, doc.verbose_collection("storage", (doc.storage_elem(i, base) for i in rows)))
        return Reply(200, doc.collection("storage", rows, base))

    def show_storage(self, actor: Actor, base: str, ident: str, _body: bytes) -> Reply:
        return Reply(200, doc.storage(self.cloud.images.show(actor, _id("storage", ident)), base))

    def update_storage(self, actor: Actor, base: str, ident: str, body: bytes) -> Reply:
        image_id = _id("storage", ident)
        action = doc.parse_storage_update(body)
        if action is None:
            return Reply(200, doc.storage(self.cloud.images.show(actor, image_id), base))
        return Reply(202, doc.storage(self.cloud.images.action(actor, image_id, action), base))

    def delete_storage(self, actor: Actor, _base: str, ident: str, _body: bytes) -> Reply:
        self.cloud.images.delete(actor, _id("storage", ident))
        return Reply(204)

    def list_networks(self, actor: Actor, base: str, ident: str, _body: bytes) -> Reply:
        rows = self.cloud.networks.list(actor)
        if ident == VERBOSE:
            return Reply(200, doc.verbose_collection("network", (doc.network_elem(n, base) for n in rows)))
        return Reply(200, doc.collection("network", rows, base))

    def show_network(self, actor: Actor, base: str, ident: str, _body: bytes) -> Reply:
        return Reply(200, doc.network(self.cloud.networks.show(actor, _id("network", ident)), base))

    def delete_network(self, actor: Actor, _base: str, ident: str, _body: bytes) -> Reply:
        self.cloud.networks.delete(actor, _id("network", ident))
        return Reply(204)

    # ------------------------------------------------------------------ instance types
    def list_types(self, _actor: Actor, base: str, ident: str, _body: bytes) -> Reply:
        return Reply(200, doc.instance_types(self.types, base, verbose=ident == VERBOSE))

    def show_type(self, _actor: Actor, base: str, ident: str, _body: bytes) -> Reply:
        t = self.types.get(ident)
        if t is None:
            raise NotFound(f"INSTANCE_TYPE {ident[:64]} not found")
        return Reply(200, doc.instance_type(t, base))


class _Refused(VocloudError):
    """OpenNebula's 403 for a state change the resource's state does not allow."""

    status = 403
    code = "Forbidden"


def _not_supported(what: str) -> Handler:
    def handler(_actor: Actor, _base: str, _ident: str, _body: bytes) -> Reply:
        raise _NotImplemented(f"{what} is not supported by vocloud's OCCI server (docs/occi.md)")
    return handler


class _NotImplemented(VocloudError):
    status = 501
    code = "NotImplemented"


def _id(kind: str, ident: str) -> int:
    if not ident.isascii() or not ident.isdigit() or len(ident) > 10 or int(ident) > doc.MAX_ID:
        raise NotFound(f"{kind} {ident[:32]!r} not found: ids are whole numbers")
    return int(ident)


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(message.encode(), status_code=status, media_type="text/plain; charset=utf-8",
                    headers=headers)


def _credentials(request: Request) -> Credentials | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return Credentials(scheme.strip(), value.strip())


def _endpoint(cloud: Cloud, handlers: dict[str, Handler],
              ident_param: str | None) -> Callable[[Request], Awaitable[Response]]:
    allowed = ", ".join(sorted(handlers))

    async def endpoint(request: Request) -> Response:
        handler = handlers.get(request.method)
        if handler is None:
            return _text(405, f"{request.method} is not allowed on {request.url.path[:200]}; "
                              f"use {allowed}", {"Allow": allowed})
        ident = str(request.path_params.get(ident_param, "")) if ident_param else \
            (VERBOSE if request.query_params.get("verbose") else "")
        base = f"{request.url.scheme}://{request.url.netloc}"
        try:
            creds = _credentials(request)
            if creds is None:
                raise Unauthorized("authentication required: HTTP Basic user:token")
            actor = await run_in_threadpool(cloud.authenticate_with, creds)
            body = await request.body() if request.method in ("POST", "PUT") else b""
            reply = await run_in_threadpool(handler, actor, base, ident, body)
        except Unauthorized as exc:
            return _text(401, exc.message, {"WWW-Authenticate": _REALM})
        except VocloudError as exc:
            return _text(exc.status, exc.message)
        except DataError as exc:  # a value the store cannot hold: the service should have caught it
            log.warning("store refused a value: %s", exc.orig)
            return _text(400, "a value does not fit the store")
        except RecursionError:
            return _text(400, "input is nested too deeply")
        if reply.status == 204:
            return Response(status_code=204)
        return Response(reply.body, status_code=reply.status, media_type=XML,
                        headers={"Cache-Control": "no-store"})

    return endpoint


def router(cloud: Cloud, types: Mapping[str, InstanceType], site: Template | None = None) -> Router:
    """The OCCI routes, as a Starlette router whose routes the daemon adds to its app."""
    occi = Occi(cloud, types, site)
    r = Router()
    table: list[tuple[str, dict[str, Handler], str | None]] = [
        ("/compute", {"GET": occi.list_computes, "POST": occi.create_compute}, None),
        ("/compute/{id}", {"GET": occi.show_compute, "PUT": occi.update_compute,
                           "DELETE": occi.delete_compute}, "id"),
        ("/compute/{id}/action", {"POST": _not_supported("attaching or detaching disks")}, "id"),
        ("/storage", {"GET": occi.list_storage, "POST": _not_supported("creating storage")}, None),
        ("/storage/{id}", {"GET": occi.show_storage, "DELETE": occi.delete_storage,
                           "PUT": occi.update_storage}, "id"),
        ("/network", {"GET": occi.list_networks, "POST": _not_supported("creating networks")}, None),
        ("/network/{id}", {"GET": occi.show_network, "DELETE": occi.delete_network,
                           "PUT": _not_supported("updating networks")}, "id"),
        ("/instance_type", {"GET": occi.list_types}, None),
        ("/instance_type/{id}", {"GET": occi.show_type}, "id"),
    ]
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    for path, handlers, param in table:
        r.add_route(path, _endpoint(cloud, handlers, param), methods=methods, include_in_schema=False)
    return r


def site_template(text: str) -> Template | None:
    """The administrator's OCCI template (setting ``occi_template``, ONE syntax) merged into
    every OCCI VM, as OpenNebula's OCCI server merged its ``common.erb``: e.g. the kernel of
    the site's images. Checked at start-up so a bad setting stops the daemon, not a request."""
    if not text.strip():
        return None
    tmpl = parse_template(text, fmt="one", source="setting occi_template")
    check_template(tmpl, True)
    return tmpl


def mount(app: Any, cloud: Cloud, types: Mapping[str, InstanceType], occi_template: str = "") -> None:
    """Add the OCCI routes to the daemon's app and accept HTTP Basic ``user:token``."""
    cloud.authenticators.register(BasicTokens())
    app.router.routes.extend(router(cloud, types, site_template(occi_template)).routes)
