"""The ``ec2`` VMM driver against ``moto_server`` (a real EC2 Query API on 127.0.0.1): launch,
tags, idempotence across a restarted driver, one listing per region, throttling and capacity
errors that rest the region, and credentials that never show."""

from __future__ import annotations

import base64
import dataclasses
import logging
from collections.abc import Iterator

import boto3
import pytest

from tests.support.cloudsim import FaultyCloud, moto_server, reset
from vocloud.drivers.base import DiskSpec, DomainSpec, DomainState, HostRef
from vocloud.drivers.vmm.ec2 import Ec2Driver
from vocloud.errors import DriverError

KEY_ID, SECRET = "AKIDBURSTTEST", "burst-secret-never-shown"
TYPES = "t3.micro=1:1024:1, t3.medium=2:4096:2, c5.xlarge=4:8192:4"


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    with moto_server() as url:
        yield url


@pytest.fixture
def url(moto: str) -> str:
    reset(moto)
    return moto


def creds(name: str) -> tuple[str, str]:
    if name != "cloud-a":
        raise DriverError(f"no site secret {name!r}")
    return KEY_ID, SECRET


def host(url: str, **extra: str) -> HostRef:
    attrs = {"EC2_ENDPOINT": url, "EC2_REGION": "eu-west-1", "EC2_CREDENTIALS": "cloud-a",
             "EC2_TYPES": TYPES, "EC2_IMAGES": "7=ami-0badc0de, *=ami-0defa017", "TOTAL_CPU": "16",
             "TOTAL_MEM": "65536", **extra}
    return HostRef(id=9, name="aws-eu", vmm="ec2", attrs=attrs)


def spec(vm_id: int, cpu: float = 2, mem: int = 2048, image: int = 7) -> DomainSpec:
    return DomainSpec(vm_id=vm_id, deploy_id=f"vcq7x-{vm_id}", name=f"worker-{vm_id}", cpu=cpu,
                      vcpu=int(cpu), memory_mib=mem,
                      disks=(DiskSpec(target="vda", source="/x", image_id=image),))


def instances(url: str) -> list[dict[str, object]]:
    c = boto3.client("ec2", endpoint_url=url, region_name="eu-west-1", aws_access_key_id=KEY_ID,
                     aws_secret_access_key=SECRET)
    return [i for r in c.describe_instances()["Reservations"] for i in r["Instances"]]


def tags(inst: dict[str, object]) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}  # type: ignore[attr-defined]


def test_deploy_tags_type_and_ami_then_terminate(url: str) -> None:
    drv, h = Ec2Driver(creds, cache_ttl=0), host(url)
    info = drv.deploy(h, spec(12))
    assert info.state in (DomainState.BOOTING, DomainState.RUNNING)
    [inst] = instances(url)
    assert tags(inst)["vocloud:installation"] == "q7x"
    assert tags(inst)["vocloud:vm"] == "12" and tags(inst)["vocloud:deploy-id"] == "vcq7x-12"
    assert inst["InstanceType"] == "t3.medium" and inst["ImageId"] == "ami-0badc0de"
    assert drv.poll(h, "vcq7x-12").state == DomainState.RUNNING
    hi = drv.monitor(h)
    assert set(hi.domains) == {"vcq7x-12"} and hi.used_cpu == 2 and hi.total_cpu == 16
    assert hi.attrs["CLOUD_INSTANCES"] == "1"
    drv.shutdown(h, "vcq7x-12", hard=False)
    assert drv.poll(h, "vcq7x-12").state in (DomainState.MISSING, DomainState.SHUTTING_DOWN)
    assert [i["State"]["Name"] for i in instances(url)] == ["terminated"]  # type: ignore[index]
    drv.cleanup(h, "vcq7x-12")  # idempotent on a gone instance
    assert len(instances(url)) == 1


def test_deploy_is_idempotent_across_a_restarted_driver(url: str) -> None:
    h = host(url)
    Ec2Driver(creds).deploy(h, spec(3))
    Ec2Driver(creds).deploy(h, spec(3))  # a restarted daemon: nothing in memory
    drv = Ec2Driver(creds)
    drv.deploy(h, spec(3))
    drv.deploy(h, spec(3))
    assert len(instances(url)) == 1


def test_monitor_is_one_call_per_region_and_poll_uses_it(url: str) -> None:
    drv, h = Ec2Driver(creds, cache_ttl=60), host(url)
    for i in range(1, 5):
        drv.deploy(h, spec(i, cpu=1, mem=512))
    st = drv.state(h)
    before = st.calls
    drv.monitor(h)
    for i in range(1, 5):
        drv.poll(h, f"vcq7x-{i}")
    assert st.calls - before == 1


def test_stop_and_start_keep_the_instance(url: str) -> None:
    drv, h = Ec2Driver(creds, cache_ttl=0), host(url)
    drv.deploy(h, spec(5))
    drv.poweroff(h, "vcq7x-5")
    assert drv.poll(h, "vcq7x-5").state in (DomainState.OFF, DomainState.SHUTTING_DOWN)
    drv.deploy(h, spec(5))  # from OFF: StartInstances, not a second instance
    assert len(instances(url)) == 1
    assert drv.poll(h, "vcq7x-5").state in (DomainState.RUNNING, DomainState.BOOTING)


