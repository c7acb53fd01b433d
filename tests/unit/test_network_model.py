"""The pure network rules: template attributes, range and MAC overlap, free blocks."""

from __future__ import annotations

import random

import pytest

from vocloud.errors import InvalidInput
from vocloud.model.network import (
    Range,
    check_ifname,
    first_mac_overlap,
    first_overlap,
    free_block,
    ip_to_int,
    mac_for,
    mac_to_int,
    parse_network,
)
from vocloud.model.template import parse_template

IP = ip_to_int


def _net(text: str) -> object:
    return parse_network(parse_template(text, fmt="one"))


def test_parse_network_typed_attributes() -> None:
    spec = parse_network(parse_template(
        'NAME="lan"\nBRIDGE="br-vo.7"\nVLAN_ID="42"\nPHYDEV="eth1"\nPUBLIC="YES"\nGROUP="atlas"\n'
        'AR=[IP="10.0.0.10", SIZE="4"]\nLEASES=[IP="10.0.1.1", MAC="02:AA:00:00:00:01"]\n', fmt="one"))
    assert (spec.name, spec.bridge, spec.vlan_id, spec.phydev, spec.public, spec.group) == (
        "lan", "br-vo.7", 42, "eth1", True, "atlas")
    assert spec.ranges == (Range(IP("10.0.0.10"), 4), Range(IP("10.0.1.1"), 1, "02:aa:00:00:00:01"))
    assert spec.wiring() == ["BRIDGE", "VLAN_ID", "PHYDEV"]
    plain = parse_network(parse_template('NAME="x"\nAR=[IP="10.0.0.1", SIZE="1"]\n', fmt="one"))
    assert (plain.bridge, plain.vlan_id, plain.phydev, plain.public, plain.wiring()) == (
        "", None, "", False, [])


