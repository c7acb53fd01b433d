"""Read a host's network links with one ``ip -json -details link show``.

Parsing JSON locally (rather than ``/sys/class/net`` on the host) matters for hosts that are
network namespaces entered with ``nsenter --net``: their /sys still shows the root namespace's
devices, while ``ip`` asks the kernel through netlink in the right namespace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from vocloud.drivers.base import HostRef, Transport
from vocloud.errors import DriverError


@dataclass(frozen=True, slots=True)
class Link:
    name: str
    kind: str  # "bridge", "tun", "veth", "" for plain devices
    master: str  # the bridge it is enslaved to, or ""
    up: bool  # administratively up (IFF_UP), whatever the carrier says
    alias: str
    address: str = ""  # the link-layer address, lower case
    vlan_id: int | None = None  # a VLAN device's id
    parent: str = ""  # the device a VLAN device sits on


def list_links(transport: Transport, host: HostRef) -> dict[str, Link]:
    res = transport.run(host, ["ip", "-json", "-details", "link", "show"], timeout=30)
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip()
        raise DriverError(f"host {host.name}: cannot list network links: {err or res.returncode}")
    try:
        doc = json.loads(res.stdout or b"[]")
    except ValueError as exc:
        raise DriverError(f"host {host.name}: unreadable output of ip -json link show: {exc}"
                          ) from None
    links: dict[str, Link] = {}
    for item in doc:
        name = str(item.get("ifname", ""))
        info = item.get("linkinfo") or {}
        kind = str(info.get("info_kind", ""))
        vid = (info.get("info_data") or {}).get("id") if kind == "vlan" else None
        links[name] = Link(name=name, kind=kind, master=str(item.get("master", "")),
                           up="UP" in item.get("flags", []), alias=str(item.get("ifalias", "")),
                           address=str(item.get("address", "")).lower(),
                           vlan_id=vid if isinstance(vid, int) else None,
                           parent=str(item.get("link", "")) if kind == "vlan" else "")
    return links
