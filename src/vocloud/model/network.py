"""Virtual network definitions and address arithmetic, pure (no store, no I/O).

Why a module of its own: the rules that keep two VOs' VMs off each other's addresses — address
ranges on one L2 segment never overlap, MACs on one segment never collide, a reservation is a
free contiguous block of its parent — are decisions about sets of integers. They are written
once here, tested alone, and the service layer applies them inside its write transaction.

Addresses are IPv4 as integers. A range is ``[start, start + size)``; its MACs follow OpenNebula
(``02:00`` + the four address bytes) unless a FIXED lease names its own MAC (a range of one).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from vocloud.errors import InvalidInput
from vocloud.model.template import Template

MAX_RANGE = 65536
VLAN_MIN, VLAN_MAX = 1, 4094
#: attributes of a network template that place it on the host's wiring: administrators only
WIRING_ATTRS = ("BRIDGE", "VLAN_ID", "PHYDEV", "VN_MAD")
#: network drivers (OpenNebula's ``VN_MAD``): ``bridge`` puts untagged NICs on a Linux bridge;
#: ``802.1Q`` gives each VLAN its own bridge with the VLAN device ``PHYDEV.VLAN_ID`` as uplink
VN_BRIDGE, VN_8021Q = "bridge", "802.1Q"
VN_MADS = (VN_BRIDGE, VN_8021Q)
#: NIC attributes only an administrator may write (the network decides them for everyone else)
NIC_RESTRICTED = ("BRIDGE", "MAC", "VLAN_ID", "PHYDEV")

_INT_RE = re.compile(r"\d+", re.ASCII)
# a Linux interface name: at most 15 bytes, no '/', ':' or whitespace; '.' and '..' are not names
_IFNAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}", re.ASCII)
_MAC_RE = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){5}", re.ASCII)
_DERIVED_MAC_BASE = 0x0200 << 32


def ip_to_int(text: str, attribute: str = "IP") -> int:
    try:
        return int(ipaddress.IPv4Address(text.strip()))
    except (ipaddress.AddressValueError, AttributeError):
        raise InvalidInput(f"{text!r} is not an IPv4 address", attribute=attribute, value=text) from None


def int_to_ip(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


def mac_for(ip: int) -> str:
    """The MAC an address gets unless a FIXED lease names one: ``02:00`` + the address bytes."""
    return mac_text(_DERIVED_MAC_BASE | ip)


def mac_text(value: int) -> str:
    return ":".join(f"{b:02x}" for b in value.to_bytes(6, "big"))


def mac_to_int(text: str, attribute: str = "MAC") -> int:
    mac = text.strip().lower()
    if not _MAC_RE.fullmatch(mac):
        raise InvalidInput(f"{attribute} {text!r} is not of the form 02:00:0a:00:00:01",
                           attribute=attribute, value=text)
    value = int(mac.replace(":", ""), 16)
    if value >> 40 & 1:
        raise InvalidInput(f"{attribute} {text!r} is a multicast address; a NIC needs a unicast MAC",
                           attribute=attribute, value=text)
    return value


@dataclass(frozen=True, slots=True)
class Range:
    """``size`` addresses from ``start``; ``mac`` set only for a FIXED lease (size 1)."""

    start: int
    size: int
    mac: str | None = None

    @property
    def end(self) -> int:
        return self.start + self.size

    def mac_span(self) -> tuple[int, int]:
        """The MACs this range hands out, as ``[lo, hi)`` in 48-bit integer space."""
        if self.mac is not None:
            lo = int(self.mac.replace(":", ""), 16)
            return lo, lo + 1
        return _DERIVED_MAC_BASE | self.start, (_DERIVED_MAC_BASE | self.start) + self.size

    def describe(self) -> str:
        last = int_to_ip(self.end - 1)
        return int_to_ip(self.start) if self.size == 1 else f"{int_to_ip(self.start)}-{last}"


@dataclass(frozen=True, slots=True)
class NicAddressing:
    """What a guest on this network needs besides its address: mask, gateway, DNS servers.

    Copied onto every NIC leased from the network (``NIC/NETWORK_MASK``, ``NIC/GATEWAY``,
    ``NIC/DNS``, attributes only the service writes) and from there into the guest's context as
    OpenNebula's ``ETHn_*`` variables and cloud-init's network-config.
    """

    mask: str = ""
    gateway: str = ""
    dns: str = ""

    def nic_attrs(self) -> dict[str, str]:
        return {k: v for k, v in (("NETWORK_MASK", self.mask), ("GATEWAY", self.gateway),
                                  ("DNS", self.dns)) if v}


MAX_DNS = 4


def parse_addressing(t: Template, ranges: Sequence[Range] = ()) -> NicAddressing:
    """``NETWORK_MASK``, ``GATEWAY`` and ``DNS`` of a network template, checked (a guest gets
    them verbatim, so each must be an address and nothing else). A RANGED network's mask is
    its subnet's when not given."""
    mask_text = (t.get("NETWORK_MASK") or "").strip()
    mask = ""
    if mask_text:
        try:
            mask = str(ipaddress.IPv4Network(f"0.0.0.0/{mask_text}").netmask)
        except ValueError:
            raise InvalidInput(f"NETWORK_MASK {mask_text!r} is not a netmask", attribute="NETWORK_MASK",
                               value=mask_text) from None
    elif (t.get("TYPE") or "").strip().upper() == "RANGED" and ranges:
        mask = str(ipaddress.IPv4Network(f"{int_to_ip(ranges[0].start)}/{_ranged_prefix(t)}",
                                         strict=False).netmask)
    gateway = (t.get("GATEWAY") or "").strip()
    if gateway:
        gateway = int_to_ip(ip_to_int(gateway, "GATEWAY"))
    servers = (t.get("DNS") or "").split()
    if len(servers) > MAX_DNS:
        raise InvalidInput(f"DNS names at most {MAX_DNS} servers, got {len(servers)}", attribute="DNS")
    dns = " ".join(int_to_ip(ip_to_int(x, "DNS")) for x in servers)
    return NicAddressing(mask=mask, gateway=gateway, dns=dns)


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    """A network template, typed and checked (the name is checked by the service)."""

    name: str
    bridge: str
    vlan_id: int | None
    phydev: str
    public: bool
    group: str | None
    ranges: tuple[Range, ...]
    addressing: NicAddressing = field(default_factory=lambda: NicAddressing())
    vn_mad: str = VN_BRIDGE
    vn_mad_written: bool = False  # VN_MAD in the template (else implied by VLAN_ID)

    def wiring(self) -> list[str]:
        """The administrator-only attributes this template sets, for a refusal message."""
        return [a for a, v in (("BRIDGE", self.bridge), ("VLAN_ID", self.vlan_id),
                               ("PHYDEV", self.phydev), ("VN_MAD", self.vn_mad_written)) if v]


