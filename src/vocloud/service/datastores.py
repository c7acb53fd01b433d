"""Datastores: the directories on the front-end where image files may live.

Why: an image is a file the daemon (root) will hand to a hypervisor and copy to hosts, so "any
path the daemon can read" must never be an image — that let a plain user register
``/etc/shadow`` or ``admin.token`` and read back its size and checksum (issue 9). Administrators
declare datastores (OpenNebula's ``SAFE_DIRS``); an administrator may register a file by path
only when its *real* path (symlinks and ``..`` resolved) lies inside a datastore's real path, and
every other user brings an image only by uploading its bytes into one (``catalog.ImageService``).

The ``default`` datastore, ``<data_dir>/datastores/default`` (mode 0700), is made by the daemon
at start (:meth:`DatastoreService.ensure_default`), which alone knows the data directory.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from vocloud.errors import Conflict, Forbidden, InvalidInput
from vocloud.service.auth import Actor
from vocloud.service.base import check_name, find, record, require_admin
from vocloud.store.db import Database
from vocloud.store.schema import Datastore, Image

log = logging.getLogger("vocloud.datastores")

DEFAULT = "default"
PARTIAL_PREFIX = ".upload-"  # temp files of uploads in flight (swept at daemon start)
PARTIAL_SUFFIX = ".part"


def real(path: str | Path) -> Path:
    """The path with every symlink and ``..`` resolved (the file need not exist)."""
    return Path(os.path.realpath(path))


def within(child: Path, parent: Path) -> bool:
    """``child`` is ``parent`` or lies below it; both must already be real paths."""
    return child == parent or parent in child.parents


def _dict(ds: Datastore, images: int) -> dict[str, Any]:
    return {"id": ds.id, "name": ds.name, "path": ds.path, "images": images, "created_at": ds.created_at}


class DatastoreService:
    """Datastore rows and the path checks built on them.

    ``protected`` are paths no datastore may contain or lie in (the data directory with the
    database and the admin token, the site secrets); inside the data directory only
    ``<data_dir>/datastores/...`` may be a datastore.
    """

    def __init__(self, db: Database, data_dir: Path | None = None, protected: Sequence[Path] = ()) -> None:
        self.db = db
        self.data_dir = data_dir
        self.protected = [real(p) for p in ([data_dir] if data_dir else []) + list(protected)]

    # ------------------------------------------------------------ admin operations
    def ensure_default(self, sweep_older_than: float = 0.0) -> dict[str, Any]:
        """Create ``<data_dir>/datastores/default`` (0700) and its row if missing; sweep upload
        temp files a crash left in any datastore. Called at daemon start."""
        if self.data_dir is None:
            raise InvalidInput("the default datastore needs the daemon's data directory")
        path = self.data_dir / "datastores" / DEFAULT
        for d in (path.parent, path):
            d.mkdir(mode=0o700, exist_ok=True)
            os.chmod(d, 0o700)
        with self.db.write() as s:
            ds = s.scalars(select(Datastore).where(Datastore.name == DEFAULT)).first()
            if ds is None:
                ds = Datastore(name=DEFAULT, path=str(real(path)))
                s.add(ds)
                s.flush()
                record(s, "datastore", ds.id, "create", message=f"default, {ds.path}")
            out = _dict(ds, 0)
        self.sweep_partial(sweep_older_than)
        return out

    def sweep_partial(self, older_than: float = 0.0) -> list[Path]:
        """Remove ``.upload-*.part`` files: uploads cut off by a daemon crash. One daemon per
        store: none of them is in flight now. Several front-ends (docs/ha.md): another one may
        be writing one, so only files untouched for ``older_than`` seconds go."""
        cutoff = time.time() - older_than
        removed = []
        with self.db.read() as s:
            paths = [Path(p) for p in s.scalars(select(Datastore.path))]
        for d in paths:
            try:
                entries = list(d.glob(f"{PARTIAL_PREFIX}*{PARTIAL_SUFFIX}"))
            except OSError:
                continue
            for f in entries:
                try:
                    if older_than and f.stat().st_mtime > cutoff:
                        continue
                    f.unlink()
                    removed.append(f)
                except OSError as exc:
                    log.warning("cannot remove stale upload %s: %s", f, exc)
        if removed:
            log.info("removed %d interrupted upload(s): %s", len(removed), ", ".join(map(str, removed)))
        return removed

    def create(self, actor: Actor, name: str, path: str) -> dict[str, Any]:
        require_admin(actor, "create datastores")
        name = check_name(name, "datastore")
        p = Path(path)
        if not p.is_absolute():
            raise InvalidInput(f"datastore path must be absolute, got {path!r}", attribute="path")
        rp = real(p)
        if not rp.is_dir():
            raise InvalidInput(f"datastore path {path} is not an existing directory", attribute="path")
        self._check_protected(rp, path)
        with self.db.write() as s:
            if s.scalar(select(Datastore.id).where(Datastore.name == name)) is not None:
                raise Conflict(f"datastore {name} already exists")
            for other in s.scalars(select(Datastore)):
                op = Path(other.path)
                if within(rp, op) or within(op, rp):
                    raise Conflict(f"datastore path {rp} overlaps datastore {other.name} ({other.path})",
                                   attribute="path")
            ds = Datastore(name=name, path=str(rp))
            s.add(ds)
            s.flush()
            record(s, "datastore", ds.id, "create", message=f"{ds.path} by {actor.name}")
            return _dict(ds, 0)

    def _check_protected(self, rp: Path, given: str) -> None:
        if rp == Path("/"):
            raise InvalidInput("datastore path must not be / (it would hold every file)", attribute="path")
        for x in self.protected:
            allowed_inside = (self.data_dir is not None and x == real(self.data_dir)
                              and within(rp, x / "datastores") and rp != x / "datastores")
            if within(x, rp):
                raise InvalidInput(f"datastore path {given} contains {x}, which holds the daemon's "
                                   "own files (database, tokens, secrets)", attribute="path")
            if within(rp, x) and not allowed_inside:
                hint = f"; use a directory under {x / 'datastores'}" if self.data_dir and x == real(
                    self.data_dir) else ""
                raise InvalidInput(f"datastore path {given} lies inside {x}, which holds the daemon's "
                                   f"own files{hint}", attribute="path")

    def list(self, actor: Actor) -> list[dict[str, Any]]:
        """Every user may see the datastores: they choose one to upload into."""
        del actor
        with self.db.read() as s:
            counts: dict[int | None, int] = {
                ds_id: n for ds_id, n in s.execute(select(Image.datastore_id, func.count())
                                                   .group_by(Image.datastore_id))}
            return [_dict(ds, int(counts.get(ds.id, 0)))
                    for ds in s.scalars(select(Datastore).order_by(Datastore.id))]

    def show(self, actor: Actor, ref: int | str) -> dict[str, Any]:
        del actor
        with self.db.read() as s:
            ds = find(s, Datastore, "datastore", ref)
            n = s.scalar(select(func.count()).select_from(Image).where(Image.datastore_id == ds.id)) or 0
            return _dict(ds, n)

    def delete(self, actor: Actor, ref: int | str) -> None:
        """Forget a datastore holding no image; its directory and files are left alone."""
        require_admin(actor, "delete datastores")
        with self.db.write() as s:
            ds = find(s, Datastore, "datastore", ref, lock=True)
            if ds.name == DEFAULT:
                raise Conflict("the default datastore cannot be deleted")
            n = s.scalar(select(func.count()).select_from(Image).where(Image.datastore_id == ds.id))
            if n:
                raise Conflict(f"datastore {ds.name} still holds {n} images")
            record(s, "datastore", ds.id, "delete", message=f"by {actor.name}")
            s.delete(ds)

    # ------------------------------------------------------------ checks used by the image service
    @staticmethod
    def by_ref(s: Session, ref: int | str) -> Datastore:
        return find(s, Datastore, "datastore", ref)

    @staticmethod
    def locate(s: Session, path: Path, given: str) -> Datastore:
        """The datastore whose real path holds ``path`` (already real); Forbidden naming the path
        and the datastores otherwise."""
        stores = list(s.scalars(select(Datastore).order_by(Datastore.id)))
        for ds in stores:
            if path != Path(ds.path) and within(path, Path(ds.path)):
                return ds
        names = ", ".join(f"{ds.name} ({ds.path})" for ds in stores) or "none declared"
        shown = given if str(path) == given else f"{given} (really {path})"
        raise Forbidden(f"path: image file {shown} is not inside a datastore; datastores: {names}",
                        attribute="path")
