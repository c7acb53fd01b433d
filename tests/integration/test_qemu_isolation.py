"""Issue 16 acceptance: VOs isolated on the wire, with real qemu guests of two VOs.

One daemon, one SSH host (a network namespace of the shared lab), three guests booted in
parallel by two VOs' users: A1 and A2 of VO ``isoa`` on network A (802.1Q, VLAN 101: its own
bridge ``vcbr.101``), B1 of VO ``isob`` on network B (the bridge driver, bridge ``isobrb``).
The host has an address on both segments (each network's GATEWAY) and forwards IPv4, so the
only thing between the VOs is vocloud's forward filter (``drivers/net/isolate.py``). Each guest
pings the addresses its ``CONTEXT=[PING=...]`` names once a second and prints the result on its
console (the test guest's hook, ``guest/init.sh``), so the test reads from outside what every
guest reaches:

* A1 and A2 reach each other at their leases and their gateway; B1 reaches its gateway;
* B1 never reaches A1 or A2, and A1 and A2 never reach B1, although the host routes;
* the host reaches all three at their leases;
* with the filter's rule flushed (by hand, in the namespace), B1 does reach A1 through the host,
  so the test would see a missing filter;
* after the guests end, no bridge, tap, forward chain or per-tap chain is left on the host.

A guest that changes its IP or MAC gets nothing through: the kernel-level proof with forged
frames is tests/integration/test_net_guard.py (the same guard runs on every tap here).
"""

# ruff: noqa: F811
from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.netns import NetnsHost, NetnsLab, netns_hosts, netns_lab  # noqa: F401
from tests.support.procs import poll_until
from tests.support.qemu import qemu_test_daemon
from vocloud.guest.build import GuestImage

pytestmark = pytest.mark.slow

A1, A2, B1 = "10.252.1.10", "10.252.1.11", "10.252.2.10"
GW_A, GW_B = "10.252.1.1", "10.252.2.1"
PINGS = {"a1": (A2, GW_A, B1), "a2": (A1, B1), "b1": (A1, A2, GW_B)}
_PING = re.compile(r"VOCLOUD-PING (\d+) ([0-9.]+) (ok|fail)")


@pytest.fixture
def qemu_daemon(tmp_path: Path, netns_lab: NetnsLab, guest_image: GuestImage) -> Iterator[Daemon]:
    with qemu_test_daemon(tmp_path, VOCLOUD_SSH_KNOWN_HOSTS=str(netns_lab.known_hosts),
                          VOCLOUD_SSH_KEY=str(netns_lab.client_key)) as d:
        yield d


def pings(log: str) -> list[tuple[int, str, bool]]:
    return [(int(r), ip, res == "ok") for r, ip, res in _PING.findall(log)]


def _ruleset(host: NetnsHost) -> dict[str, object]:
    return json.loads(host.exec("nft", "-j", "list", "ruleset").stdout)  # type: ignore[no-any-return]


