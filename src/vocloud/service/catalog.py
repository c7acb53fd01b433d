"""What VMs are made from: images and VM templates (virtual networks: :mod:`.networks`).

Both are owned by a user and its group (a VO) and may be marked public so every VO can
USE them (e.g. the site's standard worker image).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from vocloud.errors import Conflict, Forbidden, InvalidInput, QuotaExceeded
from vocloud.model.attributes import check_template
from vocloud.model.lifecycle import ImageState, image_next
from vocloud.model.template import check_size, parse_template
from vocloud.model.vmspec import VMTemplate
from vocloud.service import capacity, image_files
from vocloud.service.acl import ObjRef, visible_group_ids, visible_object_ids
from vocloud.service.auth import Actor
from vocloud.service.base import check_name, find, load_rules, record, require
from vocloud.service.datastores import DEFAULT, DatastoreService, real
from vocloud.service.policy import VMPolicy
from vocloud.store.db import Database
from vocloud.store.schema import Group, Image, User, VMTemplateRow

log = logging.getLogger("vocloud.images")
IMAGE_FORMATS = image_files.FORMATS


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


class ImageUpload:
    """One upload in flight, from :meth:`ImageService.begin_upload`: ``write`` each chunk as it
    arrives (quota room enforced per chunk), then ``finish`` (qemu-img, rename, insert) or
    ``abort``. Used as a context manager it aborts unless finished, so an interrupted upload
    leaves no file, no row and an unchanged quota."""

    def __init__(self, service: ImageService, actor: Actor, name: str, fmt: str | None,
                 persistent: bool, public: bool, description: str, datastore_id: int,
                 sink: image_files.Sink) -> None:
        self.service = service
        self.actor = actor
        self.name = name
        self.fmt = fmt
        self.persistent = persistent
        self.public = public
        self.description = description
        self.datastore_id = datastore_id
        self.sink = sink
        self.done = False

    def write(self, chunk: bytes) -> None:
        self.sink.write(chunk)

    def finish(self) -> dict[str, Any]:
        what = f"image {self.name}"
        try:
            self.sink.close()
            if self.sink.size == 0:
                raise InvalidInput(f"{what}: the upload is empty (send the image bytes as the body)")
            verdict = image_files.judge(image_files.qemu_info(self.sink.path, what), self.fmt, what)
            final = self.sink.commit_to(verdict.format)
            out = self.service._insert(self.actor, self.name, final, verdict.format, self.sink.size,
                                       self.sink.sha256, self.persistent, self.public, self.description,
                                       self.datastore_id, uploaded=True)
        except BaseException:
            self.abort()
            raise
        self.done = True
        return out

    def abort(self) -> None:
        if not self.done:
            self.sink.abort()

    def __enter__(self) -> ImageUpload:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class ImageService:
    def __init__(self, db: Database, datastores: DatastoreService | None = None) -> None:
        self.db = db
        self.datastores = datastores or DatastoreService(db)

    def create(self, actor: Actor, name: str, path: str, fmt: str | None = None,
               persistent: bool = False, public: bool = False, description: str = "") -> dict[str, Any]:
        """Register a file already on the front-end: administrators only, and only inside a
        datastore (its real path, symlinks and ``..`` resolved). Size, sha256 and ``qemu-img``
        verdict are taken before the write transaction, which only inserts the row."""
        name = check_name(name, "image")
        if not actor.is_admin:
            raise Forbidden("path: only an administrator may register an image by path; upload the "
                            "image's bytes instead (POST /api/v1/images/upload, `vocloud image upload`)",
                            attribute="path")
        image_files.check_format(fmt)
        p = Path(path)
        if not p.is_absolute():
            raise InvalidInput(f"path: image path must be absolute, got {path!r}", attribute="path")
        rp = real(p)
        if not rp.is_file():
            raise InvalidInput(f"path: image file {path} does not exist or is not a regular file",
                               attribute="path")
        with self.db.read() as s:
            ds = self.datastores.locate(s, rp, path)
            ds_id = ds.id
            self._check_free_name(s, name)
        what = f"image file {rp}"
        size, sha = image_files.sha256_file(rp)
        verdict = image_files.judge(image_files.qemu_info(rp, what), fmt, what)
        return self._insert(actor, name, rp, verdict.format, size, sha, persistent, public,
                            description, ds_id, uploaded=False)

    def begin_upload(self, actor: Actor, name: str, fmt: str | None = None, persistent: bool = False,
                     public: bool = False, description: str = "", datastore: int | str = DEFAULT,
                     length: int | None = None) -> ImageUpload:
        """Start an upload of ``length`` bytes (None: unknown) into a datastore. Refused at once
        when the name is taken, the datastore unknown, or ``length`` exceeds the image quota
        room of the user or the group (or the datastore's free space)."""
        name = check_name(name, "image")
        image_files.check_format(fmt)
        if length is not None and length < 0:
            raise InvalidInput(f"Content-Length must not be negative, got {length}")
        with self.db.read() as s:
            ds = self.datastores.by_ref(s, datastore)
            self._check_free_name(s, name)
            rooms = [(scope, r) for scope, sid in (("user", actor.user_id), ("group", actor.group_id))
                     if (r := capacity.image_room(s, scope, sid)) is not None]
        limit = min(r for _, r in rooms) * image_files.MIB if rooms else None
        if length is not None and limit is not None and length > limit:
            scope = min(rooms, key=lambda x: x[1])[0]
            raise QuotaExceeded(f"image {name}: {image_files.mib_of(length)} MiB exceeds the remaining "
                                f"{scope} image quota of {limit // image_files.MIB} MiB",
                                attribute="image_mib")
        directory = Path(ds.path)
        if length is not None:
            try:
                free = shutil.disk_usage(directory).free
            except OSError:
                raise Conflict(f"datastore {ds.name} directory {directory} is not usable") from None
            if length > free:
                raise Conflict(f"datastore {ds.name} has {free >> 20} MiB free; the image needs "
                               f"{image_files.mib_of(length)} MiB")
        sink = image_files.Sink(directory, limit, f"image {name}")
        return ImageUpload(self, actor, name, fmt, persistent, public, description, ds.id, sink)

    def upload(self, actor: Actor, name: str, chunks: Iterable[bytes], fmt: str | None = None,
               persistent: bool = False, public: bool = False, description: str = "",
               datastore: int | str = DEFAULT, length: int | None = None) -> dict[str, Any]:
        """The whole upload for a synchronous caller: begin, write every chunk, finish."""
        with self.begin_upload(actor, name, fmt, persistent, public, description, datastore,
                               length) as up:
            for chunk in chunks:
                up.write(chunk)
            return up.finish()

    @staticmethod
    def _check_free_name(s: Session, name: str) -> None:
        if s.scalar(select(Image.id).where(Image.name == name)) is not None:
            raise Conflict(f"image {name} already exists")

    def _insert(self, actor: Actor, name: str, path: Path, fmt: str, size: int, sha256: str,
                persistent: bool, public: bool, description: str, datastore_id: int,
                uploaded: bool) -> dict[str, Any]:
        """The only part under the write lock: name check, quota charge, the row."""
        mib = image_files.mib_of(size)
        with self.db.write() as s:
            self._check_free_name(s, name)
            user = s.get(User, actor.user_id)
            grp = s.get(Group, actor.group_id)
            capacity.charge_images(s, "user", actor.user_id, user.name if user else actor.name, mib)
            capacity.charge_images(s, "group", actor.group_id, grp.name if grp else str(actor.group_id), mib)
            img = Image(name=name, owner_id=actor.user_id, group_id=actor.group_id, path=str(path),
                        format=fmt, size_mib=mib, sha256=sha256, persistent=persistent,
                        public=public, description=description, state=ImageState.READY.value,
                        datastore_id=datastore_id, uploaded=uploaded)
            s.add(img)
            s.flush()
            record(s, "image", img.id, "upload" if uploaded else "create", "", img.state,
                   f"by {actor.name}, {size} bytes")
            return self._dict(img)

    @staticmethod
    def _dict(img: Image) -> dict[str, Any]:
        return {
            "id": img.id, "name": img.name, "state": img.state, "path": img.path,
            "format": img.format, "size_mib": img.size_mib, "sha256": img.sha256,
            "persistent": img.persistent, "public": img.public, "running_vms": img.running_vms,
            "owner_id": img.owner_id, "group_id": img.group_id, "description": img.description,
            "datastore_id": img.datastore_id, "uploaded": img.uploaded,
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
        """Forget an image and refund its size; an uploaded file (vocloud's own) is removed
        after the commit, a file an administrator registered by path is left alone."""
        with self.db.write() as s:
            img = find(s, Image, "image", ref, lock=True)
            require(s, actor, "MANAGE", _ref("IMAGE", img))
            if img.running_vms:
                raise Conflict(f"image {img.name} is used by {img.running_vms} VMs")
            record(s, "image", img.id, "delete", img.state, "", f"by {actor.name}")
            capacity.refund_images(s, "user", img.owner_id, img.size_mib)
            capacity.refund_images(s, "group", img.group_id, img.size_mib)
            doomed = Path(img.path) if img.uploaded else None
            s.delete(img)
        if doomed is not None:
            try:
                doomed.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("image %s deleted but its file %s stays: %s", ref, doomed, exc)


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
        # Unknown and internal attributes are refused for everyone, restricted ones for
        # non-administrators: a VO's template (a pool's too) holds only what the VO may set; the
        # worker's kernel and 9p export come from the administrator's site template.
        check_template(t, actor.is_admin, self.policy.restricted)
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

    def update(self, actor: Actor, ref: int | str, text: str, fmt: str = "auto",
               merge: bool = False) -> dict[str, Any]:
        """Replace a stored template's attributes (or, ``merge``, replace only the keys ``text``
        names), held to the same checks as ``create``; its name stays (OpenNebula's
        ``template.update``: type 0 replace, 1 merge). VMs made from it earlier keep theirs."""
        new = parse_template(text, fmt=fmt, max_bytes=self.policy.max_template_bytes,
                             max_depth=self.policy.max_template_depth)
        with self.db.write() as s:
            row = find(s, VMTemplateRow, "template", ref, lock=True)
            require(s, actor, "MANAGE", _ref("TEMPLATE", row))
            t = parse_template(row.body, fmt="one", source="stored template", max_bytes=None).merge(new) \
                if merge else new
            t.set("NAME", row.name)
            check_template(t, actor.is_admin, self.policy.restricted)
            VMTemplate.from_template(t)
            body = t.to_one()
            check_size(body, self.policy.max_template_bytes)
            row.body = body
            return self._dict(row)

    def delete(self, actor: Actor, ref: int | str) -> None:
        with self.db.write() as s:
            row = find(s, VMTemplateRow, "template", ref, lock=True)
            require(s, actor, "MANAGE", _ref("TEMPLATE", row))
            s.delete(row)
