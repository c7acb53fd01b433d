"""One region of an EC2-compatible cloud as a vocloud host: its declaration and its decisions.

A host of kind ``ec2`` stands for a whole region (docs/bursting.md). Its administrator-set
attributes say where the region is and what the site may use of it; this module reads them
into a typed :class:`Region` and makes the pure decisions the ``ec2`` driver needs: which of
the cloud's instance types a VM's CPU/MEMORY becomes, which AMI an image becomes, how much of
the region the scheduler may still fill (instances, cores, cost per hour), and how long a
region rests after the cloud said "slow down" or "no capacity". No I/O, no clock: the driver
passes the time in.

Credentials are never an attribute: ``EC2_CREDENTIALS`` *names* a site secret (a file in the
daemon's secrets directory, docs/secrets.md), so host listings, events and logs show the name
only.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from vocloud.errors import InvalidInput
from vocloud.model.instance_types import InstanceType, parse_instance_types
from vocloud.model.secret_refs import check_name

_AMI = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_DEPLOY = re.compile(r"^vc([a-z0-9]{0,16})-(\d{1,12})$")

#: Cloud error codes that mean "this region cannot take more now": the region rests (backoff).
REGION_ERRORS = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "InsufficientInstanceCapacity",
    "InstanceLimitExceeded", "Unavailable", "ServiceUnavailable", "InternalError",
    "VcpuLimitExceeded", "InsufficientCapacity",
})

TAG_INSTALLATION = "vocloud:installation"
TAG_VM = "vocloud:vm"
TAG_DEPLOY = "vocloud:deploy-id"


@dataclass(frozen=True, slots=True)
class Region:
    """What an ``ec2`` host's attributes declare (validated; see :func:`region_from`)."""

    endpoint: str
    region: str
    credentials: str  # the name of a site secret, never the key itself
    types: Mapping[str, InstanceType]
    images: Mapping[str, str] = field(default_factory=dict)  # our image id ("*": any) -> AMI
    max_instances: int = 0  # 0: no limit of its own
    max_cores: float = 0.0  # 0: no limit of its own
    price_core_hour: float = 0.0  # the cloud's price per core-hour (for the ceiling and reports)
    cost_ceiling_hour: float = 0.0  # 0: no ceiling
    boot_timeout: float = 600.0  # an instance not running after this long has failed
    leak_grace: float = 300.0  # a tagged instance the store does not know lives this long
    backoff_base: float = 30.0
    backoff_max: float = 900.0
    send_context: bool = False  # pass the VM's context (may hold site secrets) as user data


