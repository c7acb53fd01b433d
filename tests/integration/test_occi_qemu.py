"""Issue 12 acceptance (OCCI): a real qemu guest created by a VO user through apache-libcloud's
``OpenNebulaNodeDriver`` reaches RUNNING, then goes away through libcloud.

The kernel the guest boots is the administrator's (setting ``occi_template``, OpenNebula's
``common.erb``): a VO user names only an instance type and an image, as in OpenNebula's OCCI.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from libcloud.compute.base import NodeState

from tests.support.daemon import Daemon
from tests.support.libcloud_one import one_driver
from tests.support.qemu import qemu_test_daemon
from vocloud.devtools.localprocs import qemu_pids_under
from vocloud.guest.build import GuestImage

pytestmark = pytest.mark.slow


def _wait(fn: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def _ok(r: Any) -> Any:
    assert r.status_code < 400, r.text
    return r.json() if r.content else None


@pytest.fixture
def occi_qemu(tmp_path: Path, guest_image: GuestImage) -> Iterator[Daemon]:
    site = (f'KERNEL="{guest_image.vmlinux}"\nINITRD="{guest_image.initramfs}"\n'
            f'KERNEL_CMD="{guest_image.cmdline}"\n')
    with qemu_test_daemon(tmp_path, VOCLOUD_OCCI_TEMPLATE=site,
                          VOCLOUD_INSTANCE_TYPES="tiny=0.5:128:1, small=1:1024") as d:
        yield d


def test_libcloud_boots_a_qemu_guest(occi_qemu: Daemon, guest_image: GuestImage) -> None:
    d = occi_qemu
    with d.client() as c:
        _ok(c.post("/hosts", json={"name": "local", "vmm": "qemu"}))
        _ok(c.post("/groups", json={"name": "vo1"}))
        token = _ok(c.post("/users", json={"name": "alice", "group": "vo1"}))["token"]
        disk = d.data_dir / "datastores" / "default" / "tiny.qcow2"
        shutil.copyfile(guest_image.base_disk, disk)
        _ok(c.post("/images", json={"name": "tiny", "path": str(disk), "public": True}))
        _wait(lambda: all(h["state"] == "MONITORED" for h in _ok(c.get("/hosts"))), 60, "host monitored")
        drv = one_driver("alice", token, d.port)
        size = next(s for s in drv.list_sizes() if s.name == "tiny")
        image = next(i for i in drv.list_images() if i.name == "tiny")
        node = drv.create_node(name="g", size=size, image=image)

        def running() -> bool:
            vm = _ok(c.get(f"/vms/{node.id}"))
            assert "FAILURE" not in vm["state"], vm
            return bool(vm["state"] == "RUNNING")

        _wait(running, 300, "the libcloud guest RUNNING")
        assert qemu_pids_under(d.data_dir)  # a real qemu process
        (listed,) = [n for n in drv.list_nodes() if n.id == node.id]
        assert listed.state == NodeState.RUNNING and listed.size.name == "tiny"
        assert drv.destroy_node(listed) is True
        _wait(lambda: _ok(c.get(f"/vms/{node.id}"))["state"] == "DONE", 120, "the guest DONE")
        _wait(lambda: not qemu_pids_under(d.data_dir), 30, "qemu gone")
