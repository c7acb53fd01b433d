"""The relational schema: the store is the truth (DESIGN.md).

Units are integers wherever sums are kept in transactions, so that capacity and quota arithmetic
never drifts: CPU in milli-cores (``*_cpu_m``, 1000 = one core), memory in MiB, IPv4 addresses as
integers. Converting to cores happens at the edges (API, scheduler views).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> float:
    return datetime.now(UTC).timestamp()


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Group(Base):
    __tablename__ = "groups"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (store/sqlite_ids.py)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float, default=utcnow)


class User(Base):
    __tablename__ = "users"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (store/sqlite_ids.py)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"), index=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float, default=utcnow)


class Acl(Base):
    """A grant beyond the defaults: ``subject`` may do ``rights`` on ``resource`` of ``target``.

    Subject is a user (``#id``), a group (``@id``) or everyone (``*``); target is a group's
    objects (``@id``), one object (``#id``) or all (``*``) — OpenNebula's ACL rule shape.
    """

    __tablename__ = "acls"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (store/sqlite_ids.py)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(String(32))
    resource: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(32))
    rights: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float, default=utcnow)


class Quota(Base):
    """Limits and usage of one user or group; -1 means unlimited."""

    __tablename__ = "quotas"
    __table_args__ = (UniqueConstraint("scope", "scope_id", name="uq_quotas_scope_scope_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(8))  # "user" | "group"
    scope_id: Mapped[int] = mapped_column(Integer)
    vms_limit: Mapped[int] = mapped_column(Integer, default=-1)
    cpu_m_limit: Mapped[int] = mapped_column(BigInteger, default=-1)
    mem_limit: Mapped[int] = mapped_column(BigInteger, default=-1)
    vms_used: Mapped[int] = mapped_column(Integer, default=0)
    cpu_m_used: Mapped[int] = mapped_column(BigInteger, default=0)
    mem_used: Mapped[int] = mapped_column(BigInteger, default=0)
    # image repository bytes (MiB, rounded up per image), charged at registration (0004)
    image_mib_limit: Mapped[int] = mapped_column(BigInteger, default=-1)
    image_mib_used: Mapped[int] = mapped_column(BigInteger, default=0)


class Host(Base):
    __tablename__ = "hosts"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (store/sqlite_ids.py)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="INIT")
    vmm: Mapped[str] = mapped_column(String(32), default="sim")
    transport: Mapped[str] = mapped_column(String(255), default="local")
    cluster: Mapped[str] = mapped_column(String(128), default="default")
    total_cpu_m: Mapped[int] = mapped_column(BigInteger, default=0)
    total_mem: Mapped[int] = mapped_column(BigInteger, default=0)
    alloc_cpu_m: Mapped[int] = mapped_column(BigInteger, default=0)
    alloc_mem: Mapped[int] = mapped_column(BigInteger, default=0)
    running_vms: Mapped[int] = mapped_column(Integer, default=0)
    used_cpu_m: Mapped[int] = mapped_column(BigInteger, default=0)
    used_mem: Mapped[int] = mapped_column(BigInteger, default=0)
    attrs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str] = mapped_column(Text, default="")
    monitored_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # monitoring backoff (model/backoff.py): failed probes in a row, since when, next probe
    monitor_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    monitor_failing_since: Mapped[float | None] = mapped_column(Float, nullable=True)
    monitor_next_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=utcnow)


class VM(Base):
    __tablename__ = "vms"
    __table_args__ = (
        Index("ix_vms_state_id", "state", "id"),
        Index("ix_vms_group_id_id", "group_id", "id"),
        # the live VMs' ids: ``vm list`` reads ``limit`` entries, not the whole DONE history
        Index("ix_vms_live_id", "id", postgresql_where=text("state <> 'DONE'"),
              sqlite_where=text("state <> 'DONE'")),
        {"sqlite_autoincrement": True},  # ids never reused (store/sqlite_ids.py)
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"))
    state: Mapped[str] = mapped_column(String(24), default="PENDING")
    host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id"), nullable=True, index=True)
    target_host_id: Mapped[int | None] = mapped_column(ForeignKey("hosts.id"), nullable=True)
    cpu_m: Mapped[int] = mapped_column(BigInteger)
    vcpu: Mapped[int] = mapped_column(Integer, default=1)
    memory: Mapped[int] = mapped_column(BigInteger)
    template: Mapped[str] = mapped_column(Text, default="")
    requirements: Mapped[str | None] = mapped_column(Text, nullable=True)
    rank: Mapped[str | None] = mapped_column(Text, nullable=True)
    deploy_id: Mapped[str] = mapped_column(String(64), default="")
    sched_message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str] = mapped_column(Text, default="")
    state_changed_at: Mapped[float] = mapped_column(Float, default=utcnow)
    step_attempts: Mapped[int] = mapped_column(Integer, default=0)
    hard: Mapped[bool] = mapped_column(Boolean, default=False)  # the current step was asked --hard
    created_at: Mapped[float] = mapped_column(Float, default=utcnow)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    # Site secrets ($SECRET[name]) this VM may receive, space-separated: admitted at creation
    # because an administrator's text named them (a site template, an admin's own VM).
    site_secrets: Mapped[str] = mapped_column(Text, default="")
    # WALLTIME (s): the VM's known run time; only such VMs go to leased hosts (0013, host leases)
    walltime: Mapped[float | None] = mapped_column(Float, nullable=True)


class HostLease(Base):
    """A hypervisor leased from the batch system (0013, docs/host-leases.md): one batch job whose
    node registers itself as a transient host, until the job ends."""

    __tablename__ = "host_leases"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (store/sqlite_ids.py)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch: Mapped[str] = mapped_column(String(16))
    job_id: Mapped[str] = mapped_column(String(64), default="")
    partition: Mapped[str] = mapped_column(String(128), default="")
    walltime: Mapped[float] = mapped_column(Float)
    vmm: Mapped[str] = mapped_column(String(32), default="qemu")
    cpu_m: Mapped[int] = mapped_column(BigInteger, default=0)  # declared capacity (sim hosts)
    memory: Mapped[int] = mapped_column(BigInteger, default=0)
    state: Mapped[str] = mapped_column(String(16), default="SUBMITTED")
    token_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the one-time token
    registered: Mapped[bool] = mapped_column(Boolean, default=False)
    host_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    host_name: Mapped[str] = mapped_column(String(128), default="")
    lease_end: Mapped[float | None] = mapped_column(Float, nullable=True)
    ending_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # the node said "ending"
    message: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float, default=utcnow)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Event(Base):
    """Append-only history of state changes: ``vm show`` prints it, tests audit it."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_kind_obj", "kind", "obj_id"),
                      # accounting's window over each VM's history, in order (0009)
                      Index("ix_events_kind_obj_id_time", "kind", "obj_id", "time", "id"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[float] = mapped_column(Float, default=utcnow)
    kind: Mapped[str] = mapped_column(String(16))
    obj_id: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str] = mapped_column(String(24), default="")
    to_state: Mapped[str] = mapped_column(String(24), default="")
    message: Mapped[str] = mapped_column(Text, default="")
    # the VM's host when the change happened (0009): accounting per host across migrations
    host_id: Mapped[int | None] = mapped_column(Integer, nullable=True)


class AuditRow(Base):
    """One state-changing call a front-end made on a user's behalf (0009): who, what, on what,
    with which result, when and through which front-end (``service/audit.py``)."""

    __tablename__ = "audit"
    __table_args__ = (Index("ix_audit_time", "time"), Index("ix_audit_user_id_id", "user_id", "id"),
                      {"sqlite_autoincrement": True})  # ids never reused (store/sqlite_ids.py)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[float] = mapped_column(Float, default=utcnow)
    user_id: Mapped[int] = mapped_column(Integer)
    user_name: Mapped[str] = mapped_column(String(128))
    group_id: Mapped[int] = mapped_column(Integer)
    frontend: Mapped[str] = mapped_column(String(16), default="")
    action: Mapped[str] = mapped_column(String(64))
    obj: Mapped[str] = mapped_column(String(160), default="")
    result: Mapped[str] = mapped_column(String(32), default="ok")
    message: Mapped[str] = mapped_column(Text, default="")


class VMTemplateRow(Base):
    __tablename__ = "templates"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (store/sqlite_ids.py)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"))
    body: Mapped[str] = mapped_column(Text)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=utcnow)


