"""The bridge network driver inside namespace hosts: through nsenter (a local-style transport)
and over SSH. Nothing is created in the root namespace; every test checks it left no tap or
bridge behind, and the namespaces themselves are deleted at session end whatever happens.
"""

# ruff: noqa: F811  (the harness's fixtures are imported here, and pytest passes them back as arguments)
from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from tests.support.netns import (  # noqa: F401
    NetnsHost,
    NsenterTransport,
    lab_ssh,
    netns_hosts,
    netns_lab,
)
from vocloud.drivers.base import DomainSpec, HostRef, NicSpec, Transport
from vocloud.drivers.net import BridgeDriver, tap_name
from vocloud.drivers.net.bridge import bridge_mac, host_tap_mac
from vocloud.drivers.net.links import Link
from vocloud.drivers.transport.ssh import SshTransport
from vocloud.drivers.vmm import qemu
from vocloud.errors import DriverError

Hosts = Callable[[int], list[NetnsHost]]


def links(host: NetnsHost) -> dict[str, dict[str, object]]:
    """The namespace's links as ``ip -j -d`` shows them, read directly (not via the driver)."""
    out = host.exec("ip", "-json", "-details", "link", "show").stdout
    return {str(item["ifname"]): item for item in json.loads(out)}


def kind(item: dict[str, object]) -> str:
    info = item.get("linkinfo") or {}
    assert isinstance(info, dict)
    return str(info.get("info_kind", ""))


def spec(vm_id: int, *bridges: str | None) -> DomainSpec:
    nics = tuple(NicSpec(network=f"net{i}", ip=f"10.99.0.{i + 2}", mac=f"02:00:0a:63:00:{i + 2:02x}",
                         bridge=b) for i, b in enumerate(bridges))
    return DomainSpec(vm_id=vm_id, deploy_id=f"vc-{vm_id}", name=f"g{vm_id}", cpu=1, vcpu=1,
                      memory_mib=64, nics=nics)


@pytest.fixture(params=["nsenter", "ssh"])
def target(request: pytest.FixtureRequest, netns_hosts: Hosts,
           lab_ssh: SshTransport) -> Iterator[tuple[NetnsHost, HostRef, Transport]]:
    """The first namespace host, driven locally (nsenter) or over SSH; checked clean afterwards."""
    host = netns_hosts(1)[0]
    before = set(links(host))
    transport: Transport = NsenterTransport(host) if request.param == "nsenter" else lab_ssh
    ref = host.ref() if request.param == "ssh" else HostRef(0, host.netns, "qemu", "local")
    yield host, ref, transport
    left = set(links(host)) - before
    for name in left:  # clean up for the next test, then fail this one
        host.exec("ip", "link", "del", name, check=False)
    assert not left, f"devices left behind: {sorted(left)}"


def test_attach_creates_bridges_and_enslaved_taps_then_detach_removes_them(
        target: tuple[NetnsHost, HostRef, Transport]) -> None:
    host, ref, transport = target
    drv = BridgeDriver(lambda h: transport, default_bridge="vcbr0")
    vm = spec(11, None, "vcbr-b")
    drv.attach(ref, vm)
    now = links(host)
    for bridge in ("vcbr0", "vcbr-b"):
        assert kind(now[bridge]) == "bridge" and "UP" in now[bridge]["flags"]  # type: ignore[operator]
        assert now[bridge].get("ifalias") == "vocloud"
    assert kind(now["vc-11-0"]) == "tun" and now["vc-11-0"]["master"] == "vcbr0"
    assert kind(now["vc-11-1"]) == "tun" and now["vc-11-1"]["master"] == "vcbr-b"
    assert "UP" in now["vc-11-0"]["flags"]  # type: ignore[operator]

    drv.attach(ref, vm)  # idempotent: nothing changes, nothing fails
    assert set(links(host)) == set(now)

    drv.detach(ref, "vc-11")
    after = links(host)
    assert not {"vc-11-0", "vc-11-1", "vcbr0", "vcbr-b"} & set(after)
    drv.detach(ref, "vc-11")  # a VM with no taps left: success


def test_a_bridge_shared_by_two_vms_stays_until_the_last_leaves(
        target: tuple[NetnsHost, HostRef, Transport]) -> None:
    host, ref, transport = target
    drv = BridgeDriver(lambda h: transport)
    drv.attach(ref, spec(21, "vcbr-s"))
    drv.attach(ref, spec(22, "vcbr-s"))
    drv.detach(ref, "vc-21")
    now = links(host)
    assert "vc-21-0" not in now and now["vc-22-0"]["master"] == "vcbr-s"
    drv.detach(ref, "vc-22")
    assert "vcbr-s" not in links(host)


