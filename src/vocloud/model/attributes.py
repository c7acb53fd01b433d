"""The catalogue of VM template attributes vocloud understands, as data: the trust boundary's list.

Why a table: OpenNebula lists the attributes a non-administrator may not set
(``VM_RESTRICTED_ATTR``) and passes every other one on. vocloud closes that by default: an
attribute that is not in :data:`CATALOGUE` is refused for everyone (a typo is caught, and nothing
unknown ever reaches a driver), a *restricted* one is refused for everyone but administrators, and
an *internal* one is written only by the service into the stored template (a disk's path, its
checksum, its persistence) and refused from every request. The docs (``docs/security.md``), the
CLI (``vocloud vm attributes``) and the REST API (``GET /api/v1/attributes``) all show this table.

Paths: a top-level attribute is its name (``VIRTFS``); an attribute inside a vector is
``VECTOR/NAME`` (``NIC/BRIDGE``, ``DISK/PERSISTENT``). ``CONTEXT`` holds the user's own variables,
so its keys are free; a site may still restrict some (``CONTEXT/SSH_PUBLIC_KEY``) through the
``restricted_attrs`` setting, which can only add restrictions, never lift one.

Everything here is pure: the service layer calls :func:`check_template` on the user's template
before anything is looked up or created.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from vocloud.errors import Forbidden, InvalidInput
from vocloud.model.template import Template

__all__ = [
    "CATALOGUE",
    "FREE_VECTORS",
    "Attribute",
    "catalogue_rows",
    "check_template",
    "internal_attributes",
    "parse_restricted_setting",
    "restricted_violations",
    "template_paths",
    "unknown_attributes",
]


@dataclass(frozen=True, slots=True)
class Attribute:
    """One entry of the catalogue.

    ``restricted``: administrators only. ``internal``: written by vocloud only, refused from
    every request (administrators' included: the service would overwrite it anyway, and a
    silently ignored value is a lie). ``consumer``: who reads it, so that nothing is accepted
    that no part of vocloud uses.
    """

    name: str  # "CPU" or "NIC/BRIDGE"
    scope: str  # "VM" for top level, else the vector: "DISK", "NIC", "CONTEXT"
    restricted: bool
    description: str
    consumer: str
    internal: bool = False

    @property
    def access(self) -> str:
        if self.internal:
            return "internal"
        return "admin" if self.restricted else "user"


def _a(name: str, restricted: bool, description: str, consumer: str, internal: bool = False) -> Attribute:
    scope = name.split("/", 1)[0] if "/" in name else "VM"
    return Attribute(name, scope, restricted, description, consumer, internal)


USER, ADMIN = False, True

#: Every attribute vocloud understands, in the order the docs show them.
CATALOGUE: tuple[Attribute, ...] = (
    # -- top level
    _a("NAME", USER, "VM name (letters, digits, '.', '_', '-'; at most 128)", "service"),
    _a("DESCRIPTION", USER, "free text kept with the VM", "service"),
    _a("CPU", USER, "physical CPU share, in hundredths (0.01 to 1024; rounded up to 0.01)",
       "scheduler, host capacity, quotas"),
    _a("VCPU", USER, "virtual CPUs the guest sees (1 to 1024; default: CPU rounded up)", "VMM driver"),
    _a("MEMORY", USER, "guest memory: 512, 512M, 2G (MiB without a unit)",
       "scheduler, host capacity, quotas, VMM driver"),
    _a("DISK", USER, "a disk: a vector naming a registered image (repeatable)", "storage driver"),
    _a("NIC", USER, "a network interface: a vector naming a network (repeatable)",
       "network driver, IPAM"),
    _a("CONTEXT", USER, "the guest's context variables (cloud-init seed, context.sh)",
       "context seed builder"),
    _a("WALLTIME", USER, "the VM's known run time (90, 30:00, 2h, 1-00:00:00); only VMs with one "
       "are placed on hosts leased from the batch system, and only if they end before the lease",
       "scheduler"),
    _a("SCHED_REQUIREMENTS", USER, "host requirement expression, e.g. FREE_CPU > 2", "scheduler"),
    _a("SCHED_RANK", USER, "host preference expression, e.g. FREE_MEM", "scheduler"),
    _a("KERNEL_IMAGE", USER, "boot this registered image (name or id, USE right) as the kernel",
       "service (resolves it to KERNEL)"),
    _a("INITRD_IMAGE", USER, "this registered image (name or id, USE right) as the initrd",
       "service (resolves it to INITRD)"),
    _a("READY_MARKER", USER, "console text that says the guest is up (default VOCLOUD-READY)",
       "qemu driver"),
    _a("SIM_BOOT", USER, "simulated boot outcome: ok, fail or hang", "sim driver"),
    _a("OS", USER, "OpenNebula's boot vector, mapped to the flat attributes (model/os_boot.py)",
       "service"),
    _a("OS/KERNEL_DS", USER, 'kernel image: $FILE[IMAGE_ID=n] or $FILE[IMAGE="name"] (USE right)',
       "service (as KERNEL_IMAGE)"),
    _a("OS/INITRD_DS", USER, "initrd image, as OS/KERNEL_DS", "service (as INITRD_IMAGE)"),
    _a("OS/KERNEL", ADMIN, "host path of a kernel (as KERNEL)", "qemu driver (-kernel)"),
    _a("OS/INITRD", ADMIN, "host path of an initrd (as INITRD)", "qemu driver (-initrd)"),
    _a("OS/KERNEL_CMD", ADMIN, "kernel command line (as KERNEL_CMD)", "qemu driver (-append)"),
    _a("OS/ROOT", ADMIN, "root device, added to the command line as root=/dev/ROOT",
       "qemu driver (-append)"),
    _a("KERNEL", ADMIN, "host path of a kernel to boot directly", "qemu driver (-kernel)"),
    _a("INITRD", ADMIN, "host path of an initrd", "qemu driver (-initrd)"),
    _a("KERNEL_CMD", ADMIN, "kernel command line", "qemu driver (-append)"),
    _a("MACHINE", ADMIN, "qemu machine type (microvm, pc, q35)", "qemu driver (-M)"),
    _a("ACCEL", ADMIN, "accelerator (kvm or tcg), overriding the host's probe", "qemu driver (-accel)"),
    _a("VIRTFS", ADMIN, "host directory exported read-only to the guest over 9p",
       "qemu driver (-fsdev)"),
    _a("VMID", ADMIN, "the VM's id", "service", internal=True),
    # -- DISK
    _a("DISK/IMAGE", USER, "image name (USE right needed)", "service"),
    _a("DISK/IMAGE_ID", USER, "image id (USE right needed)", "service"),
    _a("DISK/TARGET", USER, "guest device name: vda, vdb, ...", "VMM and storage drivers"),
    _a("DISK/SIZE", USER, "grow the disk to this size (512M, 10G)", "storage driver"),
    _a("DISK/SOURCE", ADMIN, "the image's path on the front-end", "storage driver", internal=True),
    _a("DISK/FORMAT", ADMIN, "the image's format (qcow2, raw)", "storage and VMM drivers", internal=True),
    _a("DISK/SHA256", ADMIN, "the image's recorded checksum", "storage driver (cache)", internal=True),
    _a("DISK/PERSISTENT", ADMIN, "the image's own persistence flag; a disk line cannot set it",
       "storage driver", internal=True),
    # -- NIC
    _a("NIC/NETWORK", USER, "network name (USE right needed)", "service, IPAM"),
    _a("NIC/NETWORK_ID", USER, "network id (USE right needed)", "service, IPAM"),
    _a("NIC/IP", USER, "ask for this address of the network", "IPAM"),
    _a("NIC/MODEL", USER, "NIC model; only virtio is offered", "qemu driver"),
    _a("NIC/BRIDGE", ADMIN, "host bridge, when the network names none", "network driver"),
    _a("NIC/MAC", ADMIN, "MAC address, if free on the segment (else the lease's)", "IPAM, network driver"),
    _a("NIC/VLAN_ID", ADMIN, "802.1Q VLAN id (set from the network)", "network driver"),
    _a("NIC/PHYDEV", ADMIN, "host physical device (set from the network)", "network driver"),
    _a("NIC/NIC_ID", ADMIN, "the NIC's index", "service", internal=True),
    _a("NIC/GATEWAY", ADMIN, "the network's gateway (set from the network)", "context (ETHn_GATEWAY)",
       internal=True),
    _a("NIC/DNS", ADMIN, "the network's DNS servers (set from the network)", "context (ETHn_DNS)",
       internal=True),
    _a("NIC/NETWORK_MASK", ADMIN, "the network's mask (set from the network)", "context (ETHn_MASK)",
       internal=True),
)

#: Vectors whose keys are the user's own names, not vocloud's (any identifier is accepted).
FREE_VECTORS = frozenset({"CONTEXT"})

_BY_PATH: dict[str, Attribute] = {a.name: a for a in CATALOGUE}
_VECTORS = frozenset({"DISK", "NIC", "CONTEXT"})


def template_paths(t: Template) -> Iterator[str]:
    """Every attribute path a template uses, each once, in template order."""
    seen: set[str] = set()
    for key, value in t.attrs.items():
        paths = [key]
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                paths += [f"{key}/{sub}" for sub in item]
        for path in paths:
            if path not in seen:
                seen.add(path)
                yield path


def _vector_of(path: str) -> str | None:
    return path.split("/", 1)[0] if "/" in path else None


def unknown_attributes(t: Template) -> list[str]:
    """Paths vocloud does not know, e.g. ``["FOO", "DISK/CACHE"]``: refused for everyone.

    A vector under a scalar-only name (``CPU=[...]``) is unknown as a whole; a free vector's
    keys (``CONTEXT/...``) are always known.
    """
    out = []
    for path in template_paths(t):
        vector = _vector_of(path)
        if vector is not None:
            if vector in FREE_VECTORS or vector not in _VECTORS:
                continue  # a free key, or a vector that is itself unknown (reported below)
            if path not in _BY_PATH:
                out.append(path)
        elif path not in _BY_PATH:
            out.append(path)
    return out


def internal_attributes(t: Template) -> list[str]:
    """Paths only vocloud writes (a disk's SOURCE, PERSISTENT, ...): refused in every request."""
    return [p for p in template_paths(t) if (a := _BY_PATH.get(p)) is not None and a.internal]


def restricted_violations(t: Template, extra: frozenset[str] = frozenset()) -> list[str]:
    """Paths of ``t`` that only administrators may set (``"VIRTFS"``, ``"NIC/BRIDGE"``).

    ``extra`` is the site's own additions (``restricted_attrs`` setting), e.g.
    ``frozenset({"CONTEXT/SSH_PUBLIC_KEY", "NIC/IP"})``. An empty list means a plain user may
    submit ``t`` as far as restrictions go. Internal attributes are not listed here (they are
    refused for everyone, see :func:`internal_attributes`).
    """
    out = []
    for path in template_paths(t):
        entry = _BY_PATH.get(path)
        if (entry is not None and entry.restricted and not entry.internal) or path in extra:
            out.append(path)
    return out


def _suggest(path: str) -> str:
    vector = _vector_of(path)
    if vector is not None:
        pool = [a.name for a in CATALOGUE if a.scope == vector and not a.internal]
    else:
        pool = [a.name for a in CATALOGUE if a.scope == "VM" and not a.internal]
    close = difflib.get_close_matches(path, pool, n=1, cutoff=0.7)
    return f" (did you mean {close[0]}?)" if close else ""


def check_template(t: Template, is_admin: bool, extra: frozenset[str] = frozenset()) -> None:
    """Refuse ``t`` if it holds an unknown, an internal or (for non-administrators) a restricted
    attribute; the error names the first offending path. Unknown comes first: a typo is a
    typo for everyone, and says so rather than "forbidden"."""
    unknown = unknown_attributes(t)
    if unknown:
        path = unknown[0]
        more = f" (and {', '.join(unknown[1:])})" if len(unknown) > 1 else ""
        raise InvalidInput(
            f"unknown attribute {path}{_suggest(path)}{more}; `vocloud vm attributes` lists those "
            "vocloud understands", attribute=path)
    internal = internal_attributes(t)
    if internal:
        path = internal[0]
        why = ("persistence is a property of the image, set by its owner"
               if path == "DISK/PERSISTENT" else "vocloud sets it itself")
        raise InvalidInput(f"attribute {path} cannot be given: {why}", attribute=path)
    if not is_admin:
        restricted = restricted_violations(t, extra)
        if restricted:
            raise Forbidden(f"attribute {restricted[0]} is restricted to administrators"
                            + (f" (so are {', '.join(restricted[1:])})" if len(restricted) > 1 else ""),
                            attribute=restricted[0])


def parse_restricted_setting(text: str) -> frozenset[str]:
    """The ``restricted_attrs`` setting (``"CONTEXT/SSH_PUBLIC_KEY, NIC/IP"``) as a set of paths.

    Each entry must be a catalogue path or a ``CONTEXT/<NAME>``, so a misspelt entry fails the
    daemon's start instead of silently restricting nothing.
    """
    out: set[str] = set()
    for raw in text.split(","):
        path = raw.strip().upper()
        if not path:
            continue
        vector = _vector_of(path)
        name_ok = path in _BY_PATH or (
            vector in FREE_VECTORS and path.split("/", 1)[1].replace("_", "a").isalnum()
            and path.split("/", 1)[1].isascii() and not path.split("/", 1)[1][0].isdigit())
        if not name_ok:
            raise InvalidInput(f"setting restricted_attrs: unknown attribute {path}{_suggest(path)}",
                               attribute=path)
        out.add(path)
    return frozenset(out)


def catalogue_rows(entries: Iterable[Attribute] = CATALOGUE) -> list[dict[str, object]]:
    """The table as JSON-ready rows (REST ``GET /attributes``, ``vocloud vm attributes --json``)."""
    return [{"name": a.name, "scope": a.scope, "access": a.access, "restricted": a.restricted,
             "internal": a.internal, "description": a.description, "consumer": a.consumer}
            for a in entries]
