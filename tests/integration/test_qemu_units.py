"""The qemu driver's pure parts, the guest builder's pieces and the accel cache: no guest boots.

These sit beside the boot tests because they test the same modules, but they need neither qemu
nor the guest image, so they run (fast) everywhere.
"""

from __future__ import annotations

import json
import lzma
import os
from pathlib import Path
from typing import Any

import pytest

from vocloud.drivers.accel import AccelProbe
from vocloud.drivers.base import DiskSpec, DomainSpec, DomainState, HostRef, NicSpec
from vocloud.drivers.net.bridge import tap_name
from vocloud.drivers.vmm.qemu import EXPORT_MANIFEST, QemuDriver, build_argv, spec_from_json, spec_to_json
from vocloud.errors import DriverError
from vocloud.guest.build import (
    CpioEntry,
    _kernel_dependency,
    extract_vmlinux,
    load_order,
    module_index,
    write_cpio,
)

LOCAL = HostRef(id=0, name="local", vmm="qemu")


def spec(**fields: Any) -> DomainSpec:
    return DomainSpec(
        vm_id=9, deploy_id="vc-9", name="n", cpu=1, vcpu=2, memory_mib=256,
        disks=(DiskSpec("vdb", "/data/b.qcow2"), DiskSpec("vda", "/data/a,odd.qcow2")),
        nics=(NicSpec("pub", "10.0.0.9", "02:00:0a:00:00:09"),),
        context={"VALUE": "1"}, **fields,
    )


def opts(argv: list[str], flag: str) -> list[str]:
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_argv_for_kernel_boot_uses_microvm_and_virtio_mmio(tmp_path: Path) -> None:
    argv = build_argv(spec(kernel="/k", initrd="/i"), tmp_path, "tcg", "qemu-system-x86_64",
                      "console=ttyS0", tmp_path / "context.iso")
    assert opts(argv, "-M") == ["microvm"] and opts(argv, "-accel") == ["tcg"]
    assert opts(argv, "-kernel") == ["/k"] and opts(argv, "-initrd") == ["/i"]
    assert opts(argv, "-append") == ["console=ttyS0"]
    assert "-cpu" not in argv and "-daemonize" in argv
    drives = opts(argv, "-drive")
    assert drives[0].startswith("file=/data/a,,odd.qcow2,"), "commas in paths must be doubled"
    assert drives[1].startswith("file=/data/b.qcow2,")
    assert drives[2].endswith(",readonly=on") and "context.iso" in drives[2]
    assert all(d.startswith("virtio-blk-device") or d.startswith("virtio-net-device")
               for d in opts(argv, "-device"))
    assert f"ifname={tap_name('vc-9', 0)}" in opts(argv, "-netdev")[0]
    assert opts(argv, "-m") == ["256"] and opts(argv, "-smp") == ["2"]


def test_argv_without_kernel_boots_firmware_on_pc_with_kvm(tmp_path: Path) -> None:
    argv = build_argv(spec(), tmp_path, "kvm", "qemu-system-x86_64", "x", None)
    assert opts(argv, "-M") == ["pc"] and opts(argv, "-cpu") == ["host"]
    assert "-kernel" not in argv and len(opts(argv, "-drive")) == 2
    assert all(d.endswith("-pci") or "-pci," in d for d in opts(argv, "-device"))


def test_tap_names_fit_ifnamsiz_or_are_refused() -> None:
    """Never truncated (two VMs would share a tap): a name the kernel cannot hold is an error."""
    assert tap_name("vcq7x-1234567", 3) == "vcq7x-1234567-3"
    with pytest.raises(DriverError, match="longer than 15"):
        tap_name("vc-123456789012", 3)


def test_spec_json_round_trip() -> None:
    s = spec(kernel="/k", initrd="/i", kernel_cmd="c", machine="pc", accel="tcg", ready_marker="UP",
             virtfs="/srv/x", sim_boot="ok")
    assert spec_from_json(spec_to_json(s)) == s


