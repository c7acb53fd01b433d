"""vocloud's objects as OpenNebula's XML documents (pure: service dicts in, XML text out).

pyone binds every body with classes generated from OpenNebula's XSD schemas
(``share/doc/xsd``), so the root element names, the element order of each sequence and the
integer fields follow those schemas exactly; the comments name the schema each builder follows.
Numbers are OpenNebula's units: CPU in percent of a core (``HOST_SHARE``), memory in KiB on
hosts and in MiB in templates, times in whole seconds since the epoch.

Template attributes are written as OpenNebula writes them: each value in a CDATA section,
vectors as nested elements. The VM ``TEMPLATE`` of the full VM document is a fixed sequence in
``vm.xsd``; attributes it does not name go to ``USER_TEMPLATE`` (as OpenNebula does).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from vocloud.errors import VocloudError
from vocloud.model.lifecycle import HostState, ImageState, VMState
from vocloud.model.template import Template, parse_template

# ------------------------------------------------------------------------------ states
#: vocloud VM state -> OpenNebula (STATE, LCM_STATE) (include/VirtualMachine.h). REBOOT has no
#: LCM state of its own in OpenNebula (a reboot happens while RUNNING).
VM_STATES: dict[VMState, tuple[int, int]] = {
    VMState.PENDING: (1, 0), VMState.HOLD: (2, 0),
    VMState.PROLOG: (3, 1), VMState.BOOT: (3, 2), VMState.RUNNING: (3, 3), VMState.REBOOT: (3, 3),
    VMState.MIGRATE: (3, 4), VMState.SAVE_STOP: (3, 5), VMState.SAVE_SUSPEND: (3, 6),
    VMState.EPILOG_STOP: (3, 10), VMState.EPILOG: (3, 11), VMState.SHUTDOWN: (3, 12),
    VMState.SHUTDOWN_HARD: (3, 12), VMState.UNKNOWN: (3, 16), VMState.SHUTDOWN_POWEROFF: (3, 18),
    VMState.SHUTDOWN_UNDEPLOY: (3, 29), VMState.EPILOG_UNDEPLOY: (3, 30),
    VMState.BOOT_FAILURE: (3, 36), VMState.PROLOG_FAILURE: (3, 39), VMState.EPILOG_FAILURE: (3, 40),
    VMState.STOPPED: (4, 0), VMState.SUSPENDED: (5, 0), VMState.DONE: (6, 0),
    VMState.POWEROFF: (8, 0), VMState.UNDEPLOYED: (9, 0),
}

#: OpenNebula's VM STATE numbers (the vmpool.info state filter).
VM_STATE_DONE = 6

#: vocloud host state -> OpenNebula HOST_STATES (include/Host.h).
HOST_STATES: dict[HostState, int] = {
    HostState.INIT: 0, HostState.MONITORED: 2, HostState.ERROR: 3, HostState.DISABLED: 4,
    HostState.OFFLINE: 8,
}

#: vocloud image state -> OpenNebula IMAGE_STATES (include/Image.h).
IMAGE_STATES: dict[ImageState, int] = {
    ImageState.INIT: 0, ImageState.READY: 1, ImageState.USED: 2, ImageState.DISABLED: 3,
    ImageState.LOCKED: 4, ImageState.ERROR: 5,
}


def vm_state(state: str) -> tuple[int, int]:
    return VM_STATES[VMState(state)]


# ------------------------------------------------------------------------------ XML text
#: Characters XML 1.0 cannot carry even escaped; replaced by U+FFFD.
_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_SPECIAL = re.compile("[&<>]")


def _clean(text: str) -> str:
    return _BAD.sub("\ufffd", text) if _BAD.search(text) else text


@lru_cache(maxsize=4096)
def _esc_text(text: str) -> str:
    text = _clean(text)
    if _SPECIAL.search(text) is None:
        return text
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def esc(value: object) -> str:
    """Text for an XML element (names repeat across a pool: the escapes are cached)."""
    return _esc_text(str(value))


def cdata(value: object) -> str:
    text = _clean(str(value)).replace("]]>", "]]]]><![CDATA[>")
    return f"<![CDATA[{text}]]>"


def el(name: str, value: object) -> str:
    return f"<{name}>{esc(value)}</{name}>"


def _secs(t: float | None) -> int:
    return int(t) if t else 0


def _attr_xml(key: str, value: Any) -> str:
    """One template attribute: a scalar in CDATA, a vector as nested elements, a list repeated."""
    if isinstance(value, list):
        return "".join(_attr_xml(key, v) for v in value)
    if isinstance(value, Mapping):
        inner = "".join(f"<{k}>{cdata(v)}</{k}>" for k, v in value.items())
        return f"<{key}>{inner}</{key}>"
    return f"<{key}>{cdata(value)}</{key}>"


def template_xml(attrs: Mapping[str, Any], root: str = "TEMPLATE") -> str:
    return f"<{root}>" + "".join(_attr_xml(k, v) for k, v in attrs.items()) + f"</{root}>"


def parse_one(text: str) -> Template:
    """A stored template (already checked when stored) read back; unreadable text gives an
    empty template rather than a broken document."""
    if not text:
        return Template()
    try:
        return parse_template(text, fmt="one", source="stored template", max_bytes=None)
    except VocloudError:
        return Template()


def _perms(owner: tuple[int, int, int] = (1, 1, 0), group: tuple[int, int, int] = (0, 0, 0),
           other: tuple[int, int, int] = (0, 0, 0)) -> str:
    parts = []
    for who, bits in (("OWNER", owner), ("GROUP", group), ("OTHER", other)):
        for letter, bit in zip("UMA", bits, strict=True):
            parts.append(f"<{who}_{letter}>{bit}</{who}_{letter}>")
    return "<PERMISSIONS>" + "".join(parts) + "</PERMISSIONS>"


def _ids(name: str, ids: Iterable[int]) -> str:
    return f"<{name}>" + "".join(f"<ID>{int(i)}</ID>" for i in ids) + f"</{name}>"


def _owner(obj: Mapping[str, Any], names: Mapping[str, Mapping[int, str]]) -> str:
    uid, gid = int(obj.get("owner_id") or 0), int(obj.get("group_id") or 0)
    return (f"<UID>{uid}</UID><GID>{gid}</GID>{el('UNAME', names['users'].get(uid, ''))}"
            f"{el('GNAME', names['groups'].get(gid, ''))}")


# ------------------------------------------------------------------------------ VMs (vm.xsd)
#: The TEMPLATE elements of vm.xsd that carry any content, in the schema's order; others go to
#: USER_TEMPLATE.
_VM_TEMPLATE_ORDER = ("CONTEXT", "CPU", "DISK", "FEATURES", "GRAPHICS", "INPUT", "MEMORY", "NIC",
                      "OS", "RAW", "TEMPLATE_ID", "TM_MAD_SYSTEM", "VCPU", "VMID")
_VM_TEMPLATE_SCALAR = frozenset({"CPU", "MEMORY", "TEMPLATE_ID", "TM_MAD_SYSTEM", "VCPU", "VMID"})


def _split_vm_template(t: Template) -> tuple[dict[str, Any], dict[str, Any]]:
    attrs = t.to_dict()
    attrs.pop("NAME", None)  # the VM's NAME element says it (and follows vm.rename)
    known: dict[str, Any] = {}
    for key in _VM_TEMPLATE_ORDER:
        if key not in attrs:
            continue
        value = attrs[key]
        scalar = not isinstance(value, (dict, list))
        if (key in _VM_TEMPLATE_SCALAR) == scalar:
            known[key] = attrs.pop(key)
    return known, attrs


def history_xml(vm: Mapping[str, Any], with_vm: str = "") -> str:
    """One HISTORY element (acct.xsd / vm.xsd): the VM's stay on its last host."""
    start = _secs(vm.get("started_at") or vm.get("created_at"))
    end = _secs(vm.get("ended_at"))
    host_id = vm.get("host_id")
    return ("<HISTORY>"
            f"<OID>{int(vm['id'])}</OID><SEQ>0</SEQ>{el('HOSTNAME', vm.get('host') or '')}"
            f"<HID>{int(host_id) if host_id is not None else -1}</HID><CID>0</CID>"
            f"<STIME>{start}</STIME><ETIME>{end}</ETIME><VM_MAD>vocloud</VM_MAD>"
            "<TM_MAD>vocloud</TM_MAD><DS_ID>0</DS_ID><PLAN_ID>-1</PLAN_ID><ACTION_ID>-1</ACTION_ID>"
            f"<PSTIME>{start}</PSTIME><PETIME>{start}</PETIME><RSTIME>{start}</RSTIME>"
            f"<RETIME>{end}</RETIME><ESTIME>{end}</ESTIME><EETIME>{end}</EETIME><ACTION>0</ACTION>"
            f"<UID>{int(vm.get('owner_id') or 0)}</UID><GID>{int(vm.get('group_id') or 0)}</GID>"
            f"<REQUEST_ID>-1</REQUEST_ID>{with_vm}</HISTORY>")


