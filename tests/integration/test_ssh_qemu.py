"""The qemu driver on SSH hosts: :class:`SshOps` piece by piece, then a real guest on a namespace
host, deployed, monitored and powered off over SSH with its NIC on a bridge in that namespace.
"""

# ruff: noqa: F811  (the harness's fixtures are imported here, and pytest passes them back as arguments)
from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.netns import NetnsHost, NetnsLab, lab_ssh, netns_hosts, netns_lab  # noqa: F401
from tests.support.qemu import kill_qemu_under, wait_domain
from vocloud.devtools.localprocs import qemu_pids_under
from vocloud.drivers.accel import AccelProbe
from vocloud.drivers.base import DomainSpec, DomainState, HostRef, NicSpec, Transport
from vocloud.drivers.net import BridgeDriver
from vocloud.drivers.qmp import QMPError
from vocloud.drivers.transport import LocalTransport
from vocloud.drivers.transport.ops import SshOps
from vocloud.drivers.transport.ssh import SshTransport
from vocloud.drivers.vmm.qemu import QemuDriver
from vocloud.errors import DriverError
from vocloud.guest.build import GuestImage

Hosts = Callable[[int], list[NetnsHost]]
BOOT_TIMEOUT = 120.0


@pytest.fixture(params=["local", "ssh"])
def ops(request: pytest.FixtureRequest, netns_hosts: Hosts, lab_ssh: SshTransport) -> SshOps:
    """SshOps over the local transport and over SSH to a namespace host (same filesystem)."""
    if request.param == "local":
        return SshOps(LocalTransport(), HostRef(0, "local"))
    host = netns_hosts(1)[0]
    return SshOps(lab_ssh, host.ref())


def test_file_operations(ops: SshOps, tmp_path: Path) -> None:
    d = tmp_path / "run dir"  # a space: arguments must survive the remote shell
    ops.mkdir(d / "sub")
    assert ops.exists(d / "sub") and not ops.exists(d / "nope")
    ops.write_text(d / "f.txt", "hello 'world'\n")
    assert (d / "f.txt").read_text() == "hello 'world'\n" and not (d / "f.txt.tmp").exists()
    assert ops.read_bytes(d / "f.txt") == b"hello 'world'\n"
    assert ops.read_bytes(d / "f.txt", 6) == b"'world'\n"
    assert ops.read_bytes(d / "f.txt", 100) == b""
    assert ops.read_bytes(d / "missing") is None
    assert ops.size(d / "f.txt") == 14 and ops.size(d / "missing") == 0
    assert ops.list_dir(d) == ["f.txt", "sub"] and ops.list_dir(d / "missing") == []
    src = tmp_path / "local.iso"
    src.write_bytes(b"\x00" * 4096)
    ops.put_file(src, d / "copy.iso")
    assert (d / "copy.iso").read_bytes() == src.read_bytes()
    ops.remove(d / "f.txt")
    ops.remove(d / "f.txt")  # missing: fine
    ops.remove_tree(d)
    assert not d.exists()


def test_process_operations(ops: SshOps, tmp_path: Path) -> None:
    me = os.getpid()
    argv = ops.cmdline(me)
    assert argv is not None and "python" in argv[0]
    assert ops.cmdline(2**22 + 1) is None
    cpu, rss = ops.usage(me)
    assert cpu >= 0 and rss > 10
    assert ops.usage(2**22 + 1) == (0.0, 0)
    ncpu, total, avail = ops.resources()
    assert ncpu == os.cpu_count() and 0 < avail <= total
    marker = tmp_path / "started"
    rc, _ = ops.start_daemon(["sh", "-c", f"echo started > '{marker}'"],
                             tmp_path / "err.log", timeout=10)
    assert rc == 0 and marker.read_text() == "started\n"
    rc, why = ops.start_daemon(["sh", "-c", "echo broken >&2; exit 3"], tmp_path / "err.log", 10)
    assert rc == 3 and "broken" in (tmp_path / "err.log").read_text()
    rc, why = ops.start_daemon(["sleep", "20"], tmp_path / "err.log", timeout=0.5)
    assert rc == 124 and "within 0.5 s" in why


