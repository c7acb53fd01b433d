"""OpenNebula's XML-RPC methods, each one service call (or two) on vocloud's service layer.

A method gets the authenticated :class:`Actor` and the call's typed parameters, calls the same
service methods as REST (so ACLs, quotas and the lifecycle apply unchanged) and answers what
OpenNebula answers: the object's XML (``documents.py``) or its id. Errors are raised as
:class:`OneError` with OpenNebula's error code; ``app.py`` turns them into the
``[false, message, code, id, 0]`` array. Parameters of the wrong XML-RPC type are
:class:`~vocloud.api.xmlrpc.wire.WireError` (xmlrpc-c's type fault, as OpenNebula answers them).

Who may see what is never decided here: pool filters (``-4`` ... ``-1``, id ranges, the state
filter) only narrow what the service already let this user see.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vocloud.api.xmlrpc import documents as doc
from vocloud.api.xmlrpc.wire import PARSE_ERROR, TYPE_ERROR, Value, WireError, parse_xml
from vocloud.errors import (
    Conflict,
    DriverError,
    Forbidden,
    IllegalAction,
    InvalidInput,
    NotFound,
    QuotaExceeded,
    Unauthorized,
    VocloudError,
)
from vocloud.model.template import Template, parse_template
from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud

# OpenNebula's error codes (include/Request.h)
AUTHENTICATION = 0x100
AUTHORIZATION = 0x200
NO_EXISTS = 0x400
ACTION = 0x800
API = 0x1000
INTERNAL = 0x2000
ALLOCATE = 0x4000

#: The OpenNebula release whose API (and pyone bindings) these answers follow.
ONE_VERSION = "7.0.0"

#: INDEX_ERROR of xmlrpc-c: a parameter is missing.
INDEX_ERROR = -502


class OneError(Exception):
    def __init__(self, code: int, message: str, obj_id: int = -1) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.obj_id = obj_id


@dataclass(frozen=True, slots=True)
class Call:
    """One call: the method's name (for messages), its parameters after the session."""

    cloud: Cloud
    actor: Actor
    method: str
    params: Sequence[Value]

    def _get(self, i: int, default: Any) -> Any:
        if i < len(self.params):
            return self.params[i]
        if default is _REQUIRED:
            raise WireError(INDEX_ERROR, f"{self.method}: parameter {i + 2} is missing")
        return default

    def integer(self, i: int, default: Any = None) -> int:
        v = self._get(i, _REQUIRED if default is None else default)
        if isinstance(v, bool) or not isinstance(v, int):
            raise WireError(TYPE_ERROR, f"{self.method}: parameter {i + 2} must be an integer")
        return v

    def text(self, i: int, default: str | None = None) -> str:
        v = self._get(i, _REQUIRED if default is None else default)
        if not isinstance(v, str):
            raise WireError(TYPE_ERROR, f"{self.method}: parameter {i + 2} must be a string")
        if "\x00" in v:
            raise OneError(API, f"[{self.method}] NUL characters are not allowed")
        return v

    def flag(self, i: int, default: bool | None = None) -> bool:
        v = self._get(i, _REQUIRED if default is None else default)
        if not isinstance(v, bool):
            raise WireError(TYPE_ERROR, f"{self.method}: parameter {i + 2} must be a boolean")
        return v

    def id(self, i: int) -> int:
        v = self.integer(i)
        if v < 0:
            raise OneError(NO_EXISTS, f"[{self.method}] Error getting object [{v}].", v)
        return v


_REQUIRED: Any = object()


# ------------------------------------------------------------------------------ helpers
def template_text(text: str, method: str) -> str:
    """OpenNebula template text, or the XML form pyone sends for a nested dict (``<TEMPLATE>``
    with each value in CDATA), as OpenNebula template text."""
    if not text.lstrip().startswith("<"):
        return text
    try:
        root = parse_xml(text.encode("utf-8"))
    except WireError as exc:
        raise OneError(API, f"[{method}] template XML: {exc.message}") from None
    attrs: dict[str, Any] = {}
    for child in root.children:
        if child.children:
            value: Any = {c.tag: c.content for c in child.children}
        else:
            value = child.content
        if child.tag in attrs:
            prev = attrs[child.tag]
            attrs[child.tag] = (prev if isinstance(prev, list) else [prev]) + [value]
        else:
            attrs[child.tag] = value
    try:
        return Template(attrs).to_one()
    except VocloudError as exc:
        raise OneError(API, f"[{method}] template XML: {exc.message}") from None


