"""Virtual machines: create, act, list, and the single path every state change takes.

:func:`transition` is the only function that writes ``VM.state``. It asks the lifecycle table
for the next state and applies the side effects that follow from *which states are left and
entered* (host capacity held or not, DONE releasing leases, quotas and images), so no caller can
forget one. Loops report driver results through :meth:`VMService.report`, a compare-and-set on the
state they observed: if a user changed the VM meanwhile, the stale result is dropped and the
next loop pass works on the new state.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import (
    Integer,
    Table,
    Text,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
    update,
)
from sqlalchemy.orm import Session, aliased

from vocloud.drivers.registry import Cap, DriverCatalog, Role, builtin_catalog
from vocloud.errors import Conflict, Forbidden, IllegalAction, InvalidInput, NotFound, ParseError
from vocloud.model.attributes import check_template
from vocloud.model.expr import compile_rank, compile_requirements
from vocloud.model.lifecycle import (
    FINAL,
    HOLDS_HOST,
    RECOVER_EVENTS,
    TRANSIENT,
    VM_SHORT,
    VM_USER_ACTIONS,
    HostState,
    ImageState,
    VMState,
    image_next,
    vm_allowed_actions,
    vm_next,
)
from vocloud.model.os_boot import flatten_os
from vocloud.model.secret_refs import names_in, refuse_for_user
from vocloud.model.template import Template, check_size, parse_template
from vocloud.model.vmspec import VMTemplate
from vocloud.service import capacity, ipam, vm_batch
from vocloud.service.acl import ObjRef, visible_group_ids, visible_object_ids
from vocloud.service.auth import Actor
from vocloud.service.base import MAX_ID, check_name, find, load_rules, now, record, require
from vocloud.service.policy import ADMIN_MAX_VMS_PER_REQUEST, VMPolicy
from vocloud.store import bulk
from vocloud.store.db import Database
from vocloud.store.schema import VM, Event, Group, Host, Image, Lease, Network, SiteSetting, User

MAX_COUNT = ADMIN_MAX_VMS_PER_REQUEST


def waiting(vm: VM, host: Host | None) -> dict[str, Any] | None:
    """What an owed step waits for: its host, failing since when and why (None: not waiting).

    A VM in a transient state owes a driver step; while its host's probes fail the engine does
    not try it (engine/faults.py) and carries it out when the host answers (docs/faults.md)."""
    if host is None or VMState(vm.state) not in TRANSIENT or not host.monitor_failures:
        return None
    since = host.monitor_failing_since
    when = datetime.fromtimestamp(since, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if since else "?"
    return {"host": host.name, "since": since, "reason": host.error,
            "message": f"{vm.state}, waiting for host {host.name} since {when}: {host.error}"}


def vm_ref(vm: VM) -> ObjRef:
    return ObjRef("VM", vm.id, vm.owner_id, vm.group_id)


def _image_ids(template_text: str) -> list[int]:
    """Every image a stored template holds: its disks and its kernel/initrd images."""
    t = parse_template(template_text, fmt="one", source="stored template",
                       max_bytes=None) if template_text else None
    if t is None:
        return []
    out = []
    for disk in t.vectors("DISK"):
        if "IMAGE_ID" in disk:
            out.append(int(disk["IMAGE_ID"]))
    for key in ("KERNEL_IMAGE", "INITRD_IMAGE"):
        ref = t.get(key)
        if ref is not None and ref.isdigit():
            out.append(int(ref))
    return out


def merge_site(user: Template, site: Template) -> Template:
    """The user's template with the administrator's ``site`` additions on top (see create):
    each site attribute replaces the user's, except CONTEXT, merged variable by variable (the
    site's win), and NAME (the site template's own name, never the VM's)."""
    merged = user.copy()
    for key, value in site.attrs.items():
        if key == "NAME":
            continue
        if key == "CONTEXT" and isinstance(value, dict):
            context = dict(user.vector("CONTEXT") or {})
            context.update(value)
            merged.set(key, context)
        else:
            merged.set(key, value)
    return merged


def _release_images(session: Session, vm: VM) -> None:
    for image_id in _image_ids(vm.template):
        img = session.get(Image, image_id)
        if img is None:
            continue
        img.running_vms = max(0, img.running_vms - 1)
        if img.running_vms == 0 and img.state == ImageState.USED:
            img.state = image_next(img.name, img.state, "free").value


def _effects(session: Session, vm: VM, old: VMState, new: VMState, action: str, at: float) -> None:
    if old == VMState.MIGRATE and vm.target_host_id is not None:
        if action == "migrate_ok":
            if vm.host_id is not None:
                capacity.release_host(session, vm.host_id, vm.cpu_m, vm.memory)
            vm.host_id, vm.target_host_id = vm.target_host_id, None
        else:
            capacity.release_host(session, vm.target_host_id, vm.cpu_m, vm.memory)
            vm.target_host_id = None
    if old not in HOLDS_HOST and new in HOLDS_HOST:
        if vm.host_id is None:
            raise Conflict(f"VM {vm.id} has no host to move to {new}")
        host = session.get(Host, vm.host_id)
        assert host is not None
        capacity.acquire_host_or_raise(session, host, vm.cpu_m, vm.memory)
    elif old in HOLDS_HOST and new not in HOLDS_HOST and vm.host_id is not None:
        capacity.release_host(session, vm.host_id, vm.cpu_m, vm.memory)
    if new == VMState.RUNNING and vm.started_at is None:
        vm.started_at = at
    if new == VMState.DONE:
        ipam.release_vm(session, vm.id)
        _release_images(session, vm)  # flushed by the refund: images locked before quotas
        for scope, scope_id in (("user", vm.owner_id), ("group", vm.group_id)):
            capacity.refund_quota(session, scope, scope_id, 1, vm.cpu_m, vm.memory)
        vm.ended_at = at


