"""Bursting through the daemon's own loops (scheduler, lifecycle, monitor) on SQLite and
PostgreSQL, with ``moto_server`` as the cloud: the site fills first, the rest bursts with its
reason, instances carry our tags and go when their VMs do, a leaked tagged instance is
terminated and reported, a crash between RunInstances and the record leaves one instance, and
a resting region keeps the work on the site."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from sqlalchemy import select

from tests.support.cloudsim import FaultyCloud, moto_server, reset
from tests.support.helpers import admin, user_in
from tests.support.pools import OWN, Site
from vocloud.drivers.vmm.ec2 import Ec2Driver
from vocloud.drivers.vmm.sim import SimDriver
from vocloud.engine.reconcile import LoopSettings, Reconciler
from vocloud.errors import DriverError, InvalidInput
from vocloud.service.cloud import Cloud
from vocloud.store.schema import VM, Event, SiteSetting

KEY_ID, SECRET = "AKIDENGINE", "engine-secret-never-shown"
VM_2CPU = 'NAME="w"\nCPU=2\nVCPU=2\nMEMORY=1024\n'


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def url(moto: str) -> str:
    reset(moto)
    return moto


def creds(name: str) -> tuple[str, str]:
    return KEY_ID, SECRET


def ec2_attrs(url: str, **extra: str) -> dict[str, str]:
    return {"EC2_ENDPOINT": url, "EC2_REGION": "us-east-1", "EC2_CREDENTIALS": "cloud-a",
            "EC2_TYPES": "t3.medium=2:4096:2, c5.xlarge=4:8192:4", "EC2_IMAGES": "*=ami-0defa017",
            "EC2_LEAK_GRACE": "30", **extra}


def client(url: str) -> Any:
    return boto3.client("ec2", endpoint_url=url, region_name="us-east-1", aws_access_key_id=KEY_ID,
                        aws_secret_access_key=SECRET)


def live(url: str) -> list[dict[str, Any]]:
    out = [i for r in client(url).describe_instances()["Reservations"] for i in r["Instances"]]
    return [i for i in out if i["State"]["Name"] not in ("terminated", "shutting-down")]


def tags(inst: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


class Clock:
    """Starts at the wall clock: the cloud stamps LaunchTime with it."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t


def site(cloud: Cloud, tmp_path: Path, url: str, **extra: str) -> tuple[Reconciler, Ec2Driver, Clock]:
    a = admin(cloud)
    cloud.hosts.create(a, "site1", cpu=4, memory=8192)
    cloud.hosts.create(a, "aws-us", vmm="ec2", cpu=16, memory=65536, attrs=ec2_attrs(url, **extra))
    clock = Clock()
    ec2 = Ec2Driver(creds, clock=clock, cache_ttl=0)
    rec = Reconciler(cloud, {"sim": SimDriver(tmp_path / "sim", 0, 0, clock=clock), "ec2": ec2},
                     LoopSettings(boot_timeout=120, shutdown_timeout=5, monitor_interval=0), clock=clock)
    return rec, ec2, clock


def converge(rec: Reconciler, clock: Clock, passes: int = 6) -> None:
    for _ in range(passes):
        rec.monitor_once(force=True)
        rec.schedule_once()
        rec.lifecycle_once()
        clock.t += 1


def by_state(cloud: Cloud) -> dict[int, tuple[str, int | None]]:
    with cloud.db.read() as s:
        return {v.id: (v.state, v.host_id) for v in s.scalars(select(VM))}


def prefix(cloud: Cloud) -> str:
    with cloud.db.read() as s:
        return f"vc{s.scalar(select(SiteSetting.value).where(SiteSetting.key == 'instance_tag')) or ''}"


def test_site_first_then_burst_with_reason_tags_and_terminate(cloud: Cloud, tmp_path: Path,
                                                             url: str) -> None:
    rec, _ec2, clock = site(cloud, tmp_path, url)
    a = admin(cloud)
    ids = cloud.vms.create(a, VM_2CPU, count=3)
    converge(rec, clock)
    st = by_state(cloud)
    assert [s for s, _ in st.values()] == ["RUNNING"] * 3
    assert [h for _, h in st.values()] == [1, 1, 2]  # two on the site, the third in the cloud
    [inst] = live(url)
    t = tags(inst)
    assert t["vocloud:vm"] == str(ids[2]) and t["vocloud:deploy-id"] == f"{prefix(cloud)}-{ids[2]}"
    assert t["vocloud:installation"] == prefix(cloud)[2:]
    assert inst["InstanceType"] == "t3.medium"
    events = cloud.vms.show(a, ids[2])["history"]
    why = [e["message"] for e in events if e["action"] == "scheduled"]
    assert why == ["burst to aws-us (tier 1): site full: 0 of 4 cores free "
                   "(no host has room for CPU=2, MEMORY=1024: best has 0 CPU, 4096 MiB free)"] \
        or why[0].startswith("burst to aws-us (tier 1): site full: 0 of 4 cores free"), why
    host = cloud.hosts.show(a, "aws-us")
    assert host["attrs"]["CLOUD_INSTANCES"] == "1" and "engine-secret" not in str(host)

    cloud.vms.action(a, ids[2], "terminate")
    converge(rec, clock)
    assert live(url) == []
    assert by_state(cloud)[ids[2]][0] == "DONE"


