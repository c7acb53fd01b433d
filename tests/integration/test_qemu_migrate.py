"""Live migration of a real qemu guest between this machine and a namespace host over SSH.

One guest makes the whole round trip, to keep CI time down: out to the namespace host with its
disk copied (the hosts' datastores differ: block migration), back on the same disk file (shared
storage), then a migration to a target that cannot listen, which must leave it running where it
was. Its NIC stays on one L2 segment (a veth joins the two hosts' bridges), and the host pings
it throughout: the loss and qemu's pause are printed (``-s``) for docs/qemu.md. A counter on
its console (``CONTEXT=[TICK]``) must go on counting, never restart.
"""

# ruff: noqa: F811  (the harness's fixtures are imported here, and pytest passes them back as arguments)
from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.netns import NetnsHost, NetnsLab, lab_ssh, netns_hosts, netns_lab  # noqa: F401
from tests.support.procs import poll_until
from tests.support.qemu import kill_qemu_under, qemu_test_daemon, wait_domain
from vocloud.drivers.accel import AccelProbe
from vocloud.drivers.base import DiskSpec, DomainSpec, DomainState, HostRef, NicSpec, Transport
from vocloud.drivers.net import BridgeDriver
from vocloud.drivers.net.guard import TABLE, tap_elements
from vocloud.drivers.qmp import qmp_execute
from vocloud.drivers.transport import LocalTransport
from vocloud.drivers.transport.ssh import SshTransport
from vocloud.drivers.vmm.qemu import QemuDriver
from vocloud.drivers.vmm.qemu_migrate import migration_address, needs_block
from vocloud.errors import DriverError
from vocloud.guest.build import GuestImage

Hosts = Callable[[int], list[NetnsHost]]
BRIDGE, TRUNK = "vcbr-mg", "vmig"
PATTERN_MIB = 1


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


@pytest.fixture
def segment(netns_hosts: Hosts) -> Iterator[tuple[NetnsHost, str]]:
    """One L2 segment over both hosts: a bridge on each, joined by a veth; this side has .1."""
    host = netns_hosts(1)[0]
    net = f"10.97.{random.randint(10, 250)}"
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    try:
        sh("ip", "addr", "add", f"{net}.1/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        host.exec("ip", "link", "add", BRIDGE, "type", "bridge")
        host.exec("ip", "link", "set", BRIDGE, "up")
        sh("ip", "link", "add", f"{TRUNK}-a", "type", "veth", "peer", "name", f"{TRUNK}-b",
           "netns", host.netns)
        sh("ip", "link", "set", f"{TRUNK}-a", "master", BRIDGE, "up")
        host.exec("ip", "link", "set", f"{TRUNK}-b", "master", BRIDGE, "up")
        yield host, net
    finally:
        sh("ip", "link", "del", f"{TRUNK}-a", check=False)
        sh("ip", "link", "del", BRIDGE, check=False)
        host.exec("ip", "link", "del", BRIDGE, check=False)


def overlay(base: Path, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base), str(path))
    return path


def pattern_offset(disk: Path) -> int:
    size = json.loads(sh("qemu-img", "info", "-U", "--output=json", str(disk)).stdout)["virtual-size"]
    return int(size) - PATTERN_MIB * 2**20


def ticks(console: str) -> list[int]:
    return [int(n) for n in re.findall(r"VOCLOUD-TICK (\d+) ", console)]


