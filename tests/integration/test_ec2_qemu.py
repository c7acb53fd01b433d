"""Issue 11 acceptance: one real qemu guest started through boto3, whose UserData comes back on
its console (read with boto3's GetConsoleOutput). The busybox test guest echoes its context
variables; the UserData is there base64-encoded, as EC2 hands it over (``USER_DATA``)."""

from __future__ import annotations

import base64
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from tests.support.daemon import Daemon
from tests.support.procs import wait_until
from tests.support.qemu import qemu_test_daemon
from vocloud.guest.build import GuestImage

pytestmark = pytest.mark.slow

USER_DATA = "#!/bin/sh\necho hello-from-ec2-user-data\n"


@pytest.fixture
def qemu_daemon(tmp_path: Path, guest_image: GuestImage) -> Iterator[Daemon]:
    with qemu_test_daemon(tmp_path) as d:
        yield d


def test_user_data_reaches_a_real_guest(qemu_daemon: Daemon, guest_image: GuestImage) -> None:
    d = qemu_daemon
    with d.client() as c:
        def ok(r: Any) -> Any:
            assert r.status_code < 400, r.text
            return r.json() if r.content else None

        ok(c.post("/hosts", json={"name": "local", "vmm": "qemu"}))
        wait_until(lambda: ok(c.get("/hosts"))[0]["state"] == "MONITORED", time.monotonic() + 60,
                   "the host monitored")
        default = d.data_dir / "datastores" / "default"
        shutil.copyfile(guest_image.base_disk, default / "tiny.qcow2")
        ok(c.post("/images", json={"name": "tiny", "path": str(default / "tiny.qcow2")}))
        # the guest's kernel is the administrator's to name: an administrator's template, run
        # through EC2 by its ami- id with the administrator's own access key
        tmpl = (f'CPU=0.5\nVCPU=1\nMEMORY=128\nKERNEL="{guest_image.vmlinux}"\n'
                f'INITRD="{guest_image.initramfs}"\nKERNEL_CMD="{guest_image.cmdline}"\n'
                'DISK=[IMAGE="tiny", TARGET="vda"]\n')
        tid = ok(c.post("/templates", json={"template": tmpl, "name": "tiny-guest"}))["id"]
        key = ok(c.post("/access-keys", json={}))
    ec2 = boto3.client("ec2", endpoint_url=f"http://127.0.0.1:{d.port}/ec2/", region_name="vocloud",
                       aws_access_key_id=key["access_key_id"],
                       aws_secret_access_key=key["secret_access_key"],
                       config=Config(retries={"max_attempts": 1}))
    ami = f"ami-{(1 << 64) | int(tid):017x}"
    [inst] = ec2.run_instances(ImageId=ami, InstanceType="small", MinCount=1, MaxCount=1,
                               UserData=USER_DATA)["Instances"]
    iid = inst["InstanceId"]
    ec2.get_waiter("instance_running").wait(InstanceIds=[iid],
                                            WaiterConfig={"Delay": 2, "MaxAttempts": 150})

    def user_data_on_console() -> str | None:
        out = ec2.get_console_output(InstanceId=iid).get("Output", "")
        m = re.search(r"VOCLOUD-CONTEXT USER_DATA=(\S+)", out)
        return m.group(1) if m else None

    echoed = wait_until(user_data_on_console, time.monotonic() + 120, "UserData on the console")
    assert base64.b64decode(echoed).decode() == USER_DATA
    ec2.terminate_instances(InstanceIds=[iid])
    ec2.get_waiter("instance_terminated").wait(InstanceIds=[iid],
                                               WaiterConfig={"Delay": 2, "MaxAttempts": 60})