def transition(session: Session, vm: VM, action: str, message: str = "", at: float | None = None) -> VMState:
    """Move ``vm`` by ``action`` through the lifecycle table, with every side effect."""
    at = now() if at is None else at
    old = VMState(vm.state)
    new = vm_next(vm.id, old, action)
    _effects(session, vm, old, new, action, at)
    vm.state = new.value
    vm.state_changed_at = at
    vm.step_attempts = 0
    if new in TRANSIENT:
        vm.hard = action.endswith("-hard")
    if action.endswith("_fail") or new in (VMState.PROLOG_FAILURE, VMState.BOOT_FAILURE,
                                             VMState.EPILOG_FAILURE):
        vm.error = message
    elif new == VMState.RUNNING:
        vm.error = ""
    record(session, "vm", vm.id, action, old.value, new.value, message, at, host_id=vm.host_id)
    return new


#: The creating user and the actor's group, by id: one Core statement per create (two ORM
#: ``Session.get`` loads cost ~0.25 ms each, docs/performance.md).
_OWNER = (
    select(User.id, User.name, Group.id.label("group_id"), Group.name.label("group_name"))
    .select_from(User)
    .outerjoin(Group, Group.id == bindparam("o_gid"))
    .where(User.id == bindparam("o_uid"))
)
#: PostgreSQL: the owner and the new VMs' ids in one round trip (a create's first statement;
#: ids of a create refused by a later check are a gap, as those of a rolled-back one are)
_OWNER_AND_IDS = _OWNER.add_columns(
    bulk.new_ids_column(VM.__table__, bindparam("o_n", type_=Integer)).label("new_ids"))  # type: ignore[arg-type]


