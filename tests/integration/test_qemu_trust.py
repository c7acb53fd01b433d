"""Finding 1 of issue 9 as a regression test, with a real daemon and real qemu guests.

A plain VO user once booted a VM with ``VIRTFS="/"`` and a boot command of their own, and read
the site's secrets from the console log. Now every attribute that reaches the host is refused
for them (naming it, creating nothing), and what they *can* do still works: boot a kernel by
reference to registered images they may USE (``KERNEL_IMAGE``/``INITRD_IMAGE``), on a guest that
sees no host filesystem.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.procs import poll_until
from tests.support.qemu import qemu_test_daemon
from vocloud.devtools.localprocs import qemu_pids_under
from vocloud.guest.build import GuestImage

pytestmark = pytest.mark.slow

SECRET = "vocloud-trust-test-secret-7f3a"


@pytest.fixture
def qemu_daemon(tmp_path: Path) -> Iterator[Daemon]:
    with qemu_test_daemon(tmp_path) as d:
        yield d


def test_plain_user_reaches_no_host_file_and_boots_by_reference(
        qemu_daemon: Daemon, guest_image: GuestImage, tmp_path: Path) -> None:
    d = qemu_daemon
    secret = tmp_path / "site-secret"
    secret.write_text(SECRET + "\n")

    with d.rest() as c:
        c.post("/hosts", {"name": "local", "vmm": "qemu"})
        store = d.data_dir / "datastores" / "default"  # an admin registers by path inside one only
        for name, path in (("site-vmlinux", guest_image.vmlinux), ("site-initrd", guest_image.initramfs)):
            shutil.copyfile(path, store / name)
            c.post("/images", {"name": name, "path": str(store / name), "format": "raw",
                               "public": True})
        c.post("/groups", {"name": "atlas"})
        token = c.post("/users", {"name": "mallory", "group": "atlas"})["token"]
        poll_until(lambda: c.get("/hosts")[0]["state"] == "MONITORED", 60, "host monitored")

    base = "CPU=0.5\nVCPU=1\nMEMORY=128\n"
    attacks = {
        "VIRTFS": base + f'VIRTFS="/"\nKERNEL="{guest_image.vmlinux}"\nKERNEL_CMD="init=/bin/sh"\n',
        "KERNEL": base + f'KERNEL="{secret}"\n',
        "INITRD": base + f'KERNEL_IMAGE="site-vmlinux"\nINITRD="{secret}"\n',
        "KERNEL_CMD": base + 'KERNEL_IMAGE="site-vmlinux"\nKERNEL_CMD="rdinit=/bin/cat"\n',
    }
    for attribute, text in attacks.items():
        err = d.refused("POST", "/vms", token, json={"template": text})
        assert err.status == 403, (attribute, err)
        assert err.message.startswith(f"attribute {attribute} is restricted"), err
    err = d.refused("POST", "/vms", token,
                    json={"template": base + f'DISK=[IMAGE_ID="0", SOURCE="{secret}"]\n'})
    assert err.status == 400 and "DISK/SOURCE" in err.message, err
    with d.rest(token) as u:
        assert u.get("/vms", all=True) == []
        assert qemu_pids_under(d.data_dir) == []

        # the legitimate way: a kernel and an initrd by reference to public images
        [vm_id] = u.post("/vms", {"template": base + 'KERNEL_IMAGE="site-vmlinux"\n'
                                                     'INITRD_IMAGE="site-initrd"\n'
                                                     'CONTEXT=[VALUE="by-reference"]\n'})["ids"]

        def running() -> bool:
            st = u.get(f"/vms/{vm_id}")["state"]
            assert "FAILURE" not in st, u.get(f"/vms/{vm_id}")
            return bool(st == "RUNNING")

        poll_until(running, 300, "the guest RUNNING")
        log = u.get(f"/vms/{vm_id}/log")["log"]
        assert "VOCLOUD-CONTEXT VALUE=by-reference" in log, log[-2000:]
        assert SECRET not in log
        argv = (d.data_dir / "qemu" / u.get(f"/vms/{vm_id}")["deploy_id"] / "argv.json").read_text()
        assert str(store / "site-vmlinux") in argv and "-fsdev" not in argv and str(secret) not in argv
        u.post(f"/vms/{vm_id}/action", {"action": "terminate-hard"})
        poll_until(lambda: u.get(f"/vms/{vm_id}")["state"] == "DONE", 120, "the guest DONE")
    assert qemu_pids_under(d.data_dir) == []
