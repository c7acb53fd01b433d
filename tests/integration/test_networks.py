"""Networks belong to groups (issue 9, finding 5), on SQLite and on a real PostgreSQL.

Administrators wire networks; VOs use what is shared with them or reserve a block of it; ranges
on one L2 segment never overlap; no two VMs of two VOs get one IP and MAC on a segment.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.support.helpers import admin, user_in
from tests.support.race import race
from vocloud.errors import Conflict, Forbidden, InvalidInput, NoCapacity, NotFound
from vocloud.service import ipam
from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.store.schema import Lease, Network

SMALL = "CPU=0.1\nMEMORY=64\n"




def _vos(cloud: Cloud) -> tuple[Actor, Actor, Actor]:
    return admin(cloud), user_in(cloud, "alice", "atlas"), user_in(cloud, "carl", "cms")


def _nic(net: str, extra: str = "") -> str:
    return SMALL + f'NIC=[NETWORK="{net}"{extra}]\n'


def _lease(cloud: Cloud, a: Actor, vm_id: int) -> tuple[str, str]:
    lease = cloud.vms.show(a, vm_id)["leases"][0]
    return lease["ip"], lease["mac"]


def _network_names(cloud: Cloud) -> list[str]:
    with cloud.db.read() as s:
        return list(s.scalars(select(Network.name).order_by(Network.id)))


# ------------------------------------------------------------------------------ who creates
def test_a_user_may_not_create_a_network(cloud: Cloud) -> None:
    _a, alice, _carl = _vos(cloud)
    with pytest.raises(Forbidden) as exc:
        cloud.networks.create(alice, 'NAME="mine"\nBRIDGE="br0"\nVLAN_ID="7"\nAR=[IP="10.0.0.1", SIZE="4"]\n')
    assert "only an administrator may create a network" in exc.value.message
    assert "network mine with BRIDGE, VLAN_ID" in exc.value.message
    with pytest.raises(Forbidden, match="network plain"):  # no wiring asked for: still refused
        cloud.networks.create(alice, 'NAME="plain"\nAR=[IP="10.0.0.1", SIZE="4"]\n')
    assert _network_names(cloud) == []


def test_admin_creates_in_a_group_and_vos_use_what_is_shared(cloud: Cloud) -> None:
    a, alice, carl = _vos(cloud)
    net = cloud.networks.create(a, 'NAME="atl"\nBRIDGE="br1"\nVLAN_ID="12"\nPHYDEV="eth1"\n'
                                   'AR=[IP="10.1.0.1", SIZE="4"]\n', group="atlas")
    assert (net["group_id"], net["bridge"], net["vlan_id"], net["phydev"]) == (
        alice.group_id, "br1", 12, "eth1")
    by_template = cloud.networks.create(a, 'NAME="atl2"\nGROUP="atlas"\nAR=[IP="10.2.0.1", SIZE="2"]\n')
    assert by_template["group_id"] == alice.group_id
    pub = cloud.networks.create(a, 'NAME="pub"\nPUBLIC="YES"\nAR=[IP="10.3.0.1", SIZE="4"]\n')
    site = cloud.networks.create(a, 'NAME="site"\nAR=[IP="10.4.0.1", SIZE="4"]\n')
    assert pub["group_id"] == site["group_id"] == a.group_id
    assert {n["name"] for n in cloud.networks.list(alice)} == {"atl", "atl2", "pub"}
    assert {n["name"] for n in cloud.networks.list(carl)} == {"pub"}
    [vm] = cloud.vms.create(alice, _nic("atl"))
    nic = cloud.vms.show(alice, vm)["template"]
    assert 'BRIDGE="br1"' in nic and 'VLAN_ID="12"' in nic and 'PHYDEV="eth1"' in nic
    with pytest.raises(Forbidden):
        cloud.vms.create(carl, _nic("atl"))
    with pytest.raises(Forbidden):
        cloud.vms.create(carl, _nic("site"))
    cloud.accounts.create_acl(a, f"@{carl.group_id}", "VNET", f"#{site['id']}", "USE")
    [vm2] = cloud.vms.create(carl, _nic("site"))
    assert _lease(cloud, carl, vm2)[0] == "10.4.0.1"
    # bad group references: nothing created
    with pytest.raises(InvalidInput, match="disagree"):
        cloud.networks.create(a, 'NAME="x"\nGROUP="atlas"\nAR=[IP="10.5.0.1", SIZE="2"]\n', group="cms")
    with pytest.raises(NotFound, match="group nosuch"):
        cloud.networks.create(a, 'NAME="x"\nAR=[IP="10.5.0.1", SIZE="2"]\n', group="nosuch")
    with pytest.raises(InvalidInput) as exc:
        cloud.networks.create(a, 'NAME="x"\nBRIDGE="br0 up"\nAR=[IP="10.5.0.1", SIZE="2"]\n')
    assert exc.value.details["attribute"] == "BRIDGE"
    assert "x" not in _network_names(cloud)
    # a VO user may neither delete the network its group owns nor hold nothing else than MANAGE allows
    with pytest.raises(Forbidden, match="only an administrator may delete network atl2"):
        cloud.networks.delete(alice, "atl2")
    cloud.networks.delete(a, "atl2")


# ------------------------------------------------------------------------------ reservations
def test_reservation_happy_path_and_release(cloud: Cloud) -> None:
    a, alice, carl = _vos(cloud)
    cloud.networks.create(a, 'NAME="pub"\nBRIDGE="br0"\nPUBLIC="YES"\nAR=[IP="10.0.0.1", SIZE="16"]\n')
    r = cloud.networks.reserve(alice, "pub", 4, name="atlas-r")
    assert (r["name"], r["group_id"], r["owner_id"], r["parent"], r["bridge"], r["public"]) == (
        "atlas-r", alice.group_id, alice.user_id, "pub", "br0", False)
    assert r["ranges"] == [{"ip": "10.0.0.1", "size": 4, "mac": "02:00:0a:00:00:01"}]
    r2 = cloud.networks.reserve(alice, "pub", 2, ip="10.0.0.9")
    assert r2["name"] == "pub-atlas-10-0-0-9" and r2["ranges"][0]["ip"] == "10.0.0.9"
    shown = cloud.networks.show(alice, "pub")
    assert shown["reserved"] == 6
    assert [(x["name"], x["ranges"][0]["ip"]) for x in shown["reservations"]] == [
        ("atlas-r", "10.0.0.1"), ("pub-atlas-10-0-0-9", "10.0.0.9")]
    assert cloud.networks.show(carl, "pub")["reservations"] == []  # another VO's are not listed
    with pytest.raises(Forbidden):
        cloud.networks.show(carl, "atlas-r")
    with pytest.raises(Forbidden):
        cloud.vms.create(carl, _nic("atlas-r"))
    ids = cloud.vms.create(alice, _nic("atlas-r"), count=4)
    assert [_lease(cloud, alice, i)[0] for i in ids] == ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert 'BRIDGE="br0"' in cloud.vms.show(alice, ids[0])["template"]
    with pytest.raises(NoCapacity, match="atlas-r has no free lease"):
        cloud.vms.create(alice, _nic("atlas-r"))
    # releasing: refused while its leases are used; then the addresses return to the parent
    with pytest.raises(Conflict, match="has reservations"):
        cloud.networks.delete(a, "pub")
    with pytest.raises(Conflict, match="in use"):
        cloud.networks.delete(alice, "atlas-r")
    for i in ids:
        cloud.vms.action(alice, i, "terminate")
    with pytest.raises(Forbidden):
        cloud.networks.delete(carl, "atlas-r")
    cloud.networks.delete(alice, "atlas-r")
    [vm] = cloud.vms.create(carl, _nic("pub", ', IP="10.0.0.2"'))
    assert _lease(cloud, carl, vm) == ("10.0.0.2", "02:00:0a:00:00:02")


def test_reserved_addresses_are_never_leased_from_the_parent(cloud: Cloud) -> None:
    a, alice, carl = _vos(cloud)
    cloud.networks.create(a, 'NAME="pub"\nBRIDGE="br0"\nPUBLIC="YES"\nAR=[IP="10.0.0.1", SIZE="10"]\n')
    cloud.networks.reserve(alice, "pub", 4, name="atl", ip="10.0.0.4")  # .4-.7
    ids = cloud.vms.create(carl, _nic("pub"), count=6)  # exactly what is left
    got = sorted(_lease(cloud, carl, i)[0] for i in ids)
    assert got == ["10.0.0.1", "10.0.0.10", "10.0.0.2", "10.0.0.3", "10.0.0.8", "10.0.0.9"]
    with pytest.raises(NoCapacity, match=r"10 addresses, 4 of them reserved"):
        cloud.vms.create(carl, _nic("pub"))
    with pytest.raises(Conflict, match="reserved") as exc:
        cloud.vms.create(a, _nic("pub", ', IP="10.0.0.5"'))  # not even an administrator's NIC
    assert exc.value.details["attribute"] == "IP"
    with pytest.raises(Conflict, match="reserved"):
        cloud.networks.hold(a, "pub", "10.0.0.6")
    with pytest.raises(Conflict, match="no free block of 1"):
        cloud.networks.reserve(carl, "pub", 1)
    assert len(cloud.vms.create(alice, _nic("atl"), count=4)) == 4


def test_reservations_never_overlap(cloud: Cloud) -> None:
    a, alice, carl = _vos(cloud)
    cloud.networks.create(a, 'NAME="pub"\nPUBLIC="YES"\nAR=[IP="10.0.0.1", SIZE="20"]\n'
                             'AR=[IP="10.0.1.1", SIZE="8"]\n')
    cloud.networks.hold(a, "pub", "10.0.0.3")
    first = cloud.networks.reserve(carl, "pub", 2, name="c1", ip="10.0.0.10")
    assert first["ranges"][0]["ip"] == "10.0.0.10"
    with pytest.raises(Conflict, match=r"from 10.0.0.8: 10.0.0.10 is already leased, held or reserved"):
        cloud.networks.reserve(alice, "pub", 4, ip="10.0.0.8")
    with pytest.raises(Conflict, match=r"10.0.0.3 is already"):
        cloud.networks.reserve(alice, "pub", 2, ip="10.0.0.2")
    with pytest.raises(InvalidInput, match="not inside one address range"):
        cloud.networks.reserve(alice, "pub", 4, ip="10.0.0.19")  # would cross into nothing
    with pytest.raises(InvalidInput, match="not inside one address range"):
        cloud.networks.reserve(alice, "pub", 2, ip="10.0.5.1")
    # concurrent reservations from both VOs: each block handed out once
    ok, errors = race(8, lambda i: cloud.networks.reserve((alice, carl)[i % 2], "pub", 3))
    assert all(isinstance(e, Conflict) for e in errors), errors
    spans = [(ipam.ip_to_int(n["ranges"][0]["ip"]), n["size"]) for n in [first, *ok]]
    addresses = [ip for start, size in spans for ip in range(start, start + size)]
    assert len(addresses) == len(set(addresses))
    assert ipam.ip_to_int("10.0.0.3") not in addresses
    # 20 + 8 addresses, .0.3 held, .0.10-11 reserved: blocks of 3 fit at .0.4, .0.7, .0.12, .0.15,
    # .0.18, .1.1 and .1.4
    assert len(ok) == 7 and len(errors) == 1


def test_reservation_refusals(cloud: Cloud) -> None:
    a, alice, carl = _vos(cloud)
    cloud.networks.create(a, 'NAME="atl"\nAR=[IP="10.1.0.1", SIZE="300"]\n', group="atlas")
    cloud.networks.create(a, 'NAME="pub"\nPUBLIC="YES"\nAR=[IP="10.2.0.1", SIZE="8"]\n')
    with pytest.raises(Forbidden):
        cloud.networks.reserve(carl, "atl", 2)  # another VO's private network
    with pytest.raises(NotFound):
        cloud.networks.reserve(carl, "nosuch", 2)
    for bad in (0, -1, 257, 10**30, True):
        with pytest.raises(InvalidInput, match="max_reservation_size") as exc:
            cloud.networks.reserve(alice, "atl", bad)
        assert exc.value.details["attribute"] == "size"
    with pytest.raises(InvalidInput):
        cloud.networks.reserve(alice, "atl", 2, name="1234")
    with pytest.raises(InvalidInput, match="IPv4"):
        cloud.networks.reserve(alice, "atl", 2, ip="10.1.0.999")
    with pytest.raises(Forbidden, match="another group"):
        cloud.networks.reserve(alice, "pub", 2, group="cms")
    r = cloud.networks.reserve(a, "pub", 2, group="cms")  # an administrator may
    assert r["group_id"] == carl.group_id
    with pytest.raises(InvalidInput, match="itself a reservation"):
        cloud.networks.reserve(carl, r["name"], 1)
    with pytest.raises(Conflict, match="already exists"):
        cloud.networks.reserve(alice, "atl", 2, name="pub")
    with pytest.raises(Conflict, match="no free block of 7"):
        cloud.networks.reserve(alice, "pub", 7)
    assert cloud.networks.reserve(alice, "atl", 256)["size"] == 256
    assert len(_network_names(cloud)) == 4


# ------------------------------------------------------------------------------ one segment
def test_overlapping_ranges_on_one_segment_are_refused(cloud: Cloud) -> None:
    a, _alice, _carl = _vos(cloud)
    cloud.networks.create(a, 'NAME="n1"\nBRIDGE="br0"\nAR=[IP="10.0.0.1", SIZE="16"]\n')
    with pytest.raises(Conflict) as exc:
        cloud.networks.create(a, 'NAME="n2"\nBRIDGE="br0"\nAR=[IP="10.0.0.200", SIZE="1"]\n'
                                 'AR=[IP="10.0.0.9", SIZE="100"]\n')
    assert "address 10.0.0.9 is already in network n1 on bridge br0" in exc.value.message
    assert exc.value.details == {"attribute": "AR", "value": "10.0.0.9", "network": "n1"}
    with pytest.raises(Conflict, match="MAC 02:00:0a:00:00:03 is already given by network n1"):
        cloud.networks.create(a, 'NAME="n3"\nBRIDGE="br0"\n'
                                 'LEASES=[IP="192.168.0.1", MAC="02:00:0a:00:00:03"]\n')
    assert _network_names(cloud) == ["n1"]
    # other bridges, a VLAN (802.1Q: its own bridge vcbr.5), and the default bridge are other
    # segments; a VLAN on a bridge that carries untagged guests would be the same wire: refused
    cloud.networks.create(a, 'NAME="n4"\nBRIDGE="br1"\nAR=[IP="10.0.0.1", SIZE="16"]\n')
    with pytest.raises(Conflict, match=r"bridge br0 already carries untagged frames \(network n1\)") as e5:
        cloud.networks.create(a, 'NAME="n5"\nBRIDGE="br0"\nVLAN_ID="5"\nAR=[IP="10.1.0.1", SIZE="1"]\n')
    assert e5.value.details == {"attribute": "BRIDGE", "value": "br0", "network": "n1"}
    n5 = cloud.networks.create(a, 'NAME="n5"\nVLAN_ID="5"\nAR=[IP="10.0.0.1", SIZE="16"]\n')
    assert (n5["bridge"], n5["vlan_id"], n5["vn_mad"]) == ("vcbr.5", 5, "802.1Q")
    with pytest.raises(Conflict, match=r"bridge vcbr\.5 already carries VLAN 5 \(network n5\)"):
        cloud.networks.create(a, 'NAME="n5b"\nBRIDGE="vcbr.5"\nAR=[IP="10.2.0.1", SIZE="1"]\n')
    with pytest.raises(Conflict, match=r"bridge vcbr\.5 already carries VLAN 5"):
        cloud.networks.create(a, 'NAME="n5c"\nVN_MAD="802.1Q"\nBRIDGE="vcbr.5"\nVLAN_ID="6"\n'
                                 'AR=[IP="10.2.0.1", SIZE="1"]\n')
    cloud.networks.create(a, 'NAME="n6"\nAR=[IP="10.0.0.1", SIZE="16"]\n')
    with pytest.raises(Conflict, match=r"network n5 on bridge vcbr\.5 VLAN 5"):
        cloud.networks.create(a, 'NAME="n7"\nVN_MAD="802.1Q"\nVLAN_ID="5"\nAR=[IP="10.0.0.16", SIZE="1"]\n')
    with pytest.raises(Conflict, match="network n6 on the default bridge"):
        cloud.networks.create(a, 'NAME="n8"\nAR=[IP="10.0.0.2", SIZE="1"]\n')
    # deleting a network frees its range on the segment
    cloud.networks.delete(a, "n1")
    cloud.networks.create(a, 'NAME="n9"\nBRIDGE="br0"\nAR=[IP="10.0.0.8", SIZE="4"]\n')


def test_concurrent_overlapping_creates_one_wins(cloud: Cloud) -> None:
    a = admin(cloud)
    for round_ in range(3):
        bridge = f"brc{round_}"  # each round a segment nobody has locked yet
        ok, errors = race(6, lambda i, b=bridge: cloud.networks.create(  # type: ignore[misc]
            a, f'NAME="{b}-{i}"\nBRIDGE="{b}"\nAR=[IP="10.7.0.{1 + i}", SIZE="10"]\n'))
        assert len(ok) == 1, (ok, errors)
        assert len(errors) == 5 and all(isinstance(e, Conflict) for e in errors), errors
    with cloud.db.read() as s:
        assert len(list(s.scalars(select(Network.id)))) == 3


def test_two_vos_never_share_an_address_on_one_segment(cloud: Cloud) -> None:
    """The finding, replayed: VO users cannot wire a copy of another VO's range, an administrator
    cannot by mistake, and two VOs' VMs filling a shared network and its reservation never meet."""
    a, alice, carl = _vos(cloud)
    cloud.networks.create(a, 'NAME="cmsnet"\nBRIDGE="br0"\nAR=[IP="10.0.0.1", SIZE="6"]\n', group="cms")
    cloud.networks.create(a, 'NAME="pub"\nBRIDGE="br0"\nPUBLIC="YES"\nAR=[IP="10.0.1.1", SIZE="12"]\n')
    with pytest.raises(Forbidden):
        cloud.networks.create(alice, 'NAME="copy"\nBRIDGE="br0"\nAR=[IP="10.0.0.1", SIZE="6"]\n')
    with pytest.raises(Conflict, match="cmsnet"):
        cloud.networks.create(a, 'NAME="copy"\nBRIDGE="br0"\nAR=[IP="10.0.0.1", SIZE="6"]\n', group="atlas")
    cloud.networks.reserve(alice, "pub", 5, name="atl")
    # a non-administrator's NIC cannot put the VM on another bridge or pick a MAC
    for extra, attr in ((', BRIDGE="br9"', "BRIDGE"), (', MAC="02:00:0a:00:00:01"', "MAC")):
        with pytest.raises(Forbidden, match=attr):
            cloud.vms.create(alice, _nic("atl", extra))
    vms = [(carl, i) for i in cloud.vms.create(carl, _nic("cmsnet"), count=6)]
    vms += [(carl, i) for i in cloud.vms.create(carl, _nic("pub"), count=7)]
    vms += [(alice, i) for i in cloud.vms.create(alice, _nic("atl"), count=5)]
    for who, net in ((carl, "pub"), (alice, "atl"), (carl, "cmsnet")):
        with pytest.raises(NoCapacity):
            cloud.vms.create(who, _nic(net))
    leases = [_lease(cloud, who, i) for who, i in vms]
    assert len(leases) == 18
    assert len({ip for ip, _ in leases}) == 18 and len({mac for _, mac in leases}) == 18
    with cloud.db.read() as s:
        assert len(set(s.scalars(select(Lease.mac)))) == len(list(s.scalars(select(Lease.id)))) == 18