def test_leaked_tagged_instance_is_terminated_after_grace(cloud: Cloud, tmp_path: Path, url: str) -> None:
    rec, _ec2, clock = site(cloud, tmp_path, url)
    a = admin(cloud)
    mine, other = f"{prefix(cloud)}-9999", "vczzz-9999"
    for dep in (mine, other):  # ours behind our back, and another installation's
        client(url).run_instances(
            ImageId="ami-0defa017", InstanceType="t3.medium", MinCount=1, MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": [
                {"Key": "vocloud:installation", "Value": dep[2:5]},
                {"Key": "vocloud:deploy-id", "Value": dep}]}])
    converge(rec, clock, passes=3)
    assert len(live(url)) == 2  # within the grace period
    clock.t += 40
    converge(rec, clock, passes=1)
    assert [tags(i)["vocloud:deploy-id"] for i in live(url)] == [other]
    with cloud.db.read() as s:
        msgs = list(s.scalars(select(Event.message).where(Event.kind == "host")
                              .where(Event.action == "leak")))
    assert len(msgs) == 1 and mine in msgs[0] and "leaked" in msgs[0]
    assert cloud.hosts.show(a, "aws-us")["state"] == "MONITORED"


def test_a_resting_region_keeps_the_work_on_the_site(cloud: Cloud, tmp_path: Path, url: str) -> None:
    with FaultyCloud(url) as faulty:
        rec, ec2, clock = site(cloud, tmp_path, faulty.url, EC2_BACKOFF="60")
        a = admin(cloud)
        faulty.fail["RunInstances"] = "RequestLimitExceeded"
        ids = cloud.vms.create(a, VM_2CPU, count=3)
        converge(rec, clock, passes=3)
        st = by_state(cloud)
        assert st[ids[0]] == ("RUNNING", 1) and st[ids[1]] == ("RUNNING", 1)
        assert st[ids[2]][0] == "BOOT_FAILURE"
        msg = cloud.vms.show(a, ids[2])["history"][-1]["message"]
        assert "RequestLimitExceeded" in msg and "rests 60 s" in msg
        runs = faulty.seen.count("RunInstances")
        more = cloud.vms.create(a, VM_2CPU, count=1)
        converge(rec, clock, passes=5)
        assert by_state(cloud)[more[0]] == ("PENDING", None)  # no room anywhere: waits
        assert faulty.seen.count("RunInstances") == runs  # the resting region got no call
        cloud.vms.action(a, ids[0], "terminate")  # the site frees 2 cores: it takes the VM
        converge(rec, clock, passes=8)
        assert by_state(cloud)[more[0]] == ("RUNNING", 1)
        faulty.fail.clear()
        clock.t += 61
        again = cloud.vms.create(a, VM_2CPU, count=1)
        converge(rec, clock, passes=4)
        assert by_state(cloud)[again[0]] == ("RUNNING", 2)
        assert ec2.state_for("aws-us").failures == 0
    assert len(live(url)) == 1


def test_bad_cloud_declarations_are_refused_at_registration(cloud: Cloud, url: str) -> None:
    a = admin(cloud)
    for bad, why in ((ec2_attrs(url, EC2_ENDPOINT="ftp://x"), "EC2_ENDPOINT"),
                     (ec2_attrs(url, EC2_TYPES="t3=two:1024"), "CPU"),
                     (ec2_attrs(url, EC2_IMAGES="ubuntu=ami-1"), "EC2_IMAGES"),
                     (ec2_attrs(url, EC2_CREDENTIALS="../etc/shadow"), "secret name")):
        with pytest.raises(InvalidInput, match=why):
            cloud.hosts.create(a, "bad", vmm="ec2", cpu=4, memory=4096, attrs=bad)
    assert cloud.hosts.list(a) == []
    cloud.hosts.create(a, "ok", vmm="ec2", cpu=4, memory=4096, attrs=ec2_attrs(url))
    with pytest.raises(InvalidInput, match="EC2_REGION"):
        cloud.hosts.update_attrs(a, "ok", {"EC2_REGION": "Not A Region"})


_CRASHER = textwrap.dedent("""
    import os, signal, sys
    from vocloud.drivers.vmm.ec2 import Ec2Driver
    from vocloud.drivers.vmm.sim import SimDriver
    from vocloud.engine.reconcile import LoopSettings, Reconciler
    from vocloud.service.cloud import Cloud
    from vocloud.store.db import Database

    class Crashing(Ec2Driver):
        def _call(self, host, region, action, **params):
            out = super()._call(host, region, action, **params)
            if action == "RunInstances":
                os.kill(os.getpid(), signal.SIGKILL)  # launched, nothing recorded
            return out

    cloud = Cloud(Database(sys.argv[1]))
    drv = Crashing(lambda name: ("AKIDENGINE", "x"), cache_ttl=0)
    rec = Reconciler(cloud, {"ec2": drv, "sim": SimDriver(__import__("pathlib").Path(sys.argv[2]))},
                     LoopSettings(monitor_interval=0))
    for _ in range(4):
        rec.monitor_once(force=True)
        rec.schedule_once()
        rec.lifecycle_once()
""")


