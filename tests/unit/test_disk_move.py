"""Cold migration's disk move (drivers/storage/move.py) with local runners: the copy is checked
by size and sha256, a damaged copy never replaces the target's file, a qcow2 overlay is pointed
at the target's own base."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from vocloud.drivers.base import CommandResult, DiskSpec, DomainSpec
from vocloud.drivers.storage.move import copy_file, move_disks, pairs
from vocloud.drivers.storage.runner import local_runner
from vocloud.errors import DriverError


def _spec(*disks: DiskSpec) -> DomainSpec:
    return DomainSpec(vm_id=1, deploy_id="vc-1", name="x", cpu=1.0, vcpu=1, memory_mib=64, disks=disks)


def test_copy_is_exact_across_chunks(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.bin", tmp_path / "b.bin"
    data = bytes(range(256)) * (4096 * 17 + 3)  # 17 MiB + 768 bytes: two 16 MiB chunks, a tail
    src.write_bytes(data)
    dst.write_bytes(b"old")
    assert copy_file(local_runner, str(src), local_runner, str(dst), "t") == len(data)
    assert Path(f"{dst}.part").read_bytes() == data and dst.read_bytes() == b"old"  # caller renames


def test_a_damaged_copy_is_caught_and_removed(tmp_path: Path) -> None:
    src, dst = tmp_path / "a.bin", tmp_path / "b.bin"
    src.write_bytes(b"x" * 5000)

    def flipping(argv: list[str], input: bytes | None = None, timeout: float | None = None) -> CommandResult:
        if input:  # the write side: one byte changes on the way
            input = b"y" + input[1:]
        return local_runner(argv, input=input, timeout=timeout)

    with pytest.raises(DriverError, match="does not match it"):
        copy_file(local_runner, str(src), flipping, str(dst), "t")
    assert not Path(f"{dst}.part").exists()


def test_missing_source_fails_before_writing(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="cannot read"):
        copy_file(local_runner, str(tmp_path / "nope"), local_runner, str(tmp_path / "b"), "t")
    assert not (tmp_path / "b.part").exists()


def test_overlay_moves_onto_the_targets_base(tmp_path: Path) -> None:
    base_a, base_b = tmp_path / "ca" / "base.qcow2", tmp_path / "cb" / "base.qcow2"
    for base in (base_a, base_b):
        base.parent.mkdir()
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "8M"], check=True)
    over_a, over_b = tmp_path / "a.qcow2", tmp_path / "b.qcow2"
    for over, base in ((over_a, base_a), (over_b, base_b)):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
                        str(over)], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 1M", str(over_a)],
                   check=True, capture_output=True)
    shared = DiskSpec("vdb", "/shared/p.img", "raw", persistent=True)
    src = _spec(DiskSpec("vda", str(over_a), "qcow2"), shared)
    dst = _spec(DiskSpec("vda", str(over_b), "qcow2"), shared)
    assert [m.target for m, _ in pairs(src, dst)] == ["vda"]  # a persistent disk stays where it is
    assert move_disks(local_runner, src, local_runner, dst) == over_a.stat().st_size
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(over_b)],
                                     capture_output=True, check=True).stdout)
    assert info["backing-filename"] == str(base_b)
    read = subprocess.run(["qemu-io", "-r", "-f", "qcow2", "-c", "read -P 0x5a 1M 1M", str(over_b)],
                          capture_output=True, text=True, check=True)
    assert "verification failed" not in read.stdout
    assert not list(tmp_path.glob("*.part"))


def test_a_disk_the_target_did_not_stage_is_refused() -> None:
    with pytest.raises(DriverError, match="vdb is not staged on the target"):
        pairs(_spec(DiskSpec("vdb", "/a", "qcow2")), _spec(DiskSpec("vda", "/b", "qcow2")))
