"""What EC2's Query API means in vocloud's terms: instances, images, tags, key pairs.

The EC2 front-end (``api/ec2/``) parses the protocol and renders XML; every decision is here:
which of our objects an ``i-``/``ami-`` id names, which of our lifecycle actions EC2's
Stop/Start/Reboot/Terminate become in each state, what a RunInstances request turns into (a
template checked and charged by :class:`~vocloud.service.vms.VMService.create` exactly like a
REST request), who may see and tag what (the objects' own ACLs), and which EC2 error code a
refusal carries (the ``ec2_code`` detail of a :mod:`vocloud.errors` error; the front-end maps
the rest by error class).

Ids: ``i-`` + 8 hex digits is a VM id, ``ami-`` + 8 hex digits an image, ``ami-1`` + 16 hex
digits a template (EC2's ids are 8 or 17 hex digits, and clients check no more than that).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import and_, delete, exists, or_, select
from sqlalchemy.orm import Session, aliased

from vocloud.errors import (
    Conflict,
    Forbidden,
    IllegalAction,
    InvalidInput,
    NotFound,
    QuotaExceeded,
)
from vocloud.model.instance_types import InstanceType
from vocloud.model.lifecycle import VM_TABLE, VMState
from vocloud.model.template import Template, parse_template
from vocloud.service.acl import ObjRef, visible_group_ids, visible_object_ids
from vocloud.service.auth import Actor
from vocloud.service.base import MAX_ID, load_rules, now, require
from vocloud.service.catalog import ImageService, TemplateService
from vocloud.service.console import ConsoleService
from vocloud.service.vms import VMService, vm_ref
from vocloud.store.db import Database
from vocloud.store.schema import (
    VM,
    Host,
    Image,
    InstanceLaunch,
    KeyPair,
    Lease,
    Quota,
    Tag,
    VMTemplateRow,
)

#: How long a terminated instance stays visible in DescribeInstances (EC2: about an hour).
TERMINATED_VISIBLE_S = 3600.0
MAX_TAGS = 50
MAX_PAGE = 1000
MIN_PAGE = 5
MAX_IDS = 1000
MAX_FILTER_VALUES = 200

S = VMState
#: EC2's instance states and codes, from ours.
EC2_STATE: dict[VMState, str] = {
    **{st: "pending" for st in (S.PENDING, S.HOLD, S.PROLOG, S.BOOT)},
    **{st: "running" for st in (S.RUNNING, S.REBOOT, S.MIGRATE, S.UNKNOWN)},
    **{st: "shutting-down" for st in (S.SHUTDOWN, S.SHUTDOWN_HARD, S.EPILOG, S.EPILOG_FAILURE)},
    **{st: "stopping" for st in (S.SHUTDOWN_POWEROFF, S.SAVE_STOP, S.SAVE_SUSPEND, S.SHUTDOWN_UNDEPLOY,
                                 S.EPILOG_STOP, S.EPILOG_UNDEPLOY)},
    **{st: "stopped" for st in (S.POWEROFF, S.SUSPENDED, S.STOPPED, S.UNDEPLOYED, S.PROLOG_FAILURE,
                                S.BOOT_FAILURE)},
    S.DONE: "terminated",
}
STATE_CODE = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64,
              "stopped": 80}
_OURS: dict[str, list[str]] = {}
for _st, _name in EC2_STATE.items():
    _OURS.setdefault(_name, []).append(_st.value)

_INSTANCE = re.compile(r"^i-([0-9a-f]{8}|[0-9a-f]{17})$")
_AMI = re.compile(r"^ami-([0-9a-f]{8}|[0-9a-f]{17})$")
_TEMPLATE_BIT = 1 << 64


def _err(cls: type[Any], message: str, code: str) -> Any:
    return cls(message, ec2_code=code)


# ------------------------------------------------------------------ ids
def instance_id(vm_id: int) -> str:
    return f"i-{vm_id:08x}"


def image_id(img_id: int) -> str:
    return f"ami-{img_id:08x}"


def template_ami(tmpl_id: int) -> str:
    return f"ami-{_TEMPLATE_BIT | tmpl_id:017x}"


def parse_instance_id(text: str) -> int:
    m = _INSTANCE.match(text)
    if m is None:
        raise _err(InvalidInput, f"Invalid id: \"{text[:64]}\"", "InvalidInstanceID.Malformed")
    n = int(m.group(1), 16)
    if n > MAX_ID:
        raise _err(NotFound, f"The instance ID '{text}' does not exist", "InvalidInstanceID.NotFound")
    return n


def parse_image_id(text: str) -> tuple[str, int]:
    """``("image", id)`` or ``("template", id)``."""
    m = _AMI.match(text)
    if m is None:
        raise _err(InvalidInput, f"Invalid id: \"{text[:64]}\" (expecting \"ami-...\")",
                   "InvalidAMIID.Malformed")
    n = int(m.group(1), 16)
    kind = "template" if n & _TEMPLATE_BIT else "image"
    n &= _TEMPLATE_BIT - 1
    if n > MAX_ID:
        raise _err(NotFound, f"The image id '[{text}]' does not exist", "InvalidAMIID.NotFound")
    return kind, n


def ec2_state(state: str) -> str:
    return EC2_STATE[VMState(state)]


# ------------------------------------------------------------------ results
def _visible_vm(s: Session, actor: Actor, vm_id: int) -> VM:
    """The VM if the actor may see it; otherwise (gone, or another VO's) EC2's NotFound, so an
    instance id of another VO tells nothing about whether it exists."""
    vm = s.get(VM, vm_id)
    try:
        if vm is None:
            raise NotFound("gone")
        require(s, actor, "USE", vm_ref(vm))
    except (NotFound, Forbidden):
        raise _err(NotFound, f"The instance ID '{instance_id(vm_id)}' does not exist",
                   "InvalidInstanceID.NotFound") from None
    return vm


class _AlreadyLaunched(Exception):
    """Raised inside the creating transaction when a twin request with the same ClientToken
    committed first: nothing is created, the twin's instances are answered."""


@dataclass
class Instance:
    vm_id: int
    name: str
    state: str  # ours
    owner_id: int
    group_id: int
    cpu_m: int
    vcpu: int
    memory: int
    host: str | None
    created_at: float
    ended_at: float | None
    image_ref: str = ""
    instance_type: str = ""
    key_name: str = ""
    client_token: str = ""
    reservation: str = ""
    launch_index: int = 0
    ip: str | None = None
    tags: list[tuple[str, str]] = field(default_factory=list)
    error: str = ""

    @property
    def ec2_state(self) -> str:
        return ec2_state(self.state)

    @property
    def instance_id(self) -> str:
        return instance_id(self.vm_id)


@dataclass(frozen=True)
class StateChange:
    instance_id: str
    previous: str
    current: str


@dataclass(frozen=True)
class Filters:
    """EC2's ``Filter.N.Name``/``Filter.N.Value.M``: name -> accepted values."""

    by_name: Mapping[str, Sequence[str]]

    def get(self, name: str) -> Sequence[str] | None:
        return self.by_name.get(name)

    def check(self, allowed: Iterable[str]) -> None:
        allowed = set(allowed)
        for name, values in self.by_name.items():
            if name not in allowed and not name.startswith("tag:"):
                raise _err(InvalidInput, f"The filter '{name[:64]}' is invalid", "InvalidParameterValue")
            if len(values) > MAX_FILTER_VALUES:
                raise _err(InvalidInput, f"filter {name[:64]}: at most {MAX_FILTER_VALUES} values",
                           "InvalidParameterValue")


def _like(pattern: str) -> str:
    """EC2 filter wildcards (``*``, ``?``) as an SQL LIKE pattern."""
    out = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return out.replace("*", "%").replace("?", "_")


def _check_tag(key: str, value: str) -> None:
    if not key or len(key) > 128 or key.lower().startswith("aws:") or "\x00" in key:
        raise _err(InvalidInput, f"tag key {key[:64]!r} must be 1 to 128 characters and not start "
                   "with 'aws:'", "InvalidParameterValue")
    if len(value) > 256 or "\x00" in value:
        raise _err(InvalidInput, f"tag {key!r}: the value must be at most 256 characters",
                   "InvalidParameterValue")


def _fingerprint(public_blob: bytes) -> str:
    digest = hashlib.md5(public_blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _ssh_public(text: str) -> tuple[str, str, bytes]:
    """A validated OpenSSH public key line -> (type, canonical line, key blob)."""
    try:
        key = serialization.load_ssh_public_key(text.strip().encode())
    except (ValueError, TypeError, binascii.Error, IndexError):
        raise _err(InvalidInput, "Key is not in valid OpenSSH public key format",
                   "InvalidKey.Format") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < 2048:
            raise _err(InvalidInput, "RSA keys must be at least 2048 bits", "InvalidKey.Format")
        kind = "rsa"
    elif isinstance(key, ed25519.Ed25519PublicKey):
        kind = "ed25519"
    else:
        raise _err(InvalidInput, "only RSA and ED25519 keys are supported", "InvalidKey.Format")
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    blob = base64.b64decode(line.split()[1])
    return kind, line, blob


def _key_name(name: str) -> str:
    if not name or len(name) > 255 or not name.isascii() or not name.isprintable():
        raise _err(InvalidInput, "key pair names are 1 to 255 printable ASCII characters",
                   "InvalidParameterValue")
    return name


# ------------------------------------------------------------------ the service
class Ec2Service:
    def __init__(self, db: Database, vms: VMService, images: ImageService,
                 templates: TemplateService, instance_types: Mapping[str, InstanceType],
                 console: ConsoleService | None = None) -> None:
        self.db = db
        self.console = console
        self.vms = vms
        self.images = images
        self.templates = templates
        self.instance_types = dict(instance_types)

    # ---------------------------------------------------------------- RunInstances
    def run_instances(self, actor: Actor, image: str, instance_type: str | None, min_count: int,
                      max_count: int, user_data: str | None = None, key_name: str | None = None,
                      client_token: str | None = None,
                      tags: Sequence[tuple[str, str]] = ()) -> tuple[str, list[Instance]]:
        """Launch ``max_count`` VMs (or as many down to ``min_count`` as quotas allow); the
        reservation id and the instances. A repeated ``client_token`` returns the first
        request's instances and launches nothing."""
        if client_token is not None:
            if not client_token or len(client_token) > 64 or not client_token.isascii():
                raise _err(InvalidInput, "ClientToken must be 1 to 64 ASCII characters",
                           "InvalidParameterValue")
            with self.db.read() as s:
                done = self._launched(s, actor, client_token)
            if done:
                return self._launch_of(actor, done)
        if not 1 <= min_count <= max_count:
            raise _err(InvalidInput, "MinCount and MaxCount must be positive, MinCount <= MaxCount",
                       "InvalidParameterValue")
        for k, v in tags:
            _check_tag(k, v)
        if len(tags) > MAX_TAGS:
            raise _err(InvalidInput, f"at most {MAX_TAGS} tags", "TagLimitExceeded")
        tname = instance_type or next(iter(self.instance_types))
        itype = self.instance_types.get(tname)
        if itype is None:
            raise _err(InvalidInput, f"The instance type '{tname[:64]}' is not offered here; one of: "
                       f"{', '.join(self.instance_types)}", "InvalidParameterValue")
        kind, obj_id = parse_image_id(image)
        tmpl = self._base_template(actor, kind, obj_id, image)
        for key, value in itype.attributes().items():
            tmpl.set(key, value)
        context = dict(tmpl.vector("CONTEXT") or {})
        if user_data is not None:
            try:
                base64.b64decode(user_data, validate=True)
            except (binascii.Error, ValueError):
                raise _err(InvalidInput, "UserData must be base64-encoded",
                           "InvalidUserData.Malformed") from None
            context.update(USER_DATA=user_data, USER_DATA_ENCODING="base64")
        if key_name is not None:
            context["SSH_PUBLIC_KEY"] = self._key_for(actor, key_name)
        if context:
            tmpl.set("CONTEXT", context)
        text = tmpl.to_one()
        count = max_count
        if min_count < max_count:  # as many as the quotas leave room for, down to MinCount
            room = self._room(actor, itype.cpu_centi * 10, itype.memory_mb)
            if room is not None:
                count = max(min_count, min(max_count, room))
        reservation = f"r-{secrets.token_hex(8)}1"[:19]

        def record_launch(s: Session, ids: list[int]) -> None:
            """In the VMs' own transaction: a crash or a concurrent twin request can never
            leave VMs without their launch record, or two launches for one ClientToken."""
            if client_token is not None and self._launched(s, actor, client_token):
                raise _AlreadyLaunched
            for i, vm_id in enumerate(ids):
                s.add(InstanceLaunch(vm_id=vm_id, owner_id=actor.user_id, image_ref=image,
                                     instance_type=itype.name, key_name=key_name or "",
                                     client_token=client_token, reservation=reservation,
                                     launch_index=i))
                for k, v in tags:
                    s.merge(Tag(kind="instance", obj_id=vm_id, key=k, value=v))

        try:
            ids = self.vms.create(actor, text, fmt="one", count=count, within=record_launch)
        except QuotaExceeded as exc:
            raise _err(QuotaExceeded, exc.message, "InstanceLimitExceeded") from None
        except _AlreadyLaunched:
            assert client_token is not None
            with self.db.read() as s:
                return self._launch_of(actor, self._launched(s, actor, client_token))
        found = self.describe_instances(actor, ids=ids, include_gone=True)[0]
        return reservation, found

    @staticmethod
    def _launched(s: Session, actor: Actor, client_token: str) -> list[int]:
        return list(s.scalars(select(InstanceLaunch.vm_id)
                              .where(InstanceLaunch.owner_id == actor.user_id)
                              .where(InstanceLaunch.client_token == client_token)
                              .order_by(InstanceLaunch.vm_id)).all())

    def _launch_of(self, actor: Actor, vm_ids: list[int]) -> tuple[str, list[Instance]]:
        """What a repeated ClientToken answers: the first request's reservation and instances."""
        found = self.describe_instances(actor, ids=vm_ids, include_gone=True)[0]
        return (found[0].reservation if found else ""), found

    def _room(self, actor: Actor, cpu_m: int, memory: int) -> int | None:
        """How many VMs of this size the actor's user and group quotas still admit (None: no
        limit). Only a hint for MinCount..MaxCount: the charge itself is checked again, under
        the transaction, by VMService.create."""
        with self.db.read() as s:
            rows = s.scalars(select(Quota).where(or_(
                and_(Quota.scope == "user", Quota.scope_id == actor.user_id),
                and_(Quota.scope == "group", Quota.scope_id == actor.group_id)))).all()
        room: int | None = None
        for q in rows:
            for limit, used, each in ((q.vms_limit, q.vms_used, 1), (q.cpu_m_limit, q.cpu_m_used, cpu_m),
                                      (q.mem_limit, q.mem_used, memory)):
                if limit >= 0 and each > 0:
                    left = max(0, (limit - used) // each)
                    room = left if room is None else min(room, left)
        return room

    def _base_template(self, actor: Actor, kind: str, obj_id: int, ami: str) -> Template:
        try:
            if kind == "template":
                body = self.templates.get(actor, obj_id)["body"]
                return parse_template(body, fmt="one", source="stored template", max_bytes=None)
            self.images.show(actor, obj_id)
        except (NotFound, Forbidden):
            raise _err(NotFound, f"The image id '[{ami}]' does not exist", "InvalidAMIID.NotFound") from None
        t = Template()
        t.set("DISK", {"IMAGE_ID": str(obj_id)})
        return t

    def _key_for(self, actor: Actor, name: str) -> str:
        with self.db.read() as s:
            kp = s.scalars(select(KeyPair).where(KeyPair.owner_id == actor.user_id)
                           .where(KeyPair.name == name[:255])).first()
            if kp is None:
                raise _err(NotFound, f"The key pair '{name[:64]}' does not exist", "InvalidKeyPair.NotFound")
            return kp.public_key

    # ---------------------------------------------------------------- DescribeInstances
    def _visible_vms(self, s: Session, actor: Actor, stmt: Any) -> Any:
        if actor.is_admin:
            return stmt
        rules = load_rules(s)
        groups = visible_group_ids(actor, "VM", rules)
        if groups is None:
            return stmt
        ids = visible_object_ids(actor, "VM", rules)
        cond = VM.group_id.in_(groups)
        return stmt.where(cond | VM.id.in_(ids)) if ids else stmt.where(cond)

    def _type_of(self, cpu_m: int, vcpu: int, memory: int) -> str:
        for t in self.instance_types.values():
            if t.cpu_centi * 10 == cpu_m and t.memory_mb == memory and t.vcpu == vcpu:
                return t.name
        return "custom"

    def describe_instances(self, actor: Actor, ids: Sequence[int] | None = None,
                           filters: Filters | None = None, max_results: int | None = None,
                           next_token: str | None = None,
                           include_gone: bool = False) -> tuple[list[Instance], str | None]:
        """Instances the actor may see, by id; terminated ones for an hour after the end.
        Paged by VM id: ``next_token`` is the last id of the previous page."""
        filters = filters or Filters({})
        filters.check({"instance-state-name", "instance-state-code", "tag-key", "image-id",
                       "instance-type", "instance-id", "key-name", "client-token"})
        if ids is not None and len(ids) > MAX_IDS:
            raise _err(InvalidInput, f"at most {MAX_IDS} instance ids", "InvalidParameterValue")
        if max_results is not None:
            if ids:
                raise _err(InvalidInput, "The parameter instancesSet cannot be used with the "
                           "parameter maxResults", "InvalidParameterCombination")
            if not MIN_PAGE <= max_results <= MAX_PAGE:
                raise _err(InvalidInput, f"MaxResults must be between {MIN_PAGE} and {MAX_PAGE}",
                           "InvalidParameterValue")
        after = 0
        if next_token:
            if not next_token.isascii() or not next_token.isdigit() or len(next_token) > 10:
                raise _err(InvalidInput, "invalid NextToken", "InvalidParameterValue")
            after = int(next_token)
        h = aliased(Host)
        stmt = (select(VM.id, VM.name, VM.state, VM.owner_id, VM.group_id, VM.cpu_m, VM.vcpu,
                       VM.memory, h.name, VM.created_at, VM.ended_at, VM.error,
                       InstanceLaunch.image_ref, InstanceLaunch.instance_type,
                       InstanceLaunch.key_name, InstanceLaunch.client_token,
                       InstanceLaunch.reservation, InstanceLaunch.launch_index)
                .outerjoin(h, h.id == VM.host_id)
                .outerjoin(InstanceLaunch, InstanceLaunch.vm_id == VM.id)
                .where(VM.id > after).order_by(VM.id))
        if ids is not None:
            stmt = stmt.where(VM.id.in_(list(ids)))
        if not include_gone:
            stmt = stmt.where(or_(VM.state != S.DONE.value,
                                  VM.ended_at > now() - TERMINATED_VISIBLE_S))
        stmt = self._instance_filters(stmt, filters)
        if max_results is not None:
            stmt = stmt.limit(max_results + 1)
        with self.db.read() as s:
            stmt = self._visible_vms(s, actor, stmt)
            rows = s.execute(stmt).all()
            more = max_results is not None and len(rows) > max_results
            rows = rows[:max_results] if max_results is not None else rows
            out = [Instance(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10],
                            error=r[11], image_ref=r[12] or "",
                            instance_type=r[13] or self._type_of(r[5], r[6], r[7]),
                            key_name=r[14] or "", client_token=r[15] or "",
                            reservation=r[16] or f"r-{r[0]:08x}", launch_index=r[17] or 0)
                   for r in rows]
            self._attach(s, out)
        if ids is not None:
            missing = sorted(set(ids) - {i.vm_id for i in out})
            if missing:
                names = ", ".join(instance_id(m) for m in missing[:20])
                raise _err(NotFound, f"The instance IDs '{names}' do not exist",
                           "InvalidInstanceID.NotFound")
        token = str(out[-1].vm_id) if more and out else None
        return out, token

    def _instance_filters(self, stmt: Any, f: Filters) -> Any:
        names = f.get("instance-state-name")
        if names is not None:
            stmt = stmt.where(VM.state.in_([o for n in names for o in _OURS.get(n, [])]))
        codes = f.get("instance-state-code")
        if codes is not None:
            wanted = {n for n, c in STATE_CODE.items() if str(c) in codes}
            stmt = stmt.where(VM.state.in_([o for n in wanted for o in _OURS[n]]))
        for name, col in (("image-id", InstanceLaunch.image_ref), ("key-name", InstanceLaunch.key_name),
                          ("client-token", InstanceLaunch.client_token)):
            values = f.get(name)
            if values is not None:
                stmt = stmt.where(or_(*[col.like(_like(v), escape="\\") for v in values]) if values
                                  else False)
        values = f.get("instance-id")
        if values is not None:
            wanted_ids = []
            for v in values:
                try:
                    wanted_ids.append(parse_instance_id(v))
                except (InvalidInput, NotFound):
                    continue
            stmt = stmt.where(VM.id.in_(wanted_ids))
        types = f.get("instance-type")
        if types is not None:
            conds: list[Any] = [InstanceLaunch.instance_type.in_(list(types))]
            for name in types:
                t = self.instance_types.get(name)
                if t is not None:
                    conds.append(and_(InstanceLaunch.vm_id.is_(None), VM.cpu_m == t.cpu_centi * 10,
                                      VM.memory == t.memory_mb, VM.vcpu == t.vcpu))
            stmt = stmt.where(or_(*conds))
        return self._tag_filters(stmt, f, "instance", VM.id)

    @staticmethod
    def _tag_filters(stmt: Any, f: Filters, kind: str, id_col: Any) -> Any:
        for name, values in f.by_name.items():
            if name == "tag-key":
                stmt = stmt.where(exists().where(Tag.kind == kind).where(Tag.obj_id == id_col)
                                  .where(or_(*[Tag.key.like(_like(v), escape="\\") for v in values])))
            elif name.startswith("tag:"):
                stmt = stmt.where(exists().where(Tag.kind == kind).where(Tag.obj_id == id_col)
                                  .where(Tag.key == name[4:])
                                  .where(or_(*[Tag.value.like(_like(v), escape="\\") for v in values])))
        return stmt

    def _attach(self, s: Session, out: list[Instance]) -> None:
        """Tags and first addresses of a page of instances: two range queries (the page is
        sorted by id; a range costs nothing to compile, unlike a list of 1000 ids)."""
        if not out:
            return
        by_id = {i.vm_id: i for i in out}
        lo, hi = min(by_id), max(by_id)
        for obj_id, k, v in s.execute(select(Tag.obj_id, Tag.key, Tag.value)
                                      .where(Tag.kind == "instance").where(Tag.obj_id.between(lo, hi))
                                      .order_by(Tag.obj_id, Tag.key)):
            if obj_id in by_id:
                by_id[obj_id].tags.append((k, v))
        for vm_id, ip in s.execute(select(Lease.vm_id, Lease.ip).where(Lease.vm_id.between(lo, hi))
                                   .order_by(Lease.id)):
            inst = by_id.get(vm_id) if vm_id is not None else None
            if inst is not None and inst.ip is None:
                inst.ip = ".".join(str((ip >> sh) & 255) for sh in (24, 16, 8, 0))

    # ---------------------------------------------------------------- state changes
    def change_state(self, actor: Actor, ids: Sequence[int], verb: str,
                     force: bool = False) -> list[StateChange]:
        """``terminate``/``stop``/``start``/``reboot`` each instance; every id is checked (exists,
        visible, in a state the verb applies to) before anything changes."""
        if not ids:
            raise _err(InvalidInput, "no instance ids given", "MissingParameter")
        if len(ids) > MAX_IDS:
            raise _err(InvalidInput, f"at most {MAX_IDS} instance ids", "InvalidParameterValue")
        plan: list[tuple[int, str, str | None]] = []
        with self.db.read() as s:
            for vm_id in dict.fromkeys(ids):
                vm = _visible_vm(s, actor, vm_id)
                plan.append((vm_id, vm.state, self._action_for(vm_id, VMState(vm.state), verb, force)))
        changes = []
        for vm_id, before, action in plan:
            after = before
            if action is not None:
                try:
                    after = self.vms.action(actor, vm_id, action)["state"]
                except Forbidden as exc:
                    raise _err(Forbidden, f"You are not authorized to perform this operation: "
                               f"{exc.message}", "UnauthorizedOperation") from None
                except IllegalAction as exc:  # changed meanwhile
                    raise _err(Conflict, exc.message, "IncorrectInstanceState") from None
            changes.append(StateChange(instance_id(vm_id), ec2_state(before), ec2_state(after)))
        return changes

    @staticmethod
    def _action_for(vm_id: int, st: VMState, verb: str, force: bool) -> str | None:
        """Our lifecycle action for EC2's verb in state ``st``; None: already there."""
        if verb == "terminate":
            if st == S.DONE:
                return None
            for action in ("terminate-hard",) if force else ("terminate", "terminate-hard"):
                if (st, action) in VM_TABLE:
                    return action
        elif verb == "stop":
            if EC2_STATE[st] in ("stopped", "stopping"):
                return None
            if (st, "poweroff") in VM_TABLE:
                return "poweroff-hard" if force else "poweroff"
        elif verb == "start":
            if EC2_STATE[st] in ("running", "pending"):
                return None
            if (st, "resume") in VM_TABLE:
                return "resume"
        elif verb == "reboot":
            if (st, "reboot") in VM_TABLE:
                return "reboot"
        else:
            raise InvalidInput(f"unknown instance verb {verb!r}")
        raise _err(Conflict, f"The instance '{instance_id(vm_id)}' is not in a state from which it "
                   f"can be {verb}ed ({st.value.lower()})", "IncorrectInstanceState")

    def console_output(self, actor: Actor, vm_id: int) -> str:
        """The guest's console log; another VO's instance is not found, as everywhere here."""
        with self.db.read() as s:
            _visible_vm(s, actor, vm_id)
        try:
            return str(self.console.log(actor, vm_id)["log"]) if self.console is not None else ""
        except Forbidden as exc:
            raise _err(Forbidden, exc.message, "UnauthorizedOperation") from None

    # ---------------------------------------------------------------- images
    def describe_images(self, actor: Actor, ids: Sequence[str] = (), owners: Sequence[str] = (),
                        filters: Filters | None = None) -> list[dict[str, Any]]:
        """Images and templates the actor may USE, as EC2 images."""
        filters = filters or Filters({})
        filters.check({"name", "image-id", "state", "is-public", "owner-id"})
        wanted = [parse_image_id(i) for i in ids]
        out: list[dict[str, Any]] = []
        for img in self.images.list(actor):
            out.append({"id": image_id(img["id"]), "kind": "image", "obj_id": img["id"],
                        "name": img["name"], "state": "available" if img["state"] in ("READY", "USED")
                        else "unavailable" if img["state"] != "LOCKED" else "pending",
                        "owner": img["owner_id"], "public": img["public"],
                        "description": img["description"], "location": f"vocloud/image/{img['name']}"})
        for t in self.templates.list(actor):
            out.append({"id": template_ami(t["id"]), "kind": "template", "obj_id": t["id"],
                        "name": t["name"], "state": "available", "owner": t["owner_id"],
                        "public": t["public"], "description": "vocloud template",
                        "location": f"vocloud/template/{t['name']}"})
        if wanted:
            out = [o for o in out if (o["kind"], o["obj_id"]) in wanted]
            missing = [i for i, w in zip(ids, wanted, strict=True)
                       if not any((o["kind"], o["obj_id"]) == w for o in out)]
            if missing:
                raise _err(NotFound, f"The image id '[{', '.join(missing[:20])}]' does not exist",
                           "InvalidAMIID.NotFound")
        if owners:
            keep = set()
            for owner in owners:
                if owner == "self":
                    keep.add(actor.user_id)
                elif owner.isascii() and owner.isdigit() and len(owner) <= 12:
                    keep.add(int(owner))
            out = [o for o in out if o["owner"] in keep]
        with self.db.read() as s:
            tags: dict[tuple[str, int], list[tuple[str, str]]] = {}
            for kind, obj_id, k, v in s.execute(select(Tag.kind, Tag.obj_id, Tag.key, Tag.value)
                                                .where(Tag.kind.in_(["image", "template"]))):
                tags.setdefault((kind, obj_id), []).append((k, v))
        for o in out:
            o["tags"] = sorted(tags.get((o["kind"], o["obj_id"]), []))
        for name, values in filters.by_name.items():
            out = [o for o in out if _image_matches(o, name, values)]
        return out

    # ---------------------------------------------------------------- tags
    def _tag_target(self, s: Session, actor: Actor, resource: str, right: str) -> tuple[str, int]:
        try:
            if resource.startswith("i-"):
                vm_id = parse_instance_id(resource)
                vm = s.get(VM, vm_id)
                if vm is None:
                    raise NotFound("gone")
                require(s, actor, "USE", vm_ref(vm))
                try:
                    require(s, actor, right, vm_ref(vm))
                except Forbidden as exc:
                    raise _err(Forbidden, exc.message, "UnauthorizedOperation") from None
                return "instance", vm_id
            kind, obj_id = parse_image_id(resource)
            model: Any = Image if kind == "image" else VMTemplateRow
            obj = s.get(model, obj_id)
            if obj is None:
                raise NotFound("gone")
            ref = ObjRef("IMAGE" if kind == "image" else "TEMPLATE", obj.id, obj.owner_id,
                         obj.group_id, obj.public)
            require(s, actor, "USE", ref)
            try:
                require(s, actor, right, ref)
            except Forbidden as exc:
                raise _err(Forbidden, exc.message, "UnauthorizedOperation") from None
            return kind, obj_id
        except InvalidInput as exc:
            if resource.startswith(("i-", "ami-")):
                raise
            raise _err(InvalidInput, f"Invalid id: \"{resource[:64]}\"", "InvalidID") from exc
        except (NotFound, Forbidden) as exc:
            if getattr(exc, "details", {}).get("ec2_code") == "UnauthorizedOperation":
                raise
            code = "InvalidInstanceID.NotFound" if resource.startswith("i-") else "InvalidAMIID.NotFound"
            raise _err(NotFound, f"The ID '{resource[:64]}' does not exist", code) from None

    def create_tags(self, actor: Actor, resources: Sequence[str], tags: Sequence[tuple[str, str]]) -> None:
        if not resources or not tags:
            raise _err(InvalidInput, "ResourceId and Tag are required", "MissingParameter")
        for k, v in tags:
            _check_tag(k, v)
        with self.db.write() as s:
            targets = [self._tag_target(s, actor, r, "MANAGE") for r in resources]
            for kind, obj_id in targets:
                for k, v in tags:
                    s.merge(Tag(kind=kind, obj_id=obj_id, key=k, value=v))
                s.flush()
                n = len(s.scalars(select(Tag.key).where(Tag.kind == kind).where(Tag.obj_id == obj_id)).all())
                if n > MAX_TAGS:
                    raise _err(InvalidInput, f"a resource holds at most {MAX_TAGS} tags", "TagLimitExceeded")

    def delete_tags(self, actor: Actor, resources: Sequence[str],
                    tags: Sequence[tuple[str, str | None]]) -> None:
        if not resources:
            raise _err(InvalidInput, "ResourceId is required", "MissingParameter")
        with self.db.write() as s:
            targets = [self._tag_target(s, actor, r, "MANAGE") for r in resources]
            for kind, obj_id in targets:
                stmt = delete(Tag).where(Tag.kind == kind).where(Tag.obj_id == obj_id)
                if tags:
                    conds = [and_(Tag.key == k, Tag.value == v) if v is not None else Tag.key == k
                             for k, v in tags]
                    stmt = stmt.where(or_(*conds))
                s.execute(stmt)

    def describe_tags(self, actor: Actor, filters: Filters | None = None) -> list[dict[str, str]]:
        filters = filters or Filters({})
        filters.check({"resource-id", "resource-type", "key", "value"})
        out: list[dict[str, str]] = []
        types = filters.get("resource-type")
        if types is None or "instance" in types:
            visible = self._visible_vms_ids(actor)
            with self.db.read() as s:
                stmt = select(Tag.obj_id, Tag.key, Tag.value).where(Tag.kind == "instance") \
                    .order_by(Tag.obj_id, Tag.key)
                for obj_id, k, v in s.execute(stmt):
                    if visible is None or obj_id in visible:
                        out.append({"resource_id": instance_id(obj_id), "resource_type": "instance",
                                    "key": k, "value": v})
        if types is None or "image" in types:
            for img in self.describe_images(actor):
                for k, v in img["tags"]:
                    out.append({"resource_id": img["id"], "resource_type": "image", "key": k, "value": v})
        for name, field_name in (("resource-id", "resource_id"), ("key", "key"), ("value", "value")):
            values = filters.get(name)
            if values is not None:
                out = [o for o in out if any(fnmatch.fnmatchcase(o[field_name], v) for v in values)]
        return out

    def _visible_vms_ids(self, actor: Actor) -> set[int] | None:
        if actor.is_admin:
            return None
        with self.db.read() as s:
            stmt = self._visible_vms(s, actor, select(VM.id).where(
                exists().where(Tag.kind == "instance").where(Tag.obj_id == VM.id)))
            return set(s.scalars(stmt))

    # ---------------------------------------------------------------- key pairs
    def create_key_pair(self, actor: Actor, name: str, key_type: str = "rsa") -> dict[str, Any]:
        """A new key pair: the private key is returned once and never stored."""
        _key_name(name)
        private: Any
        if key_type == "rsa":
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            material = private.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.TraditionalOpenSSL,
                                             serialization.NoEncryption()).decode()
        elif key_type == "ed25519":
            private = ed25519.Ed25519PrivateKey.generate()
            material = private.private_bytes(serialization.Encoding.PEM,
                                             serialization.PrivateFormat.OpenSSH,
                                             serialization.NoEncryption()).decode()
        else:
            raise _err(InvalidInput, "KeyType must be rsa or ed25519", "InvalidParameterValue")
        line = private.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                 serialization.PublicFormat.OpenSSH).decode()
        row = self._store_key(actor, name, key_type, line, base64.b64decode(line.split()[1]))
        return {**row, "material": material}

    def import_key_pair(self, actor: Actor, name: str, material: bytes) -> dict[str, Any]:
        _key_name(name)
        try:
            text = material.decode("ascii")
        except UnicodeDecodeError:
            raise _err(InvalidInput, "Key is not in valid OpenSSH public key format",
                       "InvalidKey.Format") from None
        kind, line, blob = _ssh_public(text)
        return self._store_key(actor, name, kind, line, blob)

    def _store_key(self, actor: Actor, name: str, kind: str, line: str, blob: bytes) -> dict[str, Any]:
        with self.db.write() as s:
            if s.scalar(select(KeyPair.id).where(KeyPair.owner_id == actor.user_id)
                        .where(KeyPair.name == name)) is not None:
                raise _err(Conflict, f"The keypair '{name}' already exists.", "InvalidKeyPair.Duplicate")
            kp = KeyPair(pair_id=f"key-{secrets.token_hex(9)[:17]}", owner_id=actor.user_id, name=name,
                         key_type=kind, public_key=line, fingerprint=_fingerprint(blob),
                         created_at=time.time())
            s.add(kp)
            s.flush()
            return _kp_dict(kp)

    def describe_key_pairs(self, actor: Actor, names: Sequence[str] = (), pair_ids: Sequence[str] = (),
                           filters: Filters | None = None) -> list[dict[str, Any]]:
        """The actor's own key pairs (a key pair belongs to one user, as to one EC2 account)."""
        filters = filters or Filters({})
        filters.check({"key-name", "key-pair-id", "fingerprint", "key-type"})
        with self.db.read() as s:
            rows = [_kp_dict(k) for k in s.scalars(select(KeyPair).where(KeyPair.owner_id == actor.user_id)
                                                   .order_by(KeyPair.id))]
        for wanted, field_name in ((names, "name"), (pair_ids, "pair_id")):
            if wanted:
                missing = [w for w in wanted if not any(r[field_name] == w for r in rows)]
                if missing:
                    raise _err(NotFound, f"The key pair '{missing[0][:64]}' does not exist",
                               "InvalidKeyPair.NotFound")
                rows = [r for r in rows if r[field_name] in wanted]
        for name, field_name in (("key-name", "name"), ("key-pair-id", "pair_id"),
                                 ("fingerprint", "fingerprint"), ("key-type", "key_type")):
            values = filters.get(name)
            if values is not None:
                rows = [r for r in rows if any(fnmatch.fnmatchcase(r[field_name], v) for v in values)]
        return rows

    def delete_key_pair(self, actor: Actor, name: str | None = None, pair_id: str | None = None) -> None:
        """EC2 answers success for a name that does not exist; so does this."""
        if not name and not pair_id:
            raise _err(InvalidInput, "KeyName or KeyPairId is required", "MissingParameter")
        with self.db.write() as s:
            stmt = delete(KeyPair).where(KeyPair.owner_id == actor.user_id)
            stmt = stmt.where(KeyPair.name == name[:255]) if name else \
                stmt.where(KeyPair.pair_id == (pair_id or "")[:32])
            s.execute(stmt)


def _kp_dict(k: KeyPair) -> dict[str, Any]:
    return {"pair_id": k.pair_id, "name": k.name, "key_type": k.key_type, "public_key": k.public_key,
            "fingerprint": k.fingerprint, "created_at": k.created_at}


def _image_matches(o: Mapping[str, Any], name: str, values: Sequence[str]) -> bool:
    if name.startswith("tag:"):
        return any(k == name[4:] and any(fnmatch.fnmatchcase(v, p) for p in values) for k, v in o["tags"])
    value = {"name": o["name"], "image-id": o["id"], "state": o["state"],
             "is-public": "true" if o["public"] else "false", "owner-id": f"{o['owner']:012d}"}[name]
    return any(fnmatch.fnmatchcase(value, p) for p in values)


def owner_account(user_id: int) -> str:
    """An owner id as EC2 writes account ids: 12 digits."""
    return f"{user_id:012d}"