def vm_xml(vm: Mapping[str, Any], history: bool = True) -> str:
    """The full VM document (vm.xsd) from ``VMService.show`` (or a ``list`` row: no template)."""
    state, lcm = vm_state(vm["state"])
    known, user = _split_vm_template(parse_one(vm.get("template") or ""))
    known.setdefault("CPU", f"{vm.get('cpu', 0):g}")
    known.setdefault("MEMORY", str(vm.get("memory", 0)))
    known.setdefault("VMID", str(vm["id"]))
    known["TM_MAD_SYSTEM"] = "vocloud"
    ordered = {k: known[k] for k in _VM_TEMPLATE_ORDER if k in known}
    records = ("<HISTORY_RECORDS>" + (history_xml(vm) if history and vm.get("host_id") is not None else "")
               + "</HISTORY_RECORDS>")
    if user.get("ERROR") is None and vm.get("error"):
        user["ERROR"] = vm["error"]
    return (
        f"<VM><ID>{int(vm['id'])}</ID><UID>{int(vm['owner_id'])}</UID><GID>{int(vm['group_id'])}</GID>"
        f"{el('UNAME', vm.get('user') or '')}{el('GNAME', vm.get('group') or '')}{el('NAME', vm['name'])}"
        f"{_perms(group=(1, 0, 0))}"
        f"<LAST_POLL>0</LAST_POLL><STATE>{state}</STATE><LCM_STATE>{lcm}</LCM_STATE>"
        f"<PREV_STATE>{state}</PREV_STATE><PREV_LCM_STATE>{lcm}</PREV_LCM_STATE><RESCHED>0</RESCHED>"
        f"<STIME>{_secs(vm.get('created_at'))}</STIME><ETIME>{_secs(vm.get('ended_at'))}</ETIME>"
        f"{el('DEPLOY_ID', vm.get('deploy_id') or '')}<MONITORING/><SCHED_ACTIONS/>"
        f"{template_xml(ordered)}{template_xml(user, 'USER_TEMPLATE')}{records}"
        "<BACKUPS><BACKUP_CONFIG/><BACKUP_IDS/></BACKUPS></VM>"
    )