@pytest.mark.parametrize(("line", "attribute"), [
    ('BRIDGE="br0; rm -rf /"', "BRIDGE"),
    ('BRIDGE="../../etc"', "BRIDGE"),
    ('BRIDGE="-br"', "BRIDGE"),
    ('BRIDGE=".."', "BRIDGE"),
    ('BRIDGE="abcdefghijklmnop"', "BRIDGE"),  # 16 bytes: longer than IFNAMSIZ allows
    ('PHYDEV="eth 0"', "PHYDEV"),
    ('VLAN_ID="0"', "VLAN_ID"),
    ('VLAN_ID="4095"', "VLAN_ID"),
    ('VLAN_ID="1_0"', "VLAN_ID"),
    ('VLAN_ID="\u00b9"', "VLAN_ID"),  # superscript one: not a number to a user
    ('VLAN_ID="-3"', "VLAN_ID"),
    ('AR=[IP="10.0.0.1", SIZE="0"]', "AR SIZE"),
    ('AR=[IP="10.0.0.1", SIZE="65537"]', "AR SIZE"),
    ('AR=[IP="10.0.0.1", SIZE="1_0"]', "AR SIZE"),
    ('AR=[IP="255.255.255.255", SIZE="2"]', "AR"),
    ('AR=[IP="fe80::1", SIZE="2"]', "AR IP"),
    ('AR=[IP="10.0.0.1"]', "AR"),
    ('AR=[TYPE="IP6", IP="10.0.0.1", SIZE="2"]', "AR"),
    ('LEASES=[MAC="02:00:00:00:00:01"]', "LEASES"),
    ('LEASES=[IP="10.0.0.1", MAC="02:00:00:00:01"]', "LEASES MAC"),
    ('LEASES=[IP="10.0.0.1", MAC="03:00:00:00:00:01"]', "LEASES MAC"),  # multicast
])
def test_parse_network_refuses_bad_attributes(line: str, attribute: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        _net(f'NAME="x"\n{line}\n')
    assert exc.value.details["attribute"] == attribute


def test_ranges_of_one_template_never_overlap_nor_share_a_mac() -> None:
    with pytest.raises(InvalidInput, match=r"overlap at 10.0.0.5"):
        _net('NAME="x"\nAR=[IP="10.0.0.1",SIZE="10"]\nAR=[IP="10.0.0.5",SIZE="2"]\n')
    with pytest.raises(InvalidInput, match=r"overlap at 10.0.0.3"):
        _net('NAME="x"\nAR=[IP="10.0.0.1",SIZE="10"]\nLEASES=[IP="10.0.0.3"]\n')
    # a FIXED lease whose MAC is the one another address of the network derives
    with pytest.raises(InvalidInput, match="MAC 02:00:0a:00:00:02"):
        _net('NAME="x"\nAR=[IP="10.0.0.1",SIZE="4"]\nLEASES=[IP="10.9.0.1", MAC="02:00:0a:00:00:02"]\n')
    with pytest.raises(InvalidInput, match="given twice"):
        _net('NAME="x"\nLEASES=[IP="10.9.0.1", MAC="02:aa:00:00:00:01"]\n'
             'LEASES=[IP="10.9.0.2", MAC="02:AA:00:00:00:01"]\n')
    _net('NAME="x"\nAR=[IP="10.0.0.1",SIZE="4"]\nAR=[IP="10.0.0.5",SIZE="4"]\n')  # adjacent is fine


def test_ifname_and_mac_helpers() -> None:
    assert check_ifname(" vcbr0 ", "BRIDGE") == "vcbr0"
    assert mac_for(IP("10.1.0.10")) == "02:00:0a:01:00:0a"
    assert mac_to_int("02:00:0A:01:00:0A") == 0x02000A01000A
    with pytest.raises(InvalidInput):
        mac_to_int("02-00-0a-01-00-0a")


def test_first_overlap_between_two_networks() -> None:
    a = [Range(100, 10), Range(200, 10)]
    assert first_overlap(a, [Range(110, 5)]) is None  # adjacent
    assert first_overlap(a, [Range(95, 6)]) == 100
    assert first_overlap(a, [Range(150, 100)]) == 200  # spans the gap, meets the second range
    assert first_overlap(a, [Range(205, 1)]) == 205
    assert first_overlap([Range(0, 1000)], [Range(500, 1), Range(10, 1)]) == 10  # lowest shared address
    # overlaps inside one side do not count as overlaps between the sides
    assert first_overlap([Range(0, 10), Range(5, 10)], [Range(20, 5)]) is None


def test_mac_overlap_between_derived_and_fixed() -> None:
    derived = [Range(IP("10.0.0.1"), 16)]
    fixed = [Range(IP("192.168.0.1"), 1, "02:00:0a:00:00:05")]
    assert first_mac_overlap(derived, fixed) == 0x02000A000005
    assert first_mac_overlap(derived, [Range(IP("192.168.0.1"), 1, "02:aa:00:00:00:05")]) is None
    assert first_mac_overlap(derived, [Range(IP("10.0.1.0"), 4)]) is None


def _naive_overlap(a: list[Range], b: list[Range]) -> int | None:
    hits = [ip for r in a for ip in range(r.start, r.end) if any(s.start <= ip < s.end for s in b)]
    return min(hits) if hits else None


def test_first_overlap_agrees_with_brute_force() -> None:
    rnd = random.Random(7)
    for _ in range(500):
        a = [Range(rnd.randrange(0, 200), rnd.randrange(1, 20)) for _ in range(rnd.randrange(1, 4))]
        b = [Range(rnd.randrange(0, 200), rnd.randrange(1, 20)) for _ in range(rnd.randrange(1, 4))]
        assert first_overlap(a, b) == _naive_overlap(a, b), (a, b)


def test_free_block() -> None:
    ars = [Range(100, 10), Range(200, 10)]
    assert free_block(ars, [], 4) == 100
    assert free_block(ars, [(101, 102)], 4) == 102
    assert free_block(ars, [(101, 102), (105, 106), (108, 109)], 4) == 200  # no 4 in a row left in the first
    assert free_block(ars, [], 11) is None  # never across two ranges
    assert free_block(ars, [], 10, start=200) == 200
    assert free_block(ars, [(205, 206)], 4, start=202) is None
    assert free_block(ars, [(205, 206)], 4, start=201) == 201
    assert free_block(ars, [], 4, start=108) is None  # runs past the range
    assert free_block(ars, [], 1, start=150) is None  # outside every range
    assert free_block([Range(100, 1, "02:aa:00:00:00:01")], [], 1) is None  # FIXED leases stay put


def _naive_block(ars: list[Range], taken: list[tuple[int, int]], size: int, start: int | None) -> int | None:
    busy = {ip for lo, hi in taken for ip in range(lo, hi)}
    for r in sorted(ars, key=lambda r: r.start):
        for first in range(r.start, r.end - size + 1):
            if start is not None and first != start:
                continue
            if not busy & set(range(first, first + size)):
                return first
    return None


def test_free_block_agrees_with_brute_force() -> None:
    rnd = random.Random(11)
    for _ in range(500):
        ars = [Range(0, 30), Range(50, 20)]
        taken = [(lo, lo + rnd.randrange(1, 5)) for lo in rnd.sample(range(0, 70), rnd.randrange(0, 8))]
        size = rnd.randrange(1, 12)
        start = rnd.choice([None, rnd.randrange(0, 70)])
        want = _naive_block(ars, taken, size, start)
        assert free_block(ars, taken, size, start) == want, (taken, size, start)


@pytest.mark.parametrize(("lines", "first", "count"), [
    # OpenNebula 3.x templates, as sites wrote them
    (['NETWORK_ADDRESS = "192.168.0.0"', "NETWORK_SIZE = C"], "192.168.0.1", 254),
    (['NETWORK_ADDRESS = "10.1.0.0"', "NETWORK_SIZE = B"], "10.1.0.1", 65534),
    (['NETWORK_ADDRESS = "10.2.0.0"', "NETWORK_SIZE = 100"], "10.2.0.1", 126),  # rounded to a /25
    (['NETWORK_ADDRESS = "10.3.0.0"', 'NETWORK_MASK = "255.255.255.240"'], "10.3.0.1", 14),
    (['NETWORK_ADDRESS = "10.4.0.0/24"', 'IP_START = "10.4.0.100"', 'IP_END = "10.4.0.199"'],
     "10.4.0.100", 100),
])
def test_ranged_networks_as_opennebula_wrote_them(lines: list[str], first: str, count: int) -> None:
    spec = parse_network(parse_template("\n".join(['NAME = "r"', "TYPE = RANGED", *lines])))
    assert spec.ranges == (Range(ip_to_int(first), count),)


@pytest.mark.parametrize(("lines", "attribute"), [
    (["TYPE = RANGED", "NETWORK_SIZE = C"], "NETWORK_ADDRESS"),
    (["TYPE = RANGED", 'NETWORK_ADDRESS = "10.0.0.0"'], "NETWORK_SIZE"),
    (["TYPE = RANGED", 'NETWORK_ADDRESS = "10.0.0.0"', "NETWORK_SIZE = A"], "NETWORK_SIZE"),  # > 65536
    (["TYPE = RANGED", 'NETWORK_ADDRESS = "10.0.0.7"', "NETWORK_SIZE = C"], "NETWORK_ADDRESS"),
    (["TYPE = RANGED", 'NETWORK_ADDRESS = "10.0.0.0"', 'NETWORK_MASK = "255.0.255.0"'], "NETWORK_MASK"),
    (["TYPE = RANGED", 'NETWORK_ADDRESS = "10.0.0.0/31"'], "NETWORK_ADDRESS prefix"),
    (["TYPE = RANGED", 'NETWORK_ADDRESS = "10.0.0.0/24"', 'IP_START = "10.0.1.5"'], "IP_START"),
    (["TYPE = RANGED", 'NETWORK_ADDRESS = "10.0.0.0/24"', 'IP_START = "10.0.0.9"', 'IP_END = "10.0.0.8"'],
     "IP_START"),
    (["TYPE = VXLAN", 'AR = [ IP = "10.0.0.1", SIZE = "2" ]'], "TYPE"),
])
def test_bad_ranged_networks_name_the_attribute(lines: list[str], attribute: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_network(parse_template("\n".join(['NAME = "r"', *lines])))
    assert err.value.details["attribute"] == attribute, err.value


def test_network_addressing_for_guests() -> None:
    spec = parse_network(parse_template(
        'NAME="a"\nAR=[IP="10.5.0.10", SIZE="5"]\nNETWORK_MASK="255.255.255.0"\n'
        'GATEWAY="10.5.0.1"\nDNS="10.5.0.2 8.8.8.8"\n'))
    assert spec.addressing.nic_attrs() == {"NETWORK_MASK": "255.255.255.0", "GATEWAY": "10.5.0.1",
                                           "DNS": "10.5.0.2 8.8.8.8"}
    prefix = parse_network(parse_template('NAME="p"\nAR=[IP="10.6.0.10", SIZE="5"]\nNETWORK_MASK="22"\n'))
    assert prefix.addressing.mask == "255.255.252.0"
    ranged_net = parse_network(parse_template(
        'NAME="r"\nTYPE=RANGED\nNETWORK_ADDRESS="10.7.0.0"\nNETWORK_SIZE="C"\nGATEWAY="10.7.0.1"\n'))
    assert ranged_net.addressing.mask == "255.255.255.0"  # the subnet's, when not given
    bare = parse_network(parse_template('NAME="n"\nAR=[IP="10.8.0.1", SIZE="2"]\n'))
    assert bare.addressing.nic_attrs() == {}


@pytest.mark.parametrize(("line", "attribute"), [
    ('GATEWAY="10.0.0.1; reboot"', "GATEWAY"), ('GATEWAY="gw.example.org"', "GATEWAY"),
    ('DNS="10.0.0.2 $(id)"', "DNS"), ('DNS="1.1.1.1 1.0.0.1 8.8.8.8 8.8.4.4 9.9.9.9"', "DNS"),
    ('NETWORK_MASK="255.0.255.0"', "NETWORK_MASK"), ('NETWORK_MASK="33"', "NETWORK_MASK"),
])
def test_bad_addressing_is_refused_naming_the_attribute(line: str, attribute: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_network(parse_template(f'NAME="x"\nAR=[IP="10.0.0.5", SIZE="2"]\n{line}\n'))
    assert err.value.details["attribute"] == attribute
