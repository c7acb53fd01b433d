"""OpenNebula OCCI (2.x-3.8) documents: hostile request XML in, typed requests out; service
dictionaries in, the XML libcloud's ``OpenNebulaNodeDriver`` parses out.

Pure: no I/O, no service call. Why a module of its own: the parsing is the one place where bytes
from a user become values, so it is small, strict and tested without a daemon.

Parsing goes through ``defusedxml`` with DTDs forbidden: a document with a ``<!DOCTYPE``, an
entity declaration (a billion-laughs document) or an external reference is refused before any
expansion. Only the elements OpenNebula's OCCI server read are taken (NAME, INSTANCE_TYPE,
DISK/STORAGE@href, NIC/NETWORK@href + IP, CONTEXT/*, STATE); everything else in the body is
ignored, so a user can never name a host path, bridge or driver through OCCI. ``href``s become
object ids; the service decides whether the user may USE them.

Rendering follows OpenNebula 3.8's ERB templates (``src/cloud/occi/lib/*OCCI.rb``): element
names, ``href`` attributes on collection members, the VM state as OpenNebula's *VM* state
(``ACTIVE`` for every running-ish LCM state), and never a host path, bridge or VLAN.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import defusedxml
import defusedxml.ElementTree as SafeET

from vocloud.errors import InvalidInput, ParseError
from vocloud.model.instance_types import InstanceType
from vocloud.model.template import parse_template

#: Most DISK / NIC elements a COMPUTE may carry, and CONTEXT variables (bounds the work).
MAX_DISKS = 16
MAX_NICS = 16
MAX_CONTEXT = 128
MAX_ID = 2**31 - 1

#: OpenNebula's VM state (what OCCI's STATE shows) for each vocloud state.
OCCI_STATE: dict[str, str] = {
    "PENDING": "PENDING", "HOLD": "HOLD", "POWEROFF": "POWEROFF", "SUSPENDED": "SUSPENDED",
    "STOPPED": "STOPPED", "UNDEPLOYED": "UNDEPLOYED", "DONE": "DONE",
}

#: OCCI's requested STATE -> the vocloud action, after OpenNebula 3.8's ``OCCI_ACTION`` table.
#: CANCEL and DONE (OpenNebula's finalize) become ``terminate-hard``; SHUTDOWN ``terminate``.
STATE_ACTIONS: dict[str, str] = {
    "STOPPED": "stop", "SUSPENDED": "suspend", "RESUME": "resume", "CANCEL": "terminate-hard",
    "REBOOT": "reboot", "SHUTDOWN": "terminate", "POWEROFF": "poweroff", "DONE": "terminate-hard",
}
#: Requested states OpenNebula 3.8 knew that vocloud does not offer, and why.
UNSUPPORTED_STATES: dict[str, str] = {
    "RESET": "a hard reset is not offered; use REBOOT",
    "RESTART": "RESTART (re-boot a VM stuck in BOOT) is not offered; use REBOOT",
    "RESUBMIT": "RESUBMIT is not offered; delete the compute and create it again",
}
#: Every VM state OpenNebula 3.8 reports; a PUT naming one of them (not an action) is a no-op.
ONE_VM_STATES = frozenset({"INIT", "PENDING", "HOLD", "ACTIVE", "STOPPED", "SUSPENDED", "DONE",
                           "FAILED", "POWEROFF", "UNDEPLOYED"})

_ID = re.compile(r"^[0-9]{1,10}$")
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


def occi_state(state: str) -> str:
    """vocloud's state -> OpenNebula's VM state: every state between PENDING and DONE that holds
    a host (PROLOG, BOOT, RUNNING, ..., the failures) is OpenNebula's ACTIVE."""
    return OCCI_STATE.get(state, "ACTIVE")


# ---------------------------------------------------------------------------------- parsing
@dataclass(frozen=True, slots=True)
class NicRequest:
    network_id: int
    ip: str | None = None


@dataclass(frozen=True, slots=True)
class ComputeRequest:
    """What a POST /compute asks for, typed; the service still checks every value."""

    name: str | None
    instance_type: str | None
    image_ids: tuple[int, ...] = ()
    nics: tuple[NicRequest, ...] = ()
    context: dict[str, str] = field(default_factory=dict)


