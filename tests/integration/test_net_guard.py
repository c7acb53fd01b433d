"""Anti-spoofing on guest taps, against the real kernel: two guests' taps on one bridge in a
namespace host, frames written into one tap as a guest would send them, read from the other.

No qemu is needed: a process that opens a tap (``TUNSETIFF``) is exactly what the bridge sees
as a guest. With the guard, only frames from the NIC's own MAC and lease get through; without
it, every forged frame does (so the test can fail).
"""

# ruff: noqa: F811  (the harness's fixtures are imported here, and pytest passes them back as arguments)
from __future__ import annotations

import json
import sys
from collections.abc import Callable

import pytest

from tests.support.netns import NetnsHost, NsenterTransport, netns_hosts, netns_lab  # noqa: F401
from vocloud.drivers.base import DomainSpec, HostRef, NicSpec
from vocloud.drivers.net import BridgeDriver, tap_name
from vocloud.drivers.net.guard import (
    TABLE,
    TapGuard,
    elements_jumping_to,
    plan_guard,
    plan_unguard,
    stale,
    tap_elements,
)
from vocloud.errors import DriverError

BRIDGE = "vcbrg"
A = ("02:00:0a:58:00:0a", "10.88.0.10")
B = ("02:00:0a:58:00:0b", "10.88.0.11")

#: Runs inside the namespace: opens both taps, writes six frames into A's, prints which of them
#: came out of B's (a frame is named by its index; it arrives byte for byte as written).
PROBE = r'''
import fcntl, json, os, select, struct, sys, time
tap_a, tap_b, mac_a, ip_a, mac_b, ip_b = sys.argv[1:7]
def tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", name.encode(), 0x0002 | 0x1000))
    return fd
m = lambda s: bytes.fromhex(s.replace(":", ""))
i4 = lambda s: bytes(int(x) for x in s.split("."))
def arp(src_mac, sha, spa, tpa):
    return (b"\xff" * 6 + m(src_mac) + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
            + m(sha) + i4(spa) + b"\0" * 6 + i4(tpa)).ljust(60, b"\0")
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF)
    return ~(s + (s >> 16)) & 0xFFFF
def udp(src_mac, src_ip, dst_mac, dst_ip, tag):
    # a valid header: a host with br_netfilter loaded drops bridged IPv4 with a bad checksum
    payload = b"vocloud-guard-" + tag.encode()
    udp = struct.pack("!HHHH", 4000, 4000, 8 + len(payload), 0) + payload
    head = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, i4(src_ip), i4(dst_ip))
    ip = head[:10] + struct.pack("!H", csum(head)) + head[12:]
    return (m(dst_mac) + m(src_mac) + b"\x08\x00" + ip + udp).ljust(60, b"\0")
def ip6(src_mac, dst_mac):
    udp = struct.pack("!HHHH", 4000, 4000, 8, 0)
    head = struct.pack("!IHBB", 6 << 28, len(udp), 17, 64) + bytes.fromhex("fe80" + "0" * 26 + "01")
    return m(dst_mac) + m(src_mac) + b"\x86\xdd" + head + bytes.fromhex("fe80" + "0" * 26 + "02") + udp
frames = [  # the forged Ethernet source goes last: it would teach the bridge B's MAC on A's port
    arp(mac_a, mac_a, ip_a, ip_b),                      # 0 honest ARP request
    udp(mac_a, ip_a, mac_b, ip_b, "honest"),            # 1 honest IPv4
    udp(mac_a, "10.88.0.66", mac_b, ip_b, "forged"),    # 2 forged IPv4 source
    ip6(mac_a, mac_b),                                  # 3 IPv6 (link-local: no lease needed)
    arp(mac_a, mac_a, ip_b, ip_b),                      # 4 claims B's address
    arp(mac_b, mac_b, ip_b, ip_a),                      # 5 forged Ethernet source (B's MAC)
]
fa, fb = tap(tap_a), tap(tap_b)
time.sleep(0.3)  # carrier up, ports forwarding
for f in frames:
    os.write(fa, f)
seen, deadline = set(), time.time() + 2.0
while time.time() < deadline:
    r, _, _ = select.select([fb], [], [], 0.1)
    if r:
        data = os.read(fb, 4096)
        seen.update(i for i, f in enumerate(frames) if data[:len(f)] == f or data == f.rstrip(b"\0"))
print(json.dumps(sorted(seen)))
'''


