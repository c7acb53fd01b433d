"""Anti-spoofing on guest taps: a guest sends only from its own MAC and leased address.

All VOs' guests on one bridge share an L2 segment; without a filter, a guest can take another
VM's IP or MAC (ARP-poison the host or a neighbour, or answer for a batch server) by changing one
line in its own kernel. OpenNebula closes this with ebtables/security-group drivers; vocloud does
the same with one nftables table in the ``bridge`` family (``nft``, Debian ``nftables``), on every
host the bridge driver serves:

``table bridge vocloud``
    ``chain guests``: hooked at bridge *prerouting*, one rule: ``iifname vmap @taps``, so each
    frame costs one map lookup whatever the number of guests.
    ``map taps``: tap name -> ``jump <the VM's chain>``.
    ``chain <deploy id>``: per VM; a frame from one of its taps is dropped unless its Ethernet
    source is that NIC's MAC; ARP unless sender MAC and sender IP are the NIC's; IPv4 unless the
    source is the NIC's lease; IPv6 always (no IPv6 leases are handed out, and link-local
    traffic would otherwise bypass the IPv4 rules).

Only frames *from* guests are filtered; the host and the bridge are not. Scripts are pure text
built here and applied with ``nft -f -`` through the host's transport (atomic: a script applies
whole or not at all). ``add`` of an existing table, chain or element is a no-op in nftables, so
attach is idempotent; detach first lists the map (JSON) and removes exactly the elements that
jump to the VM's chain, so it is idempotent too and survives taps that are already gone; it also
removes the elements of taps that no longer exist and chains nothing jumps to (:func:`stale`:
a tap deleted behind vocloud's back, e.g. by a reaper, left them for ever). The table
itself stays when the last guest goes (empty: one map lookup per bridged frame): deleting it
could race another installation on the same host adding its first guest.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable

from vocloud.drivers.base import DomainSpec, HostRef, Transport
from vocloud.errors import DriverError

TABLE = "vocloud"
_SAFE = re.compile(r"^[A-Za-z0-9_.:-]+$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IP = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")


def _word(value: str, what: str) -> str:
    """Everything interpolated into a script is checked to be one safe token (never quoting)."""
    if not _SAFE.match(value):
        raise DriverError(f"refusing {what} {value!r} in a firewall rule")
    return value


def _base() -> list[str]:
    return [
        f"add table bridge {TABLE}",
        f"add map bridge {TABLE} taps {{ type ifname : verdict; }}",
        f"add chain bridge {TABLE} guests {{ type filter hook prerouting priority -200; policy accept; }}",
        f"flush chain bridge {TABLE} guests",
        f"add rule bridge {TABLE} guests iifname vmap @taps",
    ]


def plan_guard(spec: DomainSpec, taps: Iterable[str]) -> str:
    """The nft script that confines each NIC of ``spec`` (tap names in NIC order) (pure)."""
    chain = _word(spec.deploy_id, "deploy id")
    lines = [*_base(), f"add chain bridge {TABLE} {chain}", f"flush chain bridge {TABLE} {chain}"]
    elements = []
    for nic, tap in zip(spec.nics, taps, strict=True):
        mac = nic.mac.lower()
        if not _MAC.match(mac):
            raise DriverError(f"{spec.deploy_id}: NIC MAC {nic.mac!r} is not a MAC address")
        rule = f"add rule bridge {TABLE} {chain} iifname {_word(tap, 'tap')}"
        lines.append(f"{rule} ether saddr != {mac} counter drop")
        lines.append(f"{rule} ether type arp arp saddr ether != {mac} counter drop")
        lines.append(f"{rule} ether type ip6 counter drop")
        if nic.ip and _IP.match(nic.ip):
            lines.append(f"{rule} ether type arp arp saddr ip != {nic.ip} counter drop")
            lines.append(f"{rule} ether type ip ip saddr != {nic.ip} counter drop")
        else:  # a NIC without a lease may not speak IPv4 at all
            lines.append(f"{rule} ether type {{ arp, ip }} counter drop")
        elements.append(f'"{tap}" : jump {chain}')
    if elements:
        lines.append(f"add element bridge {TABLE} taps {{ {', '.join(elements)} }}")
    return "".join(line + "\n" for line in lines)


def elements_jumping_to(listing: str, chain: str) -> list[str]:
    """Tap names in ``nft -j list map bridge vocloud taps`` output that jump to ``chain`` (pure)."""
    taps: list[str] = []
    for item in json.loads(listing).get("nftables", []):
        for elem in (item.get("map") or {}).get("elem", []):
            key, verdict = elem if isinstance(elem, list) else (None, None)
            target = (verdict or {}).get("jump", {}).get("target") if isinstance(verdict, dict) else None
            if isinstance(key, str) and target == chain:
                taps.append(key)
    return sorted(taps)


def tap_elements(listing: str) -> list[str]:
    """Every tap name in a ``nft -j list map`` output (pure)."""
    return sorted({key for item in json.loads(listing).get("nftables", [])
                   for key, *_ in ((item.get("map") or {}).get("elem", []) or [])
                   if isinstance(key, str)})


def stale(listing: str, present: Collection[str], keep: str) -> tuple[list[str], list[str]]:
    """Map elements whose tap no longer exists, and per-VM chains no element will jump to once
    they are gone (pure; ``keep``, the chain being removed anyway, is left out).

    Why: a tap can vanish without vocloud's detach (a host-side cleanup or reaper deleting taps
    of guests it killed, an admin's ``ip link del``); its element and chain then stayed for
    ever, since every later detach removed only its own VM's. ``listing`` must be read *before*
    ``present``: a guard adds an element only after its tap exists, so an element in the
    listing whose tap is missing from a later link listing is gone for good."""
    jumps: dict[str, str] = {}
    chains: set[str] = set()
    for item in json.loads(listing).get("nftables", []):
        for elem in (item.get("map") or {}).get("elem", []) or []:
            key, verdict = elem if isinstance(elem, list) and len(elem) == 2 else (None, None)
            target = verdict.get("jump", {}).get("target") if isinstance(verdict, dict) else None
            if isinstance(key, str) and isinstance(target, str):
                jumps[key] = target
        name = (item.get("chain") or {}).get("name")
        if isinstance(name, str) and name != "guests":
            chains.add(name)
    gone = sorted(t for t in jumps if t not in present)
    alive = {jumps[t] for t in jumps if t in present}
    orphans = sorted(c for c in chains if c not in alive and c != keep and _SAFE.match(c))
    return gone, orphans


def plan_unguard(deploy_id: str, taps: Iterable[str], orphans: Iterable[str] = ()) -> str:
    """Remove the VM's map elements and chain (pure); ``add`` first so a missing chain is fine."""
    chain = _word(deploy_id, "deploy id")
    lines = [*_base(), f"add chain bridge {TABLE} {chain}"]
    quoted = [f'"{_word(t, "tap")}"' for t in taps]
    if quoted:
        lines.append(f"delete element bridge {TABLE} taps {{ {', '.join(quoted)} }}")
    lines += [f"flush chain bridge {TABLE} {chain}", f"delete chain bridge {TABLE} {chain}"]
    for orphan in orphans:
        other = _word(orphan, "chain")
        lines += [f"flush chain bridge {TABLE} {other}", f"delete chain bridge {TABLE} {other}"]
    return "".join(line + "\n" for line in lines)


