"""Datastores and image upload in the service layer, on SQLite and PostgreSQL (issue 9, finding 3).

A plain user once registered ``/etc/shadow`` as an image and read back its size and sha256.
Now: registration by path is for administrators and only inside a datastore (symlinks and
``..`` resolved), users upload bytes, ``qemu-img`` judges them, and the image quota counts them.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support.helpers import admin, user_in
from vocloud.errors import Conflict, Forbidden, InvalidInput, NotFound, QuotaExceeded
from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.service.datastores import DatastoreService
from vocloud.store.schema import Event, Image, Quota

MIB = 1 << 20


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True)


def chunks(path: Path, size: int = 256 * 1024) -> Iterator[bytes]:
    with path.open("rb") as f:
        while b := f.read(size):
            yield b


def listing(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir())


def quota(cloud: Cloud, scope: str, sid: int) -> tuple[int, int]:
    with cloud.db.read() as s:
        q = s.scalars(select(Quota).where(Quota.scope == scope).where(Quota.scope_id == sid)).one()
        return q.image_mib_used, q.image_mib_limit


@pytest.fixture
def site(cloud: Cloud, tmp_path: Path) -> tuple[Cloud, Actor, Actor, Path]:
    """An admin, a VO user, and a datastore ``ds`` (as the default one would be)."""
    a = admin(cloud)
    u = user_in(cloud, "alice", "atlas")
    store = tmp_path / "ds"
    store.mkdir(mode=0o700)
    cloud.datastores.create(a, "default", str(store))
    return cloud, a, u, store


@pytest.fixture
def qcow2(tmp_path: Path) -> Path:
    """A real qcow2 with some non-zero data in it."""
    raw = tmp_path / "src.raw"
    raw.write_bytes(os.urandom(3 * MIB + 123))
    out = tmp_path / "src.qcow2"
    qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(out))
    return out


# ------------------------------------------------------------------ registration by path
def test_user_path_registration_refused(site: tuple[Cloud, Actor, Actor, Path]) -> None:
    cloud, _a, u, store = site
    target = store / "x.raw"
    target.write_bytes(b"x" * 100)
    for path in ("/etc/shadow", str(target), "/proc/self/environ"):
        with pytest.raises(Forbidden, match=r"^path: only an administrator may register an image by path"):
            cloud.images.create(u, "stolen", path)
    assert cloud.images.list(u) == []


def test_admin_path_outside_datastores_refused(site: tuple[Cloud, Actor, Actor, Path],
                                               tmp_path: Path) -> None:
    cloud, a, _u, store = site
    outside = tmp_path / "outside.raw"
    outside.write_bytes(b"\1" * 4096)
    (store / "escape").symlink_to(outside)
    (store / "sub").mkdir()
    for path, shown in ((str(outside), str(outside)),
                        ("/etc/passwd", "/etc/passwd"),
                        (str(store / "escape"), f"{store / 'escape'} (really {outside})"),
                        (f"{store}/sub/../../outside.raw", f"(really {outside})")):
        with pytest.raises(Forbidden) as err:
            cloud.images.create(a, "img", path)
        msg = err.value.message
        assert msg.startswith("path: image file ") and "is not inside a datastore" in msg, msg
        assert shown in msg and f"default ({store})" in msg, msg
    # a datastore directory itself is not a file
    with pytest.raises(InvalidInput, match="not a regular file"):
        cloud.images.create(a, "img", str(store))
    assert cloud.images.list(a) == []


def test_admin_path_inside_datastore(site: tuple[Cloud, Actor, Actor, Path], qcow2: Path) -> None:
    cloud, a, _u, store = site
    inside = store / "sub" / "base.qcow2"
    inside.parent.mkdir()
    inside.write_bytes(qcow2.read_bytes())
    (store / "link.qcow2").symlink_to(inside)  # a link inside a datastore to a file inside it
    img = cloud.images.create(a, "base", f"{store}/sub/../link.qcow2", fmt="qcow2")
    assert img["path"] == str(inside) and img["format"] == "qcow2" and not img["uploaded"]
    assert img["size_mib"] == (inside.stat().st_size + MIB - 1) // MIB
    assert img["sha256"] == subprocess.run(["sha256sum", str(inside)], capture_output=True, text=True,
                                           check=True).stdout.split()[0]
    assert quota(cloud, "user", a.user_id)[0] == img["size_mib"]
    cloud.images.delete(a, "base")
    assert inside.exists(), "a file registered by path belongs to the administrator: kept"
    assert quota(cloud, "user", a.user_id)[0] == 0


def test_admin_path_backing_file_refused(site: tuple[Cloud, Actor, Actor, Path]) -> None:
    cloud, a, _u, store = site
    bad = store / "overlay.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(bad), "1M")
    with pytest.raises(InvalidInput, match=r"backing file .*/etc/passwd"):
        cloud.images.create(a, "ov", str(bad))


# ------------------------------------------------------------------ datastores
def test_datastore_rules(cloud: Cloud, tmp_path: Path) -> None:
    a = admin(cloud)
    u = user_in(cloud, "bob", "cms")
    data = tmp_path / "data"
    (data / "datastores" / "extra").mkdir(parents=True)
    (data / "qemu").mkdir()
    (tmp_path / "other").mkdir()
    secrets = tmp_path / "secrets"
    (secrets / "sub").mkdir(parents=True)
    svc = DatastoreService(cloud.db, data, [secrets])
    default = svc.ensure_default()
    assert default["name"] == "default" and default["path"] == str(data / "datastores" / "default")
    assert (data / "datastores" / "default").stat().st_mode & 0o777 == 0o700
    assert svc.ensure_default()["id"] == default["id"]  # idempotent
    with pytest.raises(Forbidden, match="only an administrator may create datastores"):
        svc.create(u, "mine", str(tmp_path))
    for path, msg in ((str(tmp_path), "contains"), ("/", "must not be /"),
                      (str(data), "contains"), (str(secrets), "contains"),
                      (str(secrets / "sub"), "lies inside"), (str(data / "qemu"), "lies inside"),
                      (str(data / "datastores"), "lies inside"),
                      ("relative/dir", "absolute"), (str(tmp_path / "missing"), "not an existing directory")):
        with pytest.raises(InvalidInput, match=msg) as err:
            svc.create(a, "x", path)
        assert err.value.message.startswith(("datastore path", "datastore path must")), err.value.message
    extra = svc.create(a, "extra", str(data / "datastores" / "extra"))
    with pytest.raises(Conflict, match="overlaps datastore extra"):
        svc.create(a, "nested", str(data / "datastores" / "extra"))
    with pytest.raises(Conflict, match="already exists"):
        svc.create(a, "extra", str(tmp_path / "other"))
    assert [d["name"] for d in svc.list(u)] == ["default", "extra"]  # everyone may list
    with pytest.raises(Forbidden):
        svc.delete(u, "extra")
    with pytest.raises(Conflict, match="default datastore cannot be deleted"):
        svc.delete(a, "default")
    svc.delete(a, extra["id"])
    with pytest.raises(NotFound):
        svc.show(a, "extra")
    # a crash left an upload's temp file: the next start removes it
    stale = data / "datastores" / "default" / ".upload-abc.part"
    stale.write_bytes(b"x")
    svc.ensure_default(sweep_older_than=600)  # several front-ends: another may be uploading it
    assert stale.exists()
    os.utime(stale, (time.time() - 601, time.time() - 601))
    svc.ensure_default(sweep_older_than=600)  # untouched for 10 minutes: interrupted
    assert not stale.exists()
    stale.write_bytes(b"x")
    svc.ensure_default()
    assert not stale.exists()


# ------------------------------------------------------------------ upload
def test_upload_qcow2_and_raw(site: tuple[Cloud, Actor, Actor, Path], qcow2: Path, tmp_path: Path) -> None:
    cloud, _a, u, store = site
    img = cloud.images.upload(u, "mine", chunks(qcow2), fmt="qcow2", length=qcow2.stat().st_size,
                              description="from my laptop")
    assert img["owner_id"] == u.user_id and img["uploaded"] and img["format"] == "qcow2"
    f = Path(img["path"])
    assert f.parent == store and f.name.endswith(".qcow2") and "mine" not in f.name
    assert f.read_bytes() == qcow2.read_bytes() and f.stat().st_mode & 0o777 == 0o600
    assert img["sha256"] == subprocess.run(["sha256sum", str(qcow2)], capture_output=True, text=True,
                                           check=True).stdout.split()[0]
    assert quota(cloud, "user", u.user_id)[0] == img["size_mib"] == quota(cloud, "group", u.group_id)[0]
    raw = tmp_path / "disk.raw"
    raw.write_bytes(os.urandom(MIB // 2))
    r = cloud.images.upload(u, "rawdisk", chunks(raw), length=None)  # format detected, length unknown
    assert r["format"] == "raw" and r["size_mib"] == 1
    assert listing(store) == sorted([f.name, Path(r["path"]).name])
    assert [i["name"] for i in cloud.images.list(u)] == ["mine", "rawdisk"]
    with cloud.db.read() as s:
        assert s.scalars(select(Event.action).where(Event.kind == "image")).all() == ["upload", "upload"]


def test_upload_refusals_leave_nothing(site: tuple[Cloud, Actor, Actor, Path], qcow2: Path,
                                       tmp_path: Path) -> None:
    cloud, _a, u, store = site
    backed = tmp_path / "backed.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", "/etc/passwd", "-F", "raw", str(backed), "1M")
    with pytest.raises(InvalidInput, match=r"backing file \('/etc/passwd'\)"):
        cloud.images.upload(u, "backed", chunks(backed))
    with pytest.raises(InvalidInput, match=r"^format: image wrong was declared raw but qemu-img reads "
                                           "it as qcow2"):
        cloud.images.upload(u, "wrong", chunks(qcow2), fmt="raw")
    raw = tmp_path / "r.raw"
    raw.write_bytes(b"\7" * 4096)
    with pytest.raises(InvalidInput, match="declared qcow2 but qemu-img reads it as raw"):
        cloud.images.upload(u, "wrong2", chunks(raw), fmt="qcow2")
    vmdk = tmp_path / "d.vmdk"
    qemu_img("create", "-f", "vmdk", str(vmdk), "1M")
    with pytest.raises(InvalidInput, match="is a 'vmdk' image; only qcow2 and raw"):
        cloud.images.upload(u, "vm", chunks(vmdk))
    with pytest.raises(InvalidInput, match="format: must be one of qcow2, raw"):
        cloud.images.upload(u, "x", chunks(raw), fmt="vmdk")
    with pytest.raises(InvalidInput, match="upload is empty"):
        cloud.images.upload(u, "empty", iter([]))
    with pytest.raises(InvalidInput, match="name"):
        cloud.images.upload(u, "../../etc/evil", chunks(raw))
    with pytest.raises(NotFound, match="datastore nope"):
        cloud.images.upload(u, "x", chunks(raw), datastore="nope")
    cloud.images.upload(u, "taken", chunks(raw))
    with pytest.raises(Conflict, match="image taken already exists"):
        cloud.images.upload(u, "taken", chunks(raw))

    class Boom(Exception):
        pass

    def interrupted() -> Iterator[bytes]:
        yield b"\1" * 100_000
        raise Boom  # the client went away mid-stream

    with pytest.raises(Boom):
        cloud.images.upload(u, "cut", interrupted())
    assert [i["name"] for i in cloud.images.list(u)] == ["taken"]
    assert len(listing(store)) == 1, listing(store)  # only "taken"'s file; no temp file left
    assert quota(cloud, "user", u.user_id)[0] == 1


def test_upload_quota(site: tuple[Cloud, Actor, Actor, Path], tmp_path: Path) -> None:
    cloud, a, u, store = site
    cloud.accounts.set_quota(a, "user", u.user_id, images=2)
    assert cloud.accounts.get_quota(a, "user", u.user_id)["images"] == {"used": 0, "limit": 2}
    big = tmp_path / "big.raw"
    big.write_bytes(os.urandom(2 * MIB + 1))
    # refused before the first byte when the announced length does not fit
    with pytest.raises(QuotaExceeded, match="3 MiB exceeds the remaining user image quota of 2 MiB"):
        cloud.images.begin_upload(u, "big", length=big.stat().st_size)
    # refused mid-stream when the body does (length not announced, or announced falsely)
    for length in (None, MIB):
        with pytest.raises(QuotaExceeded, match="passed the remaining image quota of 2 MiB"):
            cloud.images.upload(u, "big", chunks(big), length=length)
    assert listing(store) == [] and quota(cloud, "user", u.user_id) == (0, 2)
    one = tmp_path / "one.raw"
    one.write_bytes(os.urandom(MIB))
    cloud.images.upload(u, "one", chunks(one))
    cloud.images.upload(u, "two", chunks(one))
    with pytest.raises(QuotaExceeded):
        cloud.images.upload(u, "three", chunks(one), length=MIB)
    # the group's limit counts too
    cloud.accounts.set_quota(a, "user", u.user_id, images=-1)
    cloud.accounts.set_quota(a, "group", u.group_id, images=2)
    with pytest.raises(QuotaExceeded, match="group image quota of 0 MiB"):
        cloud.images.begin_upload(u, "three", length=10)
    # delete refunds and removes the uploaded file
    path = Path(cloud.images.show(u, "one")["path"])
    cloud.images.delete(u, "one")
    assert not path.exists()
    assert quota(cloud, "user", u.user_id)[0] == 1 and quota(cloud, "group", u.group_id)[0] == 1
    cloud.images.upload(u, "three", chunks(one), length=MIB)
    with pytest.raises(InvalidInput, match="quota images must be"):
        cloud.accounts.set_quota(a, "user", u.user_id, images=-5)


def test_checksum_outside_the_write_lock(site: tuple[Cloud, Actor, Actor, Path], tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The write transaction holds only the insert: no hashing or qemu-img inside it."""
    cloud, a, u, store = site
    from vocloud.service import image_files

    inside = {"n": 0, "busy": False}
    real_write = cloud.db.write

    from contextlib import contextmanager

    @contextmanager
    def watched() -> Iterator[object]:
        with real_write() as s:
            inside["busy"] = True
            try:
                yield s
            finally:
                inside["busy"] = False

    def guard(name: str, fn: object) -> None:
        def wrapper(*args: object, **kw: object) -> object:
            assert not inside["busy"], f"{name} ran inside a write transaction"
            inside["n"] += 1
            return fn(*args, **kw)  # type: ignore[operator]
        monkeypatch.setattr(image_files, name, wrapper)

    monkeypatch.setattr(cloud.db, "write", watched)
    guard("qemu_info", image_files.qemu_info)
    guard("sha256_file", image_files.sha256_file)
    raw = store / "r.raw"
    raw.write_bytes(os.urandom(MIB))
    cloud.images.create(a, "byp", str(raw))
    cloud.images.upload(u, "up", chunks(raw))
    assert inside["n"] == 3
    with cloud.db.read() as s:
        assert {i.name for i in s.scalars(select(Image))} == {"byp", "up"}
