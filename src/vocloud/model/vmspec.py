"""The typed VM spec: a template checked for what a VM needs, before anything is created.

Split from ``template.py`` (the language: values, lexer, parser, JSON/TOML readers): this module
is the schema of one kind of template, the VM's, which the service layer builds every request
into (``VMService.create``) and decides on.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction

from vocloud.errors import InvalidInput
from vocloud.model.template import (
    _FLOAT_RE,
    _INT_RE,
    MAX_CPU,
    MAX_MEMORY_MIB,
    Template,
    Vector,
    parse_size_mib,
)
from vocloud.model.walltime import parse_walltime

_NAME_CHARS = re.compile(r"[A-Za-z0-9._-]+")
_MAX_NAME = 128


@dataclass(frozen=True)
class DiskRef:
    """One DISK; ``attrs`` is the whole vector, so drivers can read attributes we do not model."""

    image: str | None
    image_id: int | None
    target: str | None
    size_mib: int | None
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class NicRef:
    """One NIC; ``attrs`` is the whole vector (MAC, MODEL, ... pass through untouched)."""

    network: str | None
    network_id: int | None
    ip: str | None
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class VMTemplate:
    """The one typed, validated VM request every front-end's input becomes.

    Every authorization decision of ``VMService.create`` is made on this object (plus the
    attribute catalogue's check of the template it came from, ``model/attributes.py``); drivers
    later get typed fields derived from the stored template, never raw user attributes.
    ``cpu_centi`` is the CPU share in hundredths, exact (OpenNebula's x100 fixed point): it is
    what capacity and quotas count, so 0.0004 can never become a free VM.
    """

    name: str | None
    cpu: float
    vcpu: int
    memory_mib: int
    disks: tuple[DiskRef, ...]
    nics: tuple[NicRef, ...]
    context: dict[str, str]
    requirements: str | None
    rank: str | None
    template: Template
    cpu_centi: int = 100
    description: str | None = None
    kernel_image: str | None = None  # image name or id, resolved (USE right) by the service
    initrd_image: str | None = None
    kernel: str | None = None  # host paths etc.: administrators only (checked before typing)
    initrd: str | None = None
    kernel_cmd: str | None = None
    machine: str | None = None
    accel: str | None = None
    ready_marker: str | None = None
    virtfs: str | None = None
    sim_boot: str | None = None
    walltime: float | None = None  # WALLTIME, seconds: lets the VM onto leased hosts

    @classmethod
    def from_template(cls, t: Template) -> VMTemplate:
        """Validate and type; ``$NAME``-style context variables are left for instantiation."""
        centi = _vm_cpu_centi(t)
        cpu = centi / 100
        kernel_image, kernel = _one_of(t, "KERNEL_IMAGE", "KERNEL")
        initrd_image, initrd = _one_of(t, "INITRD_IMAGE", "INITRD")
        return cls(
            name=_vm_name(t),
            cpu=cpu,
            vcpu=_vm_vcpu(t, cpu),
            memory_mib=_vm_memory(t),
            disks=tuple(_disk(vector, index) for index, vector in enumerate(t.vectors("DISK"), 1)),
            nics=tuple(_nic(vector, index) for index, vector in enumerate(t.vectors("NIC"), 1)),
            context=t.vector("CONTEXT") or {},
            requirements=t.get("SCHED_REQUIREMENTS") or None,
            rank=t.get("SCHED_RANK") or None,
            template=t.copy(),
            cpu_centi=centi,
            description=t.get("DESCRIPTION"),
            kernel_image=kernel_image,
            initrd_image=initrd_image,
            kernel=_path(t, "KERNEL", kernel),
            initrd=_path(t, "INITRD", initrd),
            kernel_cmd=_line(t, "KERNEL_CMD", 4096),
            machine=_word(t, "MACHINE"),
            accel=_choice(t, "ACCEL", ("kvm", "tcg")),
            ready_marker=_line(t, "READY_MARKER", 256, empty_ok=False),
            virtfs=_path(t, "VIRTFS", t.get("VIRTFS")),
            sim_boot=_choice(t, "SIM_BOOT", ("ok", "fail", "hang")),
            walltime=None if t.get("WALLTIME") is None else parse_walltime(t.get("WALLTIME") or ""),
        )


_WORD = re.compile(r"[A-Za-z0-9._-]+")


def _one_of(t: Template, by_ref: str, by_path: str) -> tuple[str | None, str | None]:
    ref, path = t.get(by_ref) or None, t.get(by_path) or None
    if ref is not None and path is not None:
        raise InvalidInput(f"give {by_ref} or {by_path}, not both", attribute=by_ref)
    return ref, path


def _path(t: Template, key: str, value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith("/") or "\0" in value or "\n" in value:
        raise InvalidInput(f"{key} must be an absolute path, got {value!r}", attribute=key, value=value)
    return value


def _line(t: Template, key: str, limit: int, empty_ok: bool = True) -> str | None:
    value = t.get(key)
    if value is None:
        return None
    if (not value and not empty_ok) or len(value) > limit or not value.isprintable():
        raise InvalidInput(f"{key} must be one line of at most {limit} printable characters",
                           attribute=key, value=value[:80])
    return value


def _word(t: Template, key: str) -> str | None:
    value = t.get(key)
    if value is not None and not _WORD.fullmatch(value):
        raise InvalidInput(f"{key} must be a word (letters, digits, '.', '_', '-'), got {value!r}",
                           attribute=key, value=value)
    return value


def _choice(t: Template, key: str, allowed: tuple[str, ...]) -> str | None:
    value = t.get(key)
    if value is None:
        return None
    if value.lower() not in allowed:
        raise InvalidInput(f"{key} must be one of {', '.join(allowed)}, got {value!r}",
                           attribute=key, value=value)
    return value.lower()


def _vm_name(t: Template) -> str | None:
    name = t.get("NAME")
    if name is None:
        return None
    if not _NAME_CHARS.fullmatch(name):
        raise InvalidInput(
            f"NAME may only use letters, digits, '.', '_' and '-', got {name!r}", attribute="NAME", value=name
        )
    if len(name) > _MAX_NAME:
        raise InvalidInput(
            f"NAME must be at most {_MAX_NAME} characters, got {len(name)}", attribute="NAME", value=name
        )
    return name


def cpu_centi(text: str, label: str = "CPU") -> int:
    """A CPU share in exact hundredths: below 0.01 is refused, anything else rounds *up*.

    Why exact: a float share times 1000 rounded to an integer turned 0.0004 into 0, a VM that
    counts against neither host capacity nor the quota. Fractions of a hundredth round up so a
    share is never free; the text is read as a decimal fraction, never through a float.
    """
    if not _FLOAT_RE.fullmatch(text.strip()):
        raise InvalidInput(f"{label} must be a number, got {text!r}", attribute=label, value=text)
    mantissa, _, exponent = text.strip().lower().partition("e")
    if exponent and abs(int(exponent)) > 30:
        raise InvalidInput(f"{label} is out of range, got {text!r}", attribute=label, value=text)
    value = Fraction(mantissa) * Fraction(10) ** int(exponent or "0")
    if value < Fraction(1, 100):
        raise InvalidInput(f"{label} must be at least 0.01, got {text!r}", attribute=label, value=text)
    return math.ceil(value * 100)


def _vm_cpu_centi(t: Template) -> int:
    text = t.get("CPU")
    if text is None:
        return 100
    centi = cpu_centi(text)
    if centi > MAX_CPU * 100:
        raise InvalidInput(f"CPU must be at most {MAX_CPU}, got {text!r}", attribute="CPU", value=text)
    return centi


def _vm_vcpu(t: Template, cpu: float) -> int:
    text = t.get("VCPU")
    if text is None:
        return math.ceil(cpu)
    if not _INT_RE.fullmatch(text.strip()) or int(text) <= 0:
        raise InvalidInput(f"VCPU must be a positive integer, got {text!r}", attribute="VCPU", value=text)
    if int(text) > MAX_CPU:
        raise InvalidInput(f"VCPU must be at most {MAX_CPU}, got {text!r}", attribute="VCPU", value=text)
    return int(text)


def _vm_memory(t: Template) -> int:
    text = t.get("MEMORY")
    if text is None:
        return 512
    memory = parse_size_mib(text, "MEMORY")
    if memory <= 0:
        raise InvalidInput(f"MEMORY must be greater than 0, got {text!r}", attribute="MEMORY", value=text)
    if memory > MAX_MEMORY_MIB:
        raise InvalidInput(
            f"MEMORY must be at most 16T ({MAX_MEMORY_MIB} MiB), got {text!r}", attribute="MEMORY", value=text
        )
    return memory


def _optional_id(vector: Vector, key: str, label: str) -> int | None:
    text = vector.get(key)
    if text is None:
        return None
    if not _INT_RE.fullmatch(text.strip()) or int(text) < 0:
        raise InvalidInput(
            f"{label} {key} must be an id (0 or more), got {text!r}", attribute=key, value=text
        )
    return int(text)


def _disk(vector: Vector, index: int) -> DiskRef:
    label = f"DISK #{index}"
    image = vector.get("IMAGE") or None
    image_id = _optional_id(vector, "IMAGE_ID", label)
    if image is None and image_id is None:
        raise InvalidInput(f"{label} needs IMAGE or IMAGE_ID", attribute="DISK", value=vector)
    size = vector.get("SIZE")
    return DiskRef(
        image=image,
        image_id=image_id,
        target=vector.get("TARGET") or None,
        size_mib=None if size is None else parse_size_mib(size, f"{label} SIZE"),
        attrs=vector,
    )


def _nic(vector: Vector, index: int) -> NicRef:
    label = f"NIC #{index}"
    network = vector.get("NETWORK") or None
    network_id = _optional_id(vector, "NETWORK_ID", label)
    if network is None and network_id is None:
        raise InvalidInput(f"{label} needs NETWORK or NETWORK_ID", attribute="NIC", value=vector)
    model = vector.get("MODEL")
    if model is not None and model.lower() != "virtio":
        raise InvalidInput(f"{label} MODEL must be virtio (the only NIC model offered), got {model!r}",
                           attribute="NIC/MODEL", value=model)
    ip = vector.get("IP") or None
    if ip is not None:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise InvalidInput(
                f"{label} IP must be an IP address, got {ip!r}", attribute="IP", value=ip
            ) from None
    return NicRef(network=network, network_id=network_id, ip=ip, attrs=vector)