def _int_attr(text: str, attribute: str, lo: int, hi: int) -> int:
    if not _INT_RE.fullmatch(text.strip()):
        raise InvalidInput(f"{attribute} must be an integer, got {text!r}", attribute=attribute, value=text)
    value = int(text.strip())
    if not lo <= value <= hi:
        raise InvalidInput(f"{attribute} must be between {lo} and {hi}, got {value}",
                           attribute=attribute, value=text)
    return value


def check_ifname(text: str, attribute: str) -> str:
    """A bridge or physical device name as the kernel accepts it (so it never reaches ``ip``
    as an option or a path)."""
    name = text.strip()
    if not _IFNAME_RE.fullmatch(name) or name in (".", "..") or name.startswith("-"):
        raise InvalidInput(f"{attribute} must be an interface name (1-15 letters, digits, '.', '_', "
                           f"'-', not starting with '-'), got {text!r}", attribute=attribute, value=text)
    return name


def vlan_bridge(vlan_id: int) -> str:
    """The bridge of an 802.1Q network that names none: ``vcbr.<VLAN_ID>`` (OpenNebula's
    ``onebr.<VLAN_ID>``), so each VLAN is its own bridge and so its own L2 segment."""
    return f"vcbr.{vlan_id}"


def vlan_device(phydev: str, vlan_id: int) -> str:
    """The 802.1Q device on ``phydev`` for one VLAN, named as OpenNebula names it."""
    return f"{phydev}.{vlan_id}"