def test_spec_json_of_a_guest_started_before_typed_fields() -> None:
    """A run dir written by an older daemon (raw ``attrs``) still reads after an upgrade."""
    doc = json.loads(spec_to_json(spec()))
    for name in ("kernel", "initrd", "kernel_cmd", "machine", "accel", "ready_marker", "virtfs",
                 "sim_boot"):
        del doc[name]
    doc["attrs"] = {"KERNEL": "/k", "READY_MARKER": "UP", "CPU": "1", "VIRTFS": "/"}
    s = spec_from_json(json.dumps(doc))
    assert (s.kernel, s.ready_marker, s.virtfs, s.initrd) == ("/k", "UP", "/", None)


def test_typed_fields_drive_the_command_line(tmp_path: Path) -> None:
    argv = build_argv(spec(kernel="/k", kernel_cmd="console=ttyS0", machine="q35", virtfs="/srv/w"),
                      tmp_path, "tcg", "qemu-system-x86_64", "default", None)
    assert opts(argv, "-M") == ["q35"] and opts(argv, "-append") == ["console=ttyS0"]
    assert any("path=/srv/w," in a for a in opts(argv, "-fsdev"))
    plain = build_argv(spec(), tmp_path, "tcg", "qemu-system-x86_64", "default", None)
    assert "-kernel" not in plain and "-fsdev" not in plain and opts(plain, "-M") == ["pc"]


def test_pidfile_of_a_foreign_process_is_not_our_guest(tmp_path: Path) -> None:
    """A recycled pid must not make a dead guest look alive (and must never be killed)."""
    drv = QemuDriver(tmp_path, accel_probe=AccelProbe(tmp_path))
    run = drv.run_dir("vc-9")
    run.mkdir()
    (run / "spec.json").write_text(spec_to_json(spec()))
    (run / "qemu.pid").write_text(f"{os.getpid()}\n")
    info = drv.poll(LOCAL, "vc-9")
    assert info.state == DomainState.FAILED and "qemu process is gone" in info.detail
    drv.shutdown(LOCAL, "vc-9", hard=True)  # must not signal the pytest process
    assert drv.poll(LOCAL, "vc-9").state == DomainState.OFF
    drv.cleanup(LOCAL, "vc-9")
    assert not run.exists()


def test_ssh_hosts_are_refused_clearly(tmp_path: Path) -> None:
    drv = QemuDriver(tmp_path, accel_probe=AccelProbe(tmp_path))
    with pytest.raises(DriverError, match="only local hosts"):
        drv.poll(HostRef(1, "h1", "qemu", "ssh://root@127.0.0.1:1"), "vc-1")


@pytest.mark.parametrize("virtfs", ["/", "//", "/usr/..", "relative/tree", "{tmp}", "{tmp}/nowhere"])
def test_virtfs_must_name_an_export_tree_never_the_host_root(tmp_path: Path, virtfs: str) -> None:
    """Issue 9: a 9p export of the host's / let guest root read every host file."""
    drv = QemuDriver(tmp_path, accel_probe=AccelProbe(tmp_path))
    bad = DomainSpec(vm_id=9, deploy_id="vc-9", name="n", cpu=1, vcpu=1, memory_mib=256,
                     virtfs=virtfs.format(tmp=tmp_path))
    with pytest.raises(DriverError, match=r"VIRTFS .* is not a worker export tree"):
        drv._check_inputs(bad)


def test_virtfs_of_an_export_tree_is_exported_read_only(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / EXPORT_MANIFEST).write_text("{}\n")
    drv = QemuDriver(tmp_path, accel_probe=AccelProbe(tmp_path))
    good = DomainSpec(vm_id=9, deploy_id="vc-9", name="n", cpu=1, vcpu=1, memory_mib=256,
                      virtfs=str(tree), kernel=str(tree / EXPORT_MANIFEST))
    drv._check_inputs(good)
    argv = build_argv(good, tmp_path, "tcg", "qemu-system-x86_64", "console=ttyS0", None)
    fsdev = opts(argv, "-fsdev")
    assert fsdev == [f"local,id=hostroot,path={tree},security_model=none,readonly=on,multidevs=remap"]


