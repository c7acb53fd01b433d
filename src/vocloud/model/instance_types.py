"""Instance types: named VM sizes that protocol front-ends offer instead of CPU/MEMORY.

EC2's ``InstanceType``, OCCI's ``/instance_type`` and OpenNebula's own instance types all name a
size; a request that names one becomes the same CPU, VCPU and MEMORY attributes a template would
carry, so the service layer checks and charges it exactly like any other VM. The administrator
defines them with one setting (``instance_types`` in ``vocloud.toml`` or
``VOCLOUD_INSTANCE_TYPES``)::

    small=1:1024, medium=4:4096, large=8:8192, gpu.big=16:65536:32

Each entry is ``NAME=CPU:MEMORY_MB[:VCPU]``; CPU may be fractional (``0.5``, hundredths at most,
as in templates), VCPU defaults to CPU rounded up. The defaults are OpenNebula's OCCI server's.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from vocloud.errors import InvalidInput
from vocloud.model.vmspec import cpu_centi

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,62}$")
MAX_TYPES = 256


@dataclass(frozen=True, slots=True)
class InstanceType:
    name: str
    cpu_centi: int  # CPU in hundredths of a core, as the VM schema keeps it
    memory_mb: int
    vcpu: int

    @property
    def cpu(self) -> float:
        return self.cpu_centi / 100

    def attributes(self) -> dict[str, str]:
        """The template attributes this size stands for."""
        whole, frac = divmod(self.cpu_centi, 100)
        cpu = str(whole) if frac == 0 else f"{whole}.{frac:02d}".rstrip("0")
        return {"CPU": cpu, "VCPU": str(self.vcpu), "MEMORY": str(self.memory_mb)}


DEFAULT_INSTANCE_TYPES = "small=1:1024, medium=4:4096, large=8:8192"


def parse_instance_types(text: str) -> dict[str, InstanceType]:
    """The setting's text -> types by name, in the order given; an empty text gives the defaults.

    Errors name the entry, so an administrator sees which one to fix when the daemon refuses to
    start.
    """
    text = text.strip() or DEFAULT_INSTANCE_TYPES
    out: dict[str, InstanceType] = {}
    for raw in text.replace("\n", ",").split(","):
        entry = raw.strip()
        if not entry:
            continue
        name, sep, spec = entry.partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name):
            raise InvalidInput(f"instance_types: {entry!r} is not NAME=CPU:MEMORY_MB[:VCPU]")
        if name in out:
            raise InvalidInput(f"instance_types: {name!r} is defined twice")
        parts = [p.strip() for p in spec.split(":")]
        if len(parts) not in (2, 3):
            raise InvalidInput(f"instance_types: {entry!r} is not NAME=CPU:MEMORY_MB[:VCPU]")
        centi = cpu_centi(parts[0], f"instance_types: {name} CPU")
        memory = _positive(parts[1], f"instance_types: {name} MEMORY_MB")
        vcpu = _positive(parts[2], f"instance_types: {name} VCPU") if len(parts) == 3 \
            else max(1, math.ceil(centi / 100))
        out[name] = InstanceType(name=name, cpu_centi=centi, memory_mb=memory, vcpu=vcpu)
        if len(out) > MAX_TYPES:
            raise InvalidInput(f"instance_types: more than {MAX_TYPES} types")
    if not out:
        raise InvalidInput("instance_types: no type defined")
    return out


def _positive(text: str, label: str) -> int:
    if not text.isdigit() or int(text) <= 0 or len(text) > 9:
        raise InvalidInput(f"{label} must be a positive whole number, not {text!r}")
    return int(text)