def network_driver(vlan_id: int | None) -> str:
    """The driver of a stored network: 802.1Q exactly when it has a VLAN (:func:`parse_vn_mad`
    keeps the two in step, so no column is needed for it)."""
    return VN_8021Q if vlan_id is not None else VN_BRIDGE


def parse_vn_mad(text: str | None, vlan_id: int | None) -> str:
    """``VN_MAD`` checked against ``VLAN_ID``. Why they must agree: the segment a network's
    addresses are checked on is its bridge *and* VLAN, so a VLAN the wire does not carry would
    let two networks share addresses on one real segment. Without ``VN_MAD`` a network with a
    ``VLAN_ID`` is 802.1Q (how networks made before the attribute existed are wired)."""
    if text is None or not text.strip():
        return network_driver(vlan_id)
    want = text.strip()
    mad = next((m for m in VN_MADS if m.lower() == want.lower()), None)
    if mad is None:
        raise InvalidInput(f"VN_MAD must be one of {', '.join(VN_MADS)}, got {text!r} (vocloud "
                           "filters every tap itself: no fw/ebtables/ovswitch/vxlan drivers)",
                           attribute="VN_MAD", value=text)
    if mad == VN_8021Q and vlan_id is None:
        raise InvalidInput("VN_MAD=802.1Q needs a VLAN_ID (1-4094)", attribute="VLAN_ID", value="")
    if mad == VN_BRIDGE and vlan_id is not None:
        raise InvalidInput(f"VN_MAD=bridge does not tag frames, so VLAN_ID={vlan_id} would not be "
                           "a segment of its own; use VN_MAD=802.1Q", attribute="VLAN_ID",
                           value=str(vlan_id))
    return mad


def parse_network(t: Template) -> NetworkSpec:
    """``NAME``, ``BRIDGE``, ``VLAN_ID``, ``PHYDEV``, ``VN_MAD``, ``PUBLIC``, ``GROUP`` and the
    address ranges. An 802.1Q network without ``BRIDGE`` gets :func:`vlan_bridge`."""
    bridge = t.get("BRIDGE") or ""
    phydev = t.get("PHYDEV") or ""
    vlan = t.get("VLAN_ID")
    vlan_id = _int_attr(vlan, "VLAN_ID", VLAN_MIN, VLAN_MAX) if vlan else None
    vn_mad = parse_vn_mad(t.get("VN_MAD"), vlan_id)
    bridge = check_ifname(bridge, "BRIDGE") if bridge else ""
    if vn_mad == VN_8021Q and vlan_id is not None and not bridge:
        bridge = vlan_bridge(vlan_id)
    phydev = check_ifname(phydev, "PHYDEV") if phydev else ""
    if phydev and vlan_id is not None and len(vlan_device(phydev, vlan_id)) > 15:
        raise InvalidInput(f"the VLAN device {vlan_device(phydev, vlan_id)!r} would be longer than "
                           "15 characters (Linux's limit); use a shorter PHYDEV", attribute="PHYDEV",
                           value=phydev)
    ranges = tuple(parse_ranges(t))
    return NetworkSpec(
        name=(t.get("NAME") or "").strip(),
        bridge=bridge,
        vlan_id=vlan_id,
        vn_mad=vn_mad,
        vn_mad_written=bool((t.get("VN_MAD") or "").strip()),
        phydev=phydev,
        public=bool(t.get_bool("PUBLIC", False)),
        group=(t.get("GROUP") or "").strip() or None,
        ranges=ranges,
        addressing=parse_addressing(t, ranges),
    )


#: OpenNebula 3.x ``NETWORK_SIZE`` classes, as prefix lengths
_SIZE_CLASSES = {"A": 8, "B": 16, "C": 24}