#: ``<STATE>..</STATE><LCM_STATE>..</LCM_STATE>`` of each vocloud state, made once.
_STATE_XML = {st.value: f"<STATE>{a}</STATE><LCM_STATE>{b}</LCM_STATE>" for st, (a, b) in VM_STATES.items()}


def vm_row_xml(row: Mapping[str, Any]) -> str:
    """One VM of ``vmpool.info`` (vm_pool.xsd's short VM) from a ``VMService.list`` row.
    Written for speed (20,000 of them in one answer): one f-string, cached escapes."""
    host_id = row["host_id"]
    history = "<HISTORY_RECORDS/>" if host_id is None else (
        f"<HISTORY_RECORDS><HISTORY><OID>{row['id']}</OID><SEQ>0</SEQ>"
        f"<HOSTNAME>{_esc_text(row['host'] or '')}</HOSTNAME><HID>{host_id}</HID><CID>0</CID><DS_ID>0</DS_ID>"
        "<VM_MAD>vocloud</VM_MAD><TM_MAD>vocloud</TM_MAD><ACTION>0</ACTION></HISTORY></HISTORY_RECORDS>")
    return (
        f"<VM><ID>{int(row['id'])}</ID><UID>{int(row['owner_id'])}</UID><GID>{int(row['group_id'])}</GID>"
        f"<UNAME>{_esc_text(row['user'] or '')}</UNAME><GNAME>{_esc_text(row['group'] or '')}</GNAME>"
        f"<NAME>{_esc_text(row['name'])}</NAME><LAST_POLL>0</LAST_POLL>{_STATE_XML[row['state']]}"
        f"<RESCHED>0</RESCHED><STIME>{int(row['created_at'] or 0)}</STIME>"
        f"<ETIME>{int(row['ended_at'] or 0)}</ETIME><DEPLOY_ID></DEPLOY_ID>"
        f"<TEMPLATE><CPU>{float(row['cpu'] or 0):g}</CPU><MEMORY>{int(row['memory'] or 0)}</MEMORY>"
        f"</TEMPLATE><MONITORING/><USER_TEMPLATE/>{history}</VM>"
    )


