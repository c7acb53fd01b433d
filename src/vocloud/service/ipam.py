"""IP address management: leases handed out inside the caller's transaction.

The network row is locked (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite write transactions
are already exclusive) and the (network, ip) pair is UNIQUE, so two VMs can never get one
address. MACs follow OpenNebula: ``02:00`` followed by the four bytes of the IPv4 address.

A network's free pool is its ranges minus its leases and holds minus the ranges of its
reservations (child networks, ``vnet reserve``): those addresses belong to the reservation's VO,
and the parent never hands them out. Reservations and the parent's own leases both lock the
parent row, so a block cannot be reserved while a VM of the parent is being given one of its
addresses. Address ranges of networks on one L2 segment never overlap (checked at create, see
:mod:`vocloud.service.networks`), so one address has one owner on a segment.

:func:`lease_nic` is the only way a VM gets a NIC: it leases the address and writes the NIC
attributes from the *network*; a non-administrator's NIC naming a bridge, MAC, VLAN or physical
device is refused here too, whatever the layers above let through.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import bindparam, delete, select
from sqlalchemy.orm import Session

from vocloud.errors import Conflict, Forbidden, InvalidInput, NoCapacity
from vocloud.model.network import (
    NIC_RESTRICTED,
    NicAddressing,
    Range,
    covering,
    int_to_ip,
    ip_to_int,
    mac_for,
    mac_text,
    mac_to_int,
    parse_addressing,
    parse_ranges,
)
from vocloud.model.template import parse_template
from vocloud.store.bulk import execute_dml
from vocloud.store.schema import AddressRange, Lease, Network
from vocloud.store.sets import among

__all__ = [
    "allocate", "hold", "int_to_ip", "ip_to_int", "lease_nic", "lock_network", "mac_for",
    "ranges_of", "release_hold", "release_vm", "reserved_spans", "segment_networks",
]


def lock_network(session: Session, network_id: int) -> Network:
    net = session.scalars(
        select(Network).where(Network.id == network_id).with_for_update()
    ).one()
    return net


def ranges_of(session: Session, network_id: int) -> list[Range]:
    return [Range(ar.ip_start, ar.size, ar.mac) for ar in session.scalars(
        select(AddressRange).where(AddressRange.network_id == network_id).order_by(AddressRange.ip_start))]


def reserved_spans(session: Session, network_id: int) -> list[tuple[int, int, str]]:
    """``(lo, hi, reservation name)`` of every reservation carved out of ``network_id``."""
    rows = session.execute(
        select(AddressRange.ip_start, AddressRange.size, Network.name)
        .join(Network, Network.id == AddressRange.network_id)
        .where(Network.parent_id == network_id)
        .order_by(AddressRange.ip_start)
    ).all()
    return [(start, start + size, name) for start, size, name in rows]


def segment_networks(session: Session, bridge: str, vlan_id: int | None) -> list[Network]:
    """Networks on one L2 segment (same bridge and VLAN), reservations included."""
    vlan = Network.vlan_id.is_(None) if vlan_id is None else Network.vlan_id == vlan_id
    return list(session.scalars(select(Network).where(Network.bridge == bridge).where(vlan)
                                .order_by(Network.id)))


def _reserved_by(spans: list[tuple[int, int, str]], ip: int) -> str | None:
    for lo, hi, name in spans:
        if lo <= ip < hi:
            return name
    return None


def allocate(session: Session, network: Network, vm_id: int, ip: str | None = None,
             mac: str | None = None) -> Lease:
    """Lease the lowest free address of ``network`` (or exactly ``ip``) to ``vm_id``.

    ``mac`` (administrators only, see :func:`lease_nic`) replaces the address's own MAC; it must
    not be a MAC that any other address of the segment has or could get."""
    lock_network(session, network.id)
    used = set(session.scalars(select(Lease.ip).where(Lease.network_id == network.id)))
    ranges = ranges_of(session, network.id)
    reserved = reserved_spans(session, network.id)
    if ip is not None:
        want = ip_to_int(ip, "NIC IP")
        ar = covering(ranges, want)
        if ar is None:
            raise InvalidInput(f"NIC IP {ip} is not in any address range of network {network.name}",
                               attribute="IP", value=ip)
        owner = _reserved_by(reserved, want)
        if owner is not None:
            raise Conflict(f"NIC IP {ip} of network {network.name} is reserved (network {owner}); "
                           "use the reservation", attribute="IP", value=ip)
        if want in used:
            raise Conflict(f"NIC IP {ip} of network {network.name} is already leased or held",
                           attribute="IP", value=ip)
        return _insert(session, network, want, ar, vm_id, mac=mac)
    skip = sorted((lo, hi) for lo, hi, _ in reserved)
    for ar in ranges:
        candidate = ar.start
        for lo, hi in [*skip, (ar.end, ar.end)]:
            if hi <= candidate:
                continue
            while candidate < min(lo, ar.end):
                if candidate not in used:
                    return _insert(session, network, candidate, ar, vm_id, mac=mac)
                candidate += 1
            candidate = max(candidate, hi)
            if candidate >= ar.end:
                break
    total = sum(ar.size for ar in ranges)
    kept = sum(hi - lo for lo, hi, _ in reserved)
    detail = f", {kept} of them reserved" if kept else ""
    raise NoCapacity(f"network {network.name} has no free lease ({total} addresses{detail}, all in use)")


def _check_admin_mac(session: Session, network: Network, ip: int, mac: str) -> str:
    """An administrator's NIC MAC: refused when another address of the segment has it, or is
    the address some range of the segment would give it (a FIXED lease's or ``02:00`` + IP)."""
    value = mac_to_int(mac, "NIC MAC")
    text = mac_text(value)
    nets = segment_networks(session, network.bridge, network.vlan_id)
    ids = [n.id for n in nets]
    taken = session.execute(select(Lease.ip, Network.name).join(Network, Network.id == Lease.network_id)
                            .where(Lease.network_id.in_(ids)).where(Lease.mac == text)).first()
    if taken is not None:
        raise Conflict(f"NIC MAC {text} is already used by {int_to_ip(taken[0])} of network {taken[1]}",
                       attribute="MAC", value=mac)
    for net in nets:
        for r in ranges_of(session, net.id):
            lo, hi = r.mac_span()
            if lo <= value < hi and not (r.mac is None and value - lo + r.start == ip):
                raise Conflict(f"NIC MAC {text} belongs to an address of network {net.name} "
                               "on the same segment", attribute="MAC", value=mac)
    return text


def _insert(session: Session, network: Network, ip: int, ar: Range, vm_id: int | None,
            held: bool = False, mac: str | None = None) -> Lease:
    own = ar.mac or mac_for(ip)
    if mac is not None and mac.lower() != own:
        own = _check_admin_mac(session, network, ip, mac)
    lease = Lease(network_id=network.id, ip=ip, mac=own, vm_id=vm_id, held=held)
    session.add(lease)
    session.flush()
    return lease


def lease_nic(session: Session, network: Network, vm_id: int, attrs: Mapping[str, str], index: int,
              admin: bool) -> dict[str, str]:
    """Lease an address of ``network`` for NIC ``index`` of VM ``vm_id`` and return the NIC's
    attributes: the user's (MODEL, ...) with NETWORK, IP, MAC, BRIDGE, VLAN_ID and PHYDEV set
    from the network and its lease.

    A NIC of a non-administrator naming BRIDGE, MAC, VLAN_ID or PHYDEV is refused (Forbidden,
    naming the attribute): which wire a VM sits on and which MAC it shows are the network's
    decisions, and that holds even if a front-end forgot to check."""
    n = {k.upper(): v for k, v in attrs.items()}
    if not admin:
        for key in NIC_RESTRICTED:
            if key in n:
                raise Forbidden(f"NIC #{index + 1} {key}: only an administrator may choose a NIC's "
                                f"{key}; the network ({network.name}) sets it", attribute=key,
                                value=n[key])
    lease = allocate(session, network, vm_id, n.get("IP") or None, mac=n.get("MAC") if admin else None)
    n.pop("NETWORK", None)
    n.update(NETWORK_ID=str(network.id), NETWORK=network.name, IP=int_to_ip(lease.ip), MAC=lease.mac,
             NIC_ID=str(index))
    if network.bridge:
        n["BRIDGE"] = network.bridge
    # the VLAN and its uplink are the network's alone, even for an administrator's NIC: a VLAN
    # the network does not have would join its bridge to another segment (docs/networks.md)
    n.pop("VLAN_ID", None)
    n.pop("PHYDEV", None)
    if network.vlan_id is not None:
        n["VLAN_ID"] = str(network.vlan_id)
    if network.phydev:
        n["PHYDEV"] = network.phydev
    n.update(addressing_of(network).nic_attrs())
    return n


def addressing_of(network: Network) -> NicAddressing:
    """The mask, gateway and DNS servers a guest on ``network`` is told (from its template).

    A network created before these attributes were checked may carry text that is not an
    address: its guests then get none of them rather than a VM that cannot be created."""
    try:
        t = parse_template(network.template or "", fmt="one", source=f"network {network.name}")
        return parse_addressing(t, parse_ranges(t))
    except InvalidInput:
        return NicAddressing()


def hold(session: Session, network: Network, ip: str) -> Lease:
    lock_network(session, network.id)
    want = ip_to_int(ip)
    ar = covering(ranges_of(session, network.id), want)
    if ar is None:
        raise InvalidInput(f"{ip} is not in any address range of network {network.name}",
                           attribute="ip", value=ip)
    owner = _reserved_by(reserved_spans(session, network.id), want)
    if owner is not None:
        raise Conflict(f"{ip} of network {network.name} is reserved (network {owner})",
                       attribute="ip", value=ip)
    existing = session.scalars(
        select(Lease).where(Lease.network_id == network.id).where(Lease.ip == want)
    ).first()
    if existing is not None:
        who = f"VM {existing.vm_id}" if existing.vm_id is not None else "a hold"
        raise Conflict(f"{ip} of network {network.name} is already taken by {who}")
    return _insert(session, network, want, ar, None, held=True)


def release_hold(session: Session, network: Network, ip: str) -> None:
    want = ip_to_int(ip)
    lease = session.scalars(
        select(Lease).where(Lease.network_id == network.id).where(Lease.ip == want)
    ).first()
    if lease is None or not lease.held:
        raise Conflict(f"{ip} of network {network.name} is not on hold")
    session.delete(lease)


#: Every lease of one VM (each VM that ends): built once.
_RELEASE_VM = delete(Lease).where(Lease.vm_id == bindparam("l_vm_id"))


def release_vm(session: Session, vm_id: int) -> int:
    res = execute_dml(session, _RELEASE_VM, {"l_vm_id": vm_id})
    return int(getattr(res, "rowcount", 0) or 0)


def release_vms(session: Session, vm_ids: Sequence[int]) -> int:
    """Every lease of many VMs that end together, in one statement."""
    if not vm_ids:
        return 0
    session.flush()
    res = session.connection().execute(delete(Lease).where(among(session, Lease.vm_id, vm_ids)))
    return int(getattr(res, "rowcount", 0) or 0)
