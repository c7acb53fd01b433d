"""Networks do not reach each other through the host: no routing between vocloud's bridges.

Each network is its own L2 segment (its own bridge, or its own VLAN and bridge with the 802.1Q
driver), so guests of two VOs never share a wire. But a host often has an address on several
segments (a gateway, a monitoring address) and forwards IPv4 (``net.ipv4.ip_forward=1`` is the
default on hypervisors that NAT their guests out): a guest that routes through the host's address
on its own segment would reach every other segment the host is on. OpenNebula leaves this to the
site's firewall; vocloud closes it itself, unless the site says its networks are routed
(setting ``route_between_networks``):

``table inet vocloud``
    ``set bridges``: every bridge a vocloud guest NIC is attached to on this host.
    ``chain forward``: hooked at *forward* (priority filter - 10), one rule:
    ``oifname @bridges iifname vmap @from_bridge`` — a packet routed *to* one of them jumps to the
    chain of the bridge it came *from*, if that is one of them too.
    ``chain from-<bridge>``: ``oifname != "<bridge>" drop``: from one vocloud bridge to another is
    dropped; the same bridge (``br_netfilter`` shows bridged frames this way) and traffic to or
    from the host's other interfaces (NAT to the outside) are not touched.

Only forwarding is filtered: the host itself still reaches every guest at its lease. Scripts
are pure text built here and applied with ``nft -f -`` through the host's transport; ``add`` of
an existing object is a no-op, so :meth:`BridgeIsolation.isolate` is idempotent; release reads
the table first (nftables 1.0.6 has no ``destroy element``) and removes exactly what is there.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable

from vocloud.drivers.base import HostRef, Transport
from vocloud.errors import DriverError

TABLE = "vocloud"  # family inet: apart from the guard's ``bridge vocloud``
_IFNAME = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,14}$")


def _bridge(name: str) -> str:
    """A bridge name goes into the script only as an interface name (never quoted text)."""
    if not _IFNAME.match(name):
        raise DriverError(f"refusing bridge {name!r} in a firewall rule")
    return name


def chain_of(bridge: str) -> str:
    return f"from-{_bridge(bridge)}"


def _base() -> list[str]:
    return [
        f"add table inet {TABLE}",
        f"add set inet {TABLE} bridges {{ type ifname; }}",
        f"add map inet {TABLE} from_bridge {{ type ifname : verdict; }}",
        f"add chain inet {TABLE} forward {{ type filter hook forward priority -10; policy accept; }}",
        f"flush chain inet {TABLE} forward",
        f"add rule inet {TABLE} forward oifname @bridges iifname vmap @from_bridge",
    ]


def plan_isolate(bridges: Iterable[str]) -> str:
    """The nft script that keeps each of ``bridges`` from forwarding to the others (pure)."""
    lines = _base()
    for br in sorted(set(bridges)):
        chain = chain_of(br)
        lines += [f"add chain inet {TABLE} {chain}", f"flush chain inet {TABLE} {chain}",
                  f'add rule inet {TABLE} {chain} oifname != "{br}" counter drop',
                  f'add element inet {TABLE} bridges {{ "{br}" }}',
                  f'add element inet {TABLE} from_bridge {{ "{br}" : jump {chain} }}']
    return "".join(line + "\n" for line in lines)


def listed(listing: str) -> tuple[set[str], set[str], set[str]]:
    """Bridges in the set, keys of the map and ``from-*`` chains of a ``nft -j list table`` (pure)."""
    in_set: set[str] = set()
    in_map: set[str] = set()
    chains: set[str] = set()
    for item in json.loads(listing).get("nftables", []):
        if "set" in item and item["set"].get("name") == "bridges":
            in_set |= {e for e in item["set"].get("elem", []) if isinstance(e, str)}
        elif "map" in item and item["map"].get("name") == "from_bridge":
            in_map |= {e[0] for e in item["map"].get("elem", []) if isinstance(e, list)
                       and e and isinstance(e[0], str)}
        elif "chain" in item and str(item["chain"].get("name", "")).startswith("from-"):
            chains.add(str(item["chain"]["name"]))
    return in_set, in_map, chains


def plan_release(bridges: Iterable[str], listing: str) -> str:
    """Remove ``bridges`` from the table (pure): only what ``listing`` shows is there."""
    in_set, in_map, chains = listed(listing)
    lines: list[str] = []
    for br in sorted(set(bridges)):
        chain = chain_of(br)
        if br in in_set:
            lines.append(f'delete element inet {TABLE} bridges {{ "{br}" }}')
        if br in in_map:
            lines.append(f'delete element inet {TABLE} from_bridge {{ "{br}" }}')
        if chain in chains:  # the map's jump is gone first: the chain is unreferenced
            lines.append(f"delete chain inet {TABLE} {chain}")
    return "".join(line + "\n" for line in lines)


class BridgeIsolation:
    """Applies :func:`plan_isolate` / :func:`plan_release` on a host through its transport."""

    def __init__(self, transports: Callable[[HostRef], Transport]) -> None:
        self.transports = transports

    def _run(self, host: HostRef, args: list[str], script: str | None) -> tuple[int, str, str]:
        res = self.transports(host).run(host, ["nft", *args],
                                        input=script.encode() if script else None, timeout=30)
        return (res.returncode, res.stdout.decode(errors="replace"),
                res.stderr.decode(errors="replace").strip())

    def isolate(self, host: HostRef, bridges: Iterable[str]) -> None:
        names = sorted(set(bridges))
        if not names:
            return
        rc, _out, err = self._run(host, ["-f", "-"], plan_isolate(names))
        if rc == 127:
            raise DriverError(f"host {host.name}: cannot isolate bridges {', '.join(names)}: nft is "
                              "not installed (Debian: nftables), or set route_between_networks = "
                              "true if the site routes its networks itself")
        if rc != 0:
            raise DriverError(f"host {host.name}: cannot isolate bridges {', '.join(names)}: "
                              f"{err or f'nft exited {rc}'}")

    def release(self, host: HostRef, bridges: Iterable[str]) -> None:
        """Forget ``bridges`` (no guest NIC left on them); nothing to do without nft or table."""
        names = sorted(set(bridges))
        if not names:
            return
        rc, out, err = self._run(host, ["-j", "list", "table", "inet", TABLE], None)
        if rc == 127 or (rc != 0 and "No such file" in err):
            return
        if rc != 0:
            raise DriverError(f"host {host.name}: cannot read table inet {TABLE}: {err}")
        script = plan_release(names, out)
        if script:
            rc, _out, err = self._run(host, ["-f", "-"], script)
            if rc != 0:
                raise DriverError(f"host {host.name}: cannot release bridges {', '.join(names)}: "
                                  f"{err or f'nft exited {rc}'}")