def test_an_admin_bridge_is_used_and_never_removed(
        target: tuple[NetnsHost, HostRef, Transport]) -> None:
    host, ref, transport = target
    host.exec("ip", "link", "add", "name", "adminbr", "type", "bridge")
    try:
        drv = BridgeDriver(lambda h: transport)
        drv.attach(ref, spec(31, "adminbr"))
        now = links(host)
        assert now["vc-31-0"]["master"] == "adminbr" and "UP" in now["adminbr"]["flags"]  # type: ignore[operator]
        drv.detach(ref, "vc-31")
        assert "adminbr" in links(host) and "vc-31-0" not in links(host)
    finally:
        host.exec("ip", "link", "del", "adminbr", check=False)


def test_a_plain_device_with_the_bridge_name_is_refused(
        target: tuple[NetnsHost, HostRef, Transport]) -> None:
    host, ref, transport = target
    host.exec("ip", "link", "add", "name", "notabr", "type", "veth", "peer", "name", "notabr-p")
    try:
        drv = BridgeDriver(lambda h: transport)
        with pytest.raises(DriverError, match="notabr exists on the host but is a veth device"):
            drv.attach(ref, spec(41, "notabr"))
        assert "vc-41-0" not in links(host)
    finally:
        host.exec("ip", "link", "del", "notabr", check=False)


def test_a_half_done_attach_is_completed(target: tuple[NetnsHost, HostRef, Transport]) -> None:
    """A crash between creating the tap and enslaving it: attach again finishes the job."""
    host, ref, transport = target
    host.exec("ip", "tuntap", "add", "dev", "vc-51-0", "mode", "tap")
    drv = BridgeDriver(lambda h: transport)
    drv.attach(ref, spec(51, "vcbr-h"))
    now = links(host)
    assert now["vc-51-0"]["master"] == "vcbr-h" and "UP" in now["vc-51-0"]["flags"]  # type: ignore[operator]
    drv.detach(ref, "vc-51")


def test_bridge_addresses_stay_put_when_guests_come_and_go(
        target: tuple[NetnsHost, HostRef, Transport]) -> None:
    """Linux moves an unset bridge address to its lowest port; guests' ARP entries for the host
    then go stale and their connections to it stall (docs/hosts.md). vocloud's own bridge has a
    fixed address, and its taps' ``fe:`` addresses never undercut a NIC on an admin's bridge."""
    host, ref, transport = target
    drv = BridgeDriver(lambda h: transport)
    drv.attach(ref, spec(61, "vcbr-m"))
    drv.attach(ref, spec(62, "vcbr-m"))
    now = links(host)
    assert now["vcbr-m"]["address"] == bridge_mac("vcbr-m")
    assert now["vc-61-0"]["address"] == "fe:00:0a:63:00:02" == host_tap_mac("02:00:0a:63:00:02", "x")
    drv.detach(ref, "vc-61")
    assert links(host)["vcbr-m"]["address"] == bridge_mac("vcbr-m")
    drv.detach(ref, "vc-62")

    # a host-only bridge an admin made without an address: pinned to the one it has before the
    # first tap joins, so it keeps it (unpinned, it would take the first tap's fe: address)
    host.exec("ip", "link", "add", "name", "hostonly", "type", "bridge")
    try:
        own = links(host)["hostonly"]["address"]
        drv.attach(ref, spec(65, "hostonly"))
        drv.attach(ref, spec(66, "hostonly"))
        assert links(host)["hostonly"]["address"] == own
        drv.detach(ref, "vc-65")
        assert links(host)["hostonly"]["address"] == own and "hostonly" in links(host)
        drv.detach(ref, "vc-66")
    finally:
        host.exec("ip", "link", "del", "hostonly", check=False)

    # an admin's bridge with a NIC (a veth here) whose address the kernel chose: it keeps the
    # NIC's address while guests' taps join and leave
    host.exec("ip", "link", "add", "name", "adminbr2", "type", "bridge")
    host.exec("ip", "link", "add", "name", "uplink0", "address", "fc:ff:ff:ff:ff:fe",
              "type", "veth", "peer", "name", "uplink0-p")
    try:
        host.exec("ip", "link", "set", "dev", "uplink0", "master", "adminbr2")
        assert links(host)["adminbr2"]["address"] == "fc:ff:ff:ff:ff:fe"
        drv.attach(ref, spec(63, "adminbr2"))
        drv.attach(ref, spec(64, "adminbr2"))
        assert links(host)["adminbr2"]["address"] == "fc:ff:ff:ff:ff:fe"
        drv.detach(ref, "vc-63")
        drv.detach(ref, "vc-64")
        assert links(host)["adminbr2"]["address"] == "fc:ff:ff:ff:ff:fe"
    finally:
        host.exec("ip", "link", "del", "uplink0", check=False)
        host.exec("ip", "link", "del", "adminbr2", check=False)


