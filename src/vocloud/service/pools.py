"""VO worker-node pools: create, list, show, update, delete, and the decision log.

Who may do what, and why: a pool spends site capacity on behalf of a VO, so only an
administrator or someone holding MANAGE on the VO's *group* may create or change it (grant a
VO's managers ``acl create @<gid> GROUP @<gid> MANAGE``). Members of the VO may look (USE on
their group); other VOs see nothing of it. A pool boots workers from a stored VM template that
the VO itself could instantiate (its own group's, a public one, or one granted by ACL), so a
pool can never be used to boot another VO's private image.

**A pool acts with its VO's rights** (issue 9). The controller creates the workers as the
pool's *identity*: a non-administrator user ``pool.<vo>`` of the VO's group, made with the pool
and recorded on its row (:func:`identity_name`). It has no usable token and exactly the VO
group's rights, so every check a VO member meets when asking directly (images, networks,
quotas, restricted attributes) applies to the workers too, whoever created the pool, and no
person's own grants leak into it. The only additions come from the **site template**, an
administrator-owned template that only an administrator may name (per pool, or the daemon's
``pool_site_template`` setting): the batch secret, the worker network, the boot attributes.
So the VO's template may carry none of the restricted attributes nor a ``$SECRET``: refused at
create and update here (:func:`template_problem`), and again by the controller at every boot.

Every rule is checked before anything is written: bad input gets a typed error and changes
nothing. Validation of the numbers is :class:`~vocloud.elastic.policy.PoolPolicy`'s own, so the
service and the planner can never disagree about what a valid pool is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vocloud.elastic.policy import WORKER_SHAPES, PoolPolicy, PoolVMState
from vocloud.errors import Conflict, Forbidden, InvalidInput, NotFound, VocloudError
from vocloud.model.attributes import internal_attributes, restricted_violations, unknown_attributes
from vocloud.model.secret_refs import names_in
from vocloud.model.template import Template, parse_template
from vocloud.service import capacity
from vocloud.service.acl import ObjRef, allowed
from vocloud.service.auth import Actor, hash_token, new_token
from vocloud.service.base import find, load_rules, record
from vocloud.service.burst import worker_split
from vocloud.store.db import Database
from vocloud.store.pools import PoolBackoffRow, PoolEventRow, PoolRow, PoolVMRow
from vocloud.store.schema import Group, Image, User, VMTemplateRow

if TYPE_CHECKING:
    from vocloud.service.vms import VMService

#: Settable pool attributes (API/CLI names) -> column names. Everything else is refused.
SETTABLE: dict[str, str] = {
    "template": "template_id", "cores": "cores", "memory": "memory", "min": "min_vms",
    "max": "max_vms", "weight": "weight", "idle_timeout": "idle_timeout",
    "boot_timeout": "boot_timeout", "max_lifetime": "max_lifetime",
    "max_boots_per_minute": "max_boots_per_minute", "scale_down_delay": "scale_down_delay",
    "enabled": "enabled", "site_template": "site_template_id", "burst_limit": "burst_limit",
    "worker_shape": "worker_shape", "headroom": "headroom", "prestage": "prestage",
}
#: A pool's pre-stage values (docs/image-distribution.md): core/prestage.Mode, or "site" (the
#: daemon's ``pool_prestage``, stored as NULL).
PRESTAGE_VALUES = ("off", "start", "wait", "site")

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
        scale_down_delay_s=row.scale_down_delay, worker_shape=row.worker_shape or "fixed",
        headroom=row.headroom or 0.0,
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


def template_problem(body: str, name: str) -> tuple[str, str] | None:
    """Why a VO's pool template cannot boot workers, as ``(attribute, message)``, or ``None``.

    Pure, shared by the service (pool create/update) and the controller (every boot): the
    template may carry no restricted attribute and name no site secret, since the workers are
    created with the VO's rights and such things come from the site template only."""
    t = parse_template(body, fmt="one", source=f"template {name}")
    # internal attributes (written by the service only) and unknown ones are refused too: a
    # template stored before the catalogue existed may still carry them
    bad = [*restricted_violations(t), *internal_attributes(t), *unknown_attributes(t)]
    if bad:
        return bad[0], (f"pool template {name} sets restricted attribute(s) {', '.join(bad)}: "
                        "a pool creates workers with its VO's rights; kernels, 9p exports, "
                        "bridges, MACs and the like come from the pool's site template, which "
                        "an administrator declares")
    secrets = names_in((t.vector("CONTEXT") or {}).values())
    if secrets:
        return "CONTEXT", (f"pool template {name} names the site secret(s) {', '.join(secrets)} "
                           "in CONTEXT: a worker receives secrets only through the pool's site "
                           "template, which an administrator declares")
    return None


