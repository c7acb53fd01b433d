"""The ``bridge`` network driver: one tap per guest NIC, enslaved to a Linux bridge on the host.

This is OpenNebula's bridged model. vocloud creates the tap itself (``ip tuntap add``) before qemu
starts, and qemu only opens it by name (``-netdev tap,ifname=...,script=no``); so qemu needs no
helper scripts or capabilities, and a tap left by a crashed guest is found and removed by name.

* Tap for NIC ``n`` of deploy id ``vcq7x-7`` is ``vcq7x-7-n``, the name the qemu driver opens. Linux
  limits names to 15 bytes; a longer name is an error, never silently truncated (two VMs could
  collide).
* A missing bridge is created, marked with the link alias ``vocloud`` and brought up. On detach a
  bridge vocloud created is removed once no port is left (``keep_empty_bridges=False``);
  bridges an admin made are never touched.
* Stable bridge addresses. Linux gives a bridge whose address was never set the lowest address
  of its ports, and picks again when that port leaves: every guest then holds a stale ARP entry
  for the host's bridge address and its TCP connections to the host stall until the entry is
  re-resolved (measured here: Grid Engine job reports 1.5-3.5 min late, one worker never
  joining). So a bridge vocloud creates gets a fixed address derived from its name, and each
  tap gets ``fe:`` + the guest MAC's last five bytes (libvirt's convention): ``fe`` is above any
  vendor or ``02:00`` address, so a tap never becomes the lowest port of a bridge with a physical
  NIC. A bridge without ports (vocloud's from an older release, or a host-only one an admin
  made) gets the address it has pinned (``ip link set ... address <its own>``) before its first
  tap joins: the address does not change, it only stops following the ports.
* Every call reads the host's links once and applies only what is missing in one ``ip -batch``,
  so ``attach`` and ``detach`` are idempotent and cost two round trips over SSH.
* All commands go through the host's transport, so a namespace host reached over SSH gets its
  devices in its own namespace.
* 802.1Q (a NIC with ``vlan_id``; the network's ``VN_MAD``): each VLAN has its own bridge
  (``vcbr.<VLAN_ID>`` unless the network names one), so each VLAN is its own segment on the host;
  with ``PHYDEV`` the VLAN device ``PHYDEV.VLAN_ID`` is created on demand (alias ``vocloud``) and
  enslaved to that bridge, as OpenNebula's 802.1Q driver does, and removed with the last guest
  of the bridge. VLAN devices an admin made are used, never removed.
* With a :class:`~vocloud.drivers.net.isolate.BridgeIsolation` (unless
  ``route_between_networks``), the host does not route between guest bridges.
* With a :class:`~vocloud.drivers.net.guard.TapGuard` (setting ``anti_spoofing``, on by
  default), each tap is confined to its NIC's MAC and lease before the guest starts, and the
  filter goes with the taps.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable

from vocloud.drivers.base import DomainSpec, HostRef, NicSpec, Transport
from vocloud.drivers.net.guard import TapGuard
from vocloud.drivers.net.isolate import BridgeIsolation
from vocloud.drivers.net.links import Link, list_links
from vocloud.drivers.transport import transport_for
from vocloud.errors import DriverError
from vocloud.model.network import vlan_bridge, vlan_device

IFNAMSIZ = 15  # usable bytes of a Linux interface name
MANAGED_ALIAS = "vocloud"
_NAME_OK = re.compile(r"^[A-Za-z0-9_.-]+$")
_HEX2 = re.compile(r"^[0-9a-f]{2}$")


def tap_name(deploy_id: str, index: int) -> str:
    """``<deploy_id>-<index>``; raises if the kernel could not hold the name."""
    name = f"{deploy_id}-{index}"
    if len(name.encode()) > IFNAMSIZ:
        raise DriverError(f"{deploy_id}: tap name {name!r} is longer than {IFNAMSIZ} characters "
                          "(Linux's limit); use a shorter deploy id")
    if not _NAME_OK.match(name):
        raise DriverError(f"{deploy_id}: {name!r} is not a valid interface name")
    return name


def host_tap_mac(guest_mac: str, tap: str) -> str:
    """The host side's address for a tap: ``fe:`` + the guest MAC's last five bytes (module
    docstring); from the tap name when the guest MAC is not a MAC."""
    parts = guest_mac.lower().split(":")
    if len(parts) == 6 and all(_HEX2.match(p) for p in parts):
        return ":".join(["fe", *parts[1:]])
    return _mac("fe", tap)


def bridge_mac(bridge: str) -> str:
    """A fixed, locally administered unicast address for a bridge vocloud creates (``06:`` +
    five bytes of the name's sha256): the same after every re-creation, never a port's."""
    return _mac("06", bridge)


def _mac(first: str, name: str) -> str:
    digest = hashlib.sha256(name.encode()).hexdigest()
    return ":".join([first, *(digest[i:i + 2] for i in range(0, 10, 2))])


def _check_bridge_name(name: str, deploy_id: str) -> None:
    if not name or len(name.encode()) > IFNAMSIZ or not _NAME_OK.match(name):
        raise DriverError(f"{deploy_id}: bridge name {name!r} is not a valid interface name "
                          f"(1-{IFNAMSIZ} of A-Z a-z 0-9 _ . -)")


class BridgeDriver:
    """:class:`~vocloud.drivers.base.NetworkDriver` for Linux bridges and tap devices."""

    name = "bridge"

    def __init__(self, transports: Callable[[HostRef], Transport] = transport_for,
                 default_bridge: str = "vcbr0", keep_empty_bridges: bool = False,
                 guard: TapGuard | None = None, isolation: BridgeIsolation | None = None) -> None:
        """``default_bridge`` serves NICs whose network names no bridge; ``guard`` confines
        each tap to its NIC's MAC and address (None: guests send what they like);
        ``isolation`` keeps the host from routing between the bridges of guests (None: the
        site routes its networks, setting ``route_between_networks``)."""
        self.transports = transports
        self.guard = guard
        self.isolation = isolation
        self.default_bridge = default_bridge
        self.keep_empty_bridges = keep_empty_bridges
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock(self, host: HostRef) -> threading.Lock:
        """Attach and detach on one host are serialized: detach may remove a bridge attach needs."""
        with self._locks_guard:
            return self._locks.setdefault(host.transport + "|" + host.name, threading.Lock())

    def plan_attach(self, spec: DomainSpec, links: dict[str, Link]) -> list[str]:
        """The ``ip -batch`` lines that bring ``links`` to what ``spec`` needs (pure)."""
        lines: list[str] = []
        made: set[str] = set()
        for index, nic in enumerate(spec.nics):
            tap = tap_name(spec.deploy_id, index)
            bridge = self.bridge_of(nic)
            _check_bridge_name(bridge, spec.deploy_id)
            br = links.get(bridge)
            if br is None and bridge not in made:
                lines += [f"link add name {bridge} address {bridge_mac(bridge)} type bridge",
                          f"link set dev {bridge} alias {MANAGED_ALIAS}",
                          f"link set dev {bridge} up"]
                made.add(bridge)
            elif br is not None and br.kind != "bridge":
                raise DriverError(f"{spec.deploy_id}: {bridge} exists on the host but is a "
                                  f"{br.kind or 'plain'} device, not a bridge")
            elif br is not None:
                if (bridge not in made and br.address
                        and not any(link.master == bridge for link in links.values())):
                    # an empty bridge: pin the address it has now, or the first tap would
                    # become it (module docstring); a no-op for one pinned already
                    lines.append(f"link set dev {bridge} address {br.address}")
                    made.add(bridge)
                if not br.up:
                    lines.append(f"link set dev {bridge} up")
            if nic.vlan_id is not None and nic.phydev:
                lines += self._plan_vlan(spec.deploy_id, nic.phydev, nic.vlan_id, bridge, links, made)
            t = links.get(tap)
            if t is not None and t.kind != "tun":
                raise DriverError(f"{spec.deploy_id}: {tap} exists on the host but is a "
                                  f"{t.kind or 'plain'} device, not a tap")
            if t is None:
                lines.append(f"tuntap add dev {tap} mode tap")
            mac = host_tap_mac(nic.mac, tap)
            if t is None or t.address != mac:
                lines.append(f"link set dev {tap} address {mac}")
            if t is None or t.master != bridge:
                lines.append(f"link set dev {tap} master {bridge}")
            if t is None or not t.up:
                lines.append(f"link set dev {tap} up")
        return lines

    def bridge_of(self, nic: NicSpec) -> str:
        """The network's bridge; an 802.1Q NIC without one gets ``vcbr.<VLAN_ID>`` (the service
        stores that name already; this covers specs written by hand), others the default."""
        if nic.bridge:
            return nic.bridge
        return vlan_bridge(nic.vlan_id) if nic.vlan_id is not None else self.default_bridge

    @staticmethod
    def _plan_vlan(deploy_id: str, phydev: str, vlan_id: int, bridge: str, links: dict[str, Link],
                   made: set[str]) -> list[str]:
        """OpenNebula's 802.1Q wiring: the VLAN device ``PHYDEV.VLAN_ID`` on the physical device,
        enslaved to the VLAN's bridge, so tagged frames of that VLAN (and only those) reach its
        guests. Created on demand and marked ``vocloud``; an existing one is used if it is that
        VLAN on that device and not a port of another bridge."""
        dev = vlan_device(phydev, vlan_id)
        _check_bridge_name(dev, deploy_id)
        lines: list[str] = []
        phy = links.get(phydev)
        if phy is None:
            raise DriverError(f"{deploy_id}: PHYDEV {phydev} of VLAN {vlan_id} does not exist on "
                              "the host")
        if not phy.up and phydev not in made:
            lines.append(f"link set dev {phydev} up")
            made.add(phydev)
        v = links.get(dev)
        if v is None:
            if dev not in made:
                lines += [f"link add link {phydev} name {dev} type vlan id {vlan_id}",
                          f"link set dev {dev} alias {MANAGED_ALIAS}",
                          f"link set dev {dev} master {bridge}", f"link set dev {dev} up"]
                made.add(dev)
            return lines
        if v.kind != "vlan" or v.vlan_id != vlan_id or v.parent != phydev:
            raise DriverError(f"{deploy_id}: {dev} exists on the host but is not VLAN {vlan_id} "
                              f"on {phydev} ({v.kind or 'plain'} device)")
        if v.master and v.master != bridge:
            raise DriverError(f"{deploy_id}: {dev} (VLAN {vlan_id}) is a port of bridge {v.master}, "
                              f"not of {bridge}; one VLAN is one bridge")
        if not v.master:
            lines.append(f"link set dev {dev} master {bridge}")
        if not v.up:
            lines.append(f"link set dev {dev} up")
        return lines

    def unused_bridges(self, deploy_id: str, links: dict[str, Link]) -> list[str]:
        """Bridges that hold a tap of ``deploy_id`` and no other guest's tap (pure)."""
        mine = re.compile(rf"^{re.escape(deploy_id)}-\d+$")
        taps = {n for n, link in links.items() if mine.match(n) and link.kind == "tun"}
        held = {links[t].master for t in taps if links[t].master}
        return sorted(br for br in held
                      if not any(p.master == br and p.kind == "tun" and p.name not in taps
                                 for p in links.values()))

    def plan_detach(self, deploy_id: str, links: dict[str, Link]) -> list[str]:
        """Delete the VM's taps; on bridges left without guests, the VLAN devices vocloud made,
        then vocloud's bridges that are left without ports (pure)."""
        mine = re.compile(rf"^{re.escape(deploy_id)}-\d+$")
        taps = sorted(n for n, link in links.items() if mine.match(n) and link.kind == "tun")
        lines = [f"link del dev {t}" for t in taps]
        if not self.keep_empty_bridges:
            for name in self.unused_bridges(deploy_id, links):
                ours = sorted(p.name for p in links.values() if p.master == name
                              and p.kind == "vlan" and p.alias == MANAGED_ALIAS)
                lines += [f"link del dev {v}" for v in ours]
                br = links.get(name)
                if br is None or br.kind != "bridge" or br.alias != MANAGED_ALIAS:
                    continue
                gone = {*taps, *ours}
                if not [p for p in links.values() if p.master == name and p.name not in gone]:
                    lines.append(f"link del dev {name}")
        return lines

    def attach(self, host: HostRef, spec: DomainSpec) -> None:
        """Create what is missing (bridges, taps) for every NIC of ``spec``; idempotent."""
        if not spec.nics:
            return
        transport = self.transports(host)
        with self._lock(host):
            self._apply(transport, host, self.plan_attach(spec, list_links(transport, host)),
                        f"attach the NICs of {spec.deploy_id}")
            if self.isolation is not None:
                self.isolation.isolate(host, [self.bridge_of(nic) for nic in spec.nics])
            if self.guard is not None:
                self.guard.guard(host, spec, [tap_name(spec.deploy_id, i) for i in range(len(spec.nics))])

    def detach(self, host: HostRef, deploy_id: str) -> None:
        """Remove the VM's taps (none left is success) and bridges vocloud made that are empty."""
        tap_name(deploy_id, 0)  # a deploy id no tap could have is a caller bug; say so
        transport = self.transports(host)
        with self._lock(host):
            read: list[dict[str, Link]] = []

            def present() -> dict[str, Link]:  # the links, read after the guard's table
                read.append(list_links(transport, host))
                return read[-1]

            if self.guard is not None:
                self.guard.unguard(host, deploy_id, present)
            links = read[-1] if read else present()
            self._apply(transport, host, self.plan_detach(deploy_id, links),
                        f"detach the NICs of {deploy_id}")
            if self.isolation is not None:
                self.isolation.release(host, self.unused_bridges(deploy_id, links))

    @staticmethod
    def _apply(transport: Transport, host: HostRef, lines: list[str], what: str) -> None:
        if not lines:
            return
        script = "".join(line + "\n" for line in lines)
        res = transport.run(host, ["ip", "-batch", "-"], input=script.encode(), timeout=30)
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace").strip()
            raise DriverError(f"host {host.name}: cannot {what}: {err or f'ip exited {res.returncode}'}")