def test_two_vos_do_not_reach_each_other_through_the_host(
        qemu_daemon: Daemon, netns_hosts: Callable[[int], list[NetnsHost]],
        guest_image: GuestImage) -> None:
    d = qemu_daemon
    host = netns_hosts(1)[0]
    forward = host.exec("sysctl", "-n", "net.ipv4.ip_forward").stdout.strip()
    with d.rest() as c:
        c.post("/hosts", {"name": "isohost", "vmm": "qemu", "transport": host.transport})
        store = d.data_dir / "datastores" / "default"
        for name, path in (("iso-vmlinux", guest_image.vmlinux), ("iso-initrd", guest_image.initramfs)):
            shutil.copyfile(path, store / name)
            c.post("/images", {"name": name, "path": str(store / name), "format": "raw", "public": True})
        tokens = {}
        for vo in ("isoa", "isob"):
            c.post("/groups", {"name": vo})
            tokens[vo] = c.post("/users", {"name": f"{vo}-user", "group": vo})["token"]
        c.post("/vnets", {"template": 'NAME="iso-a"\nVN_MAD="802.1Q"\nVLAN_ID="101"\n'
                          f'AR=[IP="{A1}", SIZE="8"]\nNETWORK_MASK="24"\nGATEWAY="{GW_A}"\n',
                          "group": "isoa"})
        c.post("/vnets", {"template": 'NAME="iso-b"\nVN_MAD="bridge"\nBRIDGE="isobrb"\n'
                          f'AR=[IP="{B1}", SIZE="8"]\nNETWORK_MASK="24"\nGATEWAY="{GW_B}"\n',
                          "group": "isob"})
        shown = c.get("/vnets/iso-a")
        assert (shown["vn_mad"], shown["bridge"], shown["vlan_id"]) == ("802.1Q", "vcbr.101", 101)
        poll_until(lambda: c.get("/hosts")[0]["state"] == "MONITORED", 60, "host monitored")

    base = ("CPU=0.5\nVCPU=1\nMEMORY=128\nKERNEL_IMAGE=\"iso-vmlinux\"\nINITRD_IMAGE=\"iso-initrd\"\n")
    ids: dict[str, int] = {}
    for name, vo, net, ip in (("a1", "isoa", "iso-a", A1), ("a2", "isoa", "iso-a", A2),
                              ("b1", "isob", "iso-b", B1)):
        with d.rest(tokens[vo]) as u:
            tpl = (base + f'NAME="{name}"\nNIC=[NETWORK="{net}", IP="{ip}"]\n'
                   f'CONTEXT=[NETWORK="YES", PING="{" ".join(PINGS[name])}"]\n')
            [ids[name]] = u.post("/vms", {"template": tpl})["ids"]

    try:
        with d.rest() as c:
            def running() -> bool:
                st = {n: c.get(f"/vms/{i}")["state"] for n, i in ids.items()}
                assert not [s for s in st.values() if "FAILURE" in s], st
                return all(s == "RUNNING" for s in st.values())

            t0 = time.monotonic()
            poll_until(running, 240, "three guests RUNNING")
            boot_s = time.monotonic() - t0

            def log(name: str) -> str:
                return str(c.get(f"/vms/{ids[name]}/log")["log"])

            # the host: an address on both segments, and it routes (only inside its namespace)
            host.exec("ip", "addr", "add", f"{GW_A}/24", "dev", "vcbr.101")
            host.exec("ip", "addr", "add", f"{GW_B}/24", "dev", "isobrb")
            host.exec("sysctl", "-qw", "net.ipv4.ip_forward=1")
            mark = {n: max((r for r, _ip, _ok in pings(log(n))), default=0) for n in ids}

            def after(name: str) -> list[tuple[int, str, bool]]:
                return [p for p in pings(log(name)) if p[0] > mark[name] + 1]  # +1: a round in flight

            def reached(name: str, ip: str) -> bool:
                return any(ok for _r, dst, ok in after(name) if dst == ip)

            poll_until(lambda: reached("a1", A2) and reached("a1", GW_A) and reached("a2", A1)
                       and reached("b1", GW_B), 60, "A1<->A2 and both gateways reachable")
            # a few more rounds in which B1 tries both A guests and they try B1
            poll_until(lambda: all(len({r for r, _ip, _ok in after(n)}) >= 4 for n in ids), 60,
                       "four ping rounds per guest with the host routing")
            crossed = [(n, dst) for n in ids for _r, dst, ok in after(n)
                       if ok and (dst.startswith("10.252.2.") != n.startswith("b"))
                       and dst not in (GW_A, GW_B)]
            assert not crossed, crossed
            tries = {n: sum(1 for _r, dst, _ok in after(n) if dst in (B1,) or (n == "b1" and dst in (A1, A2)))
                     for n in ids}
            assert all(v >= 3 for v in tries.values()), tries
            for ip in (A1, A2, B1):  # the host itself reaches every guest
                assert host.exec("ping", "-c", "2", "-W", "2", ip, check=False).returncode == 0, ip
            print(f"\nisolation: 3 guests RUNNING in {boot_s:.1f} s; cross-VO pings tried "
                  f"{sum(tries.values())}, answered 0")

            # the test can fail: without the forward rule, B1 reaches A1 through the host
            host.exec("nft", "flush", "chain", "inet", "vocloud", "forward")
            flushed = max((r for r, _ip, _ok in pings(log("b1"))), default=0)
            poll_until(lambda: any(ok and dst == A1 and r > flushed + 1
                                   for r, dst, ok in pings(log("b1"))), 30,
                       "B1 reaching A1 once the filter is gone")

            with d.rest(tokens["isoa"]) as u:
                for name in ("a1", "a2"):
                    u.post(f"/vms/{ids[name]}/action", {"action": "terminate-hard"})
            with d.rest(tokens["isob"]) as u:
                u.post(f"/vms/{ids['b1']}/action", {"action": "terminate-hard"})
            poll_until(lambda: all(c.get(f"/vms/{i}")["state"] == "DONE" for i in ids.values()),
                       120, "all DONE")
    finally:
        host.exec("sysctl", "-qw", f"net.ipv4.ip_forward={forward or 0}", check=False)

    links = {i["ifname"] for i in json.loads(host.exec("ip", "-json", "link", "show").stdout)}
    assert not {"vcbr.101", "isobrb"} & links, links
    left = json.dumps(_ruleset(host))
    assert '"from-vcbr.101"' not in left and '"from-isobrb"' not in left, left
    assert not [n for n in links if n.startswith("vc") and n.endswith("-0")], links