class Pinger:
    """``ping`` every 20 ms from this machine while a migration runs; the loss afterwards."""

    def __init__(self, address: str) -> None:
        self.proc = subprocess.Popen(["ping", "-n", "-i", "0.02", "-W", "1", address],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def stop(self) -> tuple[int, int]:
        self.proc.send_signal(2)
        out, _ = self.proc.communicate(timeout=10)
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert m, out
        return int(m.group(1)), int(m.group(2))


def test_live_migration_round_trip(segment: tuple[NetnsHost, str], lab_ssh: SshTransport,
                                   tmp_path: Path, guest_image: GuestImage,
                                   accel_probe: AccelProbe) -> None:
    remote, net = segment
    local = HostRef(0, "local", "qemu", "local", {"MIGRATION_ADDRESS": remote.peer})
    ssh = remote.ref()

    def transports(h: HostRef) -> Transport:
        return LocalTransport() if h.transport == "local" else lab_ssh

    state = tmp_path / "qemu"
    drv = QemuDriver(state, accel_probe=accel_probe, transports=transports,
                     probe_guest=lambda: (guest_image.vmlinux, guest_image.initramfs, guest_image.cmdline))
    bridges = BridgeDriver(transports)
    disk_a = overlay(guest_image.base_disk, tmp_path / "dsA" / "vda.qcow2")
    disk_b = overlay(guest_image.base_disk, tmp_path / "dsB" / "vda.qcow2")
    offset = pattern_offset(disk_a)
    sh("qemu-io", "-f", "qcow2", "-c", f"write -P 0xab {offset} {PATTERN_MIB}M", str(disk_a))
    ip, mac = f"{net}.2", "02:00:0a:61:00:02"
    base = DomainSpec(
        vm_id=301, deploy_id="vcmg-301", name="mover", cpu=1.0, vcpu=1, memory_mib=128,
        disks=(DiskSpec("vda", str(disk_a), "qcow2"),),
        nics=(NicSpec("lan", ip, mac, BRIDGE),),
        context={"HOSTNAME": "mover", "TICK": "100", "ETH0_IP": ip, "ETH0_MAC": mac, "ETH0_MASK": "24"},
        kernel=str(guest_image.vmlinux), initrd=str(guest_image.initramfs), kernel_cmd=guest_image.cmdline)
    on_b = replace(base, disks=(DiskSpec("vda", str(disk_b), "qcow2"),))
    figures: list[str] = []
    try:
        bridges.attach(local, base)
        drv.deploy(local, base)
        wait_domain(drv, local, base.deploy_id, DomainState.RUNNING, 180, interval=0.3)
        sh("ping", "-c", "1", "-W", "20", ip)  # the guest answers at its address before it moves

        # 1. out, disks copied: the datastores differ
        assert needs_block(base, on_b)
        bridges.attach(ssh, on_b)
        before = ticks(drv.console(local, base.deploy_id))
        pinger = Pinger(ip)
        info = drv.migrate(local, ssh, on_b)
        _settle()
        sent, got = pinger.stop()
        assert info.state == DomainState.RUNNING, info
        assert "with its disks" in info.detail, info.detail
        figures.append(f"block   {info.detail}; ping {sent - got}/{sent} lost")
        bridges.detach(local, base.deploy_id)
        assert not (state / base.deploy_id).exists()  # nothing left on the source
        assert drv.poll(local, base.deploy_id).state == DomainState.MISSING
        run_b = state / "hosts" / ssh.name / base.deploy_id
        assert json.loads((run_b / "migrated.json").read_text())["block"] is True
        _wait_more_ticks(drv, ssh, base.deploy_id, before)

        # 2. back, on the same disk file (shared storage: nothing copied)
        assert not needs_block(on_b, on_b)
        bridges.attach(local, on_b)
        mid = ticks(drv.console(ssh, base.deploy_id))
        pinger = Pinger(ip)
        info = drv.migrate(ssh, local, on_b)
        _settle()
        sent, got = pinger.stop()
        assert info.state == DomainState.RUNNING and "shared storage" in info.detail, info
        figures.append(f"shared  {info.detail}; ping {sent - got}/{sent} lost")
        bridges.detach(ssh, base.deploy_id)
        assert not run_b.exists()
        after = _wait_more_ticks(drv, local, base.deploy_id, mid)
        assert after[: len(before)] == before  # one console history, one counter: never restarted
        assert after == list(range(after[0], after[0] + len(after))), "ticks lost or repeated"
        sh("ping", "-c", "1", "-W", "5", ip)

        # 3. a target that cannot listen: the guest runs on here, nothing is left there
        bad = HostRef(ssh.id, ssh.name, "qemu", ssh.transport, {"MIGRATION_ADDRESS": "192.0.2.1"})
        with pytest.raises(DriverError, match=r"failed, the guest runs on at local: .*192\.0\.2\.1"):
            drv.migrate(local, bad, on_b)
        assert drv.poll(local, base.deploy_id).state == DomainState.RUNNING
        assert not run_b.exists()
        _wait_more_ticks(drv, local, base.deploy_id, after)

        drv.shutdown(local, base.deploy_id, hard=True)
        # the pattern written into the first overlay travelled into the second
        sh("qemu-io", "-r", "-f", "qcow2", "-c", f"read -P 0xab {offset} {PATTERN_MIB}M", str(disk_b))
        print("\n" + "\n".join(figures))
    finally:
        kill_qemu_under(state)
        for h in (local, ssh):
            bridges.detach(h, base.deploy_id)


def _settle() -> None:
    time.sleep(1.0)  # pings after the move: the target's announcement has reached the bridge


def _wait_more_ticks(drv: QemuDriver, host: HostRef, deploy_id: str, seen: list[int]) -> list[int]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = ticks(drv.console(host, deploy_id, max_bytes=1 << 20))
        if now and seen and now[-1] >= seen[-1] + 3 and now[: len(seen)] == seen:
            return now
        time.sleep(0.2)
    pytest.fail(f"the counter stopped or restarted on {host.name}: {seen[-5:]} -> {now[-5:]}")


def test_migration_address() -> None:
    assert migration_address(HostRef(1, "a", "qemu", "ssh://root@10.1.2.3:2222")) == "10.1.2.3"
    v6 = HostRef(1, "a", "qemu", "local", {"MIGRATION_ADDRESS": "fd00::1"})
    assert migration_address(v6) == "[fd00::1]"
    assert migration_address(HostRef(1, "a", "qemu", "local")) == "127.0.0.1"
    with pytest.raises(DriverError, match="MIGRATION_ADDRESS 'x; rm' is not an IP address"):
        migration_address(HostRef(1, "a", "qemu", "local", {"MIGRATION_ADDRESS": "x; rm"}))


# ---------------------------------------------------------------- through the daemon and the CLI


@pytest.fixture
def qemu_daemon(tmp_path: Path, netns_lab: NetnsLab, guest_image: GuestImage) -> Iterator[Daemon]:
    with qemu_test_daemon(tmp_path / "d", VOCLOUD_SSH_KNOWN_HOSTS=str(netns_lab.known_hosts),
                          VOCLOUD_SSH_KEY=str(netns_lab.client_key)) as d:
        yield d


def _taps(host: NetnsHost | None) -> set[str]:
    argv = ["ip", "-json", "link", "show"]
    out = (host.exec(*argv) if host else sh(*argv)).stdout
    return {link["ifname"] for link in json.loads(out)}


def _guarded(host: NetnsHost | None) -> list[str]:
    argv = ["nft", "-j", "list", "map", "bridge", TABLE, "taps"]
    res = host.exec(*argv, check=False) if host else sh(*argv, check=False)
    return tap_elements(res.stdout) if res.returncode == 0 else []


def _chains(host: NetnsHost | None) -> list[str]:
    """The per-VM chains of the host's ``table bridge vocloud``."""
    argv = ["nft", "-j", "list", "table", "bridge", TABLE]
    res = host.exec(*argv, check=False) if host else sh(*argv, check=False)
    if res.returncode != 0:
        return []
    return [i["chain"]["name"] for i in json.loads(res.stdout)["nftables"]
            if "chain" in i and i["chain"]["name"] != "guests"]


def test_vm_migrate_through_the_daemon(qemu_daemon: Daemon, netns_hosts: Hosts,
                                       guest_image: GuestImage) -> None:
    """``vocloud vm migrate`` waits for the outcome: out to an SSH host whose datastore differs
    (the disk goes along, the source's copy goes), a failed move back (the target cannot listen:
    exit 2, RUNNING where it was, the reason in ``vm show``), then a good move back."""
    d = qemu_daemon
    remote = netns_hosts(1)[0]
    with d.rest() as c:
        c.post("/hosts", {"name": "local", "vmm": "qemu", "attrs": {"MIGRATION_ADDRESS": "192.0.2.1"}})
        c.post("/hosts", {"name": "far", "vmm": "qemu", "transport": remote.transport,
                          "attrs": {"DATASTORE_DIR": str(d.data_dir / "far-datastore")}})
        poll_until(lambda: all(h["state"] == "MONITORED" for h in c.get("/hosts")), 60, "hosts monitored")
        default = d.data_dir / "datastores" / "default"
        shutil.copyfile(guest_image.base_disk, default / "tiny.qcow2")
        c.post("/images", {"name": "tiny", "path": str(default / "tiny.qcow2")})
        c.post("/vnets", {"template": 'NAME="lan"\nBRIDGE="vcbr-mgd"\nAR=[IP="10.96.0.10", SIZE="4"]\n'
                                      'NETWORK_MASK="255.255.255.0"\n'})
        template = (f'CPU=0.5\nVCPU=1\nMEMORY=128\nKERNEL="{guest_image.vmlinux}"\n'
                    f'INITRD="{guest_image.initramfs}"\nKERNEL_CMD="{guest_image.cmdline}"\n'
                    'DISK=[IMAGE="tiny", TARGET="vda"]\nNIC=[NETWORK="lan"]\n'
                    'CONTEXT=[NETWORK="YES", TICK="200"]\nSCHED_REQUIREMENTS="NAME = \\"local\\""\n')
        [vm] = c.post("/vms", {"template": template, "name": "mover"})["ids"]
        poll_until(lambda: c.get(f"/vms/{vm}")["state"] == "RUNNING", 240, "the VM RUNNING")
        info = c.get(f"/vms/{vm}")
        deploy, lease = info["deploy_id"], info["leases"][0]["ip"]
        tap = f"{deploy}-0"
        local_disks = d.data_dir / "datastore" / "vms" / deploy
        assert (local_disks / "vda.qcow2").exists() and tap in _taps(None) and tap in _guarded(None)

    out = d.ok("vm", "migrate", str(vm), "far", "--json").json()
    assert out[0]["ok"] and out[0]["host"] == "far" and "with its disks" in out[0]["message"], out
    with d.rest() as c:
        info = c.get(f"/vms/{vm}")
        assert (info["state"], info["host"], info["leases"][0]["ip"]) == ("RUNNING", "far", lease)
        assert "migrate" in info["allowed_actions"]
    assert tap in _taps(remote) and tap in _guarded(remote)  # NIC and its rules went along
    assert tap not in _taps(None) and tap not in _guarded(None)
    assert not local_disks.exists() and not (d.data_dir / "qemu" / deploy).exists()  # nothing left
    assert (d.data_dir / "far-datastore" / "vms" / deploy / "vda.qcow2").exists()
    remote.exec("ip", "addr", "add", "10.96.0.1/24", "dev", "vcbr-mgd")
    assert remote.exec("ping", "-c", "2", "-W", "3", lease, check=False).returncode == 0

    bad = d.fails("vm", "migrate", str(vm), "local")
    assert "migration failed, now RUNNING on far" in bad.err and "192.0.2.1" in bad.err, bad.err
    with d.rest() as c:
        info = c.get(f"/vms/{vm}")
        assert (info["state"], info["host"]) == ("RUNNING", "far")
        last = info["history"][-1]
        assert last["action"] == "migrate_fail" and "192.0.2.1" in last["message"], last
        assert tap not in _taps(None) and not (d.data_dir / "qemu" / deploy).exists()
        assert tap not in _guarded(None) and deploy not in _chains(None)  # the target's rules went
        assert c.get("/hosts/local")["running_vms"] == 0  # the reservation on the target is gone
        c.patch("/hosts/local", {"attrs": {"MIGRATION_ADDRESS": remote.peer}})

    d.ok("vm", "migrate", str(vm), "local")
    with d.rest() as c:
        assert (c.get(f"/vms/{vm}")["state"], c.get(f"/vms/{vm}")["host"]) == ("RUNNING", "local")
        log = c.get(f"/vms/{vm}/log")["log"]
    counted = ticks(log)
    assert counted == list(range(1, len(counted) + 1)), "the counter restarted or skipped"
    assert tap in _taps(None) and tap not in _taps(remote) and tap not in _guarded(remote)
    assert not (d.data_dir / "qemu" / "hosts" / "far" / deploy).exists()
    assert not (d.data_dir / "far-datastore" / "vms" / deploy).exists()

    # reboot: RUNNING again only once the guest printed its ready marker after the reset
    d.ok("vm", "reboot", str(vm))
    with d.rest() as c:
        assert c.get(f"/vms/{vm}")["state"] == "REBOOT"
        poll_until(lambda: c.get(f"/vms/{vm}")["state"] != "REBOOT", 120, "the reboot to finish")
        assert c.get(f"/vms/{vm}")["state"] == "RUNNING"
        assert c.get(f"/vms/{vm}/log")["log"].count("VOCLOUD-READY") == 2
        assert deploy not in _chains(remote)
        c.post(f"/vms/{vm}/action", {"action": "terminate-hard"})
        poll_until(lambda: c.get(f"/vms/{vm}")["state"] == "DONE", 120, "the VM DONE")
    # nothing of the VM's left in either host's anti-spoofing table
    assert tap not in _guarded(None) and deploy not in _chains(None), _chains(None)
    assert deploy not in _chains(remote), _chains(remote)


# ---------------------------------------------------------------- cold migration


def _hmp(run: Path, line: str) -> str:
    return str(qmp_execute(str(run / "qmp.sock"), "human-monitor-command", {"command-line": line}))


def _pattern_in(disk: Path, offset: int, fill: int) -> bool:
    res = sh("qemu-io", "-U", "-r", "-f", "qcow2", "-c",
             f"read -P {fill:#x} {offset} {PATTERN_MIB}M", str(disk), check=False)
    return res.returncode == 0 and "Pattern verification failed" not in res.stdout + res.stderr


def test_cold_migration_through_the_daemon(qemu_daemon: Daemon, netns_hosts: Hosts,
                                           guest_image: GuestImage) -> None:
    """``vocloud vm migrate --cold``: a target that cannot stage the disk (its datastore is not
    writable) fails after the guest was shut down: it boots again where it was, the reason is in
    ``vm show``, the command exits 2, nothing is left on the target. Then the real move: what was
    written to the guest's disk is on the target's disk, the VM RUNNING there (after its ready
    marker), its tap and rules moved, nothing left on the source."""
    d = qemu_daemon
    remote = netns_hosts(1)[0]
    far_ds = d.data_dir / "far-datastore"
    with d.rest() as c:
        c.post("/hosts", {"name": "local", "vmm": "qemu"})
        c.post("/hosts", {"name": "far", "vmm": "qemu", "transport": remote.transport,
                          "attrs": {"DATASTORE_DIR": str(far_ds)}})
        poll_until(lambda: all(h["state"] == "MONITORED" for h in c.get("/hosts")), 60, "hosts monitored")
        default = d.data_dir / "datastores" / "default"
        shutil.copyfile(guest_image.base_disk, default / "tiny.qcow2")
        c.post("/images", {"name": "tiny", "path": str(default / "tiny.qcow2")})
        c.post("/vnets", {"template": 'NAME="lan"\nBRIDGE="vcbr-cold"\nAR=[IP="10.95.0.10", SIZE="4"]\n'
                                      'NETWORK_MASK="255.255.255.0"\n'})
        template = (f'CPU=0.5\nVCPU=1\nMEMORY=128\nKERNEL="{guest_image.vmlinux}"\n'
                    f'INITRD="{guest_image.initramfs}"\nKERNEL_CMD="{guest_image.cmdline}"\n'
                    'DISK=[IMAGE="tiny", TARGET="vda"]\nNIC=[NETWORK="lan"]\n'
                    'CONTEXT=[NETWORK="YES"]\nSCHED_REQUIREMENTS="NAME = \\"local\\""\n')
        [vm] = c.post("/vms", {"template": template, "name": "cold"})["ids"]
        poll_until(lambda: c.get(f"/vms/{vm}")["state"] == "RUNNING", 240, "the VM RUNNING")
        info = c.get(f"/vms/{vm}")
        deploy, lease = info["deploy_id"], info["leases"][0]["ip"]
    tap, run = f"{deploy}-0", d.data_dir / "qemu" / deploy
    local_disk = d.data_dir / "datastore" / "vms" / deploy / "vda.qcow2"
    far_disk = far_ds / "vms" / deploy / "vda.qcow2"
    offset = pattern_offset(local_disk)
    # the guest mounts its disk read-only: write through qemu's own block layer while it runs
    for cmd in (f"write -P 0xcd {offset} {PATTERN_MIB}M", "flush"):  # flush: the qcow2 metadata
        _hmp(run, f'qemu-io disk-vda "{cmd}"')
    assert _pattern_in(local_disk, offset, 0xCD)

    # 1. the target cannot stage the disk: found only after the poweroff, so it boots again here
    with d.rest() as c:
        c.patch("/hosts/far", {"attrs": {"DATASTORE_DIR": "/proc/vocloud-cold-unwritable"}})
    t0 = time.monotonic()
    bad = d.fails("vm", "migrate", str(vm), "far", "--cold")
    failed_s = time.monotonic() - t0
    assert "migration failed, now RUNNING on local" in bad.err, bad.err
    assert "booted again on local" in bad.err and "/proc/vocloud-cold-unwritable" in bad.err, bad.err
    with d.rest() as c:
        info = c.get(f"/vms/{vm}")
        assert (info["state"], info["host"]) == ("RUNNING", "local")
        last = info["history"][-1]
        assert last["action"] == "migrate_fail" and "cold migration to far failed" in last["message"]
        assert c.get("/hosts/far")["running_vms"] == 0
        poll_until(lambda: "VOCLOUD-READY" in c.get(f"/vms/{vm}/log")["log"], 120, "the guest back")
        c.patch("/hosts/far", {"attrs": {"DATASTORE_DIR": str(far_ds)}})
    assert "POWEROFF" in (run / "console.prev.log").read_text()  # it was shut down, by ACPI
    assert not (d.data_dir / "qemu" / "hosts" / "far" / deploy).exists() and tap not in _taps(remote)
    assert tap in _taps(None) and _pattern_in(local_disk, offset, 0xCD)

    # 2. the move
    t0 = time.monotonic()
    out = d.ok("vm", "migrate", str(vm), "far", "--cold", "--json").json()
    moved_s = time.monotonic() - t0
    assert out[0]["ok"] and out[0]["host"] == "far" and "migrated cold" in out[0]["message"], out
    with d.rest() as c:
        info = c.get(f"/vms/{vm}")
        assert (info["state"], info["host"], info["leases"][0]["ip"]) == ("RUNNING", "far", lease)
        assert "VOCLOUD-READY" in c.get(f"/vms/{vm}/log")["log"]  # RUNNING after the marker
        assert c.get("/hosts/local")["running_vms"] == 0
    assert _pattern_in(far_disk, offset, 0xCD), "what the guest's disk held did not travel"
    assert tap in _taps(remote) and tap in _guarded(remote) and tap not in _taps(None)
    assert tap not in _guarded(None) and deploy not in _chains(None)
    assert not local_disk.parent.exists() and not run.exists()  # nothing left on the source
    assert not list(far_disk.parent.glob("*.part"))
    with d.rest() as c:
        steps = [f"{h['action']} +{h['time'] - info['history'][0]['time']:.1f}s: {h['message'][:90]}"
                 for h in c.get(f"/vms/{vm}")["history"][-2:]]
    print(f"\ncold: failed (booted again) in {failed_s:.1f} s, moved in {moved_s:.1f} s\n" + "\n".join(steps))
    with d.rest() as c:
        c.post(f"/vms/{vm}/action", {"action": "terminate-hard"})
        poll_until(lambda: c.get(f"/vms/{vm}")["state"] == "DONE", 120, "the VM DONE")
    assert deploy not in _chains(remote) and not far_disk.parent.exists()
