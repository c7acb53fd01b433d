"""VO worker-node pools: create, list, show, update, delete, and the decision log.

Who may do what, and why: a pool spends site capacity on behalf of a VO, so only an
administrator or someone holding MANAGE on the VO's *group* may create or change it (grant a
VO's managers ``acl create @<gid> GROUP @<gid> MANAGE``). Members of the VO may look (USE on
their group); other VOs see nothing of it. A pool boots workers from a stored VM template that
the VO itself could instantiate (its own group's, a public one, or one granted by ACL), so a
pool can never be used to boot another VO's private image.

Every rule is checked before anything is written: bad input gets a typed error and changes
nothing. Validation of the numbers is :class:`~vocloud.elastic.policy.PoolPolicy`'s own, so the
service and the planner can never disagree about what a valid pool is.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vocloud.elastic.policy import PoolPolicy, PoolVMState
from vocloud.errors import Conflict, Forbidden, InvalidInput, NotFound
from vocloud.model.template import parse_template
from vocloud.service.acl import ObjRef, allowed
from vocloud.service.auth import Actor
from vocloud.service.base import find, load_rules
from vocloud.store.db import Database
from vocloud.store.pools import PoolBackoffRow, PoolEventRow, PoolRow, PoolVMRow
from vocloud.store.schema import Group, VMTemplateRow

#: Settable pool attributes (API/CLI names) -> column names. Everything else is refused.
SETTABLE: dict[str, str] = {
    "template": "template_id", "cores": "cores", "memory": "memory", "min": "min_vms",
    "max": "max_vms", "weight": "weight", "idle_timeout": "idle_timeout",
    "boot_timeout": "boot_timeout", "max_lifetime": "max_lifetime",
    "max_boots_per_minute": "max_boots_per_minute", "scale_down_delay": "scale_down_delay",
    "enabled": "enabled",
}

#: The status columns of ``pool list`` (from the last plan's PoolStatus), zero before any plan.
#: The planner's defaults, used for attributes a new pool does not set.
_DEFAULTS = PoolPolicy(vo="-", image="-", cores_per_vm=1, memory_mib_per_vm=1)

STATUS_KEYS = ("pending_jobs", "pending_cores", "desired", "booting", "running", "draining", "idle")


def policy_of(row: PoolRow) -> PoolPolicy:
    """The planner's view of a pool row (raises InvalidInput if the row is not a valid policy)."""
    return PoolPolicy(
        vo=row.vo, image=row.image, cores_per_vm=row.cores, memory_mib_per_vm=row.memory,
        min_vms=row.min_vms, max_vms=row.max_vms, weight=row.weight,
        idle_timeout_s=row.idle_timeout, boot_timeout_s=row.boot_timeout,
        max_lifetime_s=row.max_lifetime, max_boots_per_minute=row.max_boots_per_minute,
        scale_down_delay_s=row.scale_down_delay,
    )


def image_label(template: VMTemplateRow) -> str:
    """What ``pool list`` shows as IMAGE and what the image backoff is keyed by: the first
    disk's image, else the template's name (a template without disks boots a kernel only)."""
    t = parse_template(template.body, fmt="one", source=f"template {template.name}")
    for disk in t.vectors("DISK"):
        name = disk.get("IMAGE") or (f"image-{disk['IMAGE_ID']}" if "IMAGE_ID" in disk else "")
        if name:
            return name[:128]
    return template.name


def pool_dict(row: PoolRow, template: str = "") -> dict[str, Any]:
    st = row.status or {}
    out: dict[str, Any] = {
        "id": row.id, "vo": row.vo, "group_id": row.group_id, "template_id": row.template_id,
        "template": template, "image": row.image, "cores": row.cores, "memory": row.memory,
        "min": row.min_vms, "max": row.max_vms, "weight": row.weight,
        "idle_timeout": row.idle_timeout, "boot_timeout": row.boot_timeout,
        "max_lifetime": row.max_lifetime, "max_boots_per_minute": row.max_boots_per_minute,
        "scale_down_delay": row.scale_down_delay, "enabled": row.enabled,
        "deleting": row.deleting, "created_at": row.created_at, "status_at": row.status_at,
        "notes": list(st.get("notes", [])),
    }
    for key in STATUS_KEYS:
        out[key] = int(st.get(key, 0))
    return out


def _group_ref(group: Group) -> ObjRef:
    return ObjRef("GROUP", group.id, group_id=group.id)


def _may(s: Session, actor: Actor, right: str, group: Group) -> bool:
    if actor.is_admin:
        return True
    if right == "USE" and actor.group_id == group.id:
        return True
    return allowed(actor, right, _group_ref(group), load_rules(s))


def _require(s: Session, actor: Actor, right: str, group: Group, what: str) -> None:
    if not _may(s, actor, right, group):
        raise Forbidden(f"user {actor.name} may not {what} the pool of VO {group.name} "
                        f"(needs {right} on group {group.name})")


