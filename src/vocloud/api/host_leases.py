"""REST routes of host leases, ``/api/v1/host-leases`` (docs/host-leases.md): a thin skin over
``service/host_leases.py``.

Administrators request, list, show and cancel leases (the ``Who`` dependency, as every route).
Two routes are the leased node's agent's: ``register`` and ``ending``. They carry no user
credentials but the lease's one-time token in the body, which the service checks (a wrong token,
a wrong lease and an ended lease get the same 403).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field, StringConstraints

from vocloud.api.common import MAX_CPU, MAX_MIB, OneHopRoute, Strict, Who, ok
from vocloud.api.http import JSONResponse
from vocloud.service.base import MAX_ID
from vocloud.service.host_leases import MAX_NODES, HostLeaseService

LeasePath = Annotated[int, Path(ge=1, le=MAX_ID, description="host lease id")]
Word = Annotated[str, StringConstraints(max_length=128)]


class LeaseRequest(Strict):
    batch: Annotated[str, StringConstraints(min_length=1, max_length=32)] = Field(
        description="the batch system to lease from (host_lease_batch): slurm, gridengine")
    nodes: int = Field(ge=1, le=MAX_NODES, description="nodes, one batch job each")
    walltime: Annotated[str, StringConstraints(min_length=1, max_length=32)] = Field(
        description="how long: 3600, 1:00:00, 2h, 1-00:00:00 (at least a minute)")
    partition: Word = ""
    vmm: Annotated[str, StringConstraints(min_length=1, max_length=32)] = "qemu"
    cpu: float | None = Field(None, gt=0, le=MAX_CPU, description="declared cores (sim hosts)")
    memory: int | None = Field(None, ge=1, le=MAX_MIB, description="declared MiB (sim hosts)")


class AgentToken(Strict):
    token: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class AgentRegister(AgentToken):
    address: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="the node's address as the daemon reaches it")
    started: float = Field(ge=0, le=1e11, description="when the job started (epoch s)")
    cpu: float | None = Field(None, gt=0, le=MAX_CPU)
    memory: int | None = Field(None, ge=1, le=MAX_MIB)


class LeaseOut(BaseModel):
    id: int
    batch: str
    job_id: str
    partition: str
    walltime: float
    vmm: str
    state: str
    host_id: int | None
    host: str
    lease_end: float | None
    ending_at: float | None
    message: str
    created_at: float
    ended_at: float | None


class EndingOut(BaseModel):
    id: int
    state: str
    done: bool


def _service(request: Request) -> HostLeaseService:
    svc = getattr(request.app.state, "host_leases", None)
    return svc if isinstance(svc, HostLeaseService) else HostLeaseService(request.app.state.cloud.db)


def router() -> APIRouter:
    r = APIRouter(prefix="/api/v1", route_class=OneHopRoute)

    @r.get("/host-leases", responses=ok(list[LeaseOut]))
    def lease_list(who: Who, request: Request, all: bool = False) -> JSONResponse:
        return JSONResponse(_service(request).list(who, all_=all))

    @r.post("/host-leases", status_code=201, responses=ok(list[LeaseOut], 201))
    def lease_create(who: Who, request: Request, body: LeaseRequest) -> JSONResponse:
        out = _service(request).request(who, body.batch, body.nodes, body.walltime, body.partition,
                                        body.vmm, body.cpu, body.memory)
        return JSONResponse(out, status_code=201)

    @r.get("/host-leases/{lease_id}", responses=ok(LeaseOut))
    def lease_show(who: Who, request: Request, lease_id: LeasePath) -> JSONResponse:
        return JSONResponse(_service(request).show(who, lease_id))

    @r.delete("/host-leases/{lease_id}", responses=ok(LeaseOut))
    def lease_cancel(who: Who, request: Request, lease_id: LeasePath) -> JSONResponse:
        return JSONResponse(_service(request).cancel(who, lease_id))

    @r.post("/host-leases/{lease_id}/register", responses=ok(LeaseOut))
    def lease_register(request: Request, lease_id: LeasePath, body: AgentRegister) -> JSONResponse:
        return JSONResponse(_service(request).register(lease_id, body.token, body.address,
                                                       body.started, body.cpu, body.memory))

    @r.post("/host-leases/{lease_id}/ending", responses=ok(EndingOut))
    def lease_ending(request: Request, lease_id: LeasePath, body: AgentToken) -> JSONResponse:
        return JSONResponse(_service(request).ending(lease_id, body.token))

    return r