def parse_document(body: bytes, root: str) -> ET.Element:
    """The body as an element tree whose root is ``root``; any DTD, entity or malformed XML is
    an :class:`InvalidInput` naming the problem."""
    if not body.strip():
        raise InvalidInput(f"the request body must be an OCCI {root} document; it is empty")
    try:
        doc = SafeET.fromstring(body, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DTDForbidden:
        raise InvalidInput("XML with a DOCTYPE is refused (no DTDs or entities in OCCI documents)") \
            from None
    except defusedxml.EntitiesForbidden:
        raise InvalidInput("XML with entity declarations is refused") from None
    except defusedxml.DefusedXmlException as exc:
        raise InvalidInput(f"XML refused: {exc.__class__.__name__}") from None
    except ET.ParseError as exc:
        line, column = exc.position
        raise ParseError(_clean(str(exc).split(":")[0])[:200], line, column + 1, "OCCI XML") from None
    except (ValueError, LookupError, RecursionError) as exc:
        raise InvalidInput(f"XML refused: {_clean(str(exc))[:200]}") from None
    if doc.tag != root:
        raise InvalidInput(f"the document's root element must be {root}, not {_clean(doc.tag)[:64]!r}")
    return doc


def _text(elem: ET.Element | None) -> str | None:
    if elem is None or elem.text is None:
        return None
    value = elem.text.strip()
    return value or None


def href_id(href: str | None, kind: str, where: str) -> int:
    """``http://host/storage/7`` or ``/storage/7`` -> 7; anything else is refused."""
    if not href:
        raise InvalidInput(f"{where} needs an href=\"/{kind}/ID\" attribute")
    head, _, last = href.strip().rstrip("/").rpartition("/")
    right_kind = head.endswith(f"/{kind}") or head == kind
    if not right_kind or not _ID.match(last) or int(last) > MAX_ID:
        raise InvalidInput(f"{where}: href {_clean(href)[:128]!r} is not /{kind}/ID")
    return int(last)


def parse_compute(body: bytes) -> ComputeRequest:
    doc = parse_document(body, "COMPUTE")
    itype_elem = doc.find("INSTANCE_TYPE")
    itype = _text(itype_elem)
    if itype is None and itype_elem is not None and itype_elem.get("href"):
        itype = str(itype_elem.get("href")).rstrip("/").rpartition("/")[2] or None
    disks = doc.findall("DISK")
    nics = doc.findall("NIC")
    if len(disks) > MAX_DISKS or len(nics) > MAX_NICS:
        raise InvalidInput(f"a COMPUTE takes at most {MAX_DISKS} DISK and {MAX_NICS} NIC elements")
    image_ids = tuple(href_id(_attr(d.find("STORAGE"), "href"), "storage", f"DISK {i}")
                      for i, d in enumerate(disks))
    nic_reqs = tuple(NicRequest(href_id(_attr(n.find("NETWORK"), "href"), "network", f"NIC {i}"),
                                _text(n.find("IP")))
                     for i, n in enumerate(nics))
    context: dict[str, str] = {}
    ctx = doc.find("CONTEXT")
    if ctx is not None:
        children = list(ctx)
        if len(children) > MAX_CONTEXT:
            raise InvalidInput(f"CONTEXT takes at most {MAX_CONTEXT} variables")
        for child in children:
            key = child.tag.upper()
            if key in context:
                raise InvalidInput(f"CONTEXT variable {_clean(key)[:64]!r} is given twice")
            if child.text is not None and child.text.strip():
                context[key] = child.text.strip()
    return ComputeRequest(name=_text(doc.find("NAME")), instance_type=itype, image_ids=image_ids,
                          nics=nic_reqs, context=context)


def _attr(elem: ET.Element | None, name: str) -> str | None:
    return None if elem is None else elem.get(name)


def parse_compute_update(body: bytes) -> str | None:
    """A PUT /compute/ID body -> the requested STATE (upper case), or None for no change.

    Saving a disk (``DISK/SAVE_AS``) is refused here: vocloud has no disk snapshot action."""
    doc = parse_document(body, "COMPUTE")
    if doc.find("DISK/SAVE_AS") is not None:
        raise InvalidInput("DISK/SAVE_AS (saving a disk as a new image) is not supported")
    state = _text(doc.find("STATE"))
    return state.upper() if state is not None else None


def parse_storage_update(body: bytes) -> str | None:
    """A PUT /storage/ID body -> the image action (``persistent``, ``nonpersistent``, ``public``,
    ``private``) or None for no change; one change per request, as OpenNebula 3.8."""
    doc = parse_document(body, "STORAGE")
    persistent, public = _text(doc.find("PERSISTENT")), _text(doc.find("PUBLIC"))
    if persistent is not None and public is not None:
        raise InvalidInput("It is not allowed more than one change per request")
    for value, yes, no, what in ((persistent, "persistent", "nonpersistent", "PERSISTENT"),
                                 (public, "public", "private", "PUBLIC")):
        if value is None:
            continue
        if value.upper() not in ("YES", "NO"):
            raise InvalidInput(f"{what} must be YES or NO, not {_clean(value)[:32]!r}")
        return yes if value.upper() == "YES" else no
    return None


def compute_template(req: ComputeRequest, itype: InstanceType) -> dict[str, Any]:
    """The VM template (JSON form) a compute request stands for: the instance type's size plus
    the images, networks and context it names. The service checks it like any template."""
    out: dict[str, Any] = dict(itype.attributes())
    if req.image_ids:
        out["DISK"] = [{"IMAGE_ID": str(i)} for i in req.image_ids]
    if req.nics:
        out["NIC"] = [{"NETWORK_ID": str(n.network_id), **({"IP": n.ip} if n.ip else {})}
                      for n in req.nics]
    if req.context:
        out["CONTEXT"] = dict(req.context)
    return out


# ---------------------------------------------------------------------------------- rendering
def _clean(value: object) -> str:
    """Text XML 1.0 can carry (control characters become U+FFFD)."""
    return _XML_BAD.sub("\ufffd", str(value))


def _sub(parent: ET.Element, tag: str, text: object = None, **attrs: object) -> ET.Element:
    elem = ET.SubElement(parent, tag, {k: _clean(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        elem.text = _clean(text)
    return elem


def serialize(elem: ET.Element) -> bytes:
    out: bytes = ET.tostring(elem, encoding="utf-8", xml_declaration=False)
    return out


def collection(kind: str, rows: Iterable[Mapping[str, Any]], base: str) -> bytes:
    """``<COMPUTE_COLLECTION><COMPUTE href=".../compute/1" name="a"/>...``"""
    root = ET.Element(f"{kind.upper()}_COLLECTION")
    for row in rows:
        _sub(root, kind.upper(), href=f"{base}/{kind}/{row['id']}", name=row["name"])
    return serialize(root)


def instance_type_for(vm: Mapping[str, Any], types: Mapping[str, InstanceType]) -> str | None:
    """The first instance type whose size is the VM's (vocloud keeps sizes, not type names)."""
    centi = round(float(vm["cpu"]) * 100)
    for t in types.values():
        if t.cpu_centi == centi and t.memory_mb == vm["memory"] and t.vcpu == vm.get("vcpu", t.vcpu):
            return t.name
    return None


def compute(vm: Mapping[str, Any], base: str, types: Mapping[str, InstanceType]) -> bytes:
    return serialize(compute_elem(vm, base, types))


def compute_elem(vm: Mapping[str, Any], base: str, types: Mapping[str, InstanceType]) -> ET.Element:
    """One VM, from :meth:`VMService.show`'s dictionary (its stored template gives the disks,
    NICs and context; a host path in it, SOURCE, is never rendered)."""
    root = ET.Element("COMPUTE", href=f"{base}/compute/{vm['id']}")
    _sub(root, "ID", vm["id"])
    _sub(root, "USER", href=f"{base}/user/{vm['owner_id']}", name=vm.get("user") or "")
    _sub(root, "GROUP", vm.get("group") or "")
    _sub(root, "CPU", vm["cpu"])
    _sub(root, "MEMORY", vm["memory"])
    _sub(root, "NAME", vm["name"])
    itype = instance_type_for(vm, types)
    if itype is not None:
        _sub(root, "INSTANCE_TYPE", itype, href=f"{base}/instance_type/{itype}")
    _sub(root, "STATE", occi_state(vm["state"]))
    _sub(root, "LCM_STATE", vm["state"])  # vocloud's own state; OpenNebula clients ignore it
    tmpl = parse_template(vm.get("template") or "", fmt="one", source="stored template",
                          max_bytes=None) if vm.get("template") else None
    if tmpl is not None:
        for i, disk in enumerate(tmpl.vectors("DISK")):
            d = _sub(root, "DISK", id=i)
            if disk.get("IMAGE_ID"):
                _sub(d, "STORAGE", href=f"{base}/storage/{disk['IMAGE_ID']}", name=disk.get("IMAGE", ""))
            _sub(d, "TYPE", disk.get("TYPE", "DISK"))
            _sub(d, "TARGET", disk.get("TARGET", ""))
        for nic in tmpl.vectors("NIC"):
            n = _sub(root, "NIC")
            _sub(n, "NETWORK", href=f"{base}/network/{nic.get('NETWORK_ID', '')}",
                 name=nic.get("NETWORK", ""))
            if nic.get("IP"):
                _sub(n, "IP", nic["IP"])
            if nic.get("MAC"):
                _sub(n, "MAC", nic["MAC"])
        context = tmpl.vector("CONTEXT")
        if context:
            c = _sub(root, "CONTEXT")
            for key, value in context.items():
                if value and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", key):
                    _sub(c, key, value)
    return root


def storage(img: Mapping[str, Any], base: str) -> bytes:
    return serialize(storage_elem(img, base))


def storage_elem(img: Mapping[str, Any], base: str) -> ET.Element:
    """One image; its path and datastore are not shown (OpenNebula's OCCI showed neither)."""
    root = ET.Element("STORAGE", href=f"{base}/storage/{img['id']}")
    _sub(root, "ID", img["id"])
    _sub(root, "NAME", img["name"])
    _sub(root, "USER", href=f"{base}/user/{img['owner_id']}")
    _sub(root, "STATE", img["state"])
    _sub(root, "TYPE", "OS")
    if img.get("description"):
        _sub(root, "DESCRIPTION", img["description"])
    _sub(root, "SIZE", img.get("size_mib") or 0)
    _sub(root, "FSTYPE", img.get("format") or "")
    _sub(root, "PUBLIC", "YES" if img.get("public") else "NO")
    _sub(root, "PERSISTENT", "YES" if img.get("persistent") else "NO")
    return root


def network(net: Mapping[str, Any], base: str) -> bytes:
    return serialize(network_elem(net, base))


def network_elem(net: Mapping[str, Any], base: str) -> ET.Element:
    """One network: its first address and size, never its bridge, device or VLAN."""
    root = ET.Element("NETWORK", href=f"{base}/network/{net['id']}")
    _sub(root, "ID", net["id"])
    _sub(root, "NAME", net["name"])
    _sub(root, "USER", href=f"{base}/user/{net['owner_id']}")
    ranges = net.get("ranges") or []
    if ranges:
        _sub(root, "ADDRESS", ranges[0]["ip"])
    _sub(root, "SIZE", net.get("size", 0))
    _sub(root, "USED_LEASES", net.get("used_leases", 0))
    _sub(root, "PUBLIC", "YES" if net.get("public") else "NO")
    return root


def verbose_collection(kind: str, elements: Iterable[ET.Element]) -> bytes:
    """``?verbose=1``: the collection with each member's whole document, as OpenNebula's."""
    root = ET.Element(f"{kind.upper()}_COLLECTION")
    root.extend(elements)
    return serialize(root)


def _instance_type_elem(parent: ET.Element | None, t: InstanceType, base: str) -> ET.Element:
    attrs = {"href": f"{base}/instance_type/{t.name}", "name": t.name}
    elem = ET.Element("INSTANCE_TYPE", attrs) if parent is None else _sub(parent, "INSTANCE_TYPE", **attrs)
    _sub(elem, "ID", t.name)
    _sub(elem, "NAME", t.name)
    _sub(elem, "CPU", f"{t.cpu:g}")
    _sub(elem, "MEMORY", t.memory_mb)
    _sub(elem, "VCPU", t.vcpu)
    return elem


def instance_types(types: Mapping[str, InstanceType], base: str, verbose: bool) -> bytes:
    """OpenNebula sorts the types by name; members carry ``name`` (libcloud 3.8 reads it)."""
    root = ET.Element("INSTANCE_TYPE_COLLECTION")
    for name in sorted(types):
        if verbose:
            _instance_type_elem(root, types[name], base)
        else:
            _sub(root, "INSTANCE_TYPE", href=f"{base}/instance_type/{name}", name=name)
    return serialize(root)


def instance_type(t: InstanceType, base: str) -> bytes:
    return serialize(_instance_type_elem(None, t, base))
