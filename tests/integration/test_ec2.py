"""Issue 11 acceptance with boto3 (a client no one here wrote): the EC2 Query API at /ec2/ of a
real daemon on sim hosts, on SQLite and PostgreSQL.

Run -> ``instance_running`` waiter -> describe with filters and paging -> tags -> stop/start ->
reboot -> terminate -> ``instance_terminated`` waiter; key pairs; tenancy between two VOs; the
quota as ``InstanceLimitExceeded``; EC2's own error codes for bad signatures, unknown actions and
malformed ids.
"""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import boto3
import botocore.auth
import httpx
import pytest
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.support.ec2 import Ec2Site, Ec2User, ec2_site, pg_for, site_params

WAIT = {"Delay": 0.5, "MaxAttempts": 120}


@pytest.fixture(scope="module", params=site_params())
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ec2Site]:
    with ec2_site(tmp_path_factory.mktemp(f"ec2-{request.param}"), request.param,
                  pg_for(request)) as s:
        yield s


def ec2(site: Ec2Site, user: Ec2User, secret: str | None = None, key: str | None = None) -> Any:
    return boto3.client("ec2", endpoint_url=site.endpoint, region_name="vo-west-1",
                        aws_access_key_id=key or user.access_key,
                        aws_secret_access_key=secret or user.secret,
                        config=Config(retries={"max_attempts": 1, "mode": "standard"}))


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def _template(site: Ec2Site, user: Ec2User, name: str) -> str:
    with site.rest(user) as c:
        r = c.post("/templates", json={"template": "CPU=0.5\nMEMORY=64\n", "name": name})
        assert r.status_code == 201, r.text
        tid = int(r.json()["id"])
    amis = [i for i in ec2(site, user).describe_images(Owners=["self"])["Images"] if i["Name"] == name]
    assert len(amis) == 1
    assert amis[0]["ImageId"].startswith("ami-") and amis[0]["State"] == "available"
    assert tid >= 0
    return str(amis[0]["ImageId"])


def _ids(resp: dict[str, Any]) -> list[str]:
    return [i["InstanceId"] for r in resp["Reservations"] for i in r["Instances"]]