def _parse(c: Call, text: str) -> Template:
    return parse_template(template_text(text, c.method), fmt="one", source="template")


def _names(c: Call) -> dict[str, dict[int, str]]:
    users = {u["id"]: u["name"] for u in c.cloud.accounts.list_users(c.actor)}
    groups = {g["id"]: g["name"] for g in c.cloud.accounts.list_groups(c.actor)}
    return {"users": users, "groups": groups}


def _pool_filter(c: Call, rows: list[dict[str, Any]], ranged: bool = True) -> list[dict[str, Any]]:
    """OpenNebula's filter flag and id range (``PoolSQL::usr_filter``/``oid_filter``) over rows
    the service already chose for this user. ``end < -1`` pages: ``start`` is the offset.
    ``ranged=False``: parameters 2 and 3 are something else (accounting's times)."""
    flag = c.integer(0, -2)
    start = c.integer(1, -1) if ranged else -1
    end = c.integer(2, -1) if ranged else -1
    if flag < -4:
        raise OneError(API, f"[{c.method}] Incorrect filter_flag")
    me, grp = c.actor.user_id, c.actor.group_id
    if flag == -4:
        rows = [r for r in rows if r.get("group_id") == grp]
    elif flag == -3:
        rows = [r for r in rows if r.get("owner_id") == me]
    elif flag == -1:
        rows = [r for r in rows if r.get("owner_id") == me or r.get("group_id") == grp]
    elif flag >= 0:
        rows = [r for r in rows if r.get("owner_id") == flag]
    rows.sort(key=lambda r: int(r["id"]))
    if end < -1:
        return rows[max(start, 0):max(start, 0) - end]
    if start >= 0:
        rows = [r for r in rows if r["id"] >= start]
    if end >= 0:
        rows = [r for r in rows if r["id"] <= end]
    return rows


# ------------------------------------------------------------------------------ system, users
def system_version(c: Call) -> Value:
    return ONE_VERSION


def system_config(c: Call) -> Value:
    return doc.config_xml(ONE_VERSION)


def _user_out(c: Call, ref: int) -> dict[str, Any]:
    return c.cloud.accounts.show_user(c.actor, c.actor.user_id if ref == -1 else ref)


def user_info(c: Call) -> Value:
    ref = c.integer(0, -1)
    return doc.user_xml(_user_out(c, ref))


def userpool_info(c: Call) -> Value:
    return doc.user_pool_xml(c.cloud.accounts.list_users(c.actor))


def _group_users(c: Call) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for u in c.cloud.accounts.list_users(c.actor):
        out.setdefault(u["group_id"], []).append(u["id"])
    return out


def group_info(c: Call) -> Value:
    ref = c.integer(0, -1)
    g = c.cloud.accounts.show_group(c.actor, c.actor.group_id if ref == -1 else ref)
    return doc.group_xml(g, _group_users(c).get(g["id"], []))


def grouppool_info(c: Call) -> Value:
    members = _group_users(c)
    return doc.group_pool_xml((g, members.get(g["id"], [])) for g in c.cloud.accounts.list_groups(c.actor))


def _quota(c: Call, scope: str) -> Value:
    ref = c.integer(0)
    t = _parse(c, c.text(1))
    vm = t.vector("VM") or {}
    args: dict[str, Any] = {}
    for key, name, conv in (("VMS", "vms", int), ("CPU", "cpu", float), ("MEMORY", "memory", int)):
        raw = vm.get(key)
        if raw is None or raw == "":
            continue
        try:
            args[name] = conv(raw) if conv is float else int(float(raw))
        except ValueError:
            raise OneError(API, f"[{c.method}] VM/{key} must be a number, got {raw[:40]!r}") from None
        if args[name] in (-1, -2):  # OpenNebula's default (-1) and unlimited (-2): vocloud's
            args[name] = -1         # default is unlimited, written -1
    ref = c.actor.user_id if (scope == "user" and ref == -1) else ref
    c.cloud.accounts.set_quota(c.actor, scope, ref, args.get("vms"), args.get("cpu"), args.get("memory"))
    return ref


def user_quota(c: Call) -> Value:
    return _quota(c, "user")


def group_quota(c: Call) -> Value:
    return _quota(c, "group")