def _ranged_prefix(t: Template) -> int:
    """The subnet prefix of a RANGED network (see :func:`ranged`)."""
    address = (t.get("NETWORK_ADDRESS") or "").strip()
    if not address:
        raise InvalidInput("a TYPE=RANGED network needs NETWORK_ADDRESS, e.g. 192.168.0.0",
                           attribute="NETWORK_ADDRESS")
    size, mask = (t.get("NETWORK_SIZE") or "").strip().upper(), (t.get("NETWORK_MASK") or "").strip()
    prefix: int | None = None
    if "/" in address:
        _, _, bits = address.partition("/")
        prefix = _int_attr(bits, "NETWORK_ADDRESS prefix", 1, 30)
    elif size in _SIZE_CLASSES:
        prefix = _SIZE_CLASSES[size]
    elif size:
        hosts = _int_attr(size, "NETWORK_SIZE", 2, 2**30)
        prefix = 32 - max(2, (hosts + 1).bit_length())  # hosts + network + broadcast fit
    elif mask:
        try:
            prefix = ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
        except ValueError:
            raise InvalidInput(f"NETWORK_MASK {mask!r} is not a netmask", attribute="NETWORK_MASK",
                               value=mask) from None
    if prefix is None:
        raise InvalidInput("a TYPE=RANGED network needs NETWORK_SIZE (A, B, C or a number of hosts) "
                           "or NETWORK_MASK", attribute="NETWORK_SIZE")
    if not 1 <= prefix <= 30:
        raise InvalidInput(f"a RANGED network of prefix /{prefix} has no usable addresses",
                           attribute="NETWORK_SIZE", value=size or mask)
    return prefix


def ranged(t: Template) -> Range:
    """OpenNebula 3.x's ``TYPE = RANGED`` network as one address range.

    ``NETWORK_ADDRESS`` (optionally ``/prefix``) and ``NETWORK_SIZE`` (``A``/``B``/``C`` or a
    number of hosts, rounded up to a whole subnet as OpenNebula did) or ``NETWORK_MASK`` give the
    subnet; its usable addresses (network and broadcast excluded) are the range, narrowed by
    ``IP_START``/``IP_END`` when given. Sites moving from OpenNebula keep their templates.
    """
    address = (t.get("NETWORK_ADDRESS") or "").strip().partition("/")[0]
    prefix = _ranged_prefix(t)
    base = ip_to_int(address, "NETWORK_ADDRESS")
    block = 1 << (32 - prefix)
    if base % block:
        raise InvalidInput(f"NETWORK_ADDRESS {address} is not the first address of a /{prefix} subnet",
                           attribute="NETWORK_ADDRESS", value=address)
    first, last = base + 1, base + block - 2
    start_text, end_text = t.get("IP_START"), t.get("IP_END")
    if start_text:
        first = ip_to_int(start_text, "IP_START")
    if end_text:
        last = ip_to_int(end_text, "IP_END")
    if not base < first <= last < base + block - 1:
        raise InvalidInput(f"IP_START..IP_END must lie inside {int_to_ip(base)}/{prefix} and not be "
                           "empty", attribute="IP_START")
    count = last - first + 1
    if count > MAX_RANGE:
        raise InvalidInput(f"a RANGED network of {count} addresses is larger than {MAX_RANGE}; "
                           "narrow it with IP_START/IP_END or NETWORK_SIZE", attribute="NETWORK_SIZE")
    return Range(first, count)


