"""``vocloud user keys create|list|delete``: EC2 access keys through the real CLI, and the key
it prints works for boto3 against the same daemon's /ec2/."""

from __future__ import annotations

import re

import boto3
from botocore.config import Config

from tests.support.cli import Daemon


def test_user_keys(daemon: Daemon) -> None:
    daemon.ok("group", "create", "keyvo")
    created = daemon.ok("user", "create", "kim", "--group", "keyvo").out
    token = re.search(r"^TOKEN: (\S+)$", created, re.MULTILINE).group(1)  # type: ignore[union-attr]
    text = daemon.ok("user", "keys", "create", token=token).out
    key_id = re.search(r"^AWS_ACCESS_KEY_ID: (\S+)$", text, re.MULTILINE).group(1)  # type: ignore[union-attr]
    secret = re.search(r"^AWS_SECRET_ACCESS_KEY: (\S+)$", text, re.MULTILINE).group(1)  # type: ignore[union-attr]
    made = daemon.ok("user", "keys", "create", "kim", "--json").json()  # by the administrator
    assert made["user"] == "kim" and made["secret_access_key"]
    listed = daemon.ok("user", "keys", "list", "--json", token=token).json()
    assert {k["access_key_id"] for k in listed} == {key_id, made["access_key_id"]}
    assert all("secret_access_key" not in k for k in listed)
    assert key_id in daemon.ok("user", "keys", "list", "kim").out
    daemon.fails("user", "keys", "create", "admin", token=token)  # not someone else's
    daemon.fails("user", "keys", "list", "admin", token=token)

    ec2 = boto3.client("ec2", endpoint_url=daemon.base_url + "/ec2/", region_name="r1",
                       aws_access_key_id=key_id, aws_secret_access_key=secret,
                       config=Config(retries={"max_attempts": 1}))
    assert ec2.describe_regions()["Regions"][0]["RegionName"] == "r1"
    daemon.ok("user", "keys", "delete", key_id, made["access_key_id"], token=token)
    assert daemon.ok("user", "keys", "list", "--json", token=token).json() == []
    daemon.fails("user", "keys", "delete", key_id, token=token)
    daemon.ok("user", "delete", "kim")  # its keys go with it
    daemon.ok("group", "delete", "keyvo")