# ------------------------------------------------------------------------------ hosts
#: What OpenNebula's dummy monitor reports for a host (src/im_mad/remotes/dummy-probes.d): the
#: capacity a ``sim`` host (vocloud's dummy driver) is registered with, since host.allocate
#: carries none.
DUMMY_CPU, DUMMY_MEM_MIB = 8.0, 16384


def host_allocate(c: Call) -> Value:
    name, im_mad, vm_mad = c.text(0), c.text(1), c.text(2)
    c.integer(3, -1)  # the cluster: vocloud hosts are in cluster "default"
    vmm = "sim" if vm_mad in ("dummy", "sim") else vm_mad
    del im_mad  # vocloud monitors through the VMM driver
    cpu, mem = (DUMMY_CPU, DUMMY_MEM_MIB) if vmm == "sim" else (None, None)
    return int(c.cloud.hosts.create(c.actor, name, vmm=vmm, cpu=cpu, memory=mem)["id"])


def host_info(c: Call) -> Value:
    return doc.host_xml(c.cloud.hosts.show(c.actor, c.id(0)))


def hostpool_info(c: Call) -> Value:
    return doc.host_pool_xml(c.cloud.hosts.list(c.actor))


def host_status(c: Call) -> Value:
    host_id, status = c.id(0), c.integer(1)
    action = {0: "enable", 1: "disable", 2: "offline"}.get(status)
    if action is None:
        raise OneError(API, f"[{c.method}] Wrong status code {status}: 0 enabled, 1 disabled, 2 offline")
    c.cloud.hosts.action(c.actor, host_id, action)
    return host_id


def host_delete(c: Call) -> Value:
    host_id = c.id(0)
    c.cloud.hosts.delete(c.actor, host_id)
    return host_id


# ------------------------------------------------------------------------------ VMs
def vm_allocate(c: Call) -> Value:
    text, hold = template_text(c.text(0), c.method), c.flag(1, False)
    return c.cloud.vms.create(c.actor, text, fmt="one", hold=hold)[0]


def vm_info(c: Call) -> Value:
    return doc.vm_xml(c.cloud.vms.show(c.actor, c.id(0)))


#: OpenNebula's vm.action names -> vocloud's lifecycle actions (model/lifecycle.py). vocloud has
#: one undeploy and one reboot (a reset of a guest that does not answer ACPI is its reboot).
VM_ACTIONS: dict[str, str] = {
    "terminate": "terminate", "terminate-hard": "terminate-hard", "undeploy": "undeploy",
    "undeploy-hard": "undeploy", "poweroff": "poweroff", "poweroff-hard": "poweroff-hard",
    "reboot": "reboot", "reboot-hard": "reboot", "hold": "hold", "release": "release",
    "stop": "stop", "suspend": "suspend", "resume": "resume",
}


def vm_action(c: Call) -> Value:
    name, vm_id = c.text(0), c.id(1)
    action = VM_ACTIONS.get(name)
    if action is None:
        raise OneError(ACTION, f"[{c.method}] Virtual machine action \"{name[:40]}\" is not supported", vm_id)
    try:
        c.cloud.vms.action(c.actor, vm_id, action)
    except IllegalAction as exc:
        raise OneError(ACTION, f"[{c.method}] Error performing action \"{name}\" on virtual machine "
                               f"[{vm_id}]: this action is not available for state {exc.state}",
                       vm_id) from None
    return vm_id


def vm_migrate(c: Call) -> Value:
    vm_id, host_id = c.id(0), c.id(1)
    # live=false is OpenNebula's cold move: cold where the hosts' drivers can, else live
    live = c.flag(2, False)
    enforce = c.flag(3, False)
    c.cloud.vms.action(c.actor, vm_id, "migrate", host=host_id, enforce=enforce,
                       cold_if_able=not live)
    return vm_id


def vm_deploy(c: Call) -> Value:
    vm_id, host_id, enforce = c.id(0), c.id(1), c.flag(2, False)
    if c.integer(3, -1) != -1:
        raise OneError(API, f"[{c.method}] choosing the system datastore is not supported by vocloud", vm_id)
    c.cloud.vms.deploy(c.actor, vm_id, host_id, enforce=enforce)
    return vm_id


def vm_rename(c: Call) -> Value:
    vm_id, name = c.id(0), c.text(1)
    c.cloud.vms.rename(c.actor, vm_id, name)
    return vm_id


#: OpenNebula's recover operations (0 failure, 1 success, 2 retry, 3 delete).
RECOVER_OPS = {0: "failure", 1: "success", 2: "retry", 3: "delete"}