def _float(attrs: Mapping[str, str], key: str, default: float) -> float:
    raw = str(attrs.get(key, "")).strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise InvalidInput(f"{key} must be a number, not {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(f"{key} must be a number >= 0, not {raw!r}")
    return value


def parse_images(text: str) -> dict[str, str]:
    """``IMAGE_ID=AMI, ...`` (``*=AMI``: every other image) -> the map."""
    out: dict[str, str] = {}
    for raw in text.replace("\n", ",").split(","):
        entry = raw.strip()
        if not entry:
            continue
        key, sep, ami = (p.strip() for p in entry.partition("="))
        if not sep or not (key == "*" or key.isdigit()) or not _AMI.match(ami):
            raise InvalidInput(f"EC2_IMAGES: {entry!r} is not IMAGE_ID=AMI (or *=AMI)")
        out[key] = ami
    return out


def region_from(name: str, attrs: Mapping[str, str]) -> Region:
    """The host's attributes -> its :class:`Region`; errors name the attribute to fix."""
    endpoint = str(attrs.get("EC2_ENDPOINT", "")).strip()
    if not endpoint.startswith(("http://", "https://")) or any(c.isspace() for c in endpoint):
        raise InvalidInput(f"ec2 host {name}: EC2_ENDPOINT must be an http(s) URL, not {endpoint!r}")
    region = str(attrs.get("EC2_REGION", "")).strip()
    if not _REGION.match(region):
        raise InvalidInput(f"ec2 host {name}: EC2_REGION must name a region, not {region!r}")
    cred = str(attrs.get("EC2_CREDENTIALS", "")).strip()
    if not cred:
        raise InvalidInput(f"ec2 host {name}: EC2_CREDENTIALS must name a site secret "
                           "(docs/secrets.md) that holds 'ACCESS_KEY_ID SECRET_ACCESS_KEY'")
    check_name(cred)
    types_text = str(attrs.get("EC2_TYPES", "")).strip()
    if not types_text:
        raise InvalidInput(f"ec2 host {name}: EC2_TYPES must map the cloud's instance types, "
                           "e.g. t3.micro=1:1024:1, t3.medium=2:4096")
    try:
        types = parse_instance_types(types_text)
        images = parse_images(str(attrs.get("EC2_IMAGES", "")))
        return Region(
            endpoint=endpoint, region=region, credentials=cred, types=types, images=images,
            max_instances=int(_float(attrs, "EC2_MAX_INSTANCES", 0)),
            max_cores=_float(attrs, "EC2_MAX_CORES", 0),
            price_core_hour=_float(attrs, "EC2_PRICE_CORE_HOUR", 0),
            cost_ceiling_hour=_float(attrs, "EC2_COST_CEILING_HOUR", 0),
            boot_timeout=_float(attrs, "EC2_BOOT_TIMEOUT", 600) or 600,
            leak_grace=_float(attrs, "EC2_LEAK_GRACE", 300),
            backoff_base=_float(attrs, "EC2_BACKOFF", 30) or 30,
            backoff_max=_float(attrs, "EC2_BACKOFF_MAX", 900) or 900,
            send_context=str(attrs.get("EC2_CONTEXT", "")).strip().lower() in ("yes", "true", "1"),
        )
    except InvalidInput as exc:
        raise InvalidInput(f"ec2 host {name}: {exc.message}") from None


def pick_type(region: Region, cpu: float, vcpu: int, memory_mib: int) -> InstanceType:
    """The cheapest-looking type that holds the VM: fewest cores, then least memory, then name."""
    fits = [t for t in region.types.values()
            if t.vcpu >= vcpu and t.cpu + 1e-9 >= cpu and t.memory_mb >= memory_mib]
    if not fits:
        raise InvalidInput(f"no instance type of {region.region} holds CPU={cpu:g} VCPU={vcpu} "
                           f"MEMORY={memory_mib}; EC2_TYPES offers "
                           + ", ".join(f"{t.name}={t.cpu:g}:{t.memory_mb}" for t in region.types.values()))
    return min(fits, key=lambda t: (t.vcpu, t.cpu_centi, t.memory_mb, t.name))


def pick_ami(region: Region, image_id: int | None) -> str:
    ami = region.images.get(str(image_id)) if image_id is not None else None
    ami = ami or region.images.get("*")
    if not ami:
        raise InvalidInput(f"image {image_id} has no AMI in {region.region}: add it to EC2_IMAGES "
                           "(IMAGE_ID=AMI or *=AMI)")
    return ami


def cores_allowed(region: Region, total_cpu_attr: float) -> float:
    """The cores the scheduler may fill in this region: the smallest of the declared capacity
    (TOTAL_CPU), EC2_MAX_CORES and what the hourly cost ceiling pays for."""
    limits = [c for c in (total_cpu_attr, region.max_cores) if c > 0]
    if region.cost_ceiling_hour > 0 and region.price_core_hour > 0:
        limits.append(math.floor(region.cost_ceiling_hour / region.price_core_hour * 100) / 100)
    return min(limits) if limits else 0.0


def region_room(region: Region, total_cpu_attr: float, used_cores: float, instances: int,
                resting: bool) -> float:
    """The total cores to report for the region this cycle. A resting region (backoff) or one
    at its instance limit reports its used cores as its total: no room, so the scheduler keeps
    VMs on the site (or pending) instead of failing them against the cloud."""
    allowed = cores_allowed(region, total_cpu_attr)
    if resting or (region.max_instances and instances >= region.max_instances):
        return min(used_cores, allowed) if allowed else used_cores
    return allowed


def backoff_delay(region: Region, failures: int) -> float:
    """Seconds a region rests after ``failures`` region errors in a row (doubling, capped)."""
    if failures <= 0:
        return 0.0
    return float(min(region.backoff_max, region.backoff_base * 2 ** min(failures - 1, 20)))


def installation_of(deploy_id: str) -> tuple[str, int]:
    """``vc<tag>-<vm id>`` -> (tag, vm id); anything else is not one of vocloud's deploy ids."""
    m = _DEPLOY.match(deploy_id)
    if not m:
        raise InvalidInput(f"{deploy_id!r} is not a vocloud deploy id (vc<tag>-<vm id>)")
    return m.group(1), int(m.group(2))


def hourly_cost(region: Region, cores: float) -> float:
    return round(cores * region.price_core_hour, 4)
