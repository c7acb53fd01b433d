"""IP address management: leases handed out inside the caller's transaction.

The network row is locked (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite write transactions
are already exclusive) and the (network, ip) pair is UNIQUE, so two VMs can never get one
address. MACs follow OpenNebula: ``02:00`` followed by the four bytes of the IPv4 address.
"""

from __future__ import annotations

import ipaddress

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from vocloud.errors import Conflict, InvalidInput, NoCapacity
from vocloud.store.schema import AddressRange, Lease, Network


def ip_to_int(text: str) -> int:
    try:
        return int(ipaddress.IPv4Address(text.strip()))
    except ipaddress.AddressValueError:
        raise InvalidInput(f"{text!r} is not an IPv4 address") from None


def int_to_ip(value: int) -> str:
    return str(ipaddress.IPv4Address(value))


def mac_for(ip: int) -> str:
    octets = ip.to_bytes(4, "big")
    return "02:00:" + ":".join(f"{b:02x}" for b in octets)


def lock_network(session: Session, network_id: int) -> Network:
    net = session.scalars(
        select(Network).where(Network.id == network_id).with_for_update()
    ).one()
    return net


def _owner_range(session: Session, network_id: int, ip: int) -> AddressRange | None:
    for ar in session.scalars(select(AddressRange).where(AddressRange.network_id == network_id)):
        if ar.ip_start <= ip < ar.ip_start + ar.size:
            return ar
    return None


def allocate(session: Session, network: Network, vm_id: int, ip: str | None = None) -> Lease:
    """Lease the lowest free address of ``network`` (or exactly ``ip``) to ``vm_id``."""
    lock_network(session, network.id)
    used = set(session.scalars(select(Lease.ip).where(Lease.network_id == network.id)))
    ranges = list(
        session.scalars(
            select(AddressRange)
            .where(AddressRange.network_id == network.id)
            .order_by(AddressRange.ip_start)
        )
    )
    if ip is not None:
        want = ip_to_int(ip)
        ar = _owner_range(session, network.id, want)
        if ar is None:
            raise InvalidInput(f"{ip} is not in any address range of network {network.name}")
        if want in used:
            raise Conflict(f"{ip} of network {network.name} is already leased or held")
        return _insert(session, network.id, want, ar, vm_id)
    for ar in ranges:
        for candidate in range(ar.ip_start, ar.ip_start + ar.size):
            if candidate not in used:
                return _insert(session, network.id, candidate, ar, vm_id)
    total = sum(ar.size for ar in ranges)
    raise NoCapacity(f"network {network.name} has no free lease ({total} addresses, all in use)")


def _insert(session: Session, network_id: int, ip: int, ar: AddressRange, vm_id: int | None,
            held: bool = False) -> Lease:
    lease = Lease(network_id=network_id, ip=ip, mac=ar.mac or mac_for(ip), vm_id=vm_id, held=held)
    session.add(lease)
    session.flush()
    return lease


def hold(session: Session, network: Network, ip: str) -> Lease:
    lock_network(session, network.id)
    want = ip_to_int(ip)
    ar = _owner_range(session, network.id, want)
    if ar is None:
        raise InvalidInput(f"{ip} is not in any address range of network {network.name}")
    existing = session.scalars(
        select(Lease).where(Lease.network_id == network.id).where(Lease.ip == want)
    ).first()
    if existing is not None:
        who = f"VM {existing.vm_id}" if existing.vm_id is not None else "a hold"
        raise Conflict(f"{ip} of network {network.name} is already taken by {who}")
    return _insert(session, network.id, want, ar, None, held=True)


def release_hold(session: Session, network: Network, ip: str) -> None:
    want = ip_to_int(ip)
    lease = session.scalars(
        select(Lease).where(Lease.network_id == network.id).where(Lease.ip == want)
    ).first()
    if lease is None or not lease.held:
        raise Conflict(f"{ip} of network {network.name} is not on hold")
    session.delete(lease)


def release_vm(session: Session, vm_id: int) -> int:
    res = session.execute(delete(Lease).where(Lease.vm_id == vm_id))
    return int(getattr(res, "rowcount", 0) or 0)