def vm_pool_xml(rows: Iterable[Mapping[str, Any]]) -> str:
    return "<VM_POOL>" + "".join(vm_row_xml(r) for r in rows) + "</VM_POOL>"


def accounting_xml(rows: Iterable[Mapping[str, Any]]) -> str:
    """``vmpool.accounting`` (acct.xsd): one HISTORY per VM that was placed on a host."""
    out = [history_xml(r, vm_xml(r, history=False)) for r in rows]
    return "<HISTORY_RECORDS>" + "".join(out) + "</HISTORY_RECORDS>"


# ------------------------------------------------------------------------------ hosts (host.xsd)
def _pct(cores: Any) -> int:
    """Cores as OpenNebula's CPU figures: percent of one core."""
    return round(float(cores or 0) * 100)


def _kib(mib: Any) -> int:
    return int(mib or 0) * 1024


def host_xml(h: Mapping[str, Any]) -> str:
    cpu, kib, vmm = _pct, _kib, h.get("vmm") or ""
    state = HOST_STATES.get(HostState(h["state"]), 3)
    attrs = {k: v for k, v in (h.get("attrs") or {}).items()}
    if h.get("error"):
        attrs["ERROR"] = h["error"]
    return (
        f"<HOST><ID>{int(h['id'])}</ID>{el('NAME', h['name'])}<STATE>{state}</STATE>"
        f"<PREV_STATE>{state}</PREV_STATE>{el('IM_MAD', vmm)}{el('VM_MAD', vmm)}"
        f"<CLUSTER_ID>0</CLUSTER_ID>{el('CLUSTER', h.get('cluster') or 'default')}"
        f"<HOST_SHARE><MEM_USAGE>{kib(h.get('alloc_mem'))}</MEM_USAGE><CPU_USAGE>{cpu(h.get('alloc_cpu'))}</CPU_USAGE>"
        f"<TOTAL_MEM>{kib(h.get('total_mem'))}</TOTAL_MEM><TOTAL_CPU>{cpu(h.get('total_cpu'))}</TOTAL_CPU>"
        f"<MAX_MEM>{kib(h.get('total_mem'))}</MAX_MEM><MAX_CPU>{cpu(h.get('total_cpu'))}</MAX_CPU>"
        f"<RUNNING_VMS>{int(h.get('running_vms') or 0)}</RUNNING_VMS><VMS_THREAD>1</VMS_THREAD>"
        "<DATASTORES><DISK_USAGE>0</DISK_USAGE><FREE_DISK>0</FREE_DISK><MAX_DISK>0</MAX_DISK>"
        "<USED_DISK>0</USED_DISK></DATASTORES><PCI_DEVICES/><NUMA_NODES/></HOST_SHARE>"
        f"{_ids('VMS', h.get('vms') or [])}{template_xml(attrs)}"
        f"<MONITORING><TIMESTAMP>{_secs(h.get('monitored_at'))}</TIMESTAMP><ID>{int(h['id'])}</ID>"
        f"<CAPACITY><FREE_CPU>{cpu(h.get('free_cpu'))}</FREE_CPU><FREE_MEMORY>{kib(h.get('free_mem'))}</FREE_MEMORY>"
        f"<USED_CPU>{cpu(h.get('used_cpu'))}</USED_CPU><USED_MEMORY>{kib(h.get('used_mem'))}</USED_MEMORY>"
        "</CAPACITY></MONITORING></HOST>"
    )


def host_pool_xml(hosts: Iterable[Mapping[str, Any]]) -> str:
    return "<HOST_POOL>" + "".join(host_xml(h) for h in hosts) + "</HOST_POOL>"


