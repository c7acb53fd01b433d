"""What VMs are made from: images, virtual networks and VM templates.

All three are owned by a user and its group (a VO) and may be marked public so every VO can
USE them (e.g. the site's standard worker image).
"""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vocloud.errors import Conflict, InvalidInput
from vocloud.model.attributes import check_template
from vocloud.model.lifecycle import ImageState, image_next
from vocloud.model.template import Template, VMTemplate, check_size, parse_template
from vocloud.service import ipam
from vocloud.service.acl import ObjRef, visible_group_ids, visible_object_ids
from vocloud.service.auth import Actor
from vocloud.service.base import check_name, find, load_rules, record, require
from vocloud.service.policy import VMPolicy
from vocloud.store.db import Database
from vocloud.store.schema import AddressRange, Image, Lease, Network, VMTemplateRow

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


def _parse_ranges(t: Template) -> list[tuple[int, int, str | None]]:
    """Address ranges of a network template: ``AR=[TYPE=IP4, IP=..., SIZE=...]`` and FIXED
    ``LEASES=[IP=..., MAC=...]`` (each a range of one with its own MAC)."""
    out: list[tuple[int, int, str | None]] = []
    for ar in t.vectors("AR"):
        kind = ar.get("TYPE", "IP4").upper()
        if kind not in ("IP4", "ETHER"):
            raise InvalidInput(f"AR TYPE {kind} is not supported (IP4 only)")
        if "IP" not in ar or "SIZE" not in ar:
            raise InvalidInput("an AR needs IP and SIZE, e.g. AR=[TYPE=IP4, IP=10.0.0.2, SIZE=100]")
        try:
            size = int(ar["SIZE"])
        except ValueError:
            raise InvalidInput(f"AR SIZE must be an integer, got {ar['SIZE']!r}") from None
        if not 1 <= size <= 65536:
            raise InvalidInput(f"AR SIZE must be between 1 and 65536, got {size}")
        start = ipam.ip_to_int(ar["IP"])
        if start + size > 2**32:
            raise InvalidInput(f"AR starting at {ar['IP']} with SIZE {size} runs past 255.255.255.255")
        out.append((start, size, None))
    for lease in t.vectors("LEASES"):
        if "IP" not in lease:
            raise InvalidInput("a LEASES entry needs an IP")
        mac = lease.get("MAC")
        if mac is not None:
            parts = mac.lower().split(":")
            if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p)
                                          for p in parts):
                raise InvalidInput(f"MAC {mac!r} is not of the form 02:00:0a:00:00:01")
            mac = mac.lower()
        out.append((ipam.ip_to_int(lease["IP"]), 1, mac))
    spans = sorted((s, s + n) for s, n, _ in out)
    for (_a0, a1), (b0, _b1) in itertools.pairwise(spans):
        if b0 < a1:
            raise InvalidInput(f"address ranges overlap at {ipam.int_to_ip(b0)}")
    return out


class NetworkService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, actor: Actor, text: str, fmt: str = "auto") -> dict[str, Any]:
        t = parse_template(text, fmt=fmt, source="network template")
        name = check_name(t.get("NAME") or "", "network")
        ranges = _parse_ranges(t)
        if not ranges:
            raise InvalidInput("a network needs at least one AR=[...] or LEASES=[...]")
        bridge = t.get("BRIDGE") or ""
        with self.db.write() as s:
            if s.scalar(select(Network.id).where(Network.name == name)) is not None:
                raise Conflict(f"network {name} already exists")
            net = Network(name=name, owner_id=actor.user_id, group_id=actor.group_id, bridge=bridge,
                          template=t.to_one(), public=bool(t.get_bool("PUBLIC", False)))
            s.add(net)
            s.flush()
            for start, size, mac in ranges:
                s.add(AddressRange(network_id=net.id, ip_start=start, size=size, mac=mac))
            record(s, "vnet", net.id, "create", "", "", f"by {actor.name}")
            s.flush()
            return self._dict(s, net, leases=False)

    def _dict(self, s: Session, net: Network, leases: bool) -> dict[str, Any]:
        ranges = list(s.scalars(select(AddressRange).where(AddressRange.network_id == net.id)
                                .order_by(AddressRange.ip_start)))
        used = s.scalar(select(func.count()).select_from(Lease).where(Lease.network_id == net.id))
        out: dict[str, Any] = {
            "id": net.id, "name": net.name, "bridge": net.bridge, "public": net.public,
            "owner_id": net.owner_id, "group_id": net.group_id,
            "size": sum(r.size for r in ranges), "used_leases": used,
            "ranges": [
                {"ip": ipam.int_to_ip(r.ip_start), "size": r.size, "mac": r.mac or ipam.mac_for(r.ip_start)}
                for r in ranges
            ],
        }
        if leases:
            out["leases"] = [
                {"ip": ipam.int_to_ip(lease.ip), "mac": lease.mac, "vm_id": lease.vm_id,
                 "held": lease.held}
                for lease in s.scalars(select(Lease).where(Lease.network_id == net.id).order_by(Lease.ip))
            ]
            out["template"] = net.template
        return out

    def list(self, actor: Actor) -> list[dict[str, Any]]:
        with self.db.read() as s:
            return [self._dict(s, n, False) for n in s.scalars(_visible(s, actor, "VNET", Network))]

    def show(self, actor: Actor, ref: int | str) -> dict[str, Any]:
        with self.db.read() as s:
            net = find(s, Network, "network", ref)
            require(s, actor, "USE", _ref("VNET", net))
            return self._dict(s, net, True)

    def hold(self, actor: Actor, ref: int | str, ip: str, release: bool = False) -> dict[str, Any]:
        with self.db.write() as s:
            net = find(s, Network, "network", ref)
            require(s, actor, "MANAGE", _ref("VNET", net))
            if release:
                ipam.release_hold(s, net, ip)
            else:
                ipam.hold(s, net, ip)
            s.flush()
            return self._dict(s, net, True)

    def delete(self, actor: Actor, ref: int | str) -> None:
        with self.db.write() as s:
            net = find(s, Network, "network", ref, lock=True)
            require(s, actor, "MANAGE", _ref("VNET", net))
            in_use = s.scalar(select(func.count()).select_from(Lease).where(Lease.network_id == net.id)
                              .where(Lease.vm_id.is_not(None)))
            if in_use:
                raise Conflict(f"network {net.name} has {in_use} leases in use by VMs")
            s.execute(delete(Lease).where(Lease.network_id == net.id))
            s.execute(delete(AddressRange).where(AddressRange.network_id == net.id))
            record(s, "vnet", net.id, "delete", "", "", f"by {actor.name}")
            s.delete(net)


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