def test_host_tap_addresses() -> None:
    assert host_tap_mac("02:00:0A:63:00:07", "vc-1-0") == "fe:00:0a:63:00:07"
    made = host_tap_mac("not-a-mac", "vc-1-0")  # derived from the tap name instead
    assert made.startswith("fe:") and len(made.split(":")) == 6 and made == host_tap_mac("", "vc-1-0")
    assert made != host_tap_mac("", "vc-2-0")
    assert bridge_mac("vcbr0") != bridge_mac("vcbr1") and bridge_mac("vcbr0").startswith("06:")


# ---------------------------------------------------------------- names (no host needed)


def test_tap_names_match_the_qemu_driver_and_long_ones_are_refused() -> None:
    assert qemu.tap_name is tap_name  # type: ignore[attr-defined]  # one definition, the bridge driver's
    assert tap_name("vc-7", 0) == "vc-7-0" and tap_name("vc-1234567890", 3) == "vc-1234567890-3"
    with pytest.raises(DriverError, match="longer than 15 characters"):
        tap_name("vc-12345678901", 0)


def test_long_names_fail_before_anything_is_created() -> None:
    calls: list[list[str]] = []

    class Recorder:
        def run(self, host: HostRef, argv: list[str], input: bytes | None = None,
                timeout: float | None = None) -> object:
            calls.append(argv)
            raise AssertionError("no command should run")

        def put(self, host: HostRef, local_path: str, remote_path: str) -> None:
            raise AssertionError

    drv = BridgeDriver(lambda h: Recorder())  # type: ignore[arg-type,return-value]
    bad = DomainSpec(vm_id=1, deploy_id="vc-123456789012", name="x", cpu=1, vcpu=1, memory_mib=64,
                     nics=(NicSpec("n", "10.99.0.2", "02:00:0a:63:00:02", "br0"),))
    with pytest.raises(DriverError, match="tap name 'vc-123456789012-0' is longer than 15"):
        drv.plan_attach(bad, {})
    with pytest.raises(DriverError, match="bridge name 'this-bridge-is-too-long'"):
        drv.plan_attach(spec(1, "this-bridge-is-too-long"), {})
    assert not calls


def test_plans_are_minimal() -> None:
    drv = BridgeDriver()
    ready = {"br0": Link("br0", "bridge", "", True, "vocloud"),
             "vc-1-0": Link("vc-1-0", "tun", "br0", True, "", "fe:00:0a:63:00:02")}
    assert drv.plan_attach(spec(1, "br0"), ready) == []
    empty = {"br0": Link("br0", "bridge", "", True, "", "aa:bb:cc:00:00:01")}
    assert drv.plan_attach(spec(1, "br0"), empty)[0] == "link set dev br0 address aa:bb:cc:00:00:01"
    # a tap left with the kernel's random address (an older vocloud, a crash) is re-addressed
    odd = {**ready, "vc-1-0": Link("vc-1-0", "tun", "br0", True, "", "02:11:22:33:44:55")}
    assert drv.plan_attach(spec(1, "br0"), odd) == ["link set dev vc-1-0 address fe:00:0a:63:00:02"]
    assert drv.plan_attach(spec(1, "br1"), {}) == [
        f"link add name br1 address {bridge_mac('br1')} type bridge", "link set dev br1 alias vocloud",
        "link set dev br1 up", "tuntap add dev vc-1-0 mode tap",
        "link set dev vc-1-0 address fe:00:0a:63:00:02", "link set dev vc-1-0 master br1",
        "link set dev vc-1-0 up"]
    assert drv.plan_detach("vc-1", ready) == ["link del dev vc-1-0", "link del dev br0"]
    assert drv.plan_detach("vc-2", ready) == []
    assert BridgeDriver(keep_empty_bridges=True).plan_detach("vc-1", ready) == ["link del dev vc-1-0"]