# ------------------------------------------------------------------------------ templates
def vmtemplate_xml(t: Mapping[str, Any], names: Mapping[str, Mapping[int, str]]) -> str:
    """vmtemplate.xsd, from ``TemplateService.get``."""
    other = (1, 0, 0) if t.get("public") else (0, 0, 0)
    return (f"<VMTEMPLATE><ID>{int(t['id'])}</ID>{_owner(t, names)}{el('NAME', t['name'])}"
            f"{_perms(other=other)}<REGTIME>{_secs(t.get('created_at'))}</REGTIME>"
            f"{template_xml(parse_one(t.get('body') or '').to_dict())}</VMTEMPLATE>")


def vmtemplate_pool_xml(rows: Iterable[Mapping[str, Any]], names: Mapping[str, Mapping[int, str]]) -> str:
    return "<VMTEMPLATE_POOL>" + "".join(vmtemplate_xml(t, names) for t in rows) + "</VMTEMPLATE_POOL>"


# ------------------------------------------------------------------------------ images (image.xsd)
def image_xml(img: Mapping[str, Any], names: Mapping[str, Mapping[int, str]]) -> str:
    state = IMAGE_STATES.get(ImageState(img["state"]), 5)
    other = (1, 0, 0) if img.get("public") else (0, 0, 0)
    attrs = {"DESCRIPTION": img["description"]} if img.get("description") else {}
    return (
        f"<IMAGE><ID>{int(img['id'])}</ID>{_owner(img, names)}{el('NAME', img['name'])}{_perms(other=other)}"
        f"<TYPE>0</TYPE><DISK_TYPE>0</DISK_TYPE><PERSISTENT>{int(bool(img.get('persistent')))}</PERSISTENT>"
        f"<REGTIME>0</REGTIME><MODTIME>0</MODTIME>{el('SOURCE', img.get('path') or '')}"
        f"{el('PATH', img.get('path') or '')}{el('FORMAT', img.get('format') or '')}<FS></FS>"
        f"<SIZE>{int(img.get('size_mib') or 0)}</SIZE><STATE>{state}</STATE><PREV_STATE>{state}</PREV_STATE>"
        f"<RUNNING_VMS>{int(img.get('running_vms') or 0)}</RUNNING_VMS><CLONING_OPS>0</CLONING_OPS>"
        f"<CLONING_ID>-1</CLONING_ID><TARGET_SNAPSHOT>-1</TARGET_SNAPSHOT>"
        f"<DATASTORE_ID>{int(img.get('datastore_id') or 0)}</DATASTORE_ID><DATASTORE></DATASTORE>"
        f"<VMS/><CLONES/><APP_CLONES/>{template_xml(attrs)}"
        "<SNAPSHOTS><ALLOW_ORPHANS>NO</ALLOW_ORPHANS><CURRENT_BASE>-1</CURRENT_BASE>"
        "<NEXT_SNAPSHOT>0</NEXT_SNAPSHOT></SNAPSHOTS><BACKUP_INCREMENTS/></IMAGE>"
    )


def image_pool_xml(rows: Iterable[Mapping[str, Any]], names: Mapping[str, Mapping[int, str]]) -> str:
    return "<IMAGE_POOL>" + "".join(image_xml(i, names) for i in rows) + "</IMAGE_POOL>"


# ------------------------------------------------------------------------------ networks (vnet.xsd)
def _ar_xml(i: int, r: Mapping[str, Any], leases: str = "", used: bool = False) -> str:
    return (f"<AR><AR_ID>{i}</AR_ID>{el('IP', r.get('ip') or '')}{el('MAC', r.get('mac') or '')}"
            f"<NEXT_INDEX>0</NEXT_INDEX><SIZE>{int(r.get('size') or 0)}</SIZE><TYPE>IP4</TYPE>"
            f"{'<USED_LEASES>0</USED_LEASES>' if used else ''}{leases}</AR>")