def check_template(body: str, name: str) -> None:
    problem = template_problem(body, name)
    if problem is not None:
        raise InvalidInput(problem[1], attribute=problem[0])


def identity_name(group: Group) -> str:
    """The pool identity's user name: ``pool.<vo>`` (``pool.<group id>`` for very long names)."""
    name = f"pool.{group.name}"
    return name if len(name) <= 128 else f"pool.{group.id}"


def site_template_row(s: Session, ref: int | str) -> VMTemplateRow:
    """A template fit to be a site template: it exists and an administrator owns it."""
    tmpl = find(s, VMTemplateRow, "template", ref)
    owner = s.get(User, tmpl.owner_id)
    if owner is None or not owner.is_admin:
        raise InvalidInput(f"site template {tmpl.name} is not owned by an administrator "
                           f"(owner: {owner.name if owner else tmpl.owner_id}); a site template "
                           "adds to every worker what only an administrator may",
                           attribute="site_template")
    return tmpl


def pool_dict(row: PoolRow, template: str = "", owner: str = "",
              site_template: str = "") -> dict[str, Any]:
    st = row.status or {}
    out: dict[str, Any] = {
        "id": row.id, "vo": row.vo, "group_id": row.group_id, "template_id": row.template_id,
        "template": template, "owner_id": row.owner_id, "owner": owner,
        "site_template_id": row.site_template_id, "site_template": site_template,
        "image": row.image, "cores": row.cores, "memory": row.memory,
        "min": row.min_vms, "max": row.max_vms, "weight": row.weight,
        "idle_timeout": row.idle_timeout, "boot_timeout": row.boot_timeout,
        "max_lifetime": row.max_lifetime, "max_boots_per_minute": row.max_boots_per_minute,
        "scale_down_delay": row.scale_down_delay, "worker_shape": row.worker_shape or "fixed",
        "headroom": row.headroom or 0.0, "prestage": row.prestage or "site",
        "enabled": row.enabled, "burst_limit": row.burst_limit or 0,
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


class BootRefused(Forbidden):
    """A worker may not be created as the pool's identity from these inputs (the VO's rights
    forbid it, or the pool cannot act): the controller's ``boot-refused``."""


@dataclass(frozen=True)
class BootInputs:
    """What one worker is created from: the pool identity acting, the VO's template text and
    the administrator's site template (or none)."""

    actor: Actor
    body: str
    site: Template | None
    template: str
    site_template: str


def boot_inputs(s: Session, pool: PoolRow, default_site: int | str = "",
                template: int | str | None = None,
                site_template: int | str | None = None) -> BootInputs:
    """The inputs of one worker boot, after checking again what ``pool create`` checked.

    Shared by the pool controller and Slurm power saving (:meth:`PoolService.boot_worker`), so
    a worker is created the same way whoever asks for it: as the pool's identity, from a VO
    template holding no restricted attribute and no secret, plus a site template only an
    administrator names. ``template`` / ``site_template`` override the pool's (administrator
    callers only). Raises :class:`BootRefused`.
    """
    owner = s.get(User, pool.owner_id) if pool.owner_id is not None else None
    if owner is None:
        raise BootRefused(f"the pool of VO {pool.vo} has no identity to create workers as "
                          f"(a pool from before identities): `vocloud pool update {pool.vo} "
                          "--enable` gives it one")
    if not owner.enabled:
        raise BootRefused(f"pool identity {owner.name} is disabled: workers are created as "
                          f"that user; `vocloud user enable {owner.name}` to resume")
    if owner.is_admin or owner.group_id != pool.group_id:
        raise BootRefused(f"pool identity {owner.name} is no longer a plain member of VO "
                          f"{pool.vo} (administrator, or moved to another group): workers "
                          "are created with the VO's rights only")
    actor = Actor(owner.id, owner.name, owner.group_id, False)
    if template is None:
        tmpl = s.get(VMTemplateRow, pool.template_id)
        if tmpl is None:
            raise BootRefused(f"the template of VO {pool.vo}'s pool is gone")
    else:
        tmpl = find(s, VMTemplateRow, "template", template)
    ref = ObjRef("TEMPLATE", tmpl.id, tmpl.owner_id, tmpl.group_id, tmpl.public)
    if not allowed(actor, "USE", ref, load_rules(s)):
        raise BootRefused(f"template {tmpl.name} is not visible to VO {pool.vo}")
    problem = template_problem(tmpl.body, tmpl.name)
    if problem is not None:
        raise BootRefused(problem[1])
    site_ref: int | str | None = site_template or pool.site_template_id or default_site or None
    site: Template | None = None
    site_name = ""
    if site_ref is not None:
        try:
            row = site_template_row(s, site_ref)
        except VocloudError as exc:
            raise BootRefused(f"site template: {exc.message}") from None
        site = parse_template(row.body, fmt="one", source=f"site template {row.name}")
        site.set("NAME", [])  # the template's own name; a worker is named by its caller
        site_name = row.name
    return BootInputs(actor, tmpl.body, site, tmpl.name, site_name)


def boot_image(s: Session, inputs: BootInputs) -> tuple[int, str] | None:
    """``(id, name)`` of the image a worker boots from (its first disk), for the controller's
    pre-stage (docs/image-distribution.md), or ``None`` (no disk, or one the pool may not use).

    The site template's disks replace the VO's (an administrator's, trusted); the VO's own
    disk is looked up with the pool identity's rights: a VO cannot get an image it may not USE
    copied to the site's hosts by naming it in its template."""
    site_disks = inputs.site.vectors("DISK") if inputs.site is not None else []
    disks = site_disks or parse_template(inputs.body, fmt="one", source="pool template").vectors("DISK")
    if not disks:
        return None
    disk = disks[0]
    ref: int | str = int(disk["IMAGE_ID"]) if str(disk.get("IMAGE_ID", "")).isdigit() \
        else str(disk.get("IMAGE") or "")
    if not ref:
        return None
    try:
        img = find(s, Image, "image", ref)
    except VocloudError:
        return None
    if not site_disks and not allowed(inputs.actor, "USE",
                                      ObjRef("IMAGE", img.id, img.owner_id, img.group_id, img.public),
                                      load_rules(s)):
        return None
    return img.id, img.name


class PoolService:
    def __init__(self, db: Database, vms: VMService | None = None,
                 site_template: int | str = "") -> None:
        """``vms``: where :meth:`boot_worker` creates VMs (the facade passes its own);
        ``site_template``: the daemon's ``pool_site_template``."""
        self.db = db
        self.vms = vms
        self.site_template = site_template

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
        if not 0 <= (row.burst_limit or 0) <= 10000:
            raise InvalidInput(f"pool {row.vo!r}: burst_limit must be between 0 and 10000")

    @staticmethod
    def _burst_allowed(actor: Actor, values: dict[str, Any]) -> None:
        """Cloud workers cost the site money: only an administrator sets a pool's burst limit."""
        if "burst_limit" in values and not actor.is_admin:
            raise Forbidden("only an administrator may set a pool's burst_limit (cloud workers "
                            "are billed to the site)")
        if "prestage" in values and not actor.is_admin:
            raise Forbidden("only an administrator may set a pool's prestage (it copies images "
                            "onto the site's hosts)")

    @staticmethod
    def _identity(s: Session, group: Group, actor: Actor) -> User:
        """The VO's pool identity, made if missing (module docstring)."""
        name = identity_name(group)
        user = s.scalars(select(User).where(User.name == name)).first()
        if user is None:
            user = User(name=name, group_id=group.id, is_admin=False,
                        token_hash=hash_token(new_token()))  # a token nobody is shown
            s.add(user)
            s.flush()
            capacity.ensure_quota(s, "user", user.id)
            record(s, "user", user.id, "create",
                   message=f"pool identity of VO {group.name}, by {actor.name}")
        elif user.is_admin or user.group_id != group.id:
            raise Conflict(f"user {name} exists but cannot be VO {group.name}'s pool identity "
                           "(it is an administrator or in another group): rename or delete it")
        return user

    @staticmethod
    def _site_template(s: Session, actor: Actor, ref: int | str) -> int | None:
        """The id of the site template ``ref`` names (``""``: none, the daemon's default)."""
        if not actor.is_admin:
            raise Forbidden(f"user {actor.name} may not set a pool's site template: only an "
                            "administrator declares what a pool adds to its workers")
        if ref == "":
            return None
        return site_template_row(s, ref).id

    @staticmethod
    def _names(s: Session, row: PoolRow) -> dict[str, str]:
        def name(model: type[VMTemplateRow] | type[User], ref: int | None) -> str:
            return (s.scalar(select(model.name).where(model.id == ref)) or "") if ref else ""
        return {"template": name(VMTemplateRow, row.template_id),
                "owner": name(User, row.owner_id),
                "site_template": name(VMTemplateRow, row.site_template_id)}

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
        self._burst_allowed(actor, values)
        with self.db.write() as s:
            group = s.scalars(select(Group).where(Group.name == vo)).first()
            if group is None:
                raise NotFound(f"VO {vo!r} is not a group: create the group first")
            _require(s, actor, "MANAGE", group, "create")
            tmpl = self._template(s, values.pop("template"), group)
            check_template(tmpl.body, tmpl.name)
            site = (self._site_template(s, actor, values.pop("site_template"))
                    if "site_template" in values else None)
            if s.scalar(select(PoolRow.id).where(PoolRow.vo == vo)) is not None:
                raise Conflict(f"VO {vo} already has a pool (use pool update)")
            owner = self._identity(s, group, actor)
            row = PoolRow(vo=vo, group_id=group.id, template_id=tmpl.id, image=image_label(tmpl),
                          owner_id=owner.id, site_template_id=site, status={})
            d = _DEFAULTS
            row.min_vms, row.max_vms, row.weight = d.min_vms, d.max_vms, d.weight
            row.idle_timeout, row.boot_timeout = d.idle_timeout_s, d.boot_timeout_s
            row.max_lifetime, row.max_boots_per_minute = None, d.max_boots_per_minute
            row.scale_down_delay, row.worker_shape = d.scale_down_delay_s, d.worker_shape
            row.headroom = d.headroom
            row.enabled, row.deleting = True, False
            row.burst_limit = 0
            self._apply(row, values)
            self._check_policy(row)
            s.add(row)
            s.flush()
            _event(s, row.id, 0.0, "create", 0, None,
                   f"pool created by {actor.name}; workers are created as {owner.name}")
            return pool_dict(row, **self._names(s, row))

    @staticmethod
    def _apply(row: PoolRow, values: dict[str, Any]) -> None:
        for key, value in values.items():
            col = SETTABLE[key]
            try:
                if col in ("weight", "idle_timeout", "boot_timeout", "max_lifetime",
                           "scale_down_delay"):
                    setattr(row, col, None if value is None else float(value))
                elif col == "headroom":  # a number, never a flag; its range: PoolPolicy
                    if isinstance(value, bool) or value is None:
                        raise ValueError
                    row.headroom = float(value)
                elif col == "enabled":
                    if not isinstance(value, bool):
                        raise ValueError
                    row.enabled = value
                elif col == "prestage":
                    if value not in PRESTAGE_VALUES:
                        raise InvalidInput(f"pool prestage: {str(value)[:40]!r} is not one of "
                                           f"{', '.join(PRESTAGE_VALUES)}")
                    row.prestage = None if value == "site" else value
                elif col == "worker_shape":
                    if value not in WORKER_SHAPES:
                        raise InvalidInput(f"pool worker_shape: {str(value)[:40]!r} is not one of "
                                           f"{', '.join(WORKER_SHAPES)}")
                    row.worker_shape = value
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
        self._burst_allowed(actor, values)
        with self.db.write() as s:
            row = self._pool(s, vo, lock=True)
            group = s.get(Group, row.group_id)
            assert group is not None
            _require(s, actor, "MANAGE", group, "update")
            if row.deleting:
                raise Conflict(f"the pool of VO {vo} is being deleted")
            if "template" in values:
                tmpl = self._template(s, values["template"], group)
                check_template(tmpl.body, tmpl.name)
                row.image = image_label(tmpl)
                values["template"] = tmpl.id
            if "site_template" in values:
                row.site_template_id = self._site_template(s, actor, values.pop("site_template"))
            if row.owner_id is None:  # a pool from before identities: give it one now
                row.owner_id = self._identity(s, group, actor).id
            if values.get("max_lifetime") == 0:
                values["max_lifetime"] = None
                row.max_lifetime = None
                del values["max_lifetime"]
            self._apply(row, values)
            self._check_policy(row)  # the write transaction rolls back on error
            changed = ", ".join(f"{k}={v}" for k, v in sorted(changes.items()) if v is not None)
            _event(s, row.id, 0.0, "update", 0, None, f"updated by {actor.name}: {changed}")
            return pool_dict(row, **self._names(s, row))

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
            out = pool_dict(row, **self._names(s, row))
            out["site_workers"], out["cloud_workers"] = worker_split(s).get(row.id, (0, 0))
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

    def boot_worker(self, actor: Actor, vo: str, name: str, cores: int | None = None,
                    memory: int | None = None, template: int | str | None = None,
                    site_template: int | str | None = None) -> dict[str, Any]:
        """Create one worker VM named ``name`` for VO ``vo``, outside the pool's own plan.

        For Slurm power saving (``vocloud slurm resume``), where slurmctld, not the planner,
        decides that a node is needed. The caller must be an administrator (it runs with the
        site's token), but the VM is created exactly as the controller creates a worker: as the
        pool's identity, from a VO template that holds no restricted attribute and no secret,
        plus the site template. Creating it with the caller's rights would let anyone who can
        edit the VO's template reach what only the site may (a kernel path, a host directory,
        the munge key) through the administrator's token.
        """
        if not actor.is_admin:
            raise Forbidden(f"user {actor.name} may not boot workers outside a pool's plan: "
                            "only the site (Slurm power saving, with the administrator token) may")
        if self.vms is None:
            raise NotFound("this service was built without a VM service to create workers with")
        with self.db.read() as s:
            pool = self._pool(s, vo)
            inputs = boot_inputs(s, pool, self.site_template, template, site_template)
            cores = pool.cores if cores is None else cores
            memory = pool.memory if memory is None else memory
        extra = {"CPU": str(int(cores)), "VCPU": str(int(cores)), "MEMORY": str(int(memory))}
        [vm_id] = self.vms.create(inputs.actor, inputs.body, fmt="one", count=1, name=name,
                                  extra=extra, site=inputs.site)
        return {"id": vm_id, "name": name, "vo": vo, "owner": inputs.actor.name,
                "template": inputs.template, "site_template": inputs.site_template,
                "cores": int(cores), "memory": int(memory)}

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
            split = worker_split(s)
            for row, _tname in s.execute(stmt):
                if _may(s, actor, "USE", groups[row.group_id]):
                    d = pool_dict(row, **self._names(s, row))
                    d["site_workers"], d["cloud_workers"] = split.get(row.id, (0, 0))
                    out.append(d)
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
