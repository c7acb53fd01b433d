"""Tables of the VO worker-node pools, on the same ``Base`` as the rest of the store.

Why the pools live in the store and not in the controller's memory: the controller is
level-triggered and may be restarted at any instant. Every decision it takes (boot N, drain X,
shut down Y) is written here *before* it is carried out, so a new controller on the same store
finds the REQUESTED rows of the boots it already decided and never boots twice for one demand.

Units follow ``schema.py`` and the planner: cores are whole cores, memory is MiB, times are
seconds on the controller's clock (Unix epoch in the daemon, a virtual clock in tests).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from vocloud.store.schema import Base, utcnow


class PoolRow(Base):
    """One VO's pool: the policy the planner is given, plus the last plan's status row.

    ``template_id``: the stored VM template the workers boot from (its image is the VO's own or
    the site's standard one); ``image`` is the label shown in ``pool list`` and the key of the
    image backoff. ``deleting``: a forced delete is in progress (max 0, the controller drains and
    removes every VM, then deletes the pool). ``status``: the planner's ``PoolStatus`` of the
    last pass, so ``pool list`` costs one query and never re-plans.
    """

    __tablename__ = "pools"
    __table_args__ = {"sqlite_autoincrement": True}  # ids never reused (store/sqlite_ids.py)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    vo: Mapped[str] = mapped_column(String(128), unique=True)
    group_id: Mapped[int] = mapped_column(ForeignKey("groups.id"), index=True)
    template_id: Mapped[int] = mapped_column(ForeignKey("templates.id"))
    # who the workers are created as: the VO's pool identity (NULL: a pool from before 0007)
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    # the administrator's site template merged into every worker; NULL: the daemon's default
    site_template_id: Mapped[int | None] = mapped_column(ForeignKey("templates.id"), nullable=True)
    image: Mapped[str] = mapped_column(String(128))
    cores: Mapped[int] = mapped_column(Integer)
    memory: Mapped[int] = mapped_column(Integer)
    min_vms: Mapped[int] = mapped_column(Integer, default=0)
    max_vms: Mapped[int] = mapped_column(Integer, default=10)
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    idle_timeout: Mapped[float] = mapped_column(Float, default=300.0)
    boot_timeout: Mapped[float] = mapped_column(Float, default=600.0)
    max_lifetime: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_boots_per_minute: Mapped[int] = mapped_column(Integer, default=10)
    scale_down_delay: Mapped[float] = mapped_column(Float, default=120.0)
    # workers it may run on cloud tiers (core/burst.py); 0: the site only (0011)
    burst_limit: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # fixed | job | host: how the workers are sized (vocloud.elastic.shape); 0016
    worker_shape: Mapped[str] = mapped_column(String(8), default="fixed", server_default="fixed")
    # spare workers per busy worker, booted ahead of demand (PoolPolicy.headroom); 0020
    headroom: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # pre-stage mode of the pool's image (core/prestage.Mode); None: the site's pool_prestage; 0021
    prestage: Mapped[str | None] = mapped_column(String(8), nullable=True, default=None)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    deleting: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=utcnow)


class PoolVMRow(Base):
    """One worker of a pool; ``name`` is both the VM name and the batch node name.

    The row exists before its VM (state REQUESTED, ``vm_id`` NULL): that is the persisted boot
    decision. ``vm_id`` is set once the VM is created; a row still unbound after a grace period
    is bound again by looking the VM up by name first, so a crash between the two never doubles
    a VM. Rows reaching GONE are kept as the pool's boot history (rate limit, audit).
    """

    __tablename__ = "pool_vms"
    __table_args__ = (Index("ix_pool_vms_pool_id_state", "pool_id", "state"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"))
    vm_id: Mapped[int | None] = mapped_column(ForeignKey("vms.id", ondelete="SET NULL"),
                                              nullable=True, unique=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="REQUESTED")
    state_since: Mapped[float] = mapped_column(Float)
    requested_at: Mapped[float] = mapped_column(Float)
    joined_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    idle_since: Mapped[float | None] = mapped_column(Float, nullable=True)
    running_jobs: Mapped[int] = mapped_column(Integer, default=0)
    free_cores: Mapped[int] = mapped_column(Integer, default=0)
    free_memory: Mapped[int] = mapped_column(Integer, default=0)
    host: Mapped[str | None] = mapped_column(String(128), nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")
    # the worker's own size when the plan chose one (worker shape job/host); NULL: the pool's
    cores: Mapped[int | None] = mapped_column(Integer, nullable=True)
    memory: Mapped[int | None] = mapped_column(Integer, nullable=True)


class PoolEventRow(Base):
    """One decision or observation of the controller, explained in one line (``pool events``)."""

    __tablename__ = "pool_events"
    __table_args__ = (Index("ix_pool_events_pool_id_id", "pool_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"))
    time: Mapped[float] = mapped_column(Float)
    action: Mapped[str] = mapped_column(String(32))
    count: Mapped[int] = mapped_column(Integer, default=1)
    vm_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")


class PoolBackoffRow(Base):
    """Exponential backoff of one image (``image:<name>``) or host (``host:<name>``) of a pool."""

    __tablename__ = "pool_backoff"
    __table_args__ = (UniqueConstraint("pool_id", "key", name="uq_pool_backoff_pool_id_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    pool_id: Mapped[int] = mapped_column(ForeignKey("pools.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(160))
    failures: Mapped[int] = mapped_column(Integer, default=0)
    retry_at: Mapped[float] = mapped_column(Float, default=0.0)
    last_failure: Mapped[float | None] = mapped_column(Float, nullable=True)