def vm_recover(c: Call) -> Value:
    vm_id, op = c.id(0), c.integer(1)
    name = RECOVER_OPS.get(op)
    if name is None:
        raise OneError(API, f"[{c.method}] recover operation {op} is not supported by vocloud "
                            "(0 failure, 1 success, 2 retry, 3 delete)", vm_id)
    c.cloud.vms.recover(c.actor, vm_id, name)
    return vm_id


def _vm_rows(c: Call, include_done: bool) -> list[dict[str, Any]]:
    return c.cloud.vms.list(c.actor, include_done=include_done)


def _vmpool_rows(c: Call) -> list[dict[str, Any]]:
    state = c.integer(3, -1)
    if state < -2:
        raise OneError(API, f"[{c.method}] Incorrect state filter {state}")
    rows = _pool_filter(c, _vm_rows(c, include_done=state != -1))
    if state >= 0:
        rows = [r for r in rows if doc.vm_state(r["state"])[0] == state]
    return rows


def vmpool_info(c: Call) -> Value:
    return doc.vm_pool_xml(_vmpool_rows(c))


def vmpool_infoextended(c: Call) -> Value:
    return "<VM_POOL>" + "".join(doc.vm_xml(r) for r in _vmpool_rows(c)) + "</VM_POOL>"


def vmpool_accounting(c: Call) -> Value:
    start, end = c.integer(1, -1), c.integer(2, -1)
    rows = _pool_filter(c, _vm_rows(c, include_done=True), ranged=False)

    def overlaps(r: Mapping[str, Any]) -> bool:
        begin = r.get("started_at") or r.get("created_at") or 0
        stop = r.get("ended_at")
        return (end == -1 or begin <= end) and (start == -1 or stop is None or stop >= start)

    return doc.accounting_xml(r for r in rows if r.get("host_id") is not None and overlaps(r))


# ------------------------------------------------------------------------------ templates
def template_allocate(c: Call) -> Value:
    text = template_text(c.text(0), c.method)
    return int(c.cloud.templates.create(c.actor, text, fmt="one")["id"])


def template_info(c: Call) -> Value:
    return doc.vmtemplate_xml(c.cloud.templates.get(c.actor, c.id(0)), _names(c))


def templatepool_info(c: Call) -> Value:
    return doc.vmtemplate_pool_xml(_pool_filter(c, c.cloud.templates.list(c.actor)), _names(c))


def template_instantiate(c: Call) -> Value:
    tmpl_id, name, hold = c.id(0), c.text(1, ""), c.flag(2, False)
    extra: dict[str, str] = {}
    extra_text = c.text(3, "")
    if extra_text.strip():
        for key, value in _parse(c, extra_text).to_dict().items():
            if not isinstance(value, str):
                raise OneError(API, f"[{c.method}] extra attribute {key} is a vector; vocloud merges "
                                    "only single values at instantiation")
            extra[key] = value
    return c.cloud.instantiate(c.actor, tmpl_id, name=name or None, hold=hold, extra=extra)[0]


def template_delete(c: Call) -> Value:
    tmpl_id = c.id(0)
    if c.flag(1, False):
        raise OneError(API, f"[{c.method}] recursive delete (with the template's images) is not "
                            "supported by vocloud", tmpl_id)
    c.cloud.templates.delete(c.actor, tmpl_id)
    return tmpl_id


def template_update(c: Call) -> Value:
    tmpl_id, text, kind = c.id(0), template_text(c.text(1), c.method), c.integer(2, 0)
    if kind not in (0, 1):
        raise OneError(API, f"[{c.method}] update type must be 0 (replace) or 1 (merge)", tmpl_id)
    c.cloud.templates.update(c.actor, tmpl_id, text, fmt="one", merge=kind == 1)
    return tmpl_id


def template_clone(c: Call) -> Value:
    tmpl_id, name = c.id(0), c.text(1)
    if c.flag(2, False):
        raise OneError(API, f"[{c.method}] recursive clone (with the template's images) is not "
                            "supported by vocloud", tmpl_id)
    body = c.cloud.templates.get(c.actor, tmpl_id)["body"]  # USE right on the original
    return int(c.cloud.templates.create(c.actor, body, fmt="one", name=name)["id"])