class TapGuard:
    """Applies :func:`plan_guard` / :func:`plan_unguard` on a host through its transport."""

    def __init__(self, transports: Callable[[HostRef], Transport]) -> None:
        self.transports = transports

    def _nft(self, host: HostRef, args: list[str], script: str | None, what: str) -> str:
        res = self.transports(host).run(host, ["nft", *args], input=script.encode() if script else None,
                                        timeout=30)
        if res.returncode == 127:
            raise DriverError(f"host {host.name}: cannot {what}: nft is not installed (Debian: "
                              "nftables), or set anti_spoofing = false to run guests unfiltered")
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace").strip()
            raise DriverError(f"host {host.name}: cannot {what}: {err or f'nft exited {res.returncode}'}")
        return res.stdout.decode(errors="replace")

    def guard(self, host: HostRef, spec: DomainSpec, taps: list[str]) -> None:
        if spec.nics:
            self._nft(host, ["-f", "-"], plan_guard(spec, taps), f"confine the NICs of {spec.deploy_id}")

    def unguard(self, host: HostRef, deploy_id: str,
                present: Callable[[], Collection[str]] | None = None) -> None:
        """Remove the VM's filter, in at most two round trips: read the table, apply the script.
        With ``present`` (the host's link names, read after the table), the filters of taps
        that no longer exist go too (:func:`stale`). A host without ``nft`` or without our
        table has nothing to remove (guests booted before the guard existed, or with it off,
        must still be able to go)."""
        res = self.transports(host).run(host, ["nft", "-j", "list", "table", "bridge", TABLE],
                                        timeout=30)
        if res.returncode == 127 or (res.returncode != 0 and b"No such file" in res.stderr):
            if present is not None:
                present()
            return
        if res.returncode != 0:
            err = res.stderr.decode(errors="replace").strip()
            raise DriverError(f"host {host.name}: cannot read the tap map for {deploy_id}: {err}")
        listing = res.stdout.decode(errors="replace")
        taps = elements_jumping_to(listing, deploy_id)
        gone, orphans = stale(listing, present(), deploy_id) if present is not None else ([], [])
        self._nft(host, ["-f", "-"], plan_unguard(deploy_id, sorted({*taps, *gone}), orphans),
                  f"remove the filter of {deploy_id}")
