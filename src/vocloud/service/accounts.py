"""Users, groups (one per VO), quotas and ACL rules."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vocloud.errors import Conflict, InvalidInput, NotFound
from vocloud.service import capacity
from vocloud.service.acl import ObjRef, parse_rule
from vocloud.service.auth import Actor, hash_token, new_token
from vocloud.service.base import check_name, find, record, require, require_admin
from vocloud.store.db import Database
from vocloud.store.pools import PoolRow
from vocloud.store.schema import VM, Acl, Group, Image, Network, Quota, User, VMTemplateRow

ADMIN_GROUP = "admin"
ADMIN_USER = "admin"


def _user_dict(u: User, group: str | None = None) -> dict[str, Any]:
    return {"id": u.id, "name": u.name, "group_id": u.group_id, "group": group,
            "is_admin": u.is_admin, "enabled": u.enabled}


def _quota_dict(q: Quota | None, scope: str, scope_id: int) -> dict[str, Any]:
    if q is None:
        q = Quota(scope=scope, scope_id=scope_id, vms_limit=-1, cpu_m_limit=-1, mem_limit=-1,
                  vms_used=0, cpu_m_used=0, mem_used=0, image_mib_limit=-1, image_mib_used=0)
    return {
        "scope": scope, "id": scope_id,
        "vms": {"used": q.vms_used, "limit": q.vms_limit},
        "cpu": {"used": capacity.cores(q.cpu_m_used),
                "limit": -1 if q.cpu_m_limit < 0 else capacity.cores(q.cpu_m_limit)},
        "memory": {"used": q.mem_used, "limit": q.mem_limit},
        "images": {"used": q.image_mib_used, "limit": q.image_mib_limit},  # MiB of image files
    }


class AccountService:
    def __init__(self, db: Database) -> None:
        self.db = db

    # ------------------------------------------------------------ bootstrap
    def bootstrap(self) -> str | None:
        """Create the admin group and user on an empty store; returns the admin token once."""
        with self.db.write() as s:
            if s.scalar(select(func.count()).select_from(User)):
                return None
            g = Group(name=ADMIN_GROUP, description="site administrators")
            s.add(g)
            s.flush()
            token = new_token()
            u = User(name=ADMIN_USER, group_id=g.id, is_admin=True, token_hash=hash_token(token))
            s.add(u)
            s.flush()
            capacity.ensure_quota(s, "group", g.id)
            capacity.ensure_quota(s, "user", u.id)
            return token

    # ------------------------------------------------------------ groups
    def create_group(self, actor: Actor, name: str, description: str = "") -> dict[str, Any]:
        require_admin(actor, "create groups")
        name = check_name(name, "group")
        with self.db.write() as s:
            if s.scalar(select(Group.id).where(Group.name == name)) is not None:
                raise Conflict(f"group {name} already exists")
            g = Group(name=name, description=description)
            s.add(g)
            s.flush()
            capacity.ensure_quota(s, "group", g.id)
            record(s, "group", g.id, "create", message=f"by {actor.name}")
            return {"id": g.id, "name": g.name, "description": g.description}

    def list_groups(self, actor: Actor) -> list[dict[str, Any]]:
        with self.db.read() as s:
            stmt = select(Group).order_by(Group.id)
            if not actor.is_admin:
                stmt = stmt.where(Group.id == actor.group_id)
            out = []
            for g in s.scalars(stmt):
                users = s.scalar(select(func.count()).select_from(User).where(User.group_id == g.id))
                out.append({"id": g.id, "name": g.name, "description": g.description, "users": users})
            return out

    def show_group(self, actor: Actor, ref: int | str) -> dict[str, Any]:
        with self.db.read() as s:
            g = find(s, Group, "group", ref)
            require(s, actor, "USE", ObjRef("GROUP", g.id))
            users = [u.name for u in s.scalars(select(User).where(User.group_id == g.id).order_by(User.id))]
            q = s.scalars(select(Quota).where(Quota.scope == "group").where(Quota.scope_id == g.id)).first()
            return {"id": g.id, "name": g.name, "description": g.description, "users": users,
                    "quota": _quota_dict(q, "group", g.id)}

    def delete_group(self, actor: Actor, ref: int | str) -> None:
        require_admin(actor, "delete groups")
        with self.db.write() as s:
            g = find(s, Group, "group", ref, lock=True)
            if g.name == ADMIN_GROUP:
                raise Conflict("the admin group cannot be deleted")
            for model, what in ((User, "users"), (Image, "images"), (Network, "networks"),
                                (VMTemplateRow, "templates")):
                n = s.scalar(select(func.count()).select_from(model).where(model.group_id == g.id))
                if n:
                    raise Conflict(f"group {g.name} still has {n} {what}")
            if s.scalar(select(func.count()).select_from(VM).where(VM.group_id == g.id)):
                raise Conflict(f"group {g.name} still owns VMs (delete them first)")
            s.execute(delete(Quota).where(Quota.scope == "group").where(Quota.scope_id == g.id))
            s.delete(g)

    # ------------------------------------------------------------ users
    def create_user(self, actor: Actor, name: str, group: int | str,
                    is_admin: bool = False) -> dict[str, Any]:
        """Create a user; the returned dict holds its token, shown this once only."""
        require_admin(actor, "create users")
        name = check_name(name, "user")
        with self.db.write() as s:
            if s.scalar(select(User.id).where(User.name == name)) is not None:
                raise Conflict(f"user {name} already exists")
            g = find(s, Group, "group", group)
            token = new_token()
            u = User(name=name, group_id=g.id, is_admin=is_admin, token_hash=hash_token(token))
            s.add(u)
            s.flush()
            capacity.ensure_quota(s, "user", u.id)
            record(s, "user", u.id, "create", message=f"by {actor.name}")
            out = _user_dict(u, g.name)
            out["token"] = token
            return out

    def list_users(self, actor: Actor) -> list[dict[str, Any]]:
        with self.db.read() as s:
            stmt = select(User, Group.name).join(Group, Group.id == User.group_id).order_by(User.id)
            if not actor.is_admin:
                stmt = stmt.where(User.id == actor.user_id)
            return [_user_dict(u, gname) for u, gname in s.execute(stmt)]

    def show_user(self, actor: Actor, ref: int | str) -> dict[str, Any]:
        with self.db.read() as s:
            u = self._user(s, ref)
            require(s, actor, "USE", ObjRef("USER", u.id))
            g = s.get(Group, u.group_id)
            out = _user_dict(u, g.name if g else None)
            q = s.scalars(select(Quota).where(Quota.scope == "user").where(Quota.scope_id == u.id)).first()
            out["quota"] = _quota_dict(q, "user", u.id)
            return out

    @staticmethod
    def _user(s: Session, ref: int | str) -> User:
        return find(s, User, "user", ref)

    def new_token(self, actor: Actor, ref: int | str) -> dict[str, Any]:
        with self.db.write() as s:
            u = self._user(s, ref)
            if not actor.is_admin and u.id != actor.user_id:
                require_admin(actor, "reset another user's token")
            token = new_token()
            u.token_hash = hash_token(token)
            return {"id": u.id, "name": u.name, "token": token}

    def set_enabled(self, actor: Actor, ref: int | str, enabled: bool) -> dict[str, Any]:
        require_admin(actor, "enable or disable users")
        with self.db.write() as s:
            u = self._user(s, ref)
            if u.id == actor.user_id and not enabled:
                raise Conflict("you cannot disable yourself")
            u.enabled = enabled
            return _user_dict(u)

    def delete_user(self, actor: Actor, ref: int | str) -> None:
        require_admin(actor, "delete users")
        with self.db.write() as s:
            u = self._user(s, ref)
            if u.id == actor.user_id:
                raise Conflict("you cannot delete yourself")
            for model, what in ((VM, "VMs"), (Image, "images"), (Network, "networks"),
                                (VMTemplateRow, "templates"), (PoolRow, "pools (it is their "
                                                               "pool identity)")):
                n = s.scalar(select(func.count()).select_from(model).where(model.owner_id == u.id))
                if n:
                    raise Conflict(f"user {u.name} still owns {n} {what}")
            s.execute(delete(Quota).where(Quota.scope == "user").where(Quota.scope_id == u.id))
            s.delete(u)

    # ------------------------------------------------------------ quotas
    def _scope_id(self, s: Session, scope: str, ref: int | str) -> int:
        if scope == "user":
            return self._user(s, ref).id
        if scope == "group":
            return find(s, Group, "group", ref).id
        raise InvalidInput(f"quota scope must be 'user' or 'group', got {scope!r}")

    def get_quota(self, actor: Actor, scope: str, ref: int | str) -> dict[str, Any]:
        with self.db.read() as s:
            sid = self._scope_id(s, scope, ref)
            require(s, actor, "USE", ObjRef(scope.upper(), sid))
            q = s.scalars(select(Quota).where(Quota.scope == scope).where(Quota.scope_id == sid)).first()
            return _quota_dict(q, scope, sid)

    def set_quota(self, actor: Actor, scope: str, ref: int | str, vms: int | None = None,
                  cpu: float | None = None, memory: int | None = None,
                  images: int | None = None) -> dict[str, Any]:
        """Set limits (-1 = unlimited; ``images`` in MiB). A limit below current usage is
        allowed, as in OpenNebula: it stops new VMs (or images) without touching existing ones."""
        require_admin(actor, "set quotas")
        vms = None if vms is None else capacity.quota_int("vms", vms, capacity.MAX_QUOTA_VMS)
        memory = None if memory is None else capacity.quota_int("memory", memory, capacity.MAX_QUOTA_MEM)
        cpu_m = None if cpu is None else capacity.quota_cpu_m(cpu)
        images = None if images is None else capacity.quota_int("images", images, capacity.MAX_QUOTA_MEM)
        with self.db.write() as s:
            sid = self._scope_id(s, scope, ref)
            capacity.ensure_quota(s, scope, sid)
            q = s.scalars(select(Quota).where(Quota.scope == scope).where(Quota.scope_id == sid)
                          .with_for_update()).one()
            if vms is not None:
                q.vms_limit = vms
            if cpu_m is not None:
                q.cpu_m_limit = cpu_m
            if memory is not None:
                q.mem_limit = memory
            if images is not None:
                q.image_mib_limit = images
            return _quota_dict(q, scope, sid)

    # ------------------------------------------------------------ ACLs
    def list_acls(self, actor: Actor) -> list[dict[str, Any]]:
        require_admin(actor, "list ACL rules")
        with self.db.read() as s:
            return [{"id": a.id, "subject": a.subject, "resource": a.resource, "target": a.target,
                     "rights": a.rights} for a in s.scalars(select(Acl).order_by(Acl.id))]

    def create_acl(self, actor: Actor, subject: str, resource: str, target: str,
                   rights: str) -> dict[str, Any]:
        require_admin(actor, "create ACL rules")
        rule = parse_rule(subject, resource, target, rights)
        with self.db.write() as s:
            a = Acl(subject=rule.subject, resource=rule.resource, target=rule.target,
                    rights=",".join(sorted(rule.rights)))
            s.add(a)
            s.flush()
            return {"id": a.id, "subject": a.subject, "resource": a.resource, "target": a.target,
                    "rights": a.rights}

    def delete_acl(self, actor: Actor, acl_id: int) -> None:
        require_admin(actor, "delete ACL rules")
        with self.db.write() as s:
            a = s.get(Acl, acl_id)
            if a is None:
                raise NotFound(f"ACL rule {acl_id} does not exist")
            s.delete(a)