# ------------------------------------------------------------------------------ images
def image_allocate(c: Call) -> Value:
    t = _parse(c, c.text(0))
    c.integer(1, 0)  # the datastore: vocloud finds it from the path
    path = t.get("PATH") or t.get("SOURCE")
    if not path:
        raise OneError(ALLOCATE, f"[{c.method}] Error allocating a new image. PATH is missing "
                                 "(vocloud registers files already in a datastore; upload others "
                                 "through REST)")
    fmt = t.get("FORMAT") or t.get("DRIVER")
    persistent = (t.get("PERSISTENT") or "NO").upper() in ("YES", "TRUE", "1")
    img = c.cloud.images.create(c.actor, t.get("NAME") or "", path, fmt, persistent, False,
                                t.get("DESCRIPTION") or "")
    return int(img["id"])


def image_info(c: Call) -> Value:
    return doc.image_xml(c.cloud.images.show(c.actor, c.id(0)), _names(c))


def imagepool_info(c: Call) -> Value:
    return doc.image_pool_xml(_pool_filter(c, c.cloud.images.list(c.actor)), _names(c))


def image_delete(c: Call) -> Value:
    image_id = c.id(0)
    c.cloud.images.delete(c.actor, image_id)
    return image_id


def image_enable(c: Call) -> Value:
    image_id, on = c.id(0), c.flag(1)
    c.cloud.images.action(c.actor, image_id, "enable" if on else "disable")
    return image_id


def image_persistent(c: Call) -> Value:
    image_id, on = c.id(0), c.flag(1)
    c.cloud.images.action(c.actor, image_id, "persistent" if on else "nonpersistent")
    return image_id


# ------------------------------------------------------------------------------ networks
def vn_allocate(c: Call) -> Value:
    text = template_text(c.text(0), c.method)
    c.integer(1, -1)  # the cluster
    return int(c.cloud.networks.create(c.actor, text, "one")["id"])


def vn_info(c: Call) -> Value:
    return doc.vnet_xml(c.cloud.networks.show(c.actor, c.id(0)), _names(c))


def vnpool_info(c: Call) -> Value:
    return doc.vnet_pool_xml(_pool_filter(c, c.cloud.networks.list(c.actor)), _names(c))


def _lease_ip(c: Call, text: str) -> str:
    t = _parse(c, text)
    lease = t.vector("LEASES") or {}
    ip = lease.get("IP") or t.get("IP")
    if not ip:
        raise OneError(API, f"[{c.method}] give the address as LEASES=[IP=\"...\"]")
    return ip


def vn_hold(c: Call) -> Value:
    vn_id = c.id(0)
    c.cloud.networks.hold(c.actor, vn_id, _lease_ip(c, c.text(1)))
    return vn_id


def vn_release(c: Call) -> Value:
    vn_id = c.id(0)
    c.cloud.networks.hold(c.actor, vn_id, _lease_ip(c, c.text(1)), release=True)
    return vn_id


def vn_reserve(c: Call) -> Value:
    vn_id = c.id(0)
    t = _parse(c, c.text(1))
    size_text = t.get("SIZE") or ""
    if not size_text.isascii() or not size_text.isdigit() or len(size_text) > 9:
        raise OneError(API, f"[{c.method}] SIZE must be a positive integer")
    if t.get("NETWORK_ID"):
        raise OneError(API, f"[{c.method}] adding to an existing reservation (NETWORK_ID) is not "
                            "supported by vocloud")
    net = c.cloud.networks.reserve(c.actor, vn_id, int(size_text), name=t.get("NAME"), ip=t.get("IP"))
    return int(net["id"])


def vn_delete(c: Call) -> Value:
    vn_id = c.id(0)
    c.cloud.networks.delete(c.actor, vn_id)
    return vn_id


# ------------------------------------------------------------------------------ ACLs
def acl_info(c: Call) -> Value:
    return doc.acl_pool_xml(c.cloud.accounts.list_acls(c.actor))


def _hex(part: str) -> bool:
    p = part.strip().lower().removeprefix("0x")
    return bool(p) and all(ch in "0123456789abcdef" for ch in p)


def acl_addrule(c: Call) -> Value:
    user, resource, rights = c.text(0), c.text(1), c.text(2)
    if all(_hex(part) for part in (user, resource)):
        raise OneError(API, f"[{c.method}] hexadecimal ACL masks are not supported by vocloud; send "
                            "the rule's text: USER '@1', RESOURCE 'VM/*', RIGHTS 'USE'")
    kind, _, target = resource.partition("/")
    rule = c.cloud.accounts.create_acl(c.actor, user, kind, target or "*", rights)
    return int(rule["id"])


