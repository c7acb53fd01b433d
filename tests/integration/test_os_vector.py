"""OpenNebula's ``OS=[...]`` boot vector (model/os_boot.py): honoured with the rights of the flat
attributes it stands for, or refused at creation naming what is wrong - never ignored."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.support.helpers import admin, user_in
from vocloud.engine.domain import build_spec
from vocloud.errors import Forbidden, InvalidInput
from vocloud.model.template import parse_template
from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.store.schema import VM, Image

SMALL = "CPU=0.5\nMEMORY=128\n"


def _image(cloud: Cloud, owner: Actor, name: str, path: Path, public: bool = False) -> int:
    path.write_bytes(b"\0" * 4096)
    with cloud.db.write() as s:
        img = Image(name=name, owner_id=owner.user_id, group_id=owner.group_id, path=str(path),
                    format="raw", size_mib=1, public=public, persistent=False, state="READY")
        s.add(img)
        s.flush()
        return img.id


def _vms(cloud: Cloud) -> int:
    with cloud.db.read() as s:
        return s.scalar(select(func.count()).select_from(VM)) or 0


def test_admin_os_vector_boots_as_written(cloud: Cloud) -> None:
    a = admin(cloud)
    [vm_id] = cloud.vms.create(a, SMALL + 'OS=[KERNEL="/boot/vmlinuz", INITRD="/boot/initrd.img", '
                                          'KERNEL_CMD="console=ttyS0 ro", ROOT="vda1"]\n')
    stored = parse_template(cloud.vms.show(a, vm_id)["template"], fmt="one")
    assert stored.vector("OS") is None
    with cloud.db.read() as s:
        spec = build_spec(s.get(VM, vm_id))  # type: ignore[arg-type]
    assert (spec.kernel, spec.initrd, spec.kernel_cmd) == (
        "/boot/vmlinuz", "/boot/initrd.img", "console=ttyS0 ro root=/dev/vda1")


def test_user_os_vector_boots_images_by_reference(cloud: Cloud, tmp_path: Path) -> None:
    a = admin(cloud)
    alice = user_in(cloud, "alice", "atlas")
    kernel = _image(cloud, a, "site-kernel", tmp_path / "vmlinux", public=True)
    initrd = _image(cloud, alice, "my initrd", tmp_path / "initrd")
    bob = user_in(cloud, "bob", "cms")
    private = _image(cloud, bob, "cms-kernel", tmp_path / "cms")
    [vm_id] = cloud.vms.create(alice, SMALL + f'OS=[KERNEL_DS="$FILE[IMAGE_ID={kernel}]", '
                                              'INITRD_DS="$FILE[IMAGE=\\"my initrd\\"]"]\n')
    with cloud.db.read() as s:
        spec = build_spec(s.get(VM, vm_id))  # type: ignore[arg-type]
        assert s.get(Image, initrd).running_vms == 1  # type: ignore[union-attr]
    assert (spec.kernel, spec.initrd) == (str(tmp_path / "vmlinux"), str(tmp_path / "initrd"))
    with pytest.raises(Forbidden, match="KERNEL_IMAGE"):  # bob's private image: no USE right
        cloud.vms.create(alice, SMALL + f'OS=[KERNEL_DS="$FILE[IMAGE_ID={private}]"]\n')


@pytest.mark.parametrize(("line", "err", "match"), [
    ('OS=[KERNEL="/etc/shadow"]', Forbidden, "attribute OS/KERNEL is restricted to administrators"),
    ('OS=[ROOT="vda"]', Forbidden, "attribute OS/ROOT is restricted"),
    ('OS=[ARCH="x86_64"]', InvalidInput, "unknown attribute OS/ARCH"),
    ('OS=[KERNEL_DS="/etc/shadow"]', InvalidInput, r"OS/KERNEL_DS must be \$FILE\[IMAGE_ID=<id>\]"),
    ('OS=[KERNEL_DS="$FILE[IMAGE_ID=1]"]\nKERNEL_IMAGE="x"', InvalidInput,
     "give OS/KERNEL_DS or KERNEL_IMAGE, not both"),
    ('OS=[KERNEL_DS="$FILE[IMAGE_ID=1]"]\nOS=[KERNEL_DS="$FILE[IMAGE_ID=1]"]', InvalidInput,
     "OS is given 2 times"),
])
def test_bad_os_vectors_are_refused_for_users(cloud: Cloud, line: str, err: type[Exception],
                                              match: str) -> None:
    alice = user_in(cloud, "alice", "atlas")
    with pytest.raises(err, match=match):
        cloud.vms.create(alice, SMALL + line + "\n")
    assert _vms(cloud) == 0


@pytest.mark.parametrize(("line", "match"), [
    ('OS=[ROOT="vda; reboot", KERNEL_CMD="x"]', "OS/ROOT must be a device name"),
    ('OS=[ROOT="vda"]', "OS/ROOT needs OS/KERNEL_CMD"),
    ('OS=[KERNEL="/k"]\nKERNEL="/k"', "give OS/KERNEL or KERNEL, not both"),
    ('OS=[KERNEL="relative"]', "KERNEL must be an absolute path"),
])
def test_bad_os_vectors_are_refused_for_admins(cloud: Cloud, line: str, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        cloud.vms.create(admin(cloud), SMALL + line + "\n")
    assert _vms(cloud) == 0