def test_nic_attributes_come_from_the_network(cloud: Cloud) -> None:
    """Defence in depth: the lease path itself refuses a non-administrator's BRIDGE/MAC/VLAN_ID/
    PHYDEV, whatever the template checks above it let through."""
    a, alice, _carl = _vos(cloud)
    cloud.networks.create(a, 'NAME="atl"\nBRIDGE="br0"\nAR=[IP="10.0.0.1", SIZE="8"]\n', group="atlas")
    cloud.networks.create(a, 'NAME="other"\nBRIDGE="br0"\nAR=[IP="10.0.1.1", SIZE="8"]\n'
                             'LEASES=[IP="10.0.2.1", MAC="02:aa:00:00:00:01"]\n')
    for key, value in (("BRIDGE", "br9"), ("MAC", "02:00:0a:00:00:09"), ("VLAN_ID", "3"), ("PHYDEV", "eth0")):
        with cloud.db.write() as s:
            net = s.scalars(select(Network).where(Network.name == "atl")).one()
            with pytest.raises(Forbidden) as exc:
                ipam.lease_nic(s, net, 0, {"NETWORK": "atl", key: value}, 0, admin=False)
            assert exc.value.details["attribute"] == key
    with cloud.db.read() as s:
        assert list(s.scalars(select(Lease.id))) == []
    # even an administrator's NIC takes VLAN_ID and PHYDEV from the network: a VLAN the network
    # does not have would join its bridge to another segment (802.1Q driver)
    [vm] = cloud.vms.create(a, _nic("atl", ', VLAN_ID="3", PHYDEV="eth0"'))
    stored = cloud.vms.show(a, vm)["template"]
    assert "VLAN_ID" not in stored and "PHYDEV" not in stored and 'BRIDGE="br0"' in stored, stored
    cloud.vms.action(a, vm, "terminate")  # PENDING: gone at once, lease freed
    # a requested IP must lie in the network's own ranges and be free
    with pytest.raises(InvalidInput, match="not in any address range of network atl"):
        cloud.vms.create(alice, _nic("atl", ', IP="10.0.1.1"'))
    [vm] = cloud.vms.create(alice, _nic("atl", ', IP="10.0.0.5", MODEL="virtio"'))
    tmpl = cloud.vms.show(alice, vm)["template"]
    assert 'MODEL="virtio"' in tmpl and 'IP="10.0.0.5"' in tmpl and 'MAC="02:00:0a:00:00:05"' in tmpl
    with pytest.raises(Conflict, match="already leased"):
        cloud.vms.create(alice, _nic("atl", ', IP="10.0.0.5"'))
    # an administrator may choose a bridge and a MAC; the MAC must be free on the segment
    [adm] = cloud.vms.create(a, _nic("atl", ', MAC="02:bb:00:00:00:01", BRIDGE="br7"'))
    assert _lease(cloud, a, adm)[1] == "02:bb:00:00:00:01"
    assert 'BRIDGE="br0"' in cloud.vms.show(a, adm)["template"]  # the network's bridge still wins
    for mac, why in (("02:bb:00:00:00:01", "already used by 10.0.0.1"),
                     ("02:00:0a:00:01:03", "belongs to an address of network other"),
                     ("02:aa:00:00:00:01", "belongs to an address of network other")):
        with pytest.raises(Conflict, match=why):
            cloud.vms.create(a, _nic("atl", f', MAC="{mac}"'))
    with pytest.raises(InvalidInput):
        cloud.vms.create(a, _nic("atl", ', MAC="not-a-mac"'))