class FakeQemu:
    """A QMP server on a UNIX socket: greeting, capabilities, a few commands, an event."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.seen: list[dict[str, object]] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rwb") as f:
                f.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
                f.flush()
                for line in f:
                    msg = json.loads(line)
                    self.seen.append(msg)
                    if msg["execute"] == "query-status":
                        f.write(b'{"event": "RESUME", "timestamp": {}}\n')
                        reply = {"return": {"status": "running", "running": True}}
                    elif msg["execute"] in ("qmp_capabilities", "system_powerdown"):
                        reply = {"return": {}}
                    else:
                        reply = {"error": {"class": "CommandNotFound", "desc": "no such command"}}
                    f.write(json.dumps(reply).encode() + b"\n")
                    f.flush()

    def close(self) -> None:
        self.sock.close()


def test_qmp_through_the_remote_helper(ops: SshOps, tmp_path: Path) -> None:
    fake = FakeQemu(tmp_path / "qmp.sock")
    try:
        assert ops.qmp(fake.path, "query-status") == {"status": "running", "running": True}
        assert ops.qmp(fake.path, "system_powerdown", {"x": 1}) == {}
        assert {"execute": "system_powerdown", "arguments": {"x": 1}} in fake.seen
        with pytest.raises(QMPError, match="no such command") as err:
            ops.qmp(fake.path, "bogus")
        assert err.value.cls == "CommandNotFound"
    finally:
        fake.close()
    with pytest.raises(QMPError, match="cannot connect to QMP socket"):
        ops.qmp(tmp_path / "nothing.sock", "query-status")


# ---------------------------------------------------------------- the driver


def ssh_driver(state: Path, transport: Transport, probe: AccelProbe, image: GuestImage) -> QemuDriver:
    return QemuDriver(state, accel_probe=probe, transports=lambda h: transport,
                      probe_guest=lambda: (image.vmlinux, image.initramfs, image.cmdline))


def test_unreachable_ssh_host_is_a_clear_error(netns_hosts: Hosts,
                                               tmp_path: Path) -> None:
    host = netns_hosts(1)[0]
    dead = HostRef(9, "dead", "qemu", f"ssh://root@{host.address}:2222")
    with SshTransport(connect_timeout=2) as ssh:
        drv = QemuDriver(tmp_path, accel_probe=AccelProbe(tmp_path), transports=lambda h: ssh)
        t0 = time.monotonic()
        with pytest.raises(DriverError, match=r"host dead \(ssh://root@10\.250\.\d+\.\d+:2222\): "
                                              "connection refused"):
            drv.poll(dead, "vc-1")
        with pytest.raises(DriverError, match="connection refused"):
            drv.monitor(dead)
        assert time.monotonic() - t0 < 5


@pytest.fixture
def remote_state(tmp_path: Path) -> Iterator[Path]:
    state = tmp_path / "qemu"
    state.mkdir()
    yield state
    kill_qemu_under(state)


def wait_state(drv: QemuDriver, host: HostRef, deploy_id: str, want: DomainState,
               timeout: float = BOOT_TIMEOUT) -> None:
    wait_domain(drv, host, deploy_id, want, timeout, interval=0.3)


@pytest.mark.slow
def test_guest_on_a_namespace_host_over_ssh(netns_hosts: Hosts, lab_ssh: SshTransport,
                                             remote_state: Path, guest_image: GuestImage,
                                             accel_probe: AccelProbe) -> None:
    host = netns_hosts(2)[1]
    ref = host.ref()
    drv = ssh_driver(remote_state, lab_ssh, accel_probe, guest_image)
    net = BridgeDriver(lambda h: lab_ssh)
    spec = DomainSpec(
        vm_id=201, deploy_id="vc-201", name="remote", cpu=1.0, vcpu=1, memory_mib=128,
        nics=(NicSpec("lan", "10.99.0.2", "02:00:0a:63:00:02", "vcbr-q"),),
        context={"HOSTNAME": "remote", "VALUE": "over-ssh"},
        kernel=str(guest_image.vmlinux), initrd=str(guest_image.initramfs),
        kernel_cmd=guest_image.cmdline)
    try:
        net.attach(ref, spec)
        first = drv.deploy(ref, spec)
        assert first.state in (DomainState.BOOTING, DomainState.RUNNING), first.detail
        wait_state(drv, ref, "vc-201", DomainState.RUNNING)
        assert drv.deploy(ref, spec).state == DomainState.RUNNING  # idempotent, over SSH too

        pids = qemu_pids_under(remote_state)
        assert len(pids) == 1 and pids[0] in host.pids(), "qemu does not run in the host's namespace"
        tap = json.loads(host.exec("ip", "-json", "link", "show", "dev", "vc-201-0").stdout)[0]
        assert tap["master"] == "vcbr-q" and "LOWER_UP" in tap["flags"], tap  # qemu holds it
        console = (remote_state / "hosts" / ref.name / "vc-201" / "console.log").read_text(errors="replace")
        assert "VOCLOUD-CONTEXT VALUE=over-ssh" in console  # the seed ISO crossed over SFTP

        info = drv.monitor(ref)
        assert info.attrs["ACCEL"] in ("kvm", "tcg") and info.total_mem_mib > 0
        assert info.domains["vc-201"].state == DomainState.RUNNING
        assert info.domains["vc-201"].memory_mib > 0

        drv.shutdown(ref, "vc-201", hard=False)  # the ACPI button, pressed over SSH
        wait_state(drv, ref, "vc-201", DomainState.OFF, timeout=60)
        assert "VOCLOUD-POWEROFF" in (remote_state / "hosts" / ref.name / "vc-201" / "console.log").read_text(
            errors="replace")
        drv.cleanup(ref, "vc-201")
        assert drv.poll(ref, "vc-201").state == DomainState.MISSING
    finally:
        kill_qemu_under(remote_state)
        net.detach(ref, "vc-201")
    names = {i["ifname"] for i in json.loads(host.exec("ip", "-json", "link", "show").stdout)}
    assert not {"vc-201-0", "vcbr-q"} & names
    assert not qemu_pids_under(remote_state)


@pytest.mark.slow
def test_two_hosts_a_host_that_goes_down_and_comes_back_and_hard_stop(
        netns_hosts: Hosts, netns_lab: NetnsLab, lab_ssh: SshTransport, tmp_path: Path,
        guest_image: GuestImage, accel_probe: AccelProbe) -> None:
    """One guest per host (one driver each: the namespaces share a filesystem). While a host's
    sshd is down its probes fail with a DriverError and its guest keeps running; when sshd is
    back the same guest is found RUNNING again. ``hard`` stops kill qemu."""
    hosts = netns_hosts(2)
    drivers, refs = [], []
    for i, host in enumerate(hosts):
        state = tmp_path / f"h{i}"
        state.mkdir()
        drivers.append(ssh_driver(state, lab_ssh, accel_probe, guest_image))
        refs.append(host.ref())
    specs = [DomainSpec(vm_id=300 + i, deploy_id=f"vc-{300 + i}", name=f"g{i}", cpu=1.0, vcpu=1,
                        memory_mib=128,
                        kernel=str(guest_image.vmlinux), initrd=str(guest_image.initramfs),
                        kernel_cmd=guest_image.cmdline) for i in range(2)]
    try:
        for drv, ref, spec in zip(drivers, refs, specs, strict=True):
            drv.deploy(ref, spec)
        for drv, ref, spec in zip(drivers, refs, specs, strict=True):
            wait_state(drv, ref, spec.deploy_id, DomainState.RUNNING)
        assert set(drivers[0].monitor(refs[0]).domains) == {"vc-300"}
        pid = qemu_pids_under(tmp_path / "h1")
        assert len(pid) == 1 and pid[0] in hosts[1].pids()

        netns_lab.stop_sshd(hosts[1])
        try:
            with pytest.raises(DriverError, match=rf"host {hosts[1].netns} .*connection refused"):
                drivers[1].monitor(refs[1])
            assert drivers[0].poll(refs[0], "vc-300").state == DomainState.RUNNING  # unaffected
            assert qemu_pids_under(tmp_path / "h1") == pid, "the guest died with its host's sshd"
        finally:
            netns_lab.start_sshd(hosts[1])
        info = drivers[1].monitor(refs[1])
        assert info.domains["vc-301"].state == DomainState.RUNNING

        for drv, ref, spec in zip(drivers, refs, specs, strict=True):
            drv.shutdown(ref, spec.deploy_id, hard=True)
            assert drv.poll(ref, spec.deploy_id).state == DomainState.OFF
            drv.cleanup(ref, spec.deploy_id)
        assert not qemu_pids_under(tmp_path)
    finally:
        kill_qemu_under(tmp_path)