def test_instance_lifecycle(site: Ec2Site) -> None:
    c = ec2(site, site.alice)
    ami = _template(site, site.alice, "alice-lifecycle")
    pub = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    c.import_key_pair(KeyName="alice-key", PublicKeyMaterial=pub)
    run = c.run_instances(ImageId=ami, InstanceType="small", MinCount=2, MaxCount=2,
                          UserData="#!/bin/sh\necho hello-ec2\n", KeyName="alice-key",
                          ClientToken="lifecycle-1",
                          TagSpecifications=[{"ResourceType": "instance",
                                              "Tags": [{"Key": "role", "Value": "web"}]}])
    ids = [i["InstanceId"] for i in run["Instances"]]
    assert len(ids) == 2 and run["ReservationId"].startswith("r-")
    assert {i["State"]["Name"] for i in run["Instances"]} <= {"pending", "running"}
    assert all(i["InstanceType"] == "small" and i["KeyName"] == "alice-key" and i["ImageId"] == ami
               for i in run["Instances"])
    # the same client token: the same instances, nothing new launched
    again = c.run_instances(ImageId=ami, InstanceType="small", MinCount=2, MaxCount=2,
                            ClientToken="lifecycle-1")
    assert [i["InstanceId"] for i in again["Instances"]] == ids
    # UserData and the key reach the VM's context
    with site.rest(site.alice) as r:
        vm = r.get(f"/vms/{int(ids[0][2:], 16)}").json()
    assert base64.b64encode(b"#!/bin/sh\necho hello-ec2\n").decode() in vm["template"]
    assert "USER_DATA_ENCODING" in vm["template"] and pub.decode().split()[1] in vm["template"]

    c.get_waiter("instance_running").wait(InstanceIds=ids, WaiterConfig=WAIT)
    more = c.run_instances(ImageId=ami, InstanceType="medium", MinCount=1, MaxCount=6)
    more_ids = [i["InstanceId"] for i in more["Instances"]]
    assert len(more_ids) == 6
    c.get_waiter("instance_running").wait(InstanceIds=more_ids, WaiterConfig=WAIT)

    # filters
    web = c.describe_instances(Filters=[{"Name": "tag:role", "Values": ["web"]},
                                        {"Name": "instance-state-name", "Values": ["running"]}])
    assert sorted(_ids(web)) == sorted(ids)
    assert sorted(_ids(c.describe_instances(Filters=[{"Name": "instance-type", "Values": ["medium"]}]))) \
        == sorted(more_ids)
    assert sorted(_ids(c.describe_instances(Filters=[{"Name": "tag-key", "Values": ["ro*"]}]))) == sorted(ids)
    assert _ids(c.describe_instances(Filters=[{"Name": "image-id", "Values": ["ami-00000000"]}])) == []
    assert _ids(c.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["stopped"]}])) == []
    # paging with boto3's own paginator: every instance once, pages of at most 5
    pages = list(c.get_paginator("describe_instances").paginate(PaginationConfig={"PageSize": 5}))
    seen = [i for p in pages for i in _ids(p)]
    assert len(pages) >= 2 and all(len(_ids(p)) <= 5 for p in pages)
    assert len(seen) == len(set(seen)) and set(ids + more_ids) <= set(seen)

    # tags
    c.create_tags(Resources=[more_ids[0]], Tags=[{"Key": "Name", "Value": "first"},
                                                 {"Key": "env", "Value": "test"}])
    tags = c.describe_tags(Filters=[{"Name": "resource-id", "Values": [more_ids[0]]}])["Tags"]
    assert {(t["Key"], t["Value"]) for t in tags} == {("Name", "first"), ("env", "test")}
    c.delete_tags(Resources=[more_ids[0]], Tags=[{"Key": "env"}])
    [inst] = c.describe_instances(InstanceIds=[more_ids[0]])["Reservations"][0]["Instances"]
    assert inst["Tags"] == [{"Key": "Name", "Value": "first"}]

    # stop / start / reboot
    stop = c.stop_instances(InstanceIds=[ids[0]])["StoppingInstances"][0]
    assert stop["PreviousState"]["Name"] == "running"
    c.get_waiter("instance_stopped").wait(InstanceIds=[ids[0]], WaiterConfig=WAIT)
    with pytest.raises(ClientError) as bad:
        c.reboot_instances(InstanceIds=[ids[0]])
    assert code(bad) == "IncorrectInstanceState"
    start = c.start_instances(InstanceIds=[ids[0]])["StartingInstances"][0]
    assert start["PreviousState"]["Name"] == "stopped"
    c.get_waiter("instance_running").wait(InstanceIds=[ids[0]], WaiterConfig=WAIT)
    c.reboot_instances(InstanceIds=[ids[1]])
    c.get_waiter("instance_running").wait(InstanceIds=[ids[1]], WaiterConfig=WAIT)
    status = c.describe_instance_status(InstanceIds=ids)["InstanceStatuses"]
    assert {s["InstanceId"] for s in status} <= set(ids)

    # terminate: stays visible as terminated
    gone = c.terminate_instances(InstanceIds=ids + more_ids)["TerminatingInstances"]
    assert {g["InstanceId"] for g in gone} == set(ids + more_ids)
    c.get_waiter("instance_terminated").wait(InstanceIds=ids + more_ids, WaiterConfig=WAIT)
    states = {i["State"]["Name"] for r in c.describe_instances(InstanceIds=ids)["Reservations"]
              for i in r["Instances"]}
    assert states == {"terminated"}
    # terminating again is a no-op, as in EC2
    assert c.terminate_instances(InstanceIds=[ids[0]])["TerminatingInstances"][0]["CurrentState"]["Name"] \
        == "terminated"


