"""EC2's ClientToken is idempotent under a race and across a failure: the launch record commits
in the VMs' own transaction (both databases)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from tests.support.helpers import admin, user_in
from tests.support.race import race
from vocloud.service.cloud import Cloud
from vocloud.service.ec2 import template_ami
from vocloud.store.schema import VM


def _vms(cloud: Cloud) -> int:
    with cloud.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(VM)) or 0)


def test_twin_requests_with_one_client_token_launch_once(cloud: Cloud) -> None:
    a = admin(cloud)
    alice = user_in(cloud, "alice", "atlas")
    tmpl = cloud.templates.create(a, "CPU=0.1\nMEMORY=64\n", name="tiny", public=True)
    ami = template_ami(tmpl["id"])
    results, errors = race(6, lambda _i: cloud.ec2.run_instances(
        alice, ami, None, 2, 2, client_token="burst-vm-17"))
    assert not errors, errors
    reservations = {r for r, _ in results}
    assert len(reservations) == 1, reservations  # every twin answered with the first launch
    ids = {tuple(sorted(i.vm_id for i in found)) for _, found in results}
    assert len(ids) == 1 and len(next(iter(ids))) == 2
    assert _vms(cloud) == 2
    again = cloud.ec2.run_instances(alice, ami, None, 2, 2, client_token="burst-vm-17")
    assert again[0] in reservations and _vms(cloud) == 2
    cloud.ec2.run_instances(alice, ami, None, 1, 1, client_token="another")
    assert _vms(cloud) == 3


def test_a_failed_launch_leaves_no_vm_and_no_token(cloud: Cloud, monkeypatch: pytest.MonkeyPatch) -> None:
    """If recording the launch fails, the VMs are rolled back with it: a retry with the same
    ClientToken launches once, not twice."""
    a = admin(cloud)
    tmpl = cloud.templates.create(a, "CPU=0.1\nMEMORY=64\n", name="tiny2", public=True)
    ami = template_ami(tmpl["id"])
    from vocloud.service import ec2 as ec2_module

    class Boom(RuntimeError):
        pass

    real = ec2_module.Tag  # type: ignore[attr-defined]

    def broken(**kw: object) -> object:
        raise Boom("the store failed while recording the launch's tags")

    monkeypatch.setattr(ec2_module, "Tag", broken)
    with pytest.raises(Boom):
        cloud.ec2.run_instances(a, ami, None, 1, 1, client_token="retry-me", tags=[("k", "v")])
    assert _vms(cloud) == 0
    monkeypatch.setattr(ec2_module, "Tag", real)
    cloud.ec2.run_instances(a, ami, None, 1, 1, client_token="retry-me")
    cloud.ec2.run_instances(a, ami, None, 1, 1, client_token="retry-me")
    assert _vms(cloud) == 1
