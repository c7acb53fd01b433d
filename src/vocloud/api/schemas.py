"""Response schemas of the REST API, for its OpenAPI document only.

Handlers return orjson ``JSONResponse`` objects built from the service's dicts, so these models
cost nothing per request: they are never used to validate or serialise. They exist so that the
document says exactly what comes back, and the schemathesis suite (``tests/integration/
test_api_fuzz.py``) checks every response against them. Models allow extra keys (a field added
by the service does not make the document lie); every field listed is always present, with the
type given (``| None`` where the value may be null).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Error(BaseModel):
    """Every error: a stable machine code and a sentence for humans."""

    error: str = Field(description="machine code: InvalidInput, ParseError, Unauthorized, "
                                   "Forbidden, NotFound, Conflict, IllegalAction, QuotaExceeded, "
                                   "NoCapacity, PayloadTooLarge, MethodNotAllowed, DriverError, "
                                   "InternalError")
    message: str = Field(description="what went wrong, naming the offending attribute")
    details: dict[str, Any] | None = Field(None, description="machine-readable context, if any")


# ---------------------------------------------------------------- misc
class Health(BaseModel):
    status: str
    version: str


class Transition(BaseModel):
    state: str
    action: str
    next: str


class Lifecycle(BaseModel):
    vm: list[Transition]
    vm_user_actions: list[str]
    host: list[Transition]


class Ids(BaseModel):
    ids: list[int]


class AttributeRow(BaseModel):
    name: str = Field(description="NAME, or VECTOR/NAME inside DISK, NIC")
    scope: str = Field(description="VM (top level), DISK or NIC")
    access: str = Field(description="user, admin (restricted) or internal (set by vocloud)")
    restricted: bool
    internal: bool
    description: str
    consumer: str = Field(description="the part of vocloud that reads it")
    site: bool = Field(False, description="restricted by this site's restricted_attrs setting")


class Attributes(BaseModel):
    """The VM template attribute catalogue (docs/security.md), with the site's extensions."""

    attributes: list[AttributeRow]
    site_restricted: list[str]


# ---------------------------------------------------------------- VMs
class VMRow(BaseModel):
    id: int
    name: str
    user: str
    group: str
    state: str
    stat: str
    cpu: float
    memory: int
    host: str | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    owner_id: int
    group_id: int
    host_id: int | None


class VMLease(BaseModel):
    ip: str
    mac: str
    network: str


class HistoryEntry(BaseModel):
    time: float
    action: str
    from_: str = Field(alias="from")
    to: str
    message: str


class VMWaiting(BaseModel):
    """An owed step waiting for its host (docs/faults.md)."""

    host: str
    since: float | None
    reason: str
    message: str


class VMShow(BaseModel):
    id: int
    name: str
    state: str
    stat: str
    user: str | None
    group: str | None
    owner_id: int
    group_id: int
    host: str | None
    host_id: int | None
    cpu: float
    vcpu: int
    memory: int
    deploy_id: str
    requirements: str | None
    rank: str | None
    sched_message: str
    error: str
    created_at: float
    started_at: float | None
    ended_at: float | None
    state_changed_at: float
    waiting: VMWaiting | None = None
    allowed_actions: list[str]
    leases: list[VMLease]
    template: str
    history: list[HistoryEntry]


class VMActionResult(BaseModel):
    id: int
    name: str
    state: str
    host: str | None
    host_id: int | None
    cpu: float
    memory: int


class ConsoleLog(BaseModel):
    id: int
    state: str
    log: str
    note: str


# ---------------------------------------------------------------- hosts
class Host(BaseModel):
    id: int
    name: str
    state: str
    vmm: str
    transport: str
    cluster: str
    running_vms: int
    total_cpu: float
    alloc_cpu: float
    free_cpu: float
    total_mem: int
    alloc_mem: int
    free_mem: int
    used_cpu: float
    used_mem: int
    attrs: dict[str, str]
    error: str
    monitored_at: float | None


class HostShow(Host):
    vms: list[int]


# ---------------------------------------------------------------- templates, images, networks
class TemplateOut(BaseModel):
    id: int
    name: str
    owner_id: int
    group_id: int
    public: bool
    body: str
    created_at: float