def test_kill_9_between_run_instances_and_the_record_leaves_one_instance(
        cloud: Cloud, tmp_path: Path, url: str) -> None:
    a = admin(cloud)
    cloud.hosts.create(a, "aws-us", vmm="ec2", cpu=16, memory=65536, attrs=ec2_attrs(url))
    [vm_id] = cloud.vms.create(a, VM_2CPU)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path("src").resolve()), os.getcwd()])}
    proc = subprocess.run([sys.executable, "-c", _CRASHER, cloud.db.url, str(tmp_path / "sim")],
                          env=env, capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert len(live(url)) == 1
    assert by_state(cloud)[vm_id][0] == "BOOT"  # the store never heard of the instance
    clock = Clock()
    rec = Reconciler(cloud, {"ec2": Ec2Driver(creds, cache_ttl=0)},  # the restarted daemon
                     LoopSettings(monitor_interval=0), clock=clock)
    converge(rec, clock, passes=4)
    assert by_state(cloud)[vm_id][0] == "RUNNING"
    [inst] = live(url)
    assert tags(inst)["vocloud:vm"] == str(vm_id)


def test_credentials_error_names_the_secret_not_the_key(cloud: Cloud, tmp_path: Path, url: str) -> None:
    def no_secret(name: str) -> tuple[str, str]:
        raise DriverError(f"no site secret {name!r}: put it in /x/secrets/{name} (mode 0600)")

    a = admin(cloud)
    cloud.hosts.create(a, "aws-us", vmm="ec2", cpu=16, memory=65536, attrs=ec2_attrs(url))
    rec = Reconciler(cloud, {"ec2": Ec2Driver(no_secret)}, LoopSettings(monitor_interval=0))
    rec.monitor_once(force=True)
    h = cloud.hosts.show(a, "aws-us")
    assert "no site secret 'cloud-a'" in h["error"]


def test_pool_bursts_when_the_site_is_full_and_shrinks_from_the_cloud_first(
        cloud: Cloud, tmp_path: Path, url: str) -> None:
    site = Site(cloud, tmp_path, hosts=1, cpu=2)
    a = site.admin
    cloud.hosts.create(a, "aws-us", vmm="ec2", cpu=16, memory=65536,
                       attrs=ec2_attrs(url, EC2_TYPES="t3.small=1:2048:1"))
    site.rec = Reconciler(cloud, {"sim": site.rec.drivers["sim"], "ec2": Ec2Driver(creds, cache_ttl=0)},
                          site.rec.settings)
    site.vo("atlas", OWN)
    site.pools.create(a, "atlas", "atlas-wn", cores=1, memory=512, max=10, idle_timeout=60,
                      scale_down_delay=0, boot_timeout=300, burst_limit=3)
    for _ in range(6):
        site.sim.submit("atlas", runtime=100)
    site.step(3)
    [row] = site.pools.list(a)
    assert (row["site_workers"], row["cloud_workers"], row["burst_limit"]) == (2, 3, 3)
    assert site.pool_states("atlas")["JOINED_BUSY"] == 5  # the sixth job waits: burst limit
    assert len(live(url)) == 3 and all(tags(i)["vocloud:installation"] for i in live(url))
    bursts = [e for e in site.pools.events(a, "atlas") if e["action"] == "burst"]
    assert len(bursts) == 3
    assert all("site full: 0 of 2 cores free" in e["reason"] for e in bursts), bursts
    site.advance(100)
    site.step(2)  # jobs done: all five idle
    site.pools.update(a, "atlas", max=2)  # demand falls: the cloud workers go first
    site.step(4)
    [row] = site.pools.list(a)
    assert (row["site_workers"], row["cloud_workers"]) == (2, 0)
    assert live(url) == []
    assert site.sim.killed == []


def test_a_users_own_vm_never_bursts(cloud: Cloud, tmp_path: Path, url: str) -> None:
    rec, _ec2, clock = site(cloud, tmp_path, url)
    a, user = admin(cloud), user_in(cloud, "ursula", "vo-u")
    cloud.vms.create(a, VM_2CPU, count=2)  # the site is full
    [mine] = cloud.vms.create(user, VM_2CPU)
    converge(rec, clock, passes=4)
    vm = cloud.vms.show(user, mine)
    assert (vm["state"], vm["host"]) == ("PENDING", None)
    assert "only pool workers and administrators' VMs go beyond the site" in vm["sched_message"]
    assert live(url) == []
