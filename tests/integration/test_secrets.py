"""Site secrets reach only the site's own worker VMs, and only through the context seed."""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path

import pytest

from tests.support.helpers import admin, converge, reconciler, states, user_in
from tests.support.recording import RecordingSimDriver
from vocloud.engine.reconcile import Reconciler
from vocloud.engine.secrets import SecretDir
from vocloud.errors import InvalidInput
from vocloud.service.cloud import Cloud

KEY = bytes(range(256)) * 4  # binary, like a munge key
WORKER = 'NAME="wn"\nCPU=1\nMEMORY=256\nCONTEXT=[MUNGE_KEY="$SECRET[munge]", NODE="$NAME"]\n'


@pytest.fixture
def secret_dir(tmp_path: Path) -> Path:
    d = tmp_path / "secrets"
    d.mkdir(mode=0o700)
    (d / "munge").write_bytes(KEY)
    (d / "munge").chmod(0o600)
    return d


def _site(cloud: Cloud, tmp_path: Path, secret_dir: Path) -> tuple[Reconciler, RecordingSimDriver]:
    rec, _ = reconciler(cloud, tmp_path / "sim")
    drv = RecordingSimDriver(tmp_path / "rec")
    rec.drivers = {"sim": drv}
    rec.secrets = SecretDir(secret_dir)
    cloud.hosts.create(admin(cloud), "h1", cpu=8, memory=8192)
    return rec, drv


def test_admin_worker_gets_the_secret_in_its_context_only(cloud: Cloud, tmp_path: Path,
                                                           secret_dir: Path) -> None:
    rec, drv = _site(cloud, tmp_path, secret_dir)
    a = admin(cloud)
    cloud.accounts.create_group(a, "atlas")
    [vm] = cloud.vms.create(a, WORKER, group="atlas")  # as Slurm power saving does
    converge(rec)
    assert cloud.vms.show(a, vm)["state"] == "RUNNING"
    ctx = drv.contexts[vm]
    assert base64.b64decode(ctx["MUNGE_KEY"]) == KEY and ctx["NODE"] == "wn"
    # the stored template keeps the reference, never the value
    shown = str(cloud.vms.show(a, vm))
    assert "$SECRET[munge]" in shown and ctx["MUNGE_KEY"] not in shown


def test_users_cannot_ask_for_secrets(cloud: Cloud, tmp_path: Path, secret_dir: Path) -> None:
    _site(cloud, tmp_path, secret_dir)
    alice = user_in(cloud, "alice", "atlas")
    with pytest.raises(InvalidInput, match="only the site's own worker VMs"):
        cloud.vms.create(alice, WORKER)
    tid = cloud.templates.create(admin(cloud), WORKER, public=True)["id"]
    with pytest.raises(InvalidInput, match="site secret"):
        cloud.instantiate(alice, tid)
    assert states(cloud) == Counter()  # nothing was created


@pytest.mark.parametrize("break_it, why", [
    (lambda d: (d / "munge").unlink(), "no site secret 'munge'"),
    (lambda d: (d / "munge").chmod(0o644), "readable by others"),
    (lambda d: d.chmod(0o755), "secrets directory"),
    (lambda d: (d / "munge").write_bytes(b""), "is empty"),
])
def test_unusable_secret_fails_the_vm_with_the_reason(cloud: Cloud, tmp_path: Path, secret_dir: Path,
                                                      break_it: object, why: str) -> None:
    rec, drv = _site(cloud, tmp_path, secret_dir)
    break_it(secret_dir)  # type: ignore[operator]
    a = admin(cloud)
    [vm] = cloud.vms.create(a, WORKER)
    converge(rec)
    info = cloud.vms.show(a, vm)
    assert info["state"] == "PROLOG_FAILURE", info
    assert why in info["error"], info["error"]
    assert vm not in drv.contexts  # never deployed


def test_bad_secret_name_is_refused_at_create(cloud: Cloud) -> None:
    with pytest.raises(InvalidInput, match="bad secret name"):
        cloud.vms.create(admin(cloud), 'CPU=1\nMEMORY=64\nCONTEXT=[K="$SECRET[../etc/shadow]"]\n')
