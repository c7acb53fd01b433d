"""Virtual networks: administrators wire them, VOs use them or reserve a part of one.

Why so strict: a network decides which L2 segment (bridge, VLAN) a VM's NIC joins and which
IP and MAC it shows there. If any user could create one, two VOs could be given the same
address on one wire (it happened: two VMs of two VOs got the same IP and MAC). So

* only administrators create and delete networks and choose BRIDGE, VLAN_ID, PHYDEV and VN_MAD; they
  create a network in a group (``GROUP=`` / ``group``), public (``PUBLIC=YES``) or share it by
  ACL, and VOs USE what is shared with them;
* address ranges of networks on one segment never overlap, and no two of their addresses get one
  MAC: checked at create while the segment's lock row is held (``net_segments``), so two
  concurrent creates cannot both pass, on SQLite or PostgreSQL;
* a VO user with USE on a network reserves a contiguous block of it (OpenNebula's ``onevnet
  reserve``): a new network of the user's group, child of the parent, on the same wire, whose
  addresses leave the parent's free pool (see :mod:`vocloud.service.ipam`). Deleting the
  reservation gives them back.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from vocloud.errors import Conflict, Forbidden, InvalidInput
from vocloud.model.network import (
    Range,
    first_mac_overlap,
    first_overlap,
    free_block,
    int_to_ip,
    ip_to_int,
    mac_for,
    mac_text,
    network_driver,
    parse_network,
)
from vocloud.model.template import parse_template
from vocloud.service import ipam
from vocloud.service.acl import ObjRef, allowed
from vocloud.service.auth import Actor
from vocloud.service.base import check_name, find, load_rules, record, require, require_admin
from vocloud.service.catalog import _visible
from vocloud.store.db import Database
from vocloud.store.schema import AddressRange, Group, Lease, NetSegment, Network

DEFAULT_MAX_RESERVATION = 256


def _ref(net: Network) -> ObjRef:
    return ObjRef("VNET", net.id, net.owner_id, net.group_id, net.public)


def lock_segment(s: Session, bridge: str, vlan_id: int | None) -> None:
    """Take the segment's lock row (created on first use) until the transaction ends.

    PostgreSQL: ``INSERT ... ON CONFLICT DO NOTHING`` waits for a concurrent uncommitted insert
    of the same key, then ``SELECT ... FOR UPDATE`` queues behind its holder; under READ
    COMMITTED the overlap check that follows sees what the holder committed. SQLite: write
    transactions are already exclusive (``BEGIN IMMEDIATE``)."""
    key = {"bridge": bridge, "vlan_id": vlan_id or 0}
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        s.execute(pg_insert(NetSegment).values(**key).on_conflict_do_nothing(
            index_elements=["bridge", "vlan_id"]))
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        s.execute(sqlite_insert(NetSegment).values(**key).on_conflict_do_nothing())
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported stores
        if s.scalar(select(NetSegment.id).filter_by(**key)) is None:
            s.execute(insert(NetSegment).values(**key))
    s.execute(select(NetSegment.id).filter_by(**key).with_for_update()).one()


def _segment_label(bridge: str, vlan_id: int | None) -> str:
    where = f"bridge {bridge}" if bridge else "the default bridge"
    return where + (f" VLAN {vlan_id}" if vlan_id is not None else "")


def check_bridge_vlans(s: Session, bridge: str, vlan_id: int | None) -> None:
    """One bridge carries one VLAN (or only untagged frames). Why: the 802.1Q driver joins a
    network's VLAN to its bridge, so a second VLAN, or untagged guests, on that bridge would share
    the wire (and, unchecked, the addresses) with it. The bridge's untagged lock row is held."""
    if not bridge:
        return
    other = s.scalars(select(Network).where(Network.bridge == bridge).where(
        Network.vlan_id.is_not(None) if vlan_id is None
        else (Network.vlan_id.is_(None) | (Network.vlan_id != vlan_id))).limit(1)).first()
    if other is not None:
        theirs = f"VLAN {other.vlan_id}" if other.vlan_id is not None else "untagged frames"
        mine = f"VLAN {vlan_id}" if vlan_id is not None else "untagged frames"
        raise Conflict(f"bridge {bridge} already carries {theirs} (network {other.name}); one "
                       f"bridge is one L2 segment, so it cannot carry {mine} too (use another "
                       "BRIDGE, or none: an 802.1Q network gets vcbr.<VLAN_ID>)",
                       attribute="BRIDGE", value=bridge, network=other.name)