def test_key_pairs(site: Ec2Site) -> None:
    c = ec2(site, site.alice)
    made = c.create_key_pair(KeyName="made-here")
    assert made["KeyMaterial"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert made["KeyPairId"].startswith("key-") and made["KeyFingerprint"]
    serialization.load_pem_private_key(made["KeyMaterial"].encode(), None)
    with pytest.raises(ClientError) as dup:
        c.create_key_pair(KeyName="made-here")
    assert code(dup) == "InvalidKeyPair.Duplicate"
    with pytest.raises(ClientError) as bad:
        c.import_key_pair(KeyName="junk", PublicKeyMaterial=b"ssh-rsa not-a-key")
    assert code(bad) == "InvalidKey.Format"
    names = {k["KeyName"] for k in c.describe_key_pairs()["KeyPairs"]}
    assert "made-here" in names and "junk" not in names
    [one] = c.describe_key_pairs(KeyNames=["made-here"], IncludePublicKey=True)["KeyPairs"]
    assert one["PublicKey"].startswith("ssh-rsa ")
    c.delete_key_pair(KeyName="made-here")
    with pytest.raises(ClientError) as nf:
        c.describe_key_pairs(KeyNames=["made-here"])
    assert code(nf) == "InvalidKeyPair.NotFound"
    c.delete_key_pair(KeyName="made-here")  # deleting a missing pair succeeds, as in EC2


def test_tenancy(site: Ec2Site) -> None:
    alice, bob, carol = ec2(site, site.alice), ec2(site, site.bob), ec2(site, site.carol)
    ami = _template(site, site.alice, "alice-private")
    alice.create_key_pair(KeyName="alice-secret-key")
    [inst] = alice.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"]
    iid = inst["InstanceId"]
    assert iid not in _ids(bob.describe_instances())
    assert ami not in {i["ImageId"] for i in bob.describe_images()["Images"]}
    assert "alice-secret-key" not in {k["KeyName"] for k in bob.describe_key_pairs()["KeyPairs"]}
    assert iid not in {t["ResourceId"] for t in bob.describe_tags()["Tags"]}
    calls: list[Callable[[], Any]] = [
                 lambda: bob.describe_instances(InstanceIds=[iid]),
                 lambda: bob.terminate_instances(InstanceIds=[iid]),
                 lambda: bob.stop_instances(InstanceIds=[iid]),
                 lambda: bob.create_tags(Resources=[iid], Tags=[{"Key": "k", "Value": "v"}]),
                 lambda: bob.get_console_output(InstanceId=iid)]
    for call in calls:
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "InvalidInstanceID.NotFound"
    with pytest.raises(ClientError) as e:
        bob.run_instances(ImageId=ami, MinCount=1, MaxCount=1)
    assert code(e) == "InvalidAMIID.NotFound"
    with pytest.raises(ClientError) as e:
        bob.run_instances(ImageId=ami, MinCount=1, MaxCount=1, KeyName="alice-secret-key")
    assert code(e) in ("InvalidAMIID.NotFound", "InvalidKeyPair.NotFound")
    # a VO member (same group) sees it; an ACL granting USE only lets bob see but not act
    assert iid in _ids(carol.describe_instances())
    with site.rest() as admin:
        r = admin.post("/acls", json={"subject": f"#{site.bob.user_id}", "resource": "VM",
                                      "target": f"#{int(iid[2:], 16)}", "rights": "USE"})
        assert r.status_code == 201, r.text
        acl = r.json()["id"]
    try:
        assert iid in _ids(bob.describe_instances(InstanceIds=[iid]))
        with pytest.raises(ClientError) as e:
            bob.terminate_instances(InstanceIds=[iid])
        assert code(e) == "UnauthorizedOperation"
    finally:
        with site.rest() as admin:
            admin.delete(f"/acls/{acl}").raise_for_status()
    alice.terminate_instances(InstanceIds=[iid])
    assert alice.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"] \
        in ("shutting-down", "terminated")


def test_vo_uploads_its_own_image_and_runs_it(site: Ec2Site) -> None:
    """A VO user uploads an image (bytes, no host path) and runs it by its ami- id; the other VO
    neither sees it nor runs it."""
    alice, bob = ec2(site, site.alice), ec2(site, site.bob)
    with site.rest(site.alice) as c:
        r = c.post("/images/upload", params={"name": "alice-os", "format": "raw"},
                   content=b"\0" * (1 << 20), headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
        ami = f"ami-{int(r.json()['id']):08x}"
    [img] = alice.describe_images(ImageIds=[ami])["Images"]
    assert img["Name"] == "alice-os" and img["State"] == "available" and not img["Public"]
    assert [i["ImageId"] for i in alice.describe_images(Filters=[{"Name": "name", "Values": ["alice-o*"]}])
            ["Images"]] == [ami]
    [inst] = alice.run_instances(ImageId=ami, InstanceType="small", MinCount=1, MaxCount=1)["Instances"]
    assert inst["ImageId"] == ami
    alice.get_waiter("instance_running").wait(InstanceIds=[inst["InstanceId"]], WaiterConfig=WAIT)
    by_image = alice.describe_instances(Filters=[{"Name": "image-id", "Values": [ami]}])
    assert _ids(by_image) == [inst["InstanceId"]]
    alice.create_tags(Resources=[ami], Tags=[{"Key": "os", "Value": "busybox"}])
    assert alice.describe_images(ImageIds=[ami])["Images"][0]["Tags"] == [{"Key": "os", "Value": "busybox"}]
    assert ami not in {i["ImageId"] for i in bob.describe_images()["Images"]}
    calls: list[Callable[[], Any]] = [
        lambda: bob.describe_images(ImageIds=[ami]),
        lambda: bob.run_instances(ImageId=ami, MinCount=1, MaxCount=1),
        lambda: bob.create_tags(Resources=[ami], Tags=[{"Key": "k", "Value": "v"}])]
    for call in calls:
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "InvalidAMIID.NotFound"
    alice.terminate_instances(InstanceIds=[inst["InstanceId"]])


def test_quota_is_instance_limit_exceeded(site: Ec2Site) -> None:
    bob = ec2(site, site.bob)
    ami = _template(site, site.bob, "bob-quota")
    with site.rest() as admin:
        admin.put(f"/quotas/user/{site.bob.name}", json={"vms": 3}).raise_for_status()
    try:
        with pytest.raises(ClientError) as e:
            bob.run_instances(ImageId=ami, MinCount=4, MaxCount=4)
        assert code(e) == "InstanceLimitExceeded"
        assert _ids(bob.describe_instances()) == []
        # MinCount..MaxCount: as many as the quota allows
        got = bob.run_instances(ImageId=ami, MinCount=1, MaxCount=5)["Instances"]
        assert len(got) == 3
        with pytest.raises(ClientError) as e:
            bob.run_instances(ImageId=ami, MinCount=1, MaxCount=5)
        assert code(e) == "InstanceLimitExceeded"
        bob.terminate_instances(InstanceIds=[g["InstanceId"] for g in got])
    finally:
        with site.rest() as admin:
            admin.put(f"/quotas/user/{site.bob.name}", json={"vms": -1}).raise_for_status()


def _signed(site: Ec2Site, user: Ec2User, body: str, when: datetime.datetime | None = None,
            secret: str | None = None) -> httpx.Response:
    """A request signed by botocore's own SigV4 signer (its clock moved when asked)."""
    req = AWSRequest(method="POST", url=site.endpoint, data=body,
                     headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    signer = botocore.auth.SigV4Auth(Credentials(user.access_key, secret or user.secret), "ec2",
                                     "vo-west-1")
    if when is None:
        signer.add_auth(req)
    else:
        frozen = mock.Mock(wraps=datetime.datetime)
        frozen.now.return_value = when
        frozen.utcnow.return_value = when.replace(tzinfo=None)
        with mock.patch.object(botocore.auth.datetime, "datetime", frozen):
            signer.add_auth(req)
    prepared = req.prepare()
    return httpx.post(prepared.url, content=prepared.body, headers=dict(prepared.headers.items()))


def test_authentication_errors(site: Ec2Site) -> None:
    with pytest.raises(ClientError) as e:
        ec2(site, site.alice, secret="x" * 40).describe_instances()
    assert code(e) == "SignatureDoesNotMatch"
    with pytest.raises(ClientError) as e:
        ec2(site, site.alice, key="VCNOSUCHKEY000000000").describe_instances()
    assert code(e) == "AuthFailure"
    old = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    r = _signed(site, site.alice, "Action=DescribeInstances&Version=2016-11-15", when=old)
    assert r.status_code in (400, 401) and "<Code>RequestExpired</Code>" in r.text
    assert "<RequestID>" in r.text
    r = httpx.post(site.endpoint, data={"Action": "DescribeInstances"})
    assert r.status_code == 401 and "<Code>AuthFailure</Code>" in r.text
    r = _signed(site, site.alice, "Action=DescribeInstances&Version=2016-11-15")
    assert r.status_code == 200 and "<requestId>" in r.text
    # a deleted key stops working at once
    with site.rest(site.carol) as c:
        k = c.post("/access-keys", json={}).json()
        c.delete(f"/access-keys/{k['access_key_id']}").raise_for_status()
    with pytest.raises(ClientError) as e:
        ec2(site, site.carol, key=k["access_key_id"], secret=k["secret_access_key"]).describe_instances()
    assert code(e) == "AuthFailure"


def test_bad_requests(site: Ec2Site) -> None:
    c = ec2(site, site.alice)
    r = _signed(site, site.alice, "Action=LaunchRockets&Version=2016-11-15")
    assert r.status_code == 400 and "<Code>InvalidAction</Code>" in r.text
    with pytest.raises(ClientError) as e:
        c.describe_vpcs()
    assert code(e) == "UnsupportedOperation"
    cases: list[tuple[Any, str]] = [
        (lambda: c.describe_instances(InstanceIds=["i-xyz"]), "InvalidInstanceID.Malformed"),
        (lambda: c.terminate_instances(InstanceIds=["i-7ffffff0"]), "InvalidInstanceID.NotFound"),
        (lambda: c.terminate_instances(InstanceIds=["i-ffffffffffffffff0"]), "InvalidInstanceID.NotFound"),
        (lambda: c.run_instances(ImageId="ami-zz", MinCount=1, MaxCount=1), "InvalidAMIID.Malformed"),
        (lambda: c.run_instances(ImageId="ami-7ffffff0", MinCount=1, MaxCount=1), "InvalidAMIID.NotFound"),
        (lambda: c.run_instances(ImageId="ami-7ffffff0", MinCount=3, MaxCount=1), "InvalidParameterValue"),
        (lambda: c.describe_instances(Filters=[{"Name": "bogus", "Values": ["x"]}]), "InvalidParameterValue"),
        (lambda: c.describe_instances(MaxResults=2), "InvalidParameterValue"),
        (lambda: c.describe_instances(MaxResults=5, NextToken="not-a-token"), "InvalidParameterValue"),
        (lambda: c.create_tags(Resources=["i-00000001"], Tags=[{"Key": "aws:x", "Value": "1"}]),
         "InvalidParameterValue"),
        (lambda: c.describe_images(ImageIds=["ami-7ffffff0"]), "InvalidAMIID.NotFound"),
    ]
    for call, want in cases:
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == want, (want, e.value.response)
    # hostile parameters, signed by botocore: each an EC2 error document, never a 500
    before = _ids(c.describe_instances())
    for body, want in [
        ("Action=RunInstances&ImageId=ami-7ffffff0&MinCount=1&MaxCount=9999999999999",
         "InvalidParameterValue"),
        ("Action=RunInstances&ImageId=ami-7ffffff0&MinCount=x&MaxCount=1", "InvalidParameterValue"),
        ("Action=RunInstances&MinCount=1&MaxCount=1", "MissingParameter"),
        ("Action=DescribeInstances&Filter.1.Value.1=x", "InvalidParameterValue"),
        ("Action=DescribeInstances&InstanceId.x=i-00000001", "InvalidParameterValue"),
        ("Action=DescribeInstances&InstanceId.1=i-0000%00001", "InvalidParameterValue"),
        ("Action=CreateTags&ResourceId.1=vol-1&Tag.1.Key=a&Tag.1.Value=b", "InvalidID"),
        ("Action=CreateTags&ResourceId.1=i-00000001", "MissingParameter"),
        ("Action=ImportKeyPair&KeyName=k&PublicKeyMaterial=%%%", "InvalidParameterValue"),
        ("Action=CreateKeyPair&KeyName=k&KeyType=dsa", "InvalidParameterValue"),
        ("Action=TerminateInstances", "MissingParameter"),
        ("Version=2016-11-15", "MissingAction"),
    ]:
        r = _signed(site, site.alice, body)
        assert r.status_code == 400 and f"<Code>{want}</Code>" in r.text, (body, r.status_code, r.text)
        assert "<RequestID>" in r.text
    assert _ids(c.describe_instances()) == before
    ami = _template(site, site.alice, "alice-bad")
    r = _signed(site, site.alice, f"Action=RunInstances&ImageId={ami}&MinCount=1&MaxCount=1&UserData=%21%21")
    assert "<Code>InvalidUserData.Malformed</Code>" in r.text, r.text
    assert _ids(c.describe_instances()) == before

    with pytest.raises(ClientError) as e:
        c.run_instances(ImageId=ami, InstanceType="m5.huge", MinCount=1, MaxCount=1)
    assert code(e) == "InvalidParameterValue"
    with pytest.raises(ClientError) as e:
        c.run_instances(ImageId=ami, MinCount=1, MaxCount=1, KeyName="no-such-key")
    assert code(e) == "InvalidKeyPair.NotFound"
    assert _ids(c.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending"]}])) == []


def test_describe_misc(site: Ec2Site) -> None:
    c = ec2(site, site.alice)
    types = {t["InstanceType"]: t for t in c.describe_instance_types()["InstanceTypes"]}
    assert set(types) == {"small", "medium", "large"}
    assert types["medium"]["VCpuInfo"]["DefaultVCpus"] == 4
    assert types["medium"]["MemoryInfo"]["SizeInMiB"] == 4096
    assert [r["RegionName"] for r in c.describe_regions()["Regions"]] == ["vo-west-1"]
    assert c.describe_availability_zones()["AvailabilityZones"][0]["State"] == "available"
    attrs = {a["AttributeName"] for a in c.describe_account_attributes()["AccountAttributes"]}
    assert "max-instances" in attrs


def test_access_key_routes_and_cli_rights(site: Ec2Site, tmp_path: Path) -> None:
    with site.rest(site.bob) as bob, site.rest() as admin:
        assert bob.post("/access-keys", json={"user": "alice"}).status_code == 403
        assert bob.get("/access-keys", params={"user": "alice"}).status_code == 403
        alice_keys = admin.get("/access-keys", params={"user": "alice"}).json()
        assert [k["access_key_id"] for k in alice_keys] == [site.alice.access_key]
        assert "secret_access_key" not in alice_keys[0]
        assert bob.delete(f"/access-keys/{site.alice.access_key}").status_code == 404
    # the secret is not in the database: only sealed with the key file beside it
    if site.daemon.db_url.startswith("sqlite"):
        assert site.alice.secret.encode() not in (site.daemon.data_dir / "vocloud.db").read_bytes()
    key_file = site.daemon.data_dir / "access-keys.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert tmp_path.exists()
