"""The bridge driver's no-routing filter and 802.1Q wiring against the kernel, in a namespace host
of the shared lab (nothing in the root namespace). Guests are not needed for the ruleset; the
traffic itself is tests/integration/test_qemu_isolation.py."""

# ruff: noqa: F811
from __future__ import annotations

import json
import uuid
from collections.abc import Callable

import pytest

from tests.support.netns import NetnsHost, NsenterTransport, netns_hosts, netns_lab  # noqa: F401
from vocloud.drivers.base import DomainSpec, HostRef, NicSpec
from vocloud.drivers.net import BridgeDriver
from vocloud.drivers.net.guard import TapGuard
from vocloud.drivers.net.isolate import BridgeIsolation

Hosts = Callable[[int], list[NetnsHost]]


def _spec(vm_id: int, bridge: str | None, vlan: int | None = None, phydev: str = "") -> DomainSpec:
    return DomainSpec(vm_id=vm_id, deploy_id=f"vcis-{vm_id}", name="g", cpu=1, vcpu=1, memory_mib=64,
                      nics=(NicSpec("n", f"10.253.0.{vm_id}", f"02:00:0a:fd:00:{vm_id:02x}", bridge,
                                    vlan_id=vlan, phydev=phydev),))


def _table(host: NetnsHost) -> tuple[set[str], set[str]]:
    """(bridges in the set, from-* chains) of ``table inet vocloud``; empty if there is none."""
    res = host.exec("nft", "-j", "list", "table", "inet", "vocloud", check=False)
    if res.returncode != 0:
        return set(), set()
    items = json.loads(res.stdout)["nftables"]
    elems = {e for i in items if i.get("set", {}).get("name") == "bridges"
             for e in i["set"].get("elem", [])}
    chains = {i["chain"]["name"] for i in items
              if str(i.get("chain", {}).get("name", "")).startswith("from-")}
    return elems, chains


def _links(host: NetnsHost) -> dict[str, dict[str, object]]:
    return {str(i["ifname"]): i for i in json.loads(host.exec("ip", "-json", "-details", "link",
                                                              "show").stdout)}


def test_guest_bridges_are_isolated_while_used_and_forgotten_after(netns_hosts: Hosts) -> None:
    host = netns_hosts(1)[0]
    transport = NsenterTransport(host)
    ref = HostRef(0, host.netns, "qemu", "local")
    drv = BridgeDriver(transports=lambda _h: transport, guard=TapGuard(lambda _h: transport),
                       isolation=BridgeIsolation(lambda _h: transport))
    a1, a2, b1 = _spec(1, "isobra"), _spec(2, "isobra"), _spec(3, None, vlan=77)
    try:
        for s in (a1, a2, b1, a1):  # twice: idempotent
            drv.attach(ref, s)
        assert _table(host) == ({"isobra", "vcbr.77"}, {"from-isobra", "from-vcbr.77"})
        rules = host.exec("nft", "list", "chain", "inet", "vocloud", "from-isobra").stdout
        assert 'oifname != "isobra"' in rules and "drop" in rules
        drv.detach(ref, "vcis-1")  # isobra still has vcis-2
        assert _table(host) == ({"isobra", "vcbr.77"}, {"from-isobra", "from-vcbr.77"})
        drv.detach(ref, "vcis-3")
        assert _table(host) == ({"isobra"}, {"from-isobra"})
        assert "vcbr.77" not in _links(host)
        drv.detach(ref, "vcis-2")
        drv.detach(ref, "vcis-2")  # again: nothing left, no error
        assert _table(host) == (set(), set())
        # route_between_networks = true: no filter at all
        BridgeDriver(transports=lambda _h: transport).attach(ref, a1)
        assert _table(host) == (set(), set())
    finally:
        for d in ("vcis-1", "vcis-2", "vcis-3"):
            drv.detach(ref, d)
    assert not {"isobra", "vcbr.77", "vcis-1-0", "vcis-2-0", "vcis-3-0"} & set(_links(host))


def test_vlan_devices_on_phydev_are_made_and_removed(netns_hosts: Hosts) -> None:
    """Needs a kernel with 802.1Q (CONFIG_VLAN_8021Q); the CI machine's has none, then this skips
    and the plans are covered by tests/unit/test_net_vlan.py."""
    host = netns_hosts(1)[0]
    phy = f"isop{uuid.uuid4().hex[:4]}"
    host.exec("ip", "link", "add", phy, "type", "veth", "peer", "name", phy + "p")
    try:
        probe = host.exec("ip", "link", "add", "link", phy, "name", "isoprobe", "type", "vlan", "id", "9",
                          check=False)
        if probe.returncode != 0:
            pytest.skip(f"no 802.1Q in this kernel: {probe.stderr.strip()}")
        host.exec("ip", "link", "del", "isoprobe")
        transport = NsenterTransport(host)
        ref = HostRef(0, host.netns, "qemu", "local")
        drv = BridgeDriver(transports=lambda _h: transport, isolation=BridgeIsolation(lambda _h: transport))
        drv.attach(ref, _spec(1, None, vlan=301, phydev=phy))
        drv.attach(ref, _spec(2, None, vlan=302, phydev=phy))
        links = _links(host)
        for vid in (301, 302):
            dev = links[f"{phy}.{vid}"]
            assert dev["master"] == f"vcbr.{vid}" and dev["link"] == phy
            assert dev["linkinfo"]["info_data"]["id"] == vid  # type: ignore[index]
        drv.detach(ref, "vcis-1")
        assert f"{phy}.301" not in _links(host) and f"{phy}.302" in _links(host)
        drv.detach(ref, "vcis-2")
        assert not {f"{phy}.302", "vcbr.301", "vcbr.302"} & set(_links(host))
    finally:
        host.exec("ip", "link", "del", phy, check=False)