class ImageOut(BaseModel):
    id: int
    name: str
    state: str
    path: str
    format: str
    size_mib: int
    sha256: str
    persistent: bool
    public: bool
    running_vms: int
    owner_id: int
    group_id: int
    description: str
    datastore_id: int | None
    uploaded: bool = Field(description="the file belongs to vocloud and is removed with the image")


class DatastoreOut(BaseModel):
    id: int
    name: str
    path: str
    images: int = Field(description="images registered in it")
    created_at: float


class AddressRangeOut(BaseModel):
    ip: str
    size: int
    mac: str


class LeaseOut(BaseModel):
    ip: str
    mac: str
    vm_id: int | None
    held: bool


class NetworkOut(BaseModel):
    id: int
    name: str
    bridge: str
    public: bool
    owner_id: int
    group_id: int
    size: int
    used_leases: int
    ranges: list[AddressRangeOut]


class NetworkShow(NetworkOut):
    leases: list[LeaseOut]
    template: str


# ---------------------------------------------------------------- accounts
class UsedLimit(BaseModel):
    used: int
    limit: int = Field(description="-1: unlimited")


class CpuUsedLimit(BaseModel):
    used: float
    limit: float = Field(description="cores; -1: unlimited")


class QuotaOut(BaseModel):
    scope: str
    id: int
    vms: UsedLimit
    cpu: CpuUsedLimit
    memory: UsedLimit


class UserOut(BaseModel):
    id: int
    name: str
    group_id: int
    group: str | None
    is_admin: bool
    enabled: bool


class UserShow(UserOut):
    quota: QuotaOut


class UserCreated(UserOut):
    token: str = Field(description="the new user's bearer token, shown this once only")


class AccessKeyOut(BaseModel):
    access_key_id: str = Field(description="the EC2 access key id (AWS_ACCESS_KEY_ID)")
    user: str
    user_id: int
    created_at: float


class AccessKeyCreated(AccessKeyOut):
    secret_access_key: str = Field(description="the secret (AWS_SECRET_ACCESS_KEY), shown this once only")


class TokenOut(BaseModel):
    id: int
    name: str
    token: str = Field(description="the new bearer token, shown this once only")


class GroupOut(BaseModel):
    id: int
    name: str
    description: str


class GroupRow(GroupOut):
    users: int


class GroupShow(GroupOut):
    users: list[str]
    quota: QuotaOut


class AclOut(BaseModel):
    id: int
    subject: str
    resource: str
    target: str
    rights: str


# ---------------------------------------------------------------- pools
class PoolOut(BaseModel):
    id: int
    vo: str
    group_id: int
    template_id: int
    template: str
    image: str
    cores: int
    memory: int
    min: int | None
    max: int | None
    weight: float | None
    idle_timeout: float | None
    boot_timeout: float | None
    max_lifetime: float | None
    max_boots_per_minute: int | None
    scale_down_delay: float | None
    burst_limit: int = 0
    site_workers: int = 0  # workers on the site's hosts / on cloud hosts (docs/bursting.md)
    cloud_workers: int = 0
    worker_shape: str
    headroom: float = 0.0
    prestage: str = "site"
    enabled: bool
    deleting: bool
    created_at: float | None
    status_at: float | None
    notes: list[str]
    pending_jobs: int
    pending_cores: int
    desired: int
    booting: int
    running: int
    draining: int
    idle: int


class PoolVM(BaseModel):
    name: str
    vm_id: int | None
    state: str
    since: float | None
    requested_at: float | None
    joined_at: float | None
    running_jobs: int | None
    host: str | None
    reason: str | None


class PoolBackoff(BaseModel):
    key: str
    failures: int
    retry_at: float | None


class PoolShow(PoolOut):
    vms: list[PoolVM]
    backoff: list[PoolBackoff]


class PoolDeleted(BaseModel):
    vo: str
    deleted: bool
    draining: int


class PoolWorkerBooted(BaseModel):
    id: int
    name: str
    vo: str
    owner: str
    template: str
    site_template: str
    cores: int
    memory: int


class PoolEvent(BaseModel):
    time: float
    action: str
    count: int | None
    vm_id: int | None
    reason: str | None