# ---------------------------------------------------------------- accel cache


def test_forced_accel_skips_the_probe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOCLOUD_ACCEL", "kvm")  # drivers read no environment: the setting decides
    probe = AccelProbe(tmp_path, forced="tcg")
    assert probe.get("local", _no_guest).accel == "tcg"
    assert "accel setting" in probe.get("local", _no_guest).reason


def test_missing_kvm_device_means_tcg_without_booting(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vocloud.drivers.accel.kvm_usable_device", lambda: "/dev/kvm does not exist")
    result = AccelProbe(tmp_path).get("local", _no_guest)
    assert result.accel == "tcg" and "does not exist" in result.reason
    cached = json.loads((tmp_path / "accel.json").read_text())
    assert cached["accel"] == "tcg"
    # a new probe object (a restarted daemon) answers from the file, again without booting
    assert AccelProbe(tmp_path).get("local", _no_guest).accel == "tcg"


def test_failed_kvm_boot_falls_back_to_tcg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vocloud.drivers.accel.kvm_usable_device", lambda: None)
    monkeypatch.setattr("vocloud.drivers.accel.boot_under_kvm",
                        lambda *a, **k: (False, "KVM internal error"))
    calls: list[int] = []

    def guest() -> tuple[Path, Path, str]:
        calls.append(1)
        return Path("/k"), Path("/i"), ""

    probe = AccelProbe(tmp_path)
    assert probe.get("local", guest).accel == "tcg"
    assert probe.get("local", guest).reason == "KVM internal error"
    assert calls == [1], "the probe must run once per host"


def _no_guest() -> tuple[Path, Path, str]:
    raise AssertionError("the probe guest must not be needed here")


# ---------------------------------------------------------------- guest builder pieces


def test_extract_vmlinux_finds_the_elf_after_a_false_magic() -> None:
    elf = b"\x7fELF" + os.urandom(5000)
    decoy = b"\xfd7zXZ\x00" + b"not really xz"
    blob = b"MZ" + os.urandom(300) + decoy + os.urandom(100) + lzma.compress(elf) + b"\x00" * 64
    assert extract_vmlinux(blob) == elf


def test_extract_vmlinux_rejects_a_non_kernel() -> None:
    with pytest.raises(RuntimeError, match="no xz or gzip"):
        extract_vmlinux(os.urandom(4096))


def test_module_load_order_puts_dependencies_first(tmp_path: Path) -> None:
    for name, deps in {"ext4": "jbd2,mbcache", "jbd2": "", "mbcache": "", "virtio-blk": "virtio"}.items():
        (tmp_path / f"{name}.ko").write_bytes(b"ELF\x00vermagic=6\x00depends=" + deps.encode() + b"\x00")
    (tmp_path / "virtio.ko").write_bytes(b"ELF\x00\x00")
    order = load_order(["ext4", "virtio_blk", "builtin_thing"], module_index(tmp_path))
    assert order.index("jbd2") < order.index("ext4") and order.index("mbcache") < order.index("ext4")
    assert order.index("virtio") < order.index("virtio_blk")
    assert "builtin_thing" not in order and len(order) == len(set(order))


def test_cpio_is_newc_with_device_nodes_and_trailer() -> None:
    blob = write_cpio([CpioEntry("dev/console", 0o020600, rdev=(5, 1)), CpioEntry("init", 0o100755, b"#!x")])
    assert blob.startswith(b"070701") and len(blob) % 512 == 0
    assert b"dev/console\x00" in blob and b"TRAILER!!!\x00" in blob and b"#!x" in blob
    head = blob[:110]
    assert int(head[14:22], 16) == 0o020600 and int(head[78:86], 16) == 5


def test_apt_output_parsing() -> None:
    assert _kernel_dependency("linux-image-6.1.0-56-amd64 (= 6.1.192-2)") == (
        "linux-image-6.1.0-56-amd64", "6.1.192-2")
    with pytest.raises(RuntimeError, match="cannot resolve"):
        _kernel_dependency("linux-base, initramfs-tools")