def _spec(vm_id: int, mac: str, ip: str) -> DomainSpec:
    return DomainSpec(vm_id=vm_id, deploy_id=f"vc-{vm_id}", name=f"g{vm_id}", cpu=1, vcpu=1, memory_mib=64,
                      nics=(NicSpec(network="lan", ip=ip, mac=mac, bridge=BRIDGE),))


def _ruleset(host: NetnsHost) -> str:
    return host.exec("nft", "list", "ruleset").stdout


@pytest.mark.parametrize("guarded", [True, False], ids=["guard", "no-guard"])
def test_a_guest_sends_only_from_its_own_mac_and_lease(
        netns_hosts: Callable[[int], list[NetnsHost]], guarded: bool) -> None:
    host = netns_hosts(1)[0]
    transport = NsenterTransport(host)
    drv = BridgeDriver(lambda h: transport, guard=TapGuard(lambda h: transport) if guarded else None)
    ref = HostRef(0, host.netns, "qemu", "local")
    va, vb = _spec(31, *A), _spec(32, *B)
    drv.attach(ref, va)
    drv.attach(ref, vb)
    try:
        drv.attach(ref, va)  # idempotent: same rules, no duplicates
        if guarded:
            rules = _ruleset(host)
            assert rules.count("jump vc-31") == 1 and rules.count(f"ether saddr != {A[0]}") == 1, rules
        out = host.exec(sys.executable, "-c", PROBE, tap_name("vc-31", 0), tap_name("vc-32", 0),
                        *A, *B).stdout
        arrived = json.loads(out)
        assert arrived == ([0, 1] if guarded else [0, 1, 2, 3, 4, 5]), out
    finally:
        drv.detach(ref, "vc-31")
        drv.detach(ref, "vc-32")
    drv.detach(ref, "vc-31")  # idempotent: nothing left is success
    if guarded:
        rules = _ruleset(host)
        assert "vc-31" not in rules and "vc-32" not in rules, rules
        host.exec("nft", "delete", "table", "bridge", TABLE)


def test_a_filter_whose_tap_vanished_goes_with_the_next_detach(
        netns_hosts: Callable[[int], list[NetnsHost]]) -> None:
    """A tap deleted behind vocloud's back (the test daemons' reaper did this after the
    migration suite: guest killed, taps deleted, VM never detached) left its map element and
    chain in ``table bridge vocloud`` for ever; the next detach on the host removes them."""
    host = netns_hosts(1)[0]
    transport = NsenterTransport(host)
    drv = BridgeDriver(lambda h: transport, guard=TapGuard(lambda h: transport))
    ref = HostRef(0, host.netns, "qemu", "local")
    drv.attach(ref, _spec(51, *A))
    drv.attach(ref, _spec(52, *B))
    drv.attach(ref, _spec(53, "02:00:0a:58:00:0c", "10.88.0.12"))
    try:
        host.exec("ip", "link", "del", tap_name("vc-51", 0))  # the reaper, not vocloud
        assert "chain vc-51 " in _ruleset(host)
        drv.detach(ref, "vc-52")
        rules = _ruleset(host)
        assert "vc-51" not in rules and "vc-52" not in rules, rules
        assert "chain vc-53 " in rules and '"vc-53-0" : jump vc-53' in rules, rules  # alive: kept
    finally:
        for d in ("vc-51", "vc-52", "vc-53"):
            drv.detach(ref, d)
    assert "vc-5" not in _ruleset(host)
    host.exec("nft", "delete", "table", "bridge", TABLE)