def parse_ranges(t: Template) -> list[Range]:
    """Address ranges of a network template: ``AR=[TYPE=IP4, IP=..., SIZE=...]``, FIXED
    ``LEASES=[IP=..., MAC=...]`` (each a range of one with its own MAC) and OpenNebula 3.x's
    ``TYPE=RANGED`` (:func:`ranged`)."""
    out: list[Range] = []
    kind = (t.get("TYPE") or "").strip().upper()
    if kind == "RANGED":
        out.append(ranged(t))
    elif kind not in ("", "FIXED"):
        raise InvalidInput(f"network TYPE {kind} is not known; RANGED or FIXED (or AR=[...] ranges)",
                           attribute="TYPE", value=kind)
    for ar in t.vectors("AR"):
        kind = ar.get("TYPE", "IP4").upper()
        if kind not in ("IP4", "ETHER"):
            raise InvalidInput(f"AR TYPE {kind} is not supported (IP4 only)", attribute="AR", value=ar)
        if "IP" not in ar or "SIZE" not in ar:
            raise InvalidInput("an AR needs IP and SIZE, e.g. AR=[TYPE=IP4, IP=10.0.0.2, SIZE=100]",
                               attribute="AR", value=ar)
        size = _int_attr(ar["SIZE"], "AR SIZE", 1, MAX_RANGE)
        start = ip_to_int(ar["IP"], "AR IP")
        if start + size > 2**32:
            raise InvalidInput(f"AR starting at {ar['IP']} with SIZE {size} runs past 255.255.255.255",
                               attribute="AR", value=ar)
        out.append(Range(start, size))
    seen_macs: set[str] = set()
    for lease in t.vectors("LEASES"):
        if "IP" not in lease:
            raise InvalidInput("a LEASES entry needs an IP", attribute="LEASES", value=lease)
        mac = lease.get("MAC")
        if mac is not None:
            mac = mac_text(mac_to_int(mac, "LEASES MAC"))
            if mac in seen_macs:
                raise InvalidInput(f"LEASES MAC {mac} is given twice", attribute="LEASES", value=lease)
            seen_macs.add(mac)
        out.append(Range(ip_to_int(lease["IP"], "LEASES IP"), 1, mac))
    hit = first_overlap(out, out, same=True)
    if hit is not None:
        raise InvalidInput(f"address ranges overlap at {int_to_ip(hit)}", attribute="AR")
    mac_hit = first_mac_overlap(out, out, same=True)
    if mac_hit is not None:
        raise InvalidInput(f"two addresses of this network would get MAC {mac_text(mac_hit)}",
                           attribute="LEASES")
    return out


def _first_span_overlap(a: Iterable[tuple[int, int]], b: Iterable[tuple[int, int]],
                        same: bool) -> int | None:
    """Lowest point where a ``[lo, hi)`` span of ``a`` meets one of ``b``; with ``same`` the two
    are one list and a span never meets itself.

    A sweep in start order: a span starting at ``x`` meets an earlier span of the other side
    (or of any side, with ``same``) exactly when that side's furthest end so far lies past ``x``,
    and the first such ``x`` is the lowest shared point."""
    spans = sorted([(lo, hi, 0) for lo, hi in a] + ([] if same else [(lo, hi, 1) for lo, hi in b]))
    reach = [-1, -1]  # furthest end seen so far, per side
    for lo, hi, side in spans:
        other = side if same else 1 - side
        if reach[other] > lo:
            return lo
        reach[side] = max(reach[side], hi)
    return None


def first_overlap(a: Sequence[Range], b: Sequence[Range], same: bool = False) -> int | None:
    """The lowest address in a range of ``a`` and a range of ``b`` (None: disjoint)."""
    return _first_span_overlap(((r.start, r.end) for r in a), ((r.start, r.end) for r in b), same)


def first_mac_overlap(a: Sequence[Range], b: Sequence[Range], same: bool = False) -> int | None:
    """The lowest MAC that a range of ``a`` and a range of ``b`` would both hand out."""
    return _first_span_overlap((r.mac_span() for r in a), (r.mac_span() for r in b), same)


def covering(ranges: Iterable[Range], ip: int) -> Range | None:
    for r in ranges:
        if r.start <= ip < r.end:
            return r
    return None


def free_block(ranges: Sequence[Range], taken: Iterable[tuple[int, int]], size: int,
               start: int | None = None) -> int | None:
    """First address of ``size`` contiguous free addresses inside one of ``ranges``.

    ``taken`` are ``[lo, hi)`` spans no longer free (leases, holds, other reservations). With
    ``start`` only the block beginning there is considered. FIXED leases (ranges with their own
    MAC) are never reserved: their MAC belongs to that one address of the parent.
    """
    spans = sorted(taken)
    for r in sorted(ranges, key=lambda r: r.start):
        if r.mac is not None or r.size < size:
            continue
        lo, hi = (r.start, r.end) if start is None else (start, start + size)
        if lo < r.start or hi > r.end:
            continue
        candidate = lo
        for t0, t1 in spans:
            if t1 <= candidate:
                continue
            if t0 >= candidate + size:
                break
            candidate = t1  # the block would meet this span: start after it
            if start is not None:
                return None
        if candidate + size <= hi:
            return candidate
        if start is not None:
            return None
    return None