def vnet_xml(n: Mapping[str, Any], names: Mapping[str, Mapping[int, str]], pool: bool = False) -> str:
    other = (1, 0, 0) if n.get("public") else (0, 0, 0)
    parent = "" if n.get("parent_id") is None else str(n["parent_id"])
    ranges = n.get("ranges") or []
    if pool:
        ars = "<AR_POOL>" + "".join(_ar_xml(i, r) for i, r in enumerate(ranges)) + "</AR_POOL>"
    else:
        leases = "".join(
            f"<LEASE>{el('IP', le['ip'])}{el('MAC', le.get('mac') or '')}"
            f"<VM>{int(le['vm_id']) if le.get('vm_id') is not None else -1}</VM></LEASE>"
            for le in n.get("leases") or [])
        ars = "<AR_POOL>" + "".join(
            _ar_xml(i, r, f"<LEASES>{leases}</LEASES>" if i == 0 else "", used=True)
            for i, r in enumerate(ranges)) + "</AR_POOL>"
    template = parse_one(n.get("template") or "").to_dict() if not pool else {}
    vlan = "" if n.get("vlan_id") is None else str(n["vlan_id"])
    body = (
        f"<VNET><ID>{int(n['id'])}</ID>{_owner(n, names)}{el('NAME', n['name'])}{_perms(other=other)}"
        f"<CLUSTERS><ID>0</ID></CLUSTERS>{el('BRIDGE', n.get('bridge') or '')}"
        f"{'' if pool else '<BRIDGE_TYPE>linux</BRIDGE_TYPE>'}<STATE>1</STATE><PREV_STATE>1</PREV_STATE>"
        f"{el('PARENT_NETWORK_ID', parent)}<TEMPLATE_ID>-1</TEMPLATE_ID>"
        f"{el('VN_MAD', n.get('vn_mad') or 'bridge')}"
        f"{el('PHYDEV', n.get('phydev') or '')}{el('VLAN_ID', vlan)}"
        f"{'' if pool else '<OUTER_VLAN_ID></OUTER_VLAN_ID>'}<VLAN_ID_AUTOMATIC>0</VLAN_ID_AUTOMATIC>"
        f"<OUTER_VLAN_ID_AUTOMATIC>0</OUTER_VLAN_ID_AUTOMATIC>"
        f"<USED_LEASES>{int(n.get('used_leases') or 0)}</USED_LEASES><VROUTERS/>"
        f"<UPDATED_VMS/><OUTDATED_VMS/><UPDATING_VMS/><ERROR_VMS/>{template_xml(template)}{ars}</VNET>"
    )
    return body


def vnet_pool_xml(rows: Iterable[Mapping[str, Any]], names: Mapping[str, Mapping[int, str]]) -> str:
    return "<VNET_POOL>" + "".join(vnet_xml(n, names, pool=True) for n in rows) + "</VNET_POOL>"


# ------------------------------------------------------------------------------ users, groups
def _num(value: Any) -> str:
    """A quota figure; vocloud's unlimited (-1) is OpenNebula's -2 (its -1 means "the default")."""
    return "-2" if value is None or value == -1 else format(float(value), "g")


def vm_quota_xml(q: Mapping[str, Any] | None) -> str:
    if not q:
        return "<VM_QUOTA/>"
    vms, cpu, mem = q["vms"], q["cpu"], q["memory"]
    return ("<VM_QUOTA><VM>"
            f"<CPU>{_num(cpu['limit'])}</CPU><CPU_USED>{_num(cpu['used'])}</CPU_USED>"
            f"<MEMORY>{_num(mem['limit'])}</MEMORY><MEMORY_USED>{_num(mem['used'])}</MEMORY_USED>"
            "<PCI_DEV>-1</PCI_DEV><PCI_DEV_USED>0</PCI_DEV_USED><PCI_NIC>-1</PCI_NIC><PCI_NIC_USED>0</PCI_NIC_USED>"
            f"<RUNNING_CPU>-1</RUNNING_CPU><RUNNING_CPU_USED>0</RUNNING_CPU_USED>"
            f"<RUNNING_MEMORY>-1</RUNNING_MEMORY><RUNNING_MEMORY_USED>0</RUNNING_MEMORY_USED>"
            "<RUNNING_PCI_DEV>-1</RUNNING_PCI_DEV><RUNNING_PCI_DEV_USED>0</RUNNING_PCI_DEV_USED>"
            "<RUNNING_PCI_NIC>-1</RUNNING_PCI_NIC><RUNNING_PCI_NIC_USED>0</RUNNING_PCI_NIC_USED>"
            f"<RUNNING_VMS>-1</RUNNING_VMS><RUNNING_VMS_USED>0</RUNNING_VMS_USED>"
            f"<SYSTEM_DISK_SIZE>-1</SYSTEM_DISK_SIZE><SYSTEM_DISK_SIZE_USED>0</SYSTEM_DISK_SIZE_USED>"
            f"<VMS>{_num(vms['limit'])}</VMS><VMS_USED>{_num(vms['used'])}</VMS_USED></VM></VM_QUOTA>")


