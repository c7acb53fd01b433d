"""Issue 9 acceptance: an image uploaded by a plain VO user boots on a real qemu host.

The VO user uploads an ext4 qcow2 of its own (bytes over the API, no host path) and makes it
public; the administrator boots a VM from it (the kernel attributes are administrators-only);
the guest reaches RUNNING and prints the id file it read from that disk on its console.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon
from tests.support.procs import poll_until
from tests.support.qemu import qemu_test_daemon
from vocloud.guest.build import GuestImage

pytestmark = pytest.mark.slow


@pytest.fixture
def boot_daemon(tmp_path: Path, guest_image: GuestImage) -> Iterator[Daemon]:
    with qemu_test_daemon(tmp_path / "data") as d:
        yield d


def _disk(tmp_path: Path, disk_id: str) -> Path:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "vocloud-disk-id").write_text(disk_id + "\n")
    raw = tmp_path / "disk.raw"
    with raw.open("wb") as fh:
        fh.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(tree), str(raw)], check=True, capture_output=True)
    out = tmp_path / "vo.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)], check=True)
    return out


def test_uploaded_image_boots(boot_daemon: Daemon, guest_image: GuestImage, tmp_path: Path) -> None:
    d = boot_daemon
    disk_id = f"vo-upload-{secrets.token_hex(4)}"
    disk = _disk(tmp_path, disk_id)

    with d.rest() as c:
        c.post("/hosts", {"name": "local", "vmm": "qemu"})
        c.post("/groups", {"name": "atlas"})
        tok = c.post("/users", {"name": "alice", "group": "atlas"})["token"]
        with d.rest(tok) as u, disk.open("rb") as f:
            img = u.upload("/images/upload", f, disk.stat().st_size, {"name": "alice-os", "format": "qcow2"})
            assert img["uploaded"] and img["path"].startswith(str(d.data_dir / "datastores" / "default"))
            u.post("/images/alice-os/action", {"action": "public"})
        poll_until(lambda: c.get("/hosts/local")["state"] == "MONITORED", 60, "host monitored")
        tmpl = (f'CPU=0.5\nVCPU=1\nMEMORY=128\nKERNEL="{guest_image.vmlinux}"\n'
                f'INITRD="{guest_image.initramfs}"\nKERNEL_CMD="{guest_image.cmdline}"\n'
                'DISK=[IMAGE="alice-os", TARGET="vda"]\n')
        [vm] = c.post("/vms", {"template": tmpl, "name": "from-upload"})["ids"]

        def running() -> bool:
            st = c.get(f"/vms/{vm}")
            assert "FAILURE" not in st["state"], st
            return bool(st["state"] == "RUNNING")

        poll_until(running, 300, "the VM on the uploaded image RUNNING")
        poll_until(lambda: f"VOCLOUD-DISK vda={disk_id}" in c.get(f"/vms/{vm}/log")["log"], 60,
                   "the guest reading the uploaded disk")
        c.post(f"/vms/{vm}/action", {"action": "terminate-hard"})
        poll_until(lambda: c.get(f"/vms/{vm}")["state"] == "DONE", 120, "DONE")
    assert d.stop() == 0