def check_segment(s: Session, bridge: str, vlan_id: int | None, ranges: list[Range]) -> None:
    """Refuse ranges that overlap, or whose MACs collide with, another network on the segment.

    Reservations lie inside their parents, so comparing with the top-level networks suffices;
    FIXED leases of a reservation are its parent's, compared there."""
    for other in ipam.segment_networks(s, bridge, vlan_id):
        if other.parent_id is not None:
            continue
        theirs = ipam.ranges_of(s, other.id)
        hit = first_overlap(ranges, theirs)
        if hit is not None:
            raise Conflict(f"address {int_to_ip(hit)} is already in network {other.name} on "
                           f"{_segment_label(bridge, vlan_id)}; ranges on one L2 segment never "
                           "overlap (use another range, bridge or VLAN)",
                           attribute="AR", value=int_to_ip(hit), network=other.name)
        mac = first_mac_overlap(ranges, theirs)
        if mac is not None:
            raise Conflict(f"MAC {mac_text(mac)} is already given by network {other.name} on "
                           f"{_segment_label(bridge, vlan_id)}; MACs on one L2 segment never collide",
                           attribute="LEASES", value=mac_text(mac), network=other.name)


class NetworkService:
    def __init__(self, db: Database, max_reservation_size: int = DEFAULT_MAX_RESERVATION) -> None:
        self.db = db
        self.max_reservation_size = max_reservation_size

    # ---------------------------------------------------------------- create
    def create(self, actor: Actor, text: str, fmt: str = "auto",
               group: int | str | None = None) -> dict[str, Any]:
        """An administrator's network: in ``group`` (or the template's ``GROUP``), else the
        administrator's own group; ``PUBLIC=YES`` lets every VO use it."""
        t = parse_template(text, fmt=fmt, source="network template")
        spec = parse_network(t)
        if not actor.is_admin:
            wiring = ", ".join(spec.wiring())
            raise Forbidden(
                f"only an administrator may create a network (user {actor.name} asked for "
                f"network {spec.name or '(no NAME)'}{' with ' + wiring if wiring else ''}); "
                "use a network shared with your group, or reserve addresses of one: "
                "vocloud vnet reserve NETWORK --size N", attribute="NETWORK", value=spec.name)
        name = check_name(spec.name, "network")
        if not spec.ranges:
            raise InvalidInput("a network needs at least one AR=[...] or LEASES=[...]", attribute="AR")
        if group is not None and spec.group is not None and str(group) != spec.group:
            raise InvalidInput(f"group {group} and the template's GROUP={spec.group} disagree",
                               attribute="GROUP", value=spec.group)
        group_ref = group if group is not None else spec.group
        ranges = list(spec.ranges)
        with self.db.write() as s:
            grp = find(s, Group, "group", group_ref) if group_ref is not None else None
            lock_segment(s, spec.bridge, None)  # the bridge's own row first: one order, no deadlock
            if spec.vlan_id is not None:
                lock_segment(s, spec.bridge, spec.vlan_id)
            if s.scalar(select(Network.id).where(Network.name == name)) is not None:
                raise Conflict(f"network {name} already exists", attribute="NAME", value=name)
            check_bridge_vlans(s, spec.bridge, spec.vlan_id)
            check_segment(s, spec.bridge, spec.vlan_id, ranges)
            net = Network(name=name, owner_id=actor.user_id,
                          group_id=grp.id if grp is not None else actor.group_id,
                          bridge=spec.bridge, vlan_id=spec.vlan_id, phydev=spec.phydev,
                          template=t.to_one(), public=spec.public)
            s.add(net)
            s.flush()
            for r in ranges:
                s.add(AddressRange(network_id=net.id, ip_start=r.start, size=r.size, mac=r.mac))
            record(s, "vnet", net.id, "create", "", "", f"by {actor.name}")
            s.flush()
            return self._dict(s, actor, net, leases=False)

    # ---------------------------------------------------------------- reserve
    def reserve(self, actor: Actor, ref: int | str, size: int, name: str | None = None,
                ip: str | None = None, group: int | str | None = None) -> dict[str, Any]:
        """Carve ``size`` contiguous free addresses (from ``ip``, else the lowest block) out of
        network ``ref`` into a new network of the actor's group (an administrator may name
        another ``group``)."""
        if isinstance(size, bool) or not isinstance(size, int) \
                or not 1 <= size <= self.max_reservation_size:
            raise InvalidInput(f"reservation size must be between 1 and {self.max_reservation_size} "
                               f"(setting max_reservation_size), got {size!r}", attribute="size",
                               value=size)
        if name is not None:
            name = check_name(name, "network")
        start = ip_to_int(ip, "ip") if ip is not None else None
        if group is not None and not actor.is_admin:
            raise Forbidden("only an administrator may reserve addresses for another group",
                            attribute="group", value=group)
        with self.db.write() as s:
            parent = find(s, Network, "network", ref, lock=True)
            require(s, actor, "USE", _ref(parent))
            if parent.parent_id is not None:
                raise InvalidInput(f"network {parent.name} is itself a reservation; reserve from "
                                   "the network it was reserved from", attribute="network",
                                   value=parent.name)
            grp = find(s, Group, "group", group) if group is not None else s.get(Group, actor.group_id)
            if grp is None:
                raise InvalidInput(f"group {actor.group_id} of user {actor.name} does not exist")
            ranges = ipam.ranges_of(s, parent.id)
            leased = s.scalars(select(Lease.ip).where(Lease.network_id == parent.id))
            taken = [(ip_, ip_ + 1) for ip_ in leased]
            taken += [(lo, hi) for lo, hi, _ in ipam.reserved_spans(s, parent.id)]
            first = free_block(ranges, taken, size, start)
            if first is None:
                raise self._no_block(parent, ranges, taken, size, start)
            if name is None:
                name = f"{parent.name}-{grp.name}-{int_to_ip(first).replace('.', '-')}"[:128]
            if s.scalar(select(Network.id).where(Network.name == name)) is not None:
                raise Conflict(f"network {name} already exists", attribute="name", value=name)
            last = int_to_ip(first + size - 1)
            child = Network(
                name=name, owner_id=actor.user_id, group_id=grp.id, bridge=parent.bridge,
                vlan_id=parent.vlan_id, phydev=parent.phydev, public=False, parent_id=parent.id,
                template=f'NAME="{name}"\nPARENT_NETWORK="{parent.name}"\n'
                         f'AR=[TYPE="IP4", IP="{int_to_ip(first)}", SIZE="{size}"]\n',
            )
            s.add(child)
            s.flush()
            s.add(AddressRange(network_id=child.id, ip_start=first, size=size, mac=None))
            record(s, "vnet", child.id, "reserve", "", "",
                   f"{int_to_ip(first)}-{last} of {parent.name} by {actor.name}")
            record(s, "vnet", parent.id, "reserved", "", "",
                   f"{int_to_ip(first)}-{last} to {name} (group {grp.name}) by {actor.name}")
            s.flush()
            return self._dict(s, actor, child, leases=False)

    @staticmethod
    def _no_block(parent: Network, ranges: list[Range], taken: list[tuple[int, int]], size: int,
                  start: int | None) -> Exception:
        if start is None:
            return Conflict(f"network {parent.name} has no free block of {size} contiguous addresses "
                            "(its addresses are leased, held or reserved)", attribute="size", value=size)
        text = int_to_ip(start)
        inside = [r for r in ranges if r.mac is None and r.start <= start and start + size <= r.end]
        if not inside:
            return InvalidInput(f"{text}-{int_to_ip(min(start + size - 1, 2**32 - 1))} is not inside one "
                                f"address range of network {parent.name} (FIXED leases are never "
                                "reserved)", attribute="ip", value=text)
        busy = min((max(lo, start) for lo, hi in taken if lo < start + size and hi > start), default=start)
        return Conflict(f"network {parent.name} cannot reserve {size} addresses from {text}: "
                        f"{int_to_ip(busy)} is already leased, held or reserved", attribute="ip", value=text)

    # ---------------------------------------------------------------- reads
    def _dict(self, s: Session, actor: Actor, net: Network, leases: bool) -> dict[str, Any]:
        ranges = ipam.ranges_of(s, net.id)
        used = s.scalar(select(func.count()).select_from(Lease).where(Lease.network_id == net.id))
        children = list(s.scalars(select(Network).where(Network.parent_id == net.id).order_by(Network.id)))
        parent = s.get(Network, net.parent_id) if net.parent_id is not None else None
        out: dict[str, Any] = {
            "id": net.id, "name": net.name, "bridge": net.bridge, "vlan_id": net.vlan_id,
            "phydev": net.phydev, "vn_mad": network_driver(net.vlan_id), "public": net.public,
            "owner_id": net.owner_id,
            "group_id": net.group_id, "parent_id": net.parent_id,
            "parent": parent.name if parent is not None else None,
            "size": sum(r.size for r in ranges), "used_leases": used,
            "reserved": sum(r.size for c in children for r in ipam.ranges_of(s, c.id)),
            "ranges": [{"ip": int_to_ip(r.start), "size": r.size, "mac": r.mac or mac_for(r.start)}
                       for r in ranges],
        }
        if leases:
            rules = load_rules(s) if not actor.is_admin else []
            out["reservations"] = [
                {"id": c.id, "name": c.name, "group_id": c.group_id,
                 "ranges": [{"ip": int_to_ip(r.start), "size": r.size} for r in ipam.ranges_of(s, c.id)]}
                for c in children if allowed(actor, "USE", _ref(c), rules)
            ]
            out["leases"] = [
                {"ip": int_to_ip(lease.ip), "mac": lease.mac, "vm_id": lease.vm_id, "held": lease.held}
                for lease in s.scalars(select(Lease).where(Lease.network_id == net.id).order_by(Lease.ip))
            ]
            out["template"] = net.template
        return out

    def list(self, actor: Actor) -> list[dict[str, Any]]:
        with self.db.read() as s:
            return [self._dict(s, actor, n, False) for n in s.scalars(_visible(s, actor, "VNET", Network))]

    def show(self, actor: Actor, ref: int | str) -> dict[str, Any]:
        with self.db.read() as s:
            net = find(s, Network, "network", ref)
            require(s, actor, "USE", _ref(net))
            return self._dict(s, actor, net, True)

    # ---------------------------------------------------------------- holds, delete
    def hold(self, actor: Actor, ref: int | str, ip: str, release: bool = False) -> dict[str, Any]:
        with self.db.write() as s:
            net = find(s, Network, "network", ref)
            require(s, actor, "MANAGE", _ref(net))
            if release:
                ipam.release_hold(s, net, ip)
            else:
                ipam.hold(s, net, ip)
            s.flush()
            return self._dict(s, actor, net, True)

    def delete(self, actor: Actor, ref: int | str) -> None:
        """Administrators delete networks; a VO deletes (releases) its own reservations, whose
        addresses then return to the parent's free pool. Refused while leases are in use."""
        with self.db.write() as s:
            net = find(s, Network, "network", ref, lock=True)
            if net.parent_id is None:
                require_admin(actor, f"delete network {net.name} (a VO deletes only its reservations)")
            else:
                require(s, actor, "MANAGE", _ref(net))
            children = list(s.scalars(select(Network.name).where(Network.parent_id == net.id)
                                      .order_by(Network.id)))
            if children:
                raise Conflict(f"network {net.name} has reservations ({', '.join(children)}); "
                               "delete them first", attribute="network", value=net.name)
            in_use = s.scalar(select(func.count()).select_from(Lease).where(Lease.network_id == net.id)
                              .where(Lease.vm_id.is_not(None)))
            if in_use:
                raise Conflict(f"network {net.name} has {in_use} leases in use by VMs")
            s.execute(delete(Lease).where(Lease.network_id == net.id))
            s.execute(delete(AddressRange).where(AddressRange.network_id == net.id))
            if net.parent_id is not None:
                record(s, "vnet", net.parent_id, "unreserved", "", "", f"{net.name} by {actor.name}")
            record(s, "vnet", net.id, "delete", "", "", f"by {actor.name}")
            s.delete(net)