@pytest.mark.parametrize("code", ["RequestLimitExceeded", "InsufficientInstanceCapacity"])
def test_region_errors_rest_the_region_and_take_its_room(url: str, code: str) -> None:
    now = [1000.0]
    with FaultyCloud(url) as faulty:
        drv, h = Ec2Driver(creds, clock=lambda: now[0], cache_ttl=0), host(faulty.url, EC2_BACKOFF="30")
        drv.deploy(h, spec(1))
        faulty.fail["RunInstances"] = code
        with pytest.raises(DriverError, match=f"{code}.*rests 30 s"):
            drv.deploy(h, spec(2))
        runs = faulty.seen.count("RunInstances")
        with pytest.raises(DriverError, match="rests 30 s more"):
            drv.deploy(h, spec(3))
        assert faulty.seen.count("RunInstances") == runs  # resting: no call at all
        hi = drv.monitor(h)
        assert hi.total_cpu == hi.used_cpu == 2  # no room while resting
        assert code in hi.attrs["CLOUD_REST"]
        now[0] += 31
        with pytest.raises(DriverError, match="rests 60 s"):  # doubled
            drv.deploy(h, spec(3))
        faulty.fail.clear()
        now[0] += 61
        drv.deploy(h, spec(3))
        assert drv.monitor(h).total_cpu == 16
    assert len(instances(url)) == 2


def test_capacity_limits_instances_cores_and_cost(url: str) -> None:
    drv = Ec2Driver(creds, cache_ttl=0)
    h = host(url, EC2_MAX_INSTANCES="2", EC2_PRICE_CORE_HOUR="0.05", EC2_COST_CEILING_HOUR="0.4")
    assert drv.monitor(h).total_cpu == 8  # 0.4 $/h buys 8 cores, less than TOTAL_CPU 16
    drv.deploy(h, spec(1, cpu=1, mem=512))
    drv.deploy(h, spec(2, cpu=1, mem=512))
    hi = drv.monitor(h)
    assert hi.total_cpu == hi.used_cpu == 2  # the instance limit is reached
    assert hi.attrs["CLOUD_COST_HOUR"] == "0.1"


def test_bad_declarations_and_credentials_are_clear_and_secret(url: str) -> None:
    drv = Ec2Driver(creds)
    with pytest.raises(DriverError, match="no instance type of eu-west-1 holds CPU=8"):
        drv.deploy(host(url), spec(1, cpu=8))
    with pytest.raises(DriverError, match="EC2_CREDENTIALS must name a site secret"):
        drv.monitor(host(url, EC2_CREDENTIALS=""))
    with pytest.raises(DriverError) as exc:
        drv.monitor(host(url, EC2_CREDENTIALS="other"))
    assert SECRET not in str(exc.value) and KEY_ID not in str(exc.value)
    with pytest.raises(DriverError, match="EC2_ENDPOINT must be an http"):
        drv.monitor(host(url, EC2_ENDPOINT="file:///etc/passwd"))
    with pytest.raises(DriverError, match="not a vocloud deploy id"):
        drv.deploy(host(url), DomainSpec(vm_id=1, deploy_id="other-1", name="x", cpu=1, vcpu=1,
                                         memory_mib=512))
    assert instances(url) == []


def test_context_goes_as_user_data_only_when_the_site_says_so(
        url: str, caplog: pytest.LogCaptureFixture) -> None:
    drv = Ec2Driver(creds)
    s = DomainSpec(vm_id=4, deploy_id="vcq7x-4", name="w", cpu=1, vcpu=1, memory_mib=512,
                   context={"SLURM_SERVER": "10.0.0.1", "NOTE": "it's", "MUNGE_KEY": "c2VjcmV0LWtleQ=="})
    drv.deploy(host(url), s)
    with caplog.at_level(logging.DEBUG):  # a daemon at log_level=debug: botocore stays quiet
        drv.deploy(host(url, EC2_CONTEXT="yes"), dataclasses.replace(s, vm_id=5, deploy_id="vcq7x-5"))
    assert "launched as" in caplog.text
    assert "c2VjcmV0LWtleQ" not in caplog.text and "UserData" not in caplog.text, caplog.text
    c = boto3.client("ec2", endpoint_url=url, region_name="eu-west-1", aws_access_key_id=KEY_ID,
                     aws_secret_access_key=SECRET)
    by = {tags(i)["vocloud:vm"]: i["InstanceId"] for i in instances(url)}
    ud4 = c.describe_instance_attribute(InstanceId=by["4"], Attribute="userData")["UserData"]
    ud5 = c.describe_instance_attribute(InstanceId=by["5"], Attribute="userData")["UserData"]
    assert not ud4.get("Value")
    text = base64.b64decode(ud5["Value"]).decode()
    assert "SLURM_SERVER='10.0.0.1'" in text and "NOTE='it'\\''s'" in text