class Image(Base):
    __tablename__ = "images"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (store/sqlite_ids.py)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"))
    state: Mapped[str] = mapped_column(String(16), default="READY")
    path: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16), default="qcow2")
    size_mib: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str] = mapped_column(String(64), default="")
    persistent: Mapped[bool] = mapped_column(Boolean, default=False)
    running_vms: Mapped[int] = mapped_column(Integer, default=0)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[float] = mapped_column(Float, default=utcnow)
    # the datastore holding the file (None: registered before datastores existed, 0004); an
    # uploaded file belongs to vocloud and is removed with the image
    datastore_id: Mapped[int | None] = mapped_column(ForeignKey("datastores.id"), nullable=True)
    uploaded: Mapped[bool] = mapped_column(Boolean, default=False)


class Datastore(Base):
    """A directory on the front-end that the administrator declared for image files (0004)."""

    __tablename__ = "datastores"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (store/sqlite_ids.py)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=utcnow)


class Network(Base):
    __tablename__ = "networks"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (store/sqlite_ids.py)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"))
    bridge: Mapped[str] = mapped_column(String(64), default="")
    template: Mapped[str] = mapped_column(Text, default="")
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=utcnow)
    # set by administrators only (docs/networks.md); None: untagged
    vlan_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    phydev: Mapped[str] = mapped_column(String(64), default="")
    # a reservation (``vnet reserve``) is a child whose ranges lie inside its parent's ranges
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("networks.id"), nullable=True, index=True)