def user_xml(u: Mapping[str, Any], pool: bool = False) -> str:
    quotas = ("<DATASTORE_QUOTA/><NETWORK_QUOTA/>" + vm_quota_xml(u.get("quota")) + "<IMAGE_QUOTA/>")
    default = ("" if pool else
               "<DEFAULT_USER_QUOTAS><DATASTORE_QUOTA/><NETWORK_QUOTA/><VM_QUOTA/><IMAGE_QUOTA/>"
               "</DEFAULT_USER_QUOTAS>")
    return (f"<USER><ID>{int(u['id'])}</ID><GID>{int(u['group_id'])}</GID>"
            f"<GROUPS><ID>{int(u['group_id'])}</ID></GROUPS>{el('GNAME', u.get('group') or '')}"
            f"{el('NAME', u['name'])}<PASSWORD>*</PASSWORD><AUTH_DRIVER>vocloud</AUTH_DRIVER>"
            f"<ENABLED>{int(bool(u.get('enabled', True)))}</ENABLED>"
            f"<TEMPLATE/>{'' if pool else quotas}{default}</USER>")


def user_pool_xml(users: Iterable[Mapping[str, Any]]) -> str:
    body = "".join(user_xml(u, pool=True) for u in users)
    return ("<USER_POOL>" + body + "<DEFAULT_USER_QUOTAS><DATASTORE_QUOTA/><NETWORK_QUOTA/>"
            "<VM_QUOTA/><IMAGE_QUOTA/></DEFAULT_USER_QUOTAS></USER_POOL>")


def group_xml(g: Mapping[str, Any], user_ids: Iterable[int], pool: bool = False) -> str:
    quotas = ("<DATASTORE_QUOTA/><NETWORK_QUOTA/>" + vm_quota_xml(g.get("quota")) + "<IMAGE_QUOTA/>")
    attrs = {"DESCRIPTION": g["description"]} if g.get("description") else {}
    default = ("" if pool else
               "<DEFAULT_GROUP_QUOTAS><DATASTORE_QUOTA/><NETWORK_QUOTA/><VM_QUOTA/><IMAGE_QUOTA/>"
               "</DEFAULT_GROUP_QUOTAS>")
    return (f"<GROUP><ID>{int(g['id'])}</ID>{el('NAME', g['name'])}{template_xml(attrs)}"
            f"{_ids('USERS', user_ids)}<ADMINS/>{'' if pool else quotas}"
            f"{'' if pool else '<VLAN_RULES><ID>-1</ID></VLAN_RULES>'}{default}</GROUP>")


def group_pool_xml(groups: Iterable[tuple[Mapping[str, Any], list[int]]]) -> str:
    body = "".join(group_xml(g, ids, pool=True) for g, ids in groups)
    return ("<GROUP_POOL>" + body + "<DEFAULT_GROUP_QUOTAS><DATASTORE_QUOTA/><NETWORK_QUOTA/>"
            "<VM_QUOTA/><IMAGE_QUOTA/></DEFAULT_GROUP_QUOTAS></GROUP_POOL>")


def acl_pool_xml(rules: Iterable[Mapping[str, Any]]) -> str:
    """acl_pool.xsd. USER/RESOURCE/RIGHTS carry vocloud's rule text (the schema types them as
    strings; OpenNebula's are hexadecimal masks), STRING the whole rule."""
    out = []
    for r in rules:
        text = f"{r['subject']} {r['resource']}/{r['target']} {r['rights']}"
        out.append(f"<ACL><ID>{int(r['id'])}</ID>{el('USER', r['subject'])}"
                   f"{el('RESOURCE', r['resource'] + '/' + r['target'])}{el('RIGHTS', r['rights'])}"
                   f"<ZONE>*</ZONE>{el('STRING', text)}</ACL>")
    return "<ACL_POOL>" + "".join(out) + "</ACL_POOL>"


def config_xml(version: str) -> str:
    """``system.config``: the few settings a client reads (opennebula_configuration.xsd)."""
    del version  # the schema has no element for it (system.version answers it)
    return "<OPENNEBULA_CONFIGURATION><DEFAULT_AUTH>vocloud</DEFAULT_AUTH></OPENNEBULA_CONFIGURATION>"