def test_guests_are_told_their_address_mask_gateway_and_dns(cloud: Cloud) -> None:
    """``CONTEXT=[NETWORK="YES"]``: OpenNebula's ETHn_* variables and cloud-init's network-config
    come from the lease and the network; a user cannot write them into a NIC."""
    from vocloud.drivers.context import seed_files
    from vocloud.engine.domain import build_spec
    from vocloud.store.schema import VM

    a, alice, _ = _vos(cloud)
    cloud.networks.create(a, 'NAME="ctxnet"\nBRIDGE="vcbr7"\nPUBLIC="YES"\nAR=[IP="10.77.0.10", SIZE="4"]\n'
                             'NETWORK_MASK="255.255.255.0"\nGATEWAY="10.77.0.1"\nDNS="10.77.0.2"\n')
    [vm_id] = cloud.vms.create(alice, _nic("ctxnet") + 'CONTEXT=[NETWORK="YES", GREETING="hi"]\n')
    ip, mac = _lease(cloud, a, vm_id)
    with cloud.db.read() as s:
        spec = build_spec(s.get(VM, vm_id), "alice", "atlas")  # type: ignore[arg-type]
    ctx = spec.context
    assert {k: ctx[k] for k in ctx if k.startswith("ETH0_")} == {
        "ETH0_IP": ip, "ETH0_MAC": mac, "ETH0_MASK": "255.255.255.0", "ETH0_GATEWAY": "10.77.0.1",
        "ETH0_DNS": "10.77.0.2", "ETH0_NETWORK": "ctxnet"}
    netcfg = seed_files(spec)["network-config"]
    assert f'addresses: ["{ip}/24"]' in netcfg and 'gateway4: "10.77.0.1"' in netcfg
    assert "ETH0_GATEWAY='10.77.0.1'" in seed_files(spec)["context.sh"]
    [quiet] = cloud.vms.create(alice, _nic("ctxnet") + 'CONTEXT=[GREETING="hi"]\n')
    with cloud.db.read() as s:
        assert not any(k.startswith("ETH") for k in build_spec(s.get(VM, quiet)).context)  # type: ignore[arg-type]
    for attr in ("GATEWAY", "DNS", "NETWORK_MASK"):
        with pytest.raises(InvalidInput, match=f"NIC/{attr}"):
            cloud.vms.create(alice, _nic("ctxnet", f', {attr}="10.0.0.66"'))