class NetSegment(Base):
    """One L2 segment (bridge + VLAN, 0 untagged): the row network creates lock so that two
    concurrent creates on one segment cannot both pass the no-overlap check."""

    __tablename__ = "net_segments"
    __table_args__ = (UniqueConstraint("bridge", "vlan_id", name="uq_net_segments_bridge_vlan_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    bridge: Mapped[str] = mapped_column(String(64))
    vlan_id: Mapped[int] = mapped_column(Integer)


class AddressRange(Base):
    __tablename__ = "address_ranges"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id", ondelete="CASCADE"), index=True)
    ip_start: Mapped[int] = mapped_column(BigInteger)
    size: Mapped[int] = mapped_column(Integer)
    # FIXED leases (``LEASES=[IP=..., MAC=...]``) are ranges of size 1 with an explicit MAC
    mac: Mapped[str | None] = mapped_column(String(17), nullable=True)


class Lease(Base):
    """One address in use: by a VM (``vm_id``) or held by an admin (``held``)."""

    __tablename__ = "leases"
    __table_args__ = (UniqueConstraint("network_id", "ip", name="uq_leases_network_id_ip"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id", ondelete="CASCADE"))
    ip: Mapped[int] = mapped_column(BigInteger)
    mac: Mapped[str] = mapped_column(String(17))
    vm_id: Mapped[int | None] = mapped_column(ForeignKey("vms.id"), nullable=True, index=True)
    held: Mapped[bool] = mapped_column(Boolean, default=False)


class SiteSetting(Base):
    """Facts about this installation that every daemon on the store must agree on.

    ``instance_tag``: three random base-36 characters, drawn once by migration 0003, that make
    this installation's deploy ids (``vc<tag>-<vm id>``) — and so its tap devices, qemu process
    names and remote run directories — distinct from another installation's on a shared host.
    """

    __tablename__ = "site_settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, default="")


# ------------------------------------------------------------------ the EC2 front-end (0008)
class AccessKey(Base):
    """An EC2 access key of a user. SigV4 verification needs the secret itself, so it is kept
    sealed (Fernet) with a key file outside the database (service/access_keys.py): a copy of the
    database alone hands out no credentials."""

    __tablename__ = "access_keys"
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    secret_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=utcnow)


class KeyPair(Base):
    """An SSH public key a user registered by name (EC2 key pairs); ``pair_id`` is random."""

    __tablename__ = "key_pairs"
    __table_args__ = (UniqueConstraint("owner_id", "name", name="uq_key_pairs_owner_id"),
                      {"sqlite_autoincrement": True})
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pair_id: Mapped[str] = mapped_column(String(32), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    key_type: Mapped[str] = mapped_column(String(16))
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[float] = mapped_column(Float, default=utcnow)


class Tag(Base):
    """A key=value tag on a VM (``instance``) or an image (``image``); the object's own rights
    decide who may read and change it."""

    __tablename__ = "tags"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    obj_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(String(256), default="")


class InstanceLaunch(Base):
    """How a VM was launched through EC2's RunInstances: what DescribeInstances reports back,
    and the client token that makes a repeated request return the same instances."""

    __tablename__ = "instance_launches"
    __table_args__ = (Index("ix_instance_launches_owner_token", "owner_id", "client_token"),)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vms.id", ondelete="CASCADE"), primary_key=True)
    owner_id: Mapped[int] = mapped_column(Integer)
    image_ref: Mapped[str] = mapped_column(String(32), default="")
    instance_type: Mapped[str] = mapped_column(String(64), default="")
    key_name: Mapped[str] = mapped_column(String(255), default="")
    client_token: Mapped[str | None] = mapped_column(String(64), nullable=True)
    reservation: Mapped[str] = mapped_column(String(32), default="")
    launch_index: Mapped[int] = mapped_column(Integer, default=0)
