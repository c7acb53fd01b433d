"""A second vocloud installation as the cloud: the first site's ``ec2`` hosts reach the second
site's ``/ec2/`` front-end (boto3 against vocloud's own EC2 Query API, sim hosts on both), so
a burst worker of the first site is a VM of the second, tagged, found again by tag, and
terminated there when the first site ends it. (With a real qemu worker that joins the first
site's real Slurm: test_burst_vocloud_qemu.py.)"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import select

from tests.support.ec2 import Ec2Site, ec2_site
from tests.support.helpers import admin
from vocloud.drivers.vmm.ec2 import Ec2Driver
from vocloud.drivers.vmm.sim import SimDriver
from vocloud.engine.reconcile import LoopSettings, Reconciler
from vocloud.service.cloud import Cloud
from vocloud.store.schema import VM


@pytest.fixture(scope="module")
def second(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ec2Site]:
    with ec2_site(tmp_path_factory.mktemp("burst-second"), "sqlite", None, host_cpu=8) as s:
        yield s


def partner(site: Ec2Site) -> Any:
    return boto3.client("ec2", endpoint_url=site.endpoint, region_name="vo-west-1",
                        aws_access_key_id=site.alice.access_key,
                        aws_secret_access_key=site.alice.secret)


def ami(site: Ec2Site) -> str:
    with site.rest(site.alice) as c:
        r = c.post("/templates", json={"template": "CPU=1\nMEMORY=256\n", "name": "burst-worker"})
        assert r.status_code == 201, r.text
    [img] = [i for i in partner(site).describe_images(Owners=["self"])["Images"]
             if i["Name"] == "burst-worker"]
    return str(img["ImageId"])


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_burst_workers_are_vms_of_the_second_installation(cloud: Cloud, tmp_path: Path,
                                                           second: Ec2Site) -> None:
    a = admin(cloud)
    cloud.hosts.create(a, "site1", cpu=1, memory=4096)
    cloud.hosts.create(a, "partner", vmm="ec2", cpu=8, memory=8192, attrs={
        "EC2_ENDPOINT": second.endpoint, "EC2_REGION": "vo-west-1", "EC2_CREDENTIALS": "partner",
        "EC2_TYPES": "small=1:1024:1, medium=4:4096:4", "EC2_IMAGES": f"*={ami(second)}"})
    keys = (second.alice.access_key, second.alice.secret)
    rec = Reconciler(cloud, {"sim": SimDriver(tmp_path / "sim", 0, 0),
                             "ec2": Ec2Driver(lambda name: keys, cache_ttl=0)},
                     LoopSettings(monitor_interval=0))
    ids = cloud.vms.create(a, 'NAME="w"\nCPU=1\nMEMORY=512\n', count=3)

    def states() -> dict[int, tuple[str, int | None]]:
        with cloud.db.read() as s:
            return {v.id: (v.state, v.host_id) for v in s.scalars(select(VM))}

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rec.monitor_once(force=True)
        rec.schedule_once()
        rec.lifecycle_once()
        if all(st == "RUNNING" for st, _ in states().values()):
            break
        time.sleep(0.5)
    st = states()
    assert [s for s, _ in st.values()] == ["RUNNING"] * 3, st
    assert [h for _, h in st.values()] == [1, 2, 2]
    listing = partner(second).describe_instances(
        Filters=[{"Name": "tag-key", "Values": ["vocloud:deploy-id"]}])
    there = [i for r in listing["Reservations"] for i in r["Instances"]]
    assert len(there) == 2 and all(i["State"]["Name"] == "running" for i in there)
    assert all(i["InstanceType"] == "small" for i in there)
    vm_tags = sorted({t["Key"]: t["Value"] for t in i["Tags"]}["vocloud:vm"] for i in there)
    assert vm_tags == sorted(str(i) for i in ids[1:])

    for vm_id in ids[1:]:
        cloud.vms.action(a, vm_id, "terminate")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(states()[i][0] != "DONE" for i in ids[1:]):
        rec.monitor_once(force=True)
        rec.lifecycle_once()
        time.sleep(0.5)
    assert all(states()[i][0] == "DONE" for i in ids[1:])
    left = [i["State"]["Name"] for r in partner(second).describe_instances()["Reservations"]
            for i in r["Instances"]]
    assert all(s in ("terminated", "shutting-down") for s in left), left


def test_rest_checks_cloud_hosts_and_burst_limits(second: Ec2Site) -> None:
    """Through the daemon's REST API: a bad region declaration is a 400 naming the attribute and
    stores nothing; the burst limit is the administrators' to set; pools show site and cloud
    workers apart."""
    good = {"EC2_ENDPOINT": "https://ec2.example", "EC2_REGION": "eu-west-1",
            "EC2_CREDENTIALS": "aws", "EC2_TYPES": "t3.small=1:2048"}
    with second.rest() as admin_c:
        for key, bad in (("EC2_ENDPOINT", "file:///etc/passwd"), ("EC2_CREDENTIALS", "../x"),
                         ("EC2_TYPES", "")):
            r = admin_c.post("/hosts", json={"name": "aws", "vmm": "ec2", "cpu": 4, "memory": 4096,
                                             "attrs": {**good, key: bad}})
            assert r.status_code == 400, r.text
            assert key.split("_")[1] in r.text or "secret name" in r.text
        assert admin_c.get("/hosts/aws").status_code == 404
        r = admin_c.post("/hosts", json={"name": "aws", "vmm": "ec2", "cpu": 4, "memory": 4096,
                                         "attrs": good})
        assert r.status_code == 201, r.text
        assert "EC2_CREDENTIALS" in admin_c.get("/hosts/aws").json()["attrs"]
        with second.rest(second.alice) as alice:
            r = alice.post("/templates", json={"template": "CPU=1\nMEMORY=256\n", "name": "burst-pool-wn"})
            assert r.status_code == 201, r.text
        r = admin_c.post("/pools", json={"vo": "vo1", "template": "burst-pool-wn", "cores": 1,
                                         "memory": 256, "burst_limit": 4})
        assert r.status_code == 201, r.text
        assert r.json()["burst_limit"] == 4
    with second.rest(second.alice) as alice:
        r = alice.patch("/pools/vo1", json={"burst_limit": 40})
        assert r.status_code == 403 and "burst_limit" in r.text
        [pool] = alice.get("/pools").json()
        assert (pool["burst_limit"], pool["site_workers"], pool["cloud_workers"]) == (4, 0, 0)
        r = alice.patch("/pools/vo1", json={"burst_limit": -1})
        assert r.status_code in (400, 422)