class PoolService:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------ helpers
    @staticmethod
    def _pool(s: Session, vo: str, lock: bool = False) -> PoolRow:
        stmt = select(PoolRow).where(PoolRow.vo == vo)
        if lock:
            stmt = stmt.with_for_update()
        row = s.scalars(stmt).first()
        if row is None:
            raise NotFound(f"VO {vo} has no pool")
        return row

    @staticmethod
    def _template(s: Session, ref: int | str, group: Group) -> VMTemplateRow:
        """The template, if the VO's group could instantiate it itself (own, public or ACL)."""
        tmpl = find(s, VMTemplateRow, "template", ref)
        as_vo = Actor(user_id=-1, name=f"VO {group.name}", group_id=group.id, is_admin=False)
        ref_obj = ObjRef("TEMPLATE", tmpl.id, tmpl.owner_id, tmpl.group_id, tmpl.public)
        if not allowed(as_vo, "USE", ref_obj, load_rules(s)):
            raise Forbidden(f"template {tmpl.name} is not visible to VO {group.name}: use one of "
                            "the VO's own templates or a public one")
        return tmpl

    @staticmethod
    def _check_policy(row: PoolRow) -> None:
        policy_of(row)

    @staticmethod
    def _values(changes: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(changes) - set(SETTABLE))
        if unknown:
            raise InvalidInput(f"unknown pool attribute(s): {', '.join(unknown)}; one of: "
                               f"{', '.join(sorted(SETTABLE))}")
        return {k: v for k, v in changes.items() if v is not None}

    # ------------------------------------------------------------ create / update / delete
    def create(self, actor: Actor, vo: str, template: int | str, cores: int, memory: int,
               **options: Any) -> dict[str, Any]:
        """Create VO ``vo``'s pool (the VO is an existing group), booting from ``template``."""
        values = self._values({"template": template, "cores": cores, "memory": memory, **options})
        with self.db.write() as s:
            group = s.scalars(select(Group).where(Group.name == vo)).first()
            if group is None:
                raise NotFound(f"VO {vo!r} is not a group: create the group first")
            _require(s, actor, "MANAGE", group, "create")
            tmpl = self._template(s, values.pop("template"), group)
            if s.scalar(select(PoolRow.id).where(PoolRow.vo == vo)) is not None:
                raise Conflict(f"VO {vo} already has a pool (use pool update)")
            row = PoolRow(vo=vo, group_id=group.id, template_id=tmpl.id, image=image_label(tmpl),
                          status={})
            d = _DEFAULTS
            row.min_vms, row.max_vms, row.weight = d.min_vms, d.max_vms, d.weight
            row.idle_timeout, row.boot_timeout = d.idle_timeout_s, d.boot_timeout_s
            row.max_lifetime, row.max_boots_per_minute = None, d.max_boots_per_minute
            row.scale_down_delay = d.scale_down_delay_s
            row.enabled, row.deleting = True, False
            self._apply(row, values)
            self._check_policy(row)
            s.add(row)
            s.flush()
            _event(s, row.id, 0.0, "create", 0, None, f"pool created by {actor.name}")
            return pool_dict(row, tmpl.name)

    @staticmethod
    def _apply(row: PoolRow, values: dict[str, Any]) -> None:
        for key, value in values.items():
            col = SETTABLE[key]
            try:
                if col in ("weight", "idle_timeout", "boot_timeout", "max_lifetime",
                           "scale_down_delay"):
                    setattr(row, col, None if value is None else float(value))
                elif col == "enabled":
                    if not isinstance(value, bool):
                        raise ValueError
                    row.enabled = value
                else:
                    if isinstance(value, bool) or int(value) != value:
                        raise ValueError
                    setattr(row, col, int(value))
            except (TypeError, ValueError):
                raise InvalidInput(f"pool {key}: bad value {value!r}") from None

    def update(self, actor: Actor, vo: str, **changes: Any) -> dict[str, Any]:
        """Change a pool's policy; all checks pass or nothing changes.

        ``max_lifetime=0`` clears the lifetime limit (``None`` means "leave as is").
        """
        values = self._values(changes)
        if not values:
            raise InvalidInput("nothing to update")
        with self.db.write() as s:
            row = self._pool(s, vo, lock=True)
            group = s.get(Group, row.group_id)
            assert group is not None
            _require(s, actor, "MANAGE", group, "update")
            if row.deleting:
                raise Conflict(f"the pool of VO {vo} is being deleted")
            if "template" in values:
                tmpl = self._template(s, values["template"], group)
                row.image = image_label(tmpl)
                values["template"] = tmpl.id
            if values.get("max_lifetime") == 0:
                values["max_lifetime"] = None
                row.max_lifetime = None
                del values["max_lifetime"]
            self._apply(row, values)
            self._check_policy(row)  # the write transaction rolls back on error
            changed = ", ".join(f"{k}={v}" for k, v in sorted(changes.items()) if v is not None)
            _event(s, row.id, 0.0, "update", 0, None, f"updated by {actor.name}: {changed}")
            tname = s.scalar(select(VMTemplateRow.name).where(VMTemplateRow.id == row.template_id))
            return pool_dict(row, tname or "")

    def delete(self, actor: Actor, vo: str, force: bool = False) -> dict[str, Any]:
        """Delete a pool with no workers; ``force`` drains and removes them first.

        A forced delete sets the pool to 0 VMs: the controller drains every worker (running
        jobs finish), shuts them down and then deletes the pool. Nothing is ever killed.
        """
        with self.db.write() as s:
            row = self._pool(s, vo, lock=True)
            group = s.get(Group, row.group_id)
            assert group is not None
            _require(s, actor, "MANAGE", group, "delete")
            live = live_vms(s, row.id)
            if live and not force:
                raise Conflict(f"the pool of VO {vo} still has {live} VMs: lower its max to 0 and "
                               "wait, or delete with --force to drain and remove them")
            if live:
                row.deleting, row.min_vms, row.max_vms = True, 0, 0
                _event(s, row.id, 0.0, "delete", live, None,
                       f"forced delete by {actor.name}: draining {live} VMs first")
                return {"vo": vo, "deleted": False, "draining": live}
            purge(s, row)
            return {"vo": vo, "deleted": True, "draining": 0}

    # ------------------------------------------------------------ reads
    def show(self, actor: Actor, vo: str) -> dict[str, Any]:
        with self.db.read() as s:
            row = self._pool(s, vo)
            group = s.get(Group, row.group_id)
            assert group is not None
            _require(s, actor, "USE", group, "see")
            tname = s.scalar(select(VMTemplateRow.name).where(VMTemplateRow.id == row.template_id))
            out = pool_dict(row, tname or "")
            out["vms"] = [
                {"name": v.name, "vm_id": v.vm_id, "state": v.state, "since": v.state_since,
                 "requested_at": v.requested_at, "joined_at": v.joined_at,
                 "running_jobs": v.running_jobs, "host": v.host, "reason": v.reason}
                for v in s.scalars(select(PoolVMRow).where(PoolVMRow.pool_id == row.id)
                                   .where(PoolVMRow.state != PoolVMState.GONE.value)
                                   .order_by(PoolVMRow.id))
            ]
            out["backoff"] = [
                {"key": b.key, "failures": b.failures, "retry_at": b.retry_at}
                for b in s.scalars(select(PoolBackoffRow).where(PoolBackoffRow.pool_id == row.id)
                                   .where(PoolBackoffRow.failures > 0).order_by(PoolBackoffRow.key))
            ]
            return out

    def events(self, actor: Actor, vo: str, limit: int = 100) -> list[dict[str, Any]]:
        """The pool's decisions, newest last, each explained in one line."""
        if not 1 <= limit <= 10_000:
            raise InvalidInput(f"limit must be between 1 and 10000, got {limit}")
        with self.db.read() as s:
            row = self._pool(s, vo)
            group = s.get(Group, row.group_id)
            assert group is not None
            _require(s, actor, "USE", group, "see")
            rows = list(s.scalars(select(PoolEventRow).where(PoolEventRow.pool_id == row.id)
                                  .order_by(PoolEventRow.id.desc()).limit(limit)))
            return [{"time": e.time, "action": e.action, "count": e.count, "vm_id": e.vm_id,
                     "reason": e.reason} for e in reversed(rows)]


    def list(self, actor: Actor) -> list[dict[str, Any]]:
        with self.db.read() as s:
            stmt = select(PoolRow, VMTemplateRow.name).join(
                VMTemplateRow, VMTemplateRow.id == PoolRow.template_id).order_by(PoolRow.vo)
            out = []
            groups = {g.id: g for g in s.scalars(select(Group))}
            for row, tname in s.execute(stmt):
                if _may(s, actor, "USE", groups[row.group_id]):
                    out.append(pool_dict(row, tname))
            return out

def live_vms(s: Session, pool_id: int) -> int:
    """Workers of the pool that still exist (every state but GONE)."""
    n = s.scalar(select(func.count()).select_from(PoolVMRow).where(PoolVMRow.pool_id == pool_id)
                 .where(PoolVMRow.state != PoolVMState.GONE.value))
    return int(n or 0)


def purge(s: Session, row: PoolRow) -> None:
    """Delete a pool and its history (callers have checked that no worker is left)."""
    for model in (PoolEventRow, PoolBackoffRow, PoolVMRow):
        s.execute(delete(model).where(model.pool_id == row.id))
    s.delete(row)


def _event(s: Session, pool_id: int, at: float, action: str, count: int, vm_id: int | None,
           reason: str) -> None:
    import time

    s.add(PoolEventRow(pool_id=pool_id, time=at or time.time(), action=action, count=count,
                       vm_id=vm_id, reason=reason[:2000]))