class VMService:
    def __init__(self, db: Database, policy: VMPolicy | None = None,
                 catalog: DriverCatalog | None = None) -> None:
        """``catalog``: what the daemon's drivers declare; an action a host's driver cannot
        carry out (``migrate`` without the ``migrate`` capability) is refused before it is
        accepted, instead of failing in the loop after the command said yes."""
        self.db = db
        self.policy = policy or VMPolicy()
        self.catalog = catalog or builtin_catalog()
        self._deploy_prefix: str | None = None
        self._list_stmts: dict[tuple[str, bool], Any] = {}

    def _prefix(self, s: Session) -> str:
        """``vc<instance tag>``: deploy ids (and so tap names, qemu process names and remote run
        directories) of two installations sharing a hypervisor never collide. Read once."""
        if self._deploy_prefix is None:
            tag = s.scalar(select(SiteSetting.value).where(SiteSetting.key == "instance_tag"))
            self._deploy_prefix = f"vc{tag or ''}"
        return self._deploy_prefix

    # ---------------------------------------------------------------- create
    def create(self, actor: Actor, text: str, fmt: str = "auto", count: int = 1,
               name: str | None = None, hold: bool = False,
               extra: dict[str, str] | None = None, group: int | str | None = None,
               site: Template | None = None,
               within: Callable[[Session, list[int]], None] | None = None) -> list[int]:
        """Create ``count`` VMs from a template; all or nothing.

        The trust boundary: whatever a front-end received becomes one :class:`VMTemplate` here,
        and every decision is made on it and on the attribute catalogue (``model/attributes``):
        unknown and internal attributes are refused for everyone, restricted ones (host paths,
        bridges, kernels, ...) for everyone but administrators, images and networks need the
        USE right. The error names the attribute; nothing is created.

        ``group`` (administrators only) creates them in another group than the actor's.
        ``within(session, ids)`` runs in the creating transaction after the quota charge (which
        serializes one user's creates): what a front-end records about the new VMs (EC2's
        ClientToken) commits with them or not at all, and may raise to create nothing.
        ``site``: attributes the *administrator* declared (the pool controller's additions, never
        exposed to REST), merged after the user's template passed the checks above, so they are
        not held to the restricted list and override the user's: a scalar or a DISK/NIC list
        replaces the user's, CONTEXT is merged variable by variable, NAME stays the user's.
        Unknown or internal site attributes are still refused; objects the site names need no
        USE right, but the user's own references the site replaces are still checked; the
        secrets the site's CONTEXT names are admitted for these VMs (``VM.site_secrets``: the
        engine resolves a secret for a VM not owned by an administrator only if admitted)."""
        policy = self.policy
        limit = policy.max_count(actor.is_admin)
        if not 1 <= count <= limit:
            raise InvalidInput(f"count must be between 1 and {limit}, got {count}"
                               + ("" if actor.is_admin else " (setting max_vms_per_request)"),
                               attribute="count")
        tmpl = parse_template(text, fmt=fmt, max_bytes=policy.max_template_bytes,
                              max_depth=policy.max_template_depth)
        for key, value in (extra or {}).items():
            tmpl.set(key.upper(), value)
        if name is not None:
            tmpl.set("NAME", name)
        if extra or name is not None:
            check_size(tmpl.to_one(), policy.max_template_bytes)
        check_template(tmpl, actor.is_admin, policy.restricted)
        tmpl = flatten_os(tmpl)  # rights were checked on the OS/... names
        context = tmpl.vector("CONTEXT") or {}
        refuse_for_user(context, actor.is_admin)
        admitted = names_in(context.values()) if actor.is_admin else []
        own = VMTemplate.from_template(tmpl)
        site_keys: frozenset[str] = frozenset()
        if site is not None:
            check_template(site, True)
            site_keys = frozenset(site.attrs) - {"NAME"}
            tmpl = merge_site(tmpl, site)
            admitted += [n for n in names_in((site.vector("CONTEXT") or {}).values())
                         if n not in admitted]
        spec = own if site is None else VMTemplate.from_template(tmpl)  # the same text: typed once
        for label, expr_text, compile_fn in (
            ("SCHED_REQUIREMENTS", spec.requirements, compile_requirements),
            ("SCHED_RANK", spec.rank, compile_rank),
        ):
            if expr_text:
                try:
                    compile_fn(expr_text)
                except ParseError as exc:
                    raise InvalidInput(f"{label}: {exc.message}", attribute=label) from None
        cpu_m = spec.cpu_centi * 10  # stored in thousandths; never 0 (cpu_centi >= 1)
        with self.db.write() as s:
            # the first statement of the transaction: nothing to flush, so on the connection
            conn = s.connection()
            on_pg = conn.dialect.name == "postgresql"
            owner = conn.execute(_OWNER_AND_IDS if on_pg else _OWNER,
                                 {"o_uid": actor.user_id, "o_gid": actor.group_id, "o_n": count}
                                 ).first()
            if owner is None:
                raise NotFound(f"user {actor.user_id} does not exist")
            if group is not None and not actor.is_admin:
                raise Forbidden("only an administrator may create VMs in another group")
            if group is not None:
                other = find(s, Group, "group", group)
                group_id, group_name = other.id, other.name
            else:
                group_id, group_name = owner.group_id, owner.group_name
            assert group_id is not None
            if site is not None:  # the actor's own references, even those the site replaces
                self._check_own_refs(s, actor, own, site_keys)
            images = self._resolve_images(s, actor, spec, count, trusted="DISK" in site_keys)
            boot = {
                key: self._use_image(s, actor, ref, count, key, trusted=key in site_keys)
                for key, ref in (("KERNEL_IMAGE", spec.kernel_image), ("INITRD_IMAGE", spec.initrd_image))
                if ref is not None
            }
            networks = self._resolve_networks(s, actor, spec, trusted="NIC" in site_keys)
            base = spec.name or "vm"
            at = now()
            state = VMState.HOLD.value if hold else VMState.PENDING.value
            # The ids first (one statement), so each row is complete when it is stored: then
            # one COPY (PostgreSQL) or executemany (SQLite) for the VMs and one for their
            # events, no UPDATE per VM for the template and deploy id that name the id. A NIC's
            # lease refers to its VM's row, so VMs with NICs get their templates right after.
            vt: Table = VM.__table__  # type: ignore[assignment]
            ids = sorted(owner.new_ids) if on_pg else bulk.reserve_ids(s, vt, count)
            names = [base] if count == 1 else [f"{base}-{i}" for i in range(count)]
            admin_nics = actor.is_admin or "NIC" in site_keys
            templates = [""] * count if spec.nics else self._finish_templates(
                s, tmpl, images, boot, networks, spec, admin_nics, ids, names)
            prefix = self._prefix(s)
            secrets = " ".join(admitted)
            bulk.insert_rows(s, vt, [
                {"id": vm_id, "name": vm_name, "owner_id": owner.id, "group_id": group_id,
                 "state": state, "host_id": None, "target_host_id": None, "cpu_m": cpu_m,
                 "vcpu": spec.vcpu, "memory": spec.memory_mib, "template": vm_template,
                 "requirements": spec.requirements, "rank": spec.rank,
                 "deploy_id": f"{prefix}-{vm_id}", "sched_message": "", "error": "",
                 "state_changed_at": at, "step_attempts": 0, "hard": False, "created_at": at,
                 "started_at": None, "ended_at": None, "site_secrets": secrets,
                 "walltime": spec.walltime}
                for vm_id, vm_name, vm_template in zip(ids, names, templates, strict=True)])
            if spec.nics:
                templates = self._finish_templates(s, tmpl, images, boot, networks, spec,
                                                   admin_nics, ids, names)
                s.connection().execute(
                    update(vt).where(vt.c.id == bindparam("b_id")).values(template=bindparam("b_t")),
                    [{"b_id": vm_id, "b_t": t} for vm_id, t in zip(ids, templates, strict=True)])
            message = f"by {actor.name}"[:2000]
            bulk.insert_rows(s, Event.__table__, [  # type: ignore[arg-type]
                {"time": at, "kind": "vm", "obj_id": vm_id, "action": "create", "from_state": "",
                 "to_state": state, "message": message, "host_id": None}
                for vm_id in ids])
            # The quota rows last: every create and every end of one user's VMs updates the
            # same two rows, whose lock is held until commit (on PostgreSQL); charged here, it
            # is held for this charge, ``within`` and the commit rather than the whole create
            # (issue 15: 233 req/s with the REST mix's requests queued on these rows). Locks
            # are taken in one order by every writer: VMs, hosts, leases, images, then quotas.
            serial = within is not None  # it relies on the user's row lock
            capacity.charge_quota(s, "user", owner.id, owner.name, count, cpu_m * count,
                                  spec.memory_mib * count, lock=serial)
            capacity.charge_quota(s, "group", group_id, group_name, count, cpu_m * count,
                                  spec.memory_mib * count, lock=serial)
            if within is not None:  # a front-end's own record of them, in the same transaction
                within(s, ids)
            return ids

    def _check_own_refs(self, s: Session, actor: Actor, own: VMTemplate,
                        site_keys: frozenset[str]) -> None:
        """USE on the images and networks the actor's own text names, where ``site`` replaces
        them (elsewhere ``_resolve_*`` checks them): a reference to another VO's private object
        is refused even when it would not be attached."""
        for disk in own.disks if "DISK" in site_keys else ():
            ref: int | str = disk.image_id if disk.image_id is not None else (disk.image or "")
            img = find(s, Image, "image", ref)
            require(s, actor, "USE", ObjRef("IMAGE", img.id, img.owner_id, img.group_id, img.public))
        for nic in own.nics if "NIC" in site_keys else ():
            ref = nic.network_id if nic.network_id is not None else (nic.network or "")
            net = find(s, Network, "network", ref)
            require(s, actor, "USE", ObjRef("VNET", net.id, net.owner_id, net.group_id, net.public))

    def _use_image(self, s: Session, actor: Actor, ref: int | str, count: int, what: str,
                   trusted: bool = False) -> Image:
        """Lock an image for ``count`` VMs: USE right, usable state, persistent ones serve one."""
        img = find(s, Image, "image", ref, lock=True)
        if not trusted:
            try:
                require(s, actor, "USE", ObjRef("IMAGE", img.id, img.owner_id, img.group_id, img.public))
            except Forbidden as exc:
                raise Forbidden(f"{what}: {exc.message}", attribute=what) from None
        new_state = image_next(img.name, img.state, "use")  # READY or USED, else IllegalAction
        if img.persistent and (img.running_vms > 0 or count > 1):
            raise Conflict(f"image {img.name} is persistent and already used by a VM "
                           f"(or requested by {count} VMs); persistent images serve one VM")
        img.running_vms += count
        img.state = new_state.value
        return img

    def _resolve_images(self, s: Session, actor: Actor, spec: VMTemplate, count: int,
                        trusted: bool = False) -> list[Image]:
        out = []
        for disk in spec.disks:
            ref: int | str = disk.image_id if disk.image_id is not None else (disk.image or "")
            out.append(self._use_image(s, actor, ref, count, "DISK", trusted))
        return out

    def _resolve_networks(self, s: Session, actor: Actor, spec: VMTemplate,
                          trusted: bool = False) -> list[Network]:
        """``trusted``: the NICs are an administrator's (a site template): no USE check."""
        out = []
        for nic in spec.nics:
            ref: int | str = nic.network_id if nic.network_id is not None else (nic.network or "")
            net = find(s, Network, "network", ref)
            if not trusted:
                require(s, actor, "USE", ObjRef("VNET", net.id, net.owner_id, net.group_id, net.public))
            out.append(net)
        return out

    def _finish_templates(self, s: Session, tmpl: Template, images: list[Image],
                          boot: dict[str, Image], networks: list[Network], spec: VMTemplate,
                          admin: bool, ids: Sequence[int], names: Sequence[str]) -> list[str]:
        """The stored templates of VMs ``ids`` (named ``names``): written only here, so the
        loops and drivers may trust them. What all of them share (disks, kernel, ...) is built
        and rendered once; each VM adds its own NIC leases, VMID and NAME."""
        t = tmpl.copy()
        disks = []
        for disk, img in zip(spec.disks, images, strict=True):
            d = dict(disk.attrs)
            for key in ("IMAGE", "SOURCE", "FORMAT", "SHA256", "PERSISTENT"):
                d.pop(key, None)  # refused on input already; the image's values only
            d.update(IMAGE_ID=str(img.id), IMAGE=img.name, SOURCE=img.path, FORMAT=img.format)
            if img.sha256:
                d["SHA256"] = img.sha256
            if img.persistent:
                d["PERSISTENT"] = "YES"
            disks.append(d)
        if disks:
            t.set("DISK", disks)
        for key, path_key in (("KERNEL_IMAGE", "KERNEL"), ("INITRD_IMAGE", "INITRD")):
            if key in boot:
                t.set(key, str(boot[key].id))
                t.set(path_key, boot[key].path)
        items: list[dict[str, object]] = []
        for vm_id, vm_name in zip(ids, names, strict=True):
            item: dict[str, object] = {}
            if spec.nics:
                item["NIC"] = [ipam.lease_nic(s, net, vm_id, nic.attrs, idx, admin)
                               for idx, (nic, net) in enumerate(zip(spec.nics, networks, strict=True))]
            item["VMID"] = str(vm_id)
            item["NAME"] = vm_name
            items.append(item)
        return t.to_one_many(items)

    # ---------------------------------------------------------------- actions
    def action(self, actor: Actor, vm_id: int, action: str, host: int | str | None = None,
               enforce: bool = True, cold: bool = False, cold_if_able: bool = False) -> dict[str, Any]:
        """``cold`` (migrate only): move the VM shut down (poweroff, disks copied, boot on the
        target), refused unless both hosts' drivers declare ``cold-migrate``; ``cold_if_able``:
        cold where both can, else live (XML-RPC's ``live=false``)."""
        if action not in VM_USER_ACTIONS:
            raise InvalidInput(f"unknown VM action {action!r}; one of: {', '.join(sorted(VM_USER_ACTIONS))}")
        if (action == "migrate" or not enforce) and not actor.is_admin:
            # Choosing a VM's host is the scheduler's and the site's: a user who could would
            # step past the placement rules (a leased host's end, another VO's requirements, a
            # host that is disabled). OpenNebula's default ACL keeps MIGRATE for admins too.
            what = "migrate a VM" if action == "migrate" else "skip the host checks"
            raise Forbidden(f"user {actor.name} may not {what}: only an administrator chooses "
                            "a VM's host")
        with self.db.write() as s:
            msg = f"by {actor.name}"
            if action != "migrate" and host is None and not cold and type(vm_id) is int \
                    and 0 <= vm_id <= MAX_ID:
                done = self._move_columns(s, actor, vm_id, action, msg)
                if done is not None:
                    return done
            vm = find(s, VM, "VM", vm_id, lock=True)
            require(s, actor, "MANAGE", vm_ref(vm))
            moves_cold = False
            if action == "migrate":
                moves_cold = self._prepare_migrate(s, vm, host, enforce, cold, cold_if_able)
                msg += f" to host {vm.target_host_id}" + (" (cold)" if moves_cold else "")
            elif host is not None or cold:
                raise InvalidInput(f"--host and --cold apply to migrate only, not {action}")
            elif vm.state == VMState.MIGRATE.value and vm.hard and vm.step_attempts >= 2:
                # the guest boots on the target while the VM's host is still the source: a
                # terminate now would stop nothing and leave the target's guest behind
                raise Conflict(f"VM {vm.id} is booting on its cold migration's target; {action} "
                               "it once the migration ends (RUNNING, within the boot timeout)")
            transition(s, vm, action, msg)
            if moves_cold:
                vm.hard = True  # a MIGRATE asked "hard" is a cold one (engine/cold_migration.py)
            return self._row(s, vm)

    def _move_columns(self, s: Session, actor: Actor, vm_id: int, action: str,
                      msg: str) -> dict[str, Any] | None:
        """``action``'s answer, in a few Core statements instead of the ORM's unit of work, for
        the two moves users make most: one that changes nothing but the VM's own columns (a
        running VM's terminate, hold, poweroff: ``vm_batch.move_columns_of_one``) and a plain
        end (a pending VM's terminate: ``vm_batch.end_rows``). The same ACL check, lifecycle
        table and effects as ``transition``. None for any other move (host capacity taken,
        images, MIGRATE): the caller takes the ORM path."""
        row = vm_batch.one_vm(s, vm_id)
        if row is None:
            raise NotFound(f"VM {vm_id} does not exist")
        require(s, actor, "MANAGE", ObjRef("VM", row.id, row.owner_id, row.group_id))
        old = VMState(row.state)
        if old == VMState.MIGRATE:
            return None  # its own checks (a cold migration's boot on the target)
        new = vm_next(row.id, old, action)
        if vm_batch.columns_only(old, new, action):
            vm_batch.move_columns_of_one(s, row, old, new, action, msg, now())
        elif vm_batch.ends_plainly(old, new, action) and not vm_batch.may_name_image(row.template):
            vm_batch.end_rows(s, [row], old, new, action, {row.id: msg}, now())
        else:
            return None
        return {"id": row.id, "name": row.name, "state": new.value, "host": row.host_name,
                "host_id": row.host_id, "cpu": capacity.cores(row.cpu_m), "memory": row.memory}

    def deploy(self, actor: Actor, vm_id: int, host: int | str, enforce: bool = False) -> dict[str, Any]:
        """Place a PENDING (or HOLD) VM on ``host`` now, past the scheduler (OpenNebula's
        ``vm.deploy``; ADMIN right on the VM). Its requirements and rank are not consulted; the
        host's capacity is (always), and the host must be MONITORED, or DISABLED (out of the
        scheduler's reach on purpose) unless ``enforce``."""
        with self.db.write() as s:
            vm = find(s, VM, "VM", vm_id, lock=True)
            require(s, actor, "ADMIN", vm_ref(vm))
            st = VMState(vm.state)
            if st not in (VMState.PENDING, VMState.HOLD):
                raise IllegalAction("VM", vm.id, st.value, "deploy")
            target = find(s, Host, "host", host, lock=True)
            usable = {HostState.MONITORED.value} | (set() if enforce else {HostState.DISABLED.value})
            if target.state not in usable:
                raise Conflict(f"host {target.name} is {target.state}; it takes no VMs")
            if st == VMState.HOLD:
                transition(s, vm, "release", f"deploy by {actor.name}")
            vm.host_id = target.id
            vm.sched_message = ""
            transition(s, vm, "scheduled", f"deployed by {actor.name} to host {target.id}")
            return self._row(s, vm)

    def rename(self, actor: Actor, vm_id: int, name: str) -> dict[str, Any]:
        """A new display name (OpenNebula's ``vm.rename``); the stored template, deploy id and
        everything the drivers see stay as they are."""
        name = check_name(name, "VM")
        with self.db.write() as s:
            vm = find(s, VM, "VM", vm_id, lock=True)
            require(s, actor, "MANAGE", vm_ref(vm))
            old = vm.name
            vm.name = name
            record(s, "vm", vm.id, "rename", vm.state, vm.state, f"by {actor.name}: {old} -> {name}")
            return self._row(s, vm)

    def _prepare_migrate(self, s: Session, vm: VM, host: int | str | None, enforce: bool,
                         cold: bool = False, cold_if_able: bool = False) -> bool:
        """Check and reserve ``vm``'s move; True when it moves cold."""
        if host is None:
            raise InvalidInput("migrate needs a target host")
        vm_next(vm.id, vm.state, "migrate")  # refuse early, before reserving anything
        target = find(s, Host, "host", host, lock=True)
        if target.id == vm.host_id:
            raise InvalidInput(f"VM {vm.id} already runs on host {target.name}")
        source = s.get(Host, vm.host_id) if vm.host_id else None
        both = [h for h in (source, target) if h is not None]
        live = all(self._can(h, Cap.MIGRATE) for h in both)
        can_cold = all(self._can(h, Cap.COLD_MIGRATE) for h in both)
        if cold and not can_cold:
            h = next(h for h in both if not self._can(h, Cap.COLD_MIGRATE))
            raise Conflict(f"host {h.name}'s VMM driver {h.vmm!r} cannot migrate a VM cold (it "
                           "does not declare the 'cold-migrate' capability)"
                           + ("; migrate it live (without --cold)" if live else ""))
        for h in both:
            if not self._can_migrate(h):
                raise Conflict(f"host {h.name}'s VMM driver {h.vmm!r} cannot migrate a running VM "
                               "(it declares neither 'migrate' nor 'cold-migrate'); poweroff the "
                               "VM and create it again on the other host")
        if not live and not can_cold:
            raise Conflict(f"hosts {source.name if source else '?'} and {target.name} share no way "
                           "to migrate (one can only live, the other only cold)")
        if source is not None and source.vmm != target.vmm:
            raise Conflict(f"cannot migrate from a {source.vmm} host ({source.name}) to a "
                           f"{target.vmm} host ({target.name})")
        if target.state not in (HostState.MONITORED,) and enforce:
            raise Conflict(f"host {target.name} is {target.state}; it takes no VMs")
        capacity.acquire_host_or_raise(s, target, vm.cpu_m, vm.memory)
        vm.target_host_id = target.id
        return cold or not live or (cold_if_able and can_cold)

    def _can_migrate(self, host: Host) -> bool:
        """Whether a VM on ``host`` can move at all (live or cold)."""
        return self._can(host, Cap.MIGRATE) or self._can(host, Cap.COLD_MIGRATE)

    def _can(self, host: Host, cap: Cap) -> bool:
        try:
            return self.catalog.info(Role.VMM, host.vmm).can(cap)
        except InvalidInput:  # a host whose driver this daemon no longer offers
            return False

    def recover(self, actor: Actor, vm_id: int, op: str) -> dict[str, Any]:
        """``recover --success|--failure|--retry|--delete`` for stuck or failed VMs (admin)."""
        with self.db.write() as s:
            vm = find(s, VM, "VM", vm_id, lock=True)
            require(s, actor, "ADMIN", vm_ref(vm))
            st = VMState(vm.state)
            if op in ("success", "failure"):
                events = RECOVER_EVENTS.get(st)
                event = None if events is None else events[0] if op == "success" else events[1]
                if event is None:
                    raise IllegalAction("VM", vm.id, st.value, f"recover --{op}")
                transition(s, vm, event, f"recover by {actor.name}")
            elif op == "retry":
                if st in TRANSIENT:
                    vm.step_attempts = 0
                    vm.state_changed_at = now()
                    record(s, "vm", vm.id, "retry", st.value, st.value, f"by {actor.name}")
                else:
                    transition(s, vm, "retry", f"recover by {actor.name}")
            elif op == "delete":
                if st in FINAL:
                    raise IllegalAction("VM", vm.id, st.value, "recover --delete")
                # driver cleanup is the admin's call: this is for VMs whose host is gone
                transition(s, vm, "recover_delete", f"recover --delete by {actor.name}")
            else:
                raise InvalidInput("recover needs one of: success, failure, retry, delete")
            return self._row(s, vm)

    def delete(self, actor: Actor, vm_id: int) -> None:
        """Purge a VM record: allowed when DONE, or when it never left PENDING/HOLD."""
        with self.db.write() as s:
            vm = find(s, VM, "VM", vm_id, lock=True)
            require(s, actor, "MANAGE", vm_ref(vm))
            st = VMState(vm.state)
            if st in (VMState.PENDING, VMState.HOLD):
                transition(s, vm, "terminate", f"delete by {actor.name}")
            elif st not in FINAL:
                raise IllegalAction("VM", vm.id, st.value, "delete")
            s.delete(vm)

    # ---------------------------------------------------------------- loops
    def report(self, vm_id: int, expected: VMState, event: str, message: str = "",
               **fields: Any) -> bool:
        """A loop's result, applied only if the VM is still in the state the loop saw."""
        with self.db.write() as s:
            vm = s.get(VM, vm_id, with_for_update=True)
            if vm is None or vm.state != expected.value:
                return False
            for key, value in fields.items():
                setattr(vm, key, value)
            transition(s, vm, event, message)
            return True

    def report_many(self, reports: Sequence[vm_batch.Report]) -> set[int]:
        """Many loop results in one transaction, set-based (service/vm_batch.py); each is still
        applied only if its VM is in the state the loop saw. Returns the ids that moved."""
        with self.db.write() as s:
            return vm_batch.apply_reports(s, reports, now(), transition)

    def schedule_many(self, placements: Sequence[tuple[int, int]],
                      reasons: Mapping[int, str] | None = None) -> dict[int, str]:
        """The scheduler's ``(vm_id, host_id)`` decisions in one transaction (vm_batch.schedule);
        returns the VMs that lost a race for their host and why. ``reasons``: the ``scheduled``
        event's message per VM where it says more than the host (bursting: why the cloud)."""
        with self.db.write() as s:
            return vm_batch.schedule(s, placements, now(), reasons)

    def resume_owed(self, host_id: int, message: str, at: float | None = None) -> list[int]:
        """The host answers again: the steps its VMs owe start afresh (their state's clock from
        ``at``, so a boot or shutdown gets its full window; the ACPI request is sent again),
        noted in each VM's history. Returns the VMs' ids (docs/faults.md)."""
        at = now() if at is None else at
        with self.db.write() as s:
            vms = list(s.scalars(select(VM).where(VM.host_id == host_id)
                                 .where(VM.state.in_([st.value for st in TRANSIENT]))
                                 .order_by(VM.id).with_for_update()))
            for vm in vms:
                vm.state_changed_at = at
                vm.step_attempts = 0
                record(s, "vm", vm.id, "resume_owed", vm.state, vm.state, message, at,
                       host_id=vm.host_id)
            return [vm.id for vm in vms]

    def bump_attempt(self, vm_id: int, expected: VMState, message: str = "") -> None:
        """Remember that a step's driver call was made (e.g. the ACPI request was sent)."""
        self.bump_attempts([vm_batch.Report(vm_id, expected, "", message)])

    def bump_attempts(self, notes: Sequence[vm_batch.Report]) -> None:
        """Many :meth:`bump_attempt` notes (``Report.message``; its event unused) in one
        transaction: one UPDATE per (state, message), each a compare-and-set on the state the
        loop saw, as one note at a time. On PostgreSQL a VM whose row a request holds is left
        out (``SKIP LOCKED``, as the pass's results are): its note is lost, so the next pass
        sends the request again, which a guest already shutting down ignores."""
        groups: dict[tuple[VMState, str], list[int]] = {}
        for note in notes:
            groups.setdefault((note.expected, note.message), []).append(note.vm_id)
        if not groups:
            return
        with self.db.write() as s:
            for (expected, message), ids in groups.items():
                for part in vm_batch.chunks(sorted(ids)):
                    # the compare-and-set is the subquery's: it reads each row's latest
                    # version under the lock it takes, so the row cannot change before the UPDATE
                    free = (select(VM.id).where(VM.id.in_(part))
                            .where(VM.state == expected.value).with_for_update(skip_locked=True))
                    s.execute(update(VM).where(VM.id.in_(free))
                              .values(step_attempts=VM.step_attempts + 1, error=message)
                              .execution_options(synchronize_session=False))

    # ---------------------------------------------------------------- reads
    def _row(self, s: Session, vm: VM) -> dict[str, Any]:
        host = s.get(Host, vm.host_id) if vm.host_id else None
        return {
            "id": vm.id, "name": vm.name, "state": vm.state, "host": host.name if host else None,
            "host_id": vm.host_id, "cpu": capacity.cores(vm.cpu_m), "memory": vm.memory,
        }

    def _list_stmt(self, mode: str, limited: bool, where: Any) -> Any:
        """The ``vm list`` statement: rows filtered by ``mode`` ("state": the ``state``
        parameter, "live": not DONE, "all") and the ACL condition ``where``, at most the
        ``limit`` parameter of them, aggregated into one JSON array by the database."""
        h = aliased(Host)
        short = case({st.value: sh for st, sh in VM_SHORT.items()}, value=VM.state, else_="????")
        inner = (
            select(VM.id.label("id"), VM.name.label("name"), User.name.label("user"),
                   Group.name.label("group"), VM.state.label("state"), short.label("stat"),
                   (VM.cpu_m / literal(1000.0)).label("cpu"), VM.memory.label("memory"),
                   h.name.label("host"), VM.created_at.label("created_at"),
                   VM.started_at.label("started_at"), VM.ended_at.label("ended_at"),
                   VM.owner_id.label("owner_id"), VM.group_id.label("group_id"),
                   VM.host_id.label("host_id"))
            .join(User, User.id == VM.owner_id)
            .join(Group, Group.id == VM.group_id)
            .outerjoin(h, h.id == VM.host_id)
            .order_by(VM.id)
        )
        if mode == "state":
            inner = inner.where(VM.state == bindparam("state"))
        elif mode == "live":  # spelled as ix_vms_live_id's predicate, so the index serves it
            inner = inner.where(VM.state != literal_column(f"'{VMState.DONE.value}'"))
        if where is not None:
            inner = inner.where(where)
        if limited:
            inner = inner.limit(bindparam("limit", type_=Integer))
        sq = inner.subquery("vm_rows")
        if self.db.is_sqlite:
            pairs: list[Any] = []
            for col in sq.c:  # keys inlined, as SQLite's json_object wants them
                pairs.extend((literal_column(f"'{col.name}'"), col))
            agg: Any = func.json_group_array(func.json_object(*pairs))
        else:
            from sqlalchemy.dialects.postgresql import aggregate_order_by

            # whole rows (keys: the column labels): a third of json_build_object's CPU per row
            agg = func.coalesce(
                cast(func.json_agg(aggregate_order_by(sq.table_valued(), sq.c.id)), Text), "[]")
        return select(agg).select_from(sq)

    def list_json(self, actor: Actor, include_done: bool = False, state: str | None = None,
                  limit: int | None = None) -> bytes:
        """The ``vm list`` rows as a JSON array, built by the database itself.

        Why: turning 20,000 rows into Python dicts and back into JSON costs more than the query;
        SQLite (``json_group_array``) and PostgreSQL (``json_agg``) emit the array in C, and the
        API sends those bytes untouched. That is what keeps the list under a quarter second.
        """
        mode = "all" if include_done else "live"
        params: dict[str, Any] = {}
        if state is not None:
            try:
                params["state"] = VMState(state.upper()).value
            except ValueError:
                raise InvalidInput(f"unknown VM state {state!r}") from None
            mode = "state"
        if limit is not None:
            if limit < 0:
                raise InvalidInput(f"limit must be >= 0, got {limit}")
            params["limit"] = limit
        with self.db.read() as s:
            where: Any = None
            if not actor.is_admin:
                rules = load_rules(s)
                groups = visible_group_ids(actor, "VM", rules)
                if groups is not None:
                    ids = visible_object_ids(actor, "VM", rules)
                    cond = VM.group_id.in_(groups)
                    where = (cond | VM.id.in_(ids)) if ids else cond
            key = (mode, limit is not None)
            stmt = self._list_stmts.get(key) if where is None else None
            if stmt is None:
                stmt = self._list_stmt(mode, limit is not None, where)
                if where is None:  # one statement per shape, built once (it is a large tree)
                    self._list_stmts[key] = stmt
            text_out = s.execute(stmt, params).scalar_one()
        return str(text_out).encode()

    def list(self, actor: Actor, include_done: bool = False, state: str | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = orjson.loads(self.list_json(actor, include_done, state, limit))
        return rows

    def show(self, actor: Actor, vm_id: int) -> dict[str, Any]:
        with self.db.read() as s:
            vm = find(s, VM, "VM", vm_id)
            require(s, actor, "USE", vm_ref(vm))
            host = s.get(Host, vm.host_id) if vm.host_id else None
            owner = s.get(User, vm.owner_id)
            group = s.get(Group, vm.group_id)
            leases = s.execute(
                select(Lease.ip, Lease.mac, Network.name)
                .join(Network, Network.id == Lease.network_id)
                .where(Lease.vm_id == vm.id)
            ).all()
            events = s.scalars(
                select(Event).where(Event.kind == "vm").where(Event.obj_id == vm.id).order_by(Event.id)
            ).all()
            return {
                "id": vm.id, "name": vm.name, "state": vm.state, "stat": VM_SHORT[VMState(vm.state)],
                "user": owner.name if owner else None, "group": group.name if group else None,
                "owner_id": vm.owner_id, "group_id": vm.group_id,
                "host": host.name if host else None, "host_id": vm.host_id,
                "cpu": capacity.cores(vm.cpu_m), "vcpu": vm.vcpu, "memory": vm.memory,
                "deploy_id": vm.deploy_id, "requirements": vm.requirements, "rank": vm.rank,
                "sched_message": vm.sched_message, "error": vm.error,
                "created_at": vm.created_at, "started_at": vm.started_at, "ended_at": vm.ended_at,
                "state_changed_at": vm.state_changed_at,
                "waiting": waiting(vm, host),
                "allowed_actions": [a for a in vm_allowed_actions(vm.state)
                                    if a != "migrate" or (actor.is_admin and host is not None
                                                          and self._can_migrate(host))],
                "leases": [{"ip": ipam.int_to_ip(ip), "mac": mac, "network": net}
                           for ip, mac, net in leases],
                "template": vm.template,
                "history": [
                    {"time": e.time, "action": e.action, "from": e.from_state, "to": e.to_state,
                     "message": e.message}
                    for e in events
                ],
            }
