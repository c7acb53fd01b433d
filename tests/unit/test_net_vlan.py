"""802.1Q networks and the no-routing filter as pure decisions: VN_MAD checks, the ``ip -batch``
lines the bridge driver plans for a VLAN NIC, and the nft scripts of the forward filter. The
kernel-level runs are tests/integration/test_net_isolation.py and test_qemu_isolation.py."""

from __future__ import annotations

import json

import pytest

from vocloud.drivers.base import DomainSpec, NicSpec
from vocloud.drivers.net import BridgeDriver
from vocloud.drivers.net.bridge import bridge_mac
from vocloud.drivers.net.isolate import plan_isolate, plan_release
from vocloud.drivers.net.links import Link
from vocloud.errors import DriverError, InvalidInput
from vocloud.model.network import parse_network, parse_vn_mad
from vocloud.model.template import parse_template

AR = 'AR=[IP="10.0.0.1", SIZE="4"]\n'


def net(text: str) -> object:
    return parse_network(parse_template('NAME="n"\n' + text + AR, fmt="one"))


def test_vn_mad_is_checked_against_vlan_id() -> None:
    assert parse_vn_mad(None, None) == "bridge"
    assert parse_vn_mad("", 7) == "802.1Q"  # networks made before VN_MAD existed
    assert parse_vn_mad(" 802.1q ", 7) == "802.1Q"
    assert parse_vn_mad("BRIDGE", None) == "bridge"
    spec = parse_network(parse_template('NAME="n"\nVN_MAD="802.1Q"\nVLAN_ID="12"\nPHYDEV="eth1"\n' + AR,
                                        fmt="one"))
    assert (spec.bridge, spec.vlan_id, spec.phydev, spec.vn_mad) == ("vcbr.12", 12, "eth1", "802.1Q")
    assert spec.wiring() == ["BRIDGE", "VLAN_ID", "PHYDEV", "VN_MAD"]
    named = parse_network(parse_template('NAME="n"\nBRIDGE="br7"\nVLAN_ID="7"\n' + AR, fmt="one"))
    assert (named.bridge, named.vn_mad, named.wiring()) == ("br7", "802.1Q", ["BRIDGE", "VLAN_ID"])


@pytest.mark.parametrize(("text", "attribute", "match"), [
    ('VN_MAD="ovswitch"\n', "VN_MAD", "VN_MAD must be one of bridge, 802.1Q"),
    ('VN_MAD="802.1Q;reboot"\nVLAN_ID="3"\n', "VN_MAD", "VN_MAD must be one of"),
    ('VN_MAD="802.1Q"\n', "VLAN_ID", "needs a VLAN_ID"),
    ('VN_MAD="bridge"\nVLAN_ID="3"\n', "VLAN_ID", "does not tag frames"),
    ('VN_MAD="802.1Q"\nVLAN_ID="4095"\n', "VLAN_ID", "between 1 and 4094"),
    ('VLAN_ID="4094"\nPHYDEV="enp0s31f6xy"\n', "PHYDEV", "longer than 15 characters"),
    ('VLAN_ID="9"\nPHYDEV="-eth0"\n', "PHYDEV", "interface name"),
])
def test_bad_vn_mad_wiring_is_refused(text: str, attribute: str, match: str) -> None:
    with pytest.raises(InvalidInput, match=match) as exc:
        net(text)
    assert exc.value.details["attribute"] == attribute


def spec(vm_id: int, vlan: int | None, phydev: str = "eth1", bridge: str | None = None) -> DomainSpec:
    return DomainSpec(vm_id=vm_id, deploy_id=f"vc-{vm_id}", name="g", cpu=1, vcpu=1, memory_mib=64,
                      nics=(NicSpec("n", f"10.0.0.{vm_id}", f"02:00:0a:00:00:{vm_id:02x}", bridge,
                                    vlan_id=vlan, phydev=phydev),))


ETH1 = Link("eth1", "", "", True, "", "52:54:00:00:00:01")