def acl_delrule(c: Call) -> Value:
    acl_id = c.id(0)
    c.cloud.accounts.delete_acl(c.actor, acl_id)
    return acl_id


Method = Callable[[Call], Value]

#: Every method vocloud answers; any other name gets OpenNebula's API error naming it.
METHODS: dict[str, Method] = {
    "one.system.version": system_version, "one.system.config": system_config,
    "one.user.info": user_info, "one.userpool.info": userpool_info, "one.user.quota": user_quota,
    "one.group.info": group_info, "one.grouppool.info": grouppool_info, "one.group.quota": group_quota,
    "one.host.allocate": host_allocate, "one.host.info": host_info, "one.host.status": host_status,
    "one.host.delete": host_delete, "one.hostpool.info": hostpool_info,
    "one.vm.allocate": vm_allocate, "one.vm.info": vm_info, "one.vm.action": vm_action,
    "one.vm.migrate": vm_migrate, "one.vm.recover": vm_recover, "one.vm.rename": vm_rename,
    "one.vm.deploy": vm_deploy,
    "one.vmpool.info": vmpool_info, "one.vmpool.infoextended": vmpool_infoextended,
    "one.vmpool.accounting": vmpool_accounting,
    "one.template.allocate": template_allocate, "one.template.info": template_info,
    "one.template.instantiate": template_instantiate, "one.template.delete": template_delete,
    "one.template.clone": template_clone, "one.template.update": template_update,
    "one.templatepool.info": templatepool_info,
    "one.image.allocate": image_allocate, "one.image.info": image_info, "one.image.delete": image_delete,
    "one.image.enable": image_enable, "one.image.persistent": image_persistent,
    "one.imagepool.info": imagepool_info,
    "one.vn.allocate": vn_allocate, "one.vn.info": vn_info, "one.vn.hold": vn_hold,
    "one.vn.release": vn_release, "one.vn.reserve": vn_reserve, "one.vn.delete": vn_delete,
    "one.vnpool.info": vnpool_info,
    "one.acl.addrule": acl_addrule, "one.acl.delrule": acl_delrule, "one.acl.info": acl_info,
}

#: Methods the issue lists that vocloud's service layer cannot serve yet, and why.
UNSUPPORTED: dict[str, str] = {
    "one.vm.update": "a VM's template is fixed at creation in vocloud (the drivers trust it)",
}

_ALLOCATING = {"one.host.allocate", "one.vm.allocate", "one.template.allocate", "one.image.allocate",
               "one.vn.allocate", "one.template.instantiate", "one.template.clone", "one.vn.reserve",
               "one.acl.addrule"}


def one_error(method: str, exc: VocloudError, actor: Actor | None) -> OneError:
    """A service error as OpenNebula's (``Request::failure_message``)."""
    obj_id = exc.details.get("id", -1)
    obj_id = obj_id if isinstance(obj_id, int) and not isinstance(obj_id, bool) else -1
    msg = exc.message
    if isinstance(exc, Unauthorized):
        return OneError(AUTHENTICATION, f"[{method}] User couldn't be authenticated, aborting call.")
    if isinstance(exc, (Forbidden, QuotaExceeded)):
        uid = actor.user_id if actor else -1
        return OneError(AUTHORIZATION, f"[{method}] User [{uid}] : {msg}.", obj_id)
    if isinstance(exc, NotFound):
        return OneError(NO_EXISTS, f"[{method}] Error getting object: {msg}.", obj_id)
    if isinstance(exc, IllegalAction):
        return OneError(ACTION, f"[{method}] {msg}", obj_id)
    if isinstance(exc, DriverError):
        return OneError(INTERNAL, f"[{method}] {msg}", obj_id)
    if method in _ALLOCATING and isinstance(exc, (InvalidInput, Conflict)):
        return OneError(ALLOCATE, f"[{method}] Error allocating a new object. {msg}", obj_id)
    if isinstance(exc, Conflict):
        return OneError(ACTION, f"[{method}] {msg}", obj_id)
    return OneError(API, f"[{method}] {msg}", obj_id)


def unknown_method(method: str) -> OneError:
    why = UNSUPPORTED.get(method)
    if why is not None:
        return OneError(API, f"[{method}] method {method} is not supported by vocloud: {why}")
    return OneError(API, f"[{method}] method {method} is not supported by vocloud "
                         "(see docs/opennebula.md)")


__all__ = ["METHODS", "PARSE_ERROR", "Call", "OneError", "one_error", "unknown_method"]
