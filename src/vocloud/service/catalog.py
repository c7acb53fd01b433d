"""What VMs are made from: images and VM templates (virtual networks: :mod:`.networks`).

Both are owned by a user and its group (a VO) and may be marked public so every VO can
USE them (e.g. the site's standard worker image).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vocloud.errors import Conflict, InvalidInput
from vocloud.model.attributes import check_template
from vocloud.model.lifecycle import ImageState, image_next
from vocloud.model.template import VMTemplate, check_size, parse_template
from vocloud.service.acl import ObjRef, visible_group_ids, visible_object_ids
from vocloud.service.auth import Actor
from vocloud.service.base import check_name, find, load_rules, record, require
from vocloud.service.policy import VMPolicy
from vocloud.store.db import Database
from vocloud.store.schema import Image, VMTemplateRow

IMAGE_FORMATS = ("qcow2", "raw")


def _visible(s: Session, actor: Actor, kind: str, model: Any) -> Any:
    stmt = select(model).order_by(model.id)
    if actor.is_admin:
        return stmt
    rules = load_rules(s)
    groups = visible_group_ids(actor, kind, rules)
    if groups is None:
        return stmt
    ids = visible_object_ids(actor, kind, rules)
    return stmt.where(model.group_id.in_(groups) | model.public.is_(True) | model.id.in_(ids or {-1}))


def _ref(kind: str, obj: Any) -> ObjRef:
    return ObjRef(kind, obj.id, obj.owner_id, obj.group_id, obj.public)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sniff_format(path: Path) -> str:
    with path.open("rb") as f:
        return "qcow2" if f.read(4) == b"QFI\xfb" else "raw"


class ImageService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, actor: Actor, name: str, path: str, fmt: str | None = None,
               persistent: bool = False, public: bool = False, description: str = "",
               checksum: bool = True) -> dict[str, Any]:
        """Register an image file; its size and sha256 are measured, its format sniffed."""
        name = check_name(name, "image")
        p = Path(path).expanduser()
        if not p.is_absolute():
            raise InvalidInput(f"image path must be absolute, got {path!r}")
        if not p.is_file():
            raise InvalidInput(f"image file {p} does not exist or is not a regular file")
        if not os.access(p, os.R_OK):
            raise InvalidInput(f"image file {p} is not readable")
        sniffed = _sniff_format(p)
        if fmt is not None and fmt not in IMAGE_FORMATS:
            raise InvalidInput(f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {fmt!r}")
        if fmt == "qcow2" and sniffed != "qcow2":
            raise InvalidInput(f"image file {p} is not a qcow2 image (no QFI header)")
        with self.db.write() as s:
            if s.scalar(select(Image.id).where(Image.name == name)) is not None:
                raise Conflict(f"image {name} already exists")
            img = Image(name=name, owner_id=actor.user_id, group_id=actor.group_id, path=str(p),
                        format=fmt or sniffed, size_mib=(p.stat().st_size + (1 << 20) - 1) >> 20,
                        sha256=_sha256(p) if checksum else "", persistent=persistent,
                        public=public, description=description, state=ImageState.READY.value)
            s.add(img)
            s.flush()
            record(s, "image", img.id, "create", "", img.state, f"by {actor.name}")
            return self._dict(img)

    @staticmethod
    def _dict(img: Image) -> dict[str, Any]:
        return {
            "id": img.id, "name": img.name, "state": img.state, "path": img.path,
            "format": img.format, "size_mib": img.size_mib, "sha256": img.sha256,
            "persistent": img.persistent, "public": img.public, "running_vms": img.running_vms,
            "owner_id": img.owner_id, "group_id": img.group_id, "description": img.description,
        }

    def list(self, actor: Actor) -> list[dict[str, Any]]:
        with self.db.read() as s:
            return [self._dict(i) for i in s.scalars(_visible(s, actor, "IMAGE", Image))]

    def show(self, actor: Actor, ref: int | str) -> dict[str, Any]:
        with self.db.read() as s:
            img = find(s, Image, "image", ref)
            require(s, actor, "USE", _ref("IMAGE", img))
            return self._dict(img)

    def action(self, actor: Actor, ref: int | str, action: str) -> dict[str, Any]:
        with self.db.write() as s:
            img = find(s, Image, "image", ref, lock=True)
            require(s, actor, "MANAGE", _ref("IMAGE", img))
            if action in ("enable", "disable"):
                new = image_next(img.name, img.state, action)
                record(s, "image", img.id, action, img.state, new.value, f"by {actor.name}")
                img.state = new.value
            elif action in ("persistent", "nonpersistent"):
                if img.running_vms:
                    raise Conflict(f"image {img.name} is used by {img.running_vms} VMs; "
                                   "change persistence when it is free")
                img.persistent = action == "persistent"
            elif action in ("public", "private"):
                img.public = action == "public"
            else:
                raise InvalidInput("image action must be enable, disable, persistent, "
                                   f"nonpersistent, public or private; got {action!r}")
            return self._dict(img)

    def delete(self, actor: Actor, ref: int | str) -> None:
        with self.db.write() as s:
            img = find(s, Image, "image", ref, lock=True)
            require(s, actor, "MANAGE", _ref("IMAGE", img))
            if img.running_vms:
                raise Conflict(f"image {img.name} is used by {img.running_vms} VMs")
            record(s, "image", img.id, "delete", img.state, "", f"by {actor.name}")
            s.delete(img)


class TemplateService:
    def __init__(self, db: Database, policy: VMPolicy | None = None) -> None:
        self.db = db
        self.policy = policy or VMPolicy()

    def create(self, actor: Actor, text: str, fmt: str = "auto", name: str | None = None,
               public: bool = False) -> dict[str, Any]:
        t = parse_template(text, fmt=fmt, max_bytes=self.policy.max_template_bytes,
                           max_depth=self.policy.max_template_depth)
        if name:
            t.set("NAME", name)
        # Unknown and internal attributes are refused for everyone, now. Restricted ones are
        # refused when a non-administrator instantiates (VMService.create), not here yet: until
        # the pool controller boots a VO's workers with the VO's rights plus the site's declared
        # additions, a VO's pool template still carries the worker's kernel (docs/security.md).
        check_template(t, is_admin=True)
        VMTemplate.from_template(t)  # refuse a template that could never make a VM
        # the stored (canonical) text must fit too, or instantiating it would be refused later
        check_size(t.to_one(), self.policy.max_template_bytes)
        tname = check_name(t.get("NAME") or "", "template")
        with self.db.write() as s:
            if s.scalar(select(VMTemplateRow.id).where(VMTemplateRow.name == tname)) is not None:
                raise Conflict(f"template {tname} already exists")
            row = VMTemplateRow(name=tname, owner_id=actor.user_id, group_id=actor.group_id,
                                body=t.to_one(), public=public)
            s.add(row)
            s.flush()
            return self._dict(row)

    @staticmethod
    def _dict(row: VMTemplateRow) -> dict[str, Any]:
        return {"id": row.id, "name": row.name, "owner_id": row.owner_id, "group_id": row.group_id,
                "public": row.public, "body": row.body, "created_at": row.created_at}

    def list(self, actor: Actor) -> list[dict[str, Any]]:
        with self.db.read() as s:
            return [self._dict(r) for r in s.scalars(_visible(s, actor, "TEMPLATE", VMTemplateRow))]

    def get(self, actor: Actor, ref: int | str) -> dict[str, Any]:
        with self.db.read() as s:
            row = find(s, VMTemplateRow, "template", ref)
            require(s, actor, "USE", _ref("TEMPLATE", row))
            return self._dict(row)

    def delete(self, actor: Actor, ref: int | str) -> None:
        with self.db.write() as s:
            row = find(s, VMTemplateRow, "template", ref, lock=True)
            require(s, actor, "MANAGE", _ref("TEMPLATE", row))
            s.delete(row)