def test_stale_filters_are_found_from_the_listing_and_the_links() -> None:
    listing = json.dumps({"nftables": [{"map": {"name": "taps", "elem": [
        ["vc-1-0", {"jump": {"target": "vc-1"}}], ["vc-2-0", {"jump": {"target": "vc-2"}}],
        ["vc-2-1", {"jump": {"target": "vc-2"}}]]}},
        {"chain": {"name": "guests"}}, {"chain": {"name": "vc-1"}}, {"chain": {"name": "vc-2"}},
        {"chain": {"name": "vc-3"}}, {"chain": {"name": "vc-9"}}]})
    # vc-1's tap is gone; vc-2 keeps one tap of two; vc-3 has no element at all; vc-9 is the VM
    # being detached (removed by its own lines)
    assert stale(listing, {"vc-2-0", "lo"}, "vc-9") == (["vc-1-0", "vc-2-1"], ["vc-1", "vc-3"])
    assert stale(listing, {"vc-1-0", "vc-2-0", "vc-2-1"}, "vc-3") == ([], ["vc-9"])
    script = plan_unguard("vc-9", ["vc-1-0"], ["vc-1"])
    assert script.endswith("flush chain bridge vocloud vc-1\ndelete chain bridge vocloud vc-1\n")
    with pytest.raises(DriverError, match="chain"):
        plan_unguard("vc-9", [], ["vc-1; flush ruleset"])


def test_scripts_are_pure_text_and_refuse_odd_tokens() -> None:
    spec = _spec(40, *A)
    script = plan_guard(spec, ["vc-40-0"])
    assert f"iifname vc-40-0 ether type ip ip saddr != {A[1]} counter drop" in script
    assert 'add element bridge vocloud taps { "vc-40-0" : jump vc-40 }' in script
    no_lease = DomainSpec(vm_id=41, deploy_id="vc-41", name="g", cpu=1, vcpu=1, memory_mib=64,
                          nics=(NicSpec(network="x", ip="", mac=A[0]),))
    assert "ether type { arp, ip } counter drop" in plan_guard(no_lease, ["vc-41-0"])
    with pytest.raises(DriverError, match="deploy id"):
        plan_guard(DomainSpec(vm_id=1, deploy_id="vc-1; flush ruleset", name="g", cpu=1, vcpu=1,
                              memory_mib=64, nics=spec.nics), ["t"])
    with pytest.raises(DriverError, match="MAC"):
        plan_guard(DomainSpec(vm_id=1, deploy_id="vc-1", name="g", cpu=1, vcpu=1, memory_mib=64,
                              nics=(NicSpec(network="x", ip=A[1], mac="02:00:0a:58:00:0a }"),)), ["t"])
    assert plan_unguard("vc-40", []).endswith("delete chain bridge vocloud vc-40\n")
    listing = json.dumps({"nftables": [{"metainfo": {}}, {"map": {"name": "taps", "elem": [
        ["vc-40-0", {"jump": {"target": "vc-40"}}], ["vc-400-0", {"jump": {"target": "vc-400"}}]]}}]})
    assert elements_jumping_to(listing, "vc-40") == ["vc-40-0"]
    assert tap_elements(listing) == ["vc-40-0", "vc-400-0"]
    assert tap_elements(json.dumps({"nftables": [{"map": {"name": "taps"}}]})) == []


def test_detach_without_nft_on_the_host_is_not_an_error() -> None:
    """A guest booted before the guard existed (or with it off) on a host without ``nft`` can
    still be terminated: there is nothing to remove."""
    from vocloud.drivers.base import CommandResult

    class NoNft:
        def run(self, host: HostRef, argv: list[str], input: bytes | None = None,
                timeout: float | None = None) -> CommandResult:
            assert argv[0] == "nft"
            return CommandResult(127, b"", b"nft: not found")

        def put(self, host: HostRef, local_path: str, remote_path: str) -> None:
            raise AssertionError("unused")

    guard = TapGuard(lambda h: NoNft())
    ref = HostRef(0, "h", "qemu", "local")
    guard.unguard(ref, "vc-9")  # no error
    with pytest.raises(DriverError, match="nft is not installed"):
        guard.guard(ref, _spec(9, *A), ["vc-9-0"])
