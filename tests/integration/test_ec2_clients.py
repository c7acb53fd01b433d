"""Issue 11 acceptance with the AWS CLI and apache-libcloud's EC2 driver (clients no one here
wrote) pointed at a real daemon's /ec2/: run, list, terminate. SQLite only: the boto3 module
covers both databases through the same front-end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from libcloud.compute.base import NodeImage, NodeSize
from libcloud.compute.providers import get_driver
from libcloud.compute.types import NodeState, Provider

from tests.support.ec2 import Ec2Site, ec2_site
from tests.support.procs import wait_until


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ec2Site]:
    with ec2_site(tmp_path_factory.mktemp("ec2-clients"), "sqlite", None) as s:
        yield s


def _ami(site: Ec2Site, name: str) -> str:
    with site.rest(site.alice) as c:
        r = c.post("/templates", json={"template": "CPU=0.5\nMEMORY=64\n", "name": name})
        assert r.status_code == 201, r.text
        return f"ami-{(1 << 64) | int(r.json()['id']):017x}"


def _aws(site: Ec2Site, home: Path, *args: str) -> Any:
    """``aws ec2 ...`` as a user runs it: credentials from its own files in a private HOME."""
    aws = home / ".aws"
    aws.mkdir(exist_ok=True)
    (aws / "credentials").write_text(f"[default]\naws_access_key_id = {site.alice.access_key}\n"
                                     f"aws_secret_access_key = {site.alice.secret}\n")
    (aws / "config").write_text("[default]\nregion = vo-west-1\noutput = json\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(home), AWS_SHARED_CREDENTIALS_FILE=str(aws / "credentials"),
               AWS_CONFIG_FILE=str(aws / "config"), AWS_MAX_ATTEMPTS="1")
    p = subprocess.run([sys.executable, "-m", "awscli", "ec2", *args, "--endpoint-url", site.endpoint],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout) if p.stdout.strip() else None


def test_aws_cli_run_list_terminate(site: Ec2Site, tmp_path: Path) -> None:
    ami = _ami(site, "cli-image")
    run = _aws(site, tmp_path, "run-instances", "--image-id", ami, "--instance-type", "small",
               "--count", "2", "--user-data", "echo from-the-cli",
               "--tag-specifications", "ResourceType=instance,Tags=[{Key=Name,Value=cli}]")
    ids = [i["InstanceId"] for i in run["Instances"]]
    assert len(ids) == 2

    def listed() -> list[list[str]]:
        rows: list[list[str]] = _aws(site, tmp_path, "describe-instances", "--filters",
                                     "Name=tag:Name,Values=cli", "--query",
                                     "Reservations[].Instances[].[InstanceId,State.Name]")
        return sorted(rows)

    # (`aws ec2 wait` polls every 15 s; describe-instances is the same call, polled faster)
    wait_until(lambda: listed() == sorted([i, "running"] for i in ids), time.monotonic() + 60,
               "the CLI's instances running")
    images = _aws(site, tmp_path, "describe-images", "--owners", "self")
    assert ami in [i["ImageId"] for i in images["Images"]]
    gone = _aws(site, tmp_path, "terminate-instances", "--instance-ids", *ids)
    assert {g["InstanceId"] for g in gone["TerminatingInstances"]} == set(ids)
    wait_until(lambda: {s for _, s in listed()} == {"terminated"}, time.monotonic() + 60,
               "the CLI's instances terminated")


def test_libcloud_run_list_terminate(site: Ec2Site) -> None:
    ami = _ami(site, "libcloud-image")
    cls = get_driver(Provider.EC2)
    driver: Any = cls(site.alice.access_key, site.alice.secret, secure=False, host="127.0.0.1",
                 port=site.daemon.port, region="us-east-1", signature_version="4")
    driver.path = "/ec2/"  # the driver's request path (Eucalyptus-style endpoints set it too)
    image = driver.get_image(ami)
    assert image.id == ami and image.name == "libcloud-image"
    size = NodeSize(id="small", name="small", ram=1024, disk=0, bandwidth=None, price=0.0,
                    driver=driver)
    node = driver.create_node(name="lc-node", size=size, image=NodeImage(ami, "x", driver),
                              ex_userdata="echo from-libcloud")
    assert str(node.id).startswith("i-") and node.extra["tags"]["Name"] == "lc-node"

    def running() -> bool:
        return any(n.id == node.id and n.state == NodeState.RUNNING for n in driver.list_nodes())

    wait_until(running, time.monotonic() + 60, "the libcloud node running")
    [listed] = [n for n in driver.list_nodes() if n.id == node.id]
    assert listed.name == "lc-node"
    assert driver.destroy_node(listed)

    def terminated() -> bool:
        return any(n.id == node.id and n.state == NodeState.TERMINATED for n in driver.list_nodes())

    wait_until(terminated, time.monotonic() + 60, "the libcloud node terminated")


def test_libcloud_signature_version_2(site: Ec2Site) -> None:
    """Old clients sign with Version 2: libcloud's ``signature_version="2"`` lists and runs; a
    wrong secret and a stale timestamp get EC2's codes."""
    ami = _ami(site, "libcloud-v2")
    cls = get_driver(Provider.EC2)

    def driver_for(secret: str) -> Any:
        d: Any = cls(site.alice.access_key, secret, secure=False, host="127.0.0.1",
                     port=site.daemon.port, region="us-east-1", signature_version="2")
        d.path = "/ec2/"
        return d

    driver = driver_for(site.alice.secret)
    size = NodeSize(id="small", name="small", ram=1024, disk=0, bandwidth=None, price=0.0,
                    driver=driver)
    node = driver.create_node(name="v2-node", size=size, image=NodeImage(ami, "x", driver))
    assert node.id in [n.id for n in driver.list_nodes()]
    assert driver.destroy_node(node)
    with pytest.raises(Exception, match="SignatureDoesNotMatch"):
        driver_for("x" * 40).list_nodes()
    stale = time.gmtime(time.time() - 3600)
    with mock.patch("libcloud.common.aws.time.gmtime", return_value=stale), \
            pytest.raises(Exception, match="RequestExpired"):
        driver.list_nodes()