def test_a_vlan_nic_gets_its_bridge_and_the_vlan_device_on_phydev() -> None:
    drv = BridgeDriver()
    lines = drv.plan_attach(spec(1, 12), {"eth1": ETH1})
    assert lines[:7] == [
        f"link add name vcbr.12 address {bridge_mac('vcbr.12')} type bridge",
        "link set dev vcbr.12 alias vocloud", "link set dev vcbr.12 up",
        "link add link eth1 name eth1.12 type vlan id 12", "link set dev eth1.12 alias vocloud",
        "link set dev eth1.12 master vcbr.12", "link set dev eth1.12 up"]
    assert "link set dev vc-1-0 master vcbr.12" in lines
    # PHYDEV down: brought up first; without PHYDEV the VLAN stays on this host's bridge
    down = {"eth1": Link("eth1", "", "", False, "")}
    assert "link set dev eth1 up" in drv.plan_attach(spec(1, 12), down)
    assert not [x for x in drv.plan_attach(spec(1, 12, phydev=""), {}) if "vlan" in x]
    # all in place: nothing to do
    ready = {"eth1": ETH1, "vcbr.12": Link("vcbr.12", "bridge", "", True, "vocloud", "06:00:00:00:00:01"),
             "eth1.12": Link("eth1.12", "vlan", "vcbr.12", True, "vocloud", vlan_id=12, parent="eth1"),
             "vc-1-0": Link("vc-1-0", "tun", "vcbr.12", True, "", "fe:00:0a:00:00:01")}
    assert drv.plan_attach(spec(1, 12), ready) == []
    # an admin's VLAN device not yet on the bridge is enslaved, and later left alone
    loose = {**ready, "eth1.12": Link("eth1.12", "vlan", "", True, "", vlan_id=12, parent="eth1")}
    assert drv.plan_attach(spec(1, 12), loose) == ["link set dev eth1.12 master vcbr.12"]


@pytest.mark.parametrize(("links", "match"), [
    ({}, "PHYDEV eth1 of VLAN 12 does not exist"),
    ({"eth1": ETH1, "eth1.12": Link("eth1.12", "veth", "", True, "")}, "is not VLAN 12 on eth1"),
    ({"eth1": ETH1, "eth1.12": Link("eth1.12", "vlan", "", True, "", vlan_id=13, parent="eth1")},
     "is not VLAN 12 on eth1"),
    ({"eth1": ETH1, "eth1.12": Link("eth1.12", "vlan", "br0", True, "", vlan_id=12, parent="eth1")},
     "is a port of bridge br0, not of vcbr.12"),
])
def test_a_vlan_device_that_is_not_what_the_network_says_is_refused(
        links: dict[str, Link], match: str) -> None:
    with pytest.raises(DriverError, match=match):
        BridgeDriver().plan_attach(spec(1, 12), links)


def test_detach_removes_the_vlan_device_and_bridge_only_with_the_last_guest() -> None:
    drv = BridgeDriver()
    links = {"eth1": ETH1, "vcbr.12": Link("vcbr.12", "bridge", "", True, "vocloud"),
             "eth1.12": Link("eth1.12", "vlan", "vcbr.12", True, "vocloud", vlan_id=12, parent="eth1"),
             "vc-1-0": Link("vc-1-0", "tun", "vcbr.12", True, ""),
             "vc-2-0": Link("vc-2-0", "tun", "vcbr.12", True, "")}
    assert drv.plan_detach("vc-1", links) == ["link del dev vc-1-0"]
    assert drv.unused_bridges("vc-1", links) == []
    del links["vc-2-0"]
    assert drv.plan_detach("vc-1", links) == ["link del dev vc-1-0", "link del dev eth1.12",
                                              "link del dev vcbr.12"]
    assert drv.unused_bridges("vc-1", links) == ["vcbr.12"]
    # an admin's VLAN device stays, and so does the bridge it is a port of
    admin = {**links, "eth1.12": Link("eth1.12", "vlan", "vcbr.12", True, "", vlan_id=12, parent="eth1")}
    assert drv.plan_detach("vc-1", admin) == ["link del dev vc-1-0"]
    assert drv.unused_bridges("vc-1", admin) == ["vcbr.12"]
    assert BridgeDriver(keep_empty_bridges=True).plan_detach("vc-1", links) == ["link del dev vc-1-0"]


def test_forward_filter_scripts() -> None:
    script = plan_isolate(["isobrb", "vcbr.101", "isobrb"])
    assert "add rule inet vocloud forward oifname @bridges iifname vmap @from_bridge\n" in script
    assert script.count('oifname != "isobrb" counter drop') == 1
    assert 'add element inet vocloud from_bridge { "vcbr.101" : jump from-vcbr.101 }' in script
    for bad in ('br0"; flush ruleset', "br 0", "", "-br0", "a" * 16):
        with pytest.raises(DriverError, match="refusing bridge"):
            plan_isolate([bad])
    listing = json.dumps({"nftables": [
        {"set": {"name": "bridges", "elem": ["vcbr.101", "isobrb"]}},
        {"map": {"name": "from_bridge", "elem": [["vcbr.101", {"jump": {"target": "from-vcbr.101"}}]]}},
        {"chain": {"name": "from-vcbr.101"}}, {"chain": {"name": "forward"}}]})
    assert plan_release(["vcbr.101"], listing) == (
        'delete element inet vocloud bridges { "vcbr.101" }\n'
        'delete element inet vocloud from_bridge { "vcbr.101" }\n'
        "delete chain inet vocloud from-vcbr.101\n")
    assert plan_release(["isobrb"], listing) == 'delete element inet vocloud bridges { "isobrb" }\n'
    assert plan_release(["other"], listing) == ""
