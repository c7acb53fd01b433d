"""Finding 1 of issue 9 as a regression test, with a real daemon and real qemu guests.

A plain VO user once booted a VM with ``VIRTFS="/"`` and a boot command of their own, and read
the site's secrets from the console log. Now every attribute that reaches the host is refused
for them (naming it, creating nothing), and what they *can* do still works: boot a kernel by
reference to registered images they may USE (``KERNEL_IMAGE``/``INITRD_IMAGE``), on a guest that
sees no host filesystem.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon
from tests.support.ports import free_port
from tests.support.qemu import reap_daemon
from vocloud.devtools.localprocs import qemu_pids_under
from vocloud.guest.build import GuestImage

pytestmark = pytest.mark.slow

SECRET = "vocloud-trust-test-secret-7f3a"


def _wait(fn: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture
def qemu_daemon(tmp_path: Path) -> Iterator[Daemon]:
    env = {"VOCLOUD_ACCEL": "tcg", "VOCLOUD_BOOT_TIMEOUT": "240", "VOCLOUD_SHUTDOWN_TIMEOUT": "60",
           "VOCLOUD_MONITOR_INTERVAL": "2"}
    d = Daemon(tmp_path, f"sqlite:///{tmp_path / 'vocloud.db'}", free_port(), env)
    d.start()
    yield d
    reap_daemon(d.proc, tmp_path)


def test_plain_user_reaches_no_host_file_and_boots_by_reference(
        qemu_daemon: Daemon, guest_image: GuestImage, tmp_path: Path) -> None:
    d = qemu_daemon
    secret = tmp_path / "site-secret"
    secret.write_text(SECRET + "\n")

    def ok(r: Any) -> Any:
        assert r.status_code < 400, r.text
        return r.json() if r.content else None

    with d.client() as c:
        ok(c.post("/hosts", json={"name": "local", "vmm": "qemu"}))
        store = d.data_dir / "datastores" / "default"  # an admin registers by path inside one only
        for name, path in (("site-vmlinux", guest_image.vmlinux), ("site-initrd", guest_image.initramfs)):
            shutil.copyfile(path, store / name)
            ok(c.post("/images", json={"name": name, "path": str(store / name), "format": "raw",
                                       "public": True}))
        ok(c.post("/groups", json={"name": "atlas"}))
        token = ok(c.post("/users", json={"name": "mallory", "group": "atlas"}))["token"]
        _wait(lambda: ok(c.get("/hosts"))[0]["state"] == "MONITORED", 60, "host monitored")

    base = "CPU=0.5\nVCPU=1\nMEMORY=128\n"
    attacks = {
        "VIRTFS": base + f'VIRTFS="/"\nKERNEL="{guest_image.vmlinux}"\nKERNEL_CMD="init=/bin/sh"\n',
        "KERNEL": base + f'KERNEL="{secret}"\n',
        "INITRD": base + f'KERNEL_IMAGE="site-vmlinux"\nINITRD="{secret}"\n',
        "KERNEL_CMD": base + 'KERNEL_IMAGE="site-vmlinux"\nKERNEL_CMD="rdinit=/bin/cat"\n',
    }
    with d.client(token) as u:
        for attribute, text in attacks.items():
            r = u.post("/vms", json={"template": text})
            assert r.status_code == 403, (attribute, r.text)
            assert r.json()["message"].startswith(f"attribute {attribute} is restricted"), r.text
        r = u.post("/vms", json={"template": base + f'DISK=[IMAGE_ID="0", SOURCE="{secret}"]\n'})
        assert r.status_code == 400 and "DISK/SOURCE" in r.json()["message"], r.text
        assert ok(u.get("/vms", params={"all": True})) == []
        assert qemu_pids_under(d.data_dir) == []

        # the legitimate way: a kernel and an initrd by reference to public images
        [vm_id] = ok(u.post("/vms", json={"template": base + 'KERNEL_IMAGE="site-vmlinux"\n'
                                                               'INITRD_IMAGE="site-initrd"\n'
                                                               'CONTEXT=[VALUE="by-reference"]\n'}))["ids"]

        def running() -> bool:
            st = ok(u.get(f"/vms/{vm_id}"))["state"]
            assert "FAILURE" not in st, ok(u.get(f"/vms/{vm_id}"))
            return bool(st == "RUNNING")

        _wait(running, 300, "the guest RUNNING")
        log = ok(u.get(f"/vms/{vm_id}/log"))["log"]
        assert "VOCLOUD-CONTEXT VALUE=by-reference" in log, log[-2000:]
        assert SECRET not in log
        argv = (d.data_dir / "qemu" / ok(u.get(f"/vms/{vm_id}"))["deploy_id"] / "argv.json").read_text()
        assert str(store / "site-vmlinux") in argv and "-fsdev" not in argv and str(secret) not in argv
        ok(u.post(f"/vms/{vm_id}/action", json={"action": "terminate-hard"}))
        _wait(lambda: ok(u.get(f"/vms/{vm_id}"))["state"] == "DONE", 120, "the guest DONE")
    assert qemu_pids_under(d.data_dir) == []
