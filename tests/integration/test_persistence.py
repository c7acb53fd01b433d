"""Persistence is the image owner's property (issue 9, finding 2), with real ``qemu-img``/``qemu-io``.

The whole path a user's VM takes, without booting a guest: the service writes the stored
template, ``build_spec`` reads it, a storage driver stages it, and then something writes into the
staged disk as a guest would. A non-persistent image's file must be bit for bit what it was; a
persistent image (the owner's choice) is the one case that is written in place, which shows the
check can tell the two apart.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.helpers import admin, user_in
from vocloud.drivers.base import HostRef
from vocloud.drivers.storage import FullCopyDriver, Qcow2OverlayDriver
from vocloud.engine.domain import build_spec
from vocloud.errors import InvalidInput
from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.store.schema import VM, Image

LOCAL = HostRef(id=1, name="h1")
MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool in ("qemu-img", "qemu-io", "flock"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (apt-get install qemu-utils)")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _register(cloud: Cloud, owner: Actor, name: str, path: Path, public: bool, persistent: bool) -> None:
    """An image row as the image service stores it (registration itself is another part of issue 9)."""
    raw = path.with_suffix(".raw")
    raw.write_bytes(hashlib.sha256(name.encode()).digest() * (2 * MIB // 32))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True)
    raw.unlink()
    with cloud.db.write() as s:
        s.add(Image(name=name, owner_id=owner.user_id, group_id=owner.group_id, path=str(path),
                    format="qcow2", size_mib=2, sha256=_sha(path), public=public,
                    persistent=persistent, state="READY"))


def _guest_writes(disk: str) -> None:
    """What a guest does to its disk: overwrite its first MiB."""
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1M", disk], check=True,
                   capture_output=True)


def _read_byte(disk: str) -> bytes:
    out = subprocess.run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x5a 0 1M", disk],
                         capture_output=True, text=True)
    return b"Z" if out.returncode == 0 and "Pattern verification failed" not in out.stdout else b"?"


@pytest.mark.parametrize("driver", ["qcow2", "copy"])
def test_non_persistent_base_unchanged_after_a_vm_wrote_to_its_disk(
        cloud: Cloud, tmp_path: Path, driver: str) -> None:
    a = admin(cloud)
    alice = user_in(cloud, "alice", "atlas")
    base = tmp_path / "public-base.qcow2"
    _register(cloud, a, "public-base", base, public=True, persistent=False)
    before = _sha(base)

    # the hole of finding 2, closed: a disk line asking for PERSISTENT is refused, nothing made
    with pytest.raises(InvalidInput, match="DISK/PERSISTENT"):
        cloud.vms.create(alice, 'CPU=0.1\nMEMORY=64\nDISK=[IMAGE="public-base", PERSISTENT="YES"]\n')
    with cloud.db.read() as s:
        assert list(s.scalars(select(VM.id))) == []
        assert s.scalars(select(Image.running_vms)).one() == 0

    [vm_id] = cloud.vms.create(alice, 'CPU=0.1\nMEMORY=64\nDISK=[IMAGE="public-base"]\n')
    with cloud.db.read() as s:
        vm = s.get(VM, vm_id)
        assert vm is not None
        spec = build_spec(vm)
    assert [d.persistent for d in spec.disks] == [False]
    cls = Qcow2OverlayDriver if driver == "qcow2" else FullCopyDriver
    staged = cls(str(tmp_path / "datastore")).stage(LOCAL, spec)
    disk = staged.disks[0]
    assert disk.source != str(base) and not disk.persistent
    _guest_writes(disk.source)
    assert _read_byte(disk.source) == b"Z"  # the VM's own disk took the write
    assert _sha(base) == before  # the public base did not


def test_persistent_image_is_written_in_place_for_its_one_vm(cloud: Cloud, tmp_path: Path) -> None:
    """The control: the owner made it persistent, so the one VM writes the image itself."""
    alice = user_in(cloud, "alice", "atlas")
    mine = tmp_path / "mine.qcow2"
    _register(cloud, alice, "mine", mine, public=False, persistent=True)
    before = _sha(mine)
    [vm_id] = cloud.vms.create(alice, 'CPU=0.1\nMEMORY=64\nDISK=[IMAGE="mine"]\n')
    with cloud.db.read() as s:
        vm = s.get(VM, vm_id)
        assert vm is not None
        spec = build_spec(vm)
    staged = Qcow2OverlayDriver(str(tmp_path / "datastore")).stage(LOCAL, spec)
    assert staged.disks[0].source == str(mine) and staged.disks[0].persistent
    _guest_writes(staged.disks[0].source)
    assert _sha(mine) != before
