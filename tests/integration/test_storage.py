"""Storage drivers against real ``qemu-img``, ``cp``, ``flock`` and files on this machine.

Each test builds its own small base image with real data (so a copy is a copy), its own
datastore under ``tmp_path``, and checks the result with ``qemu-img info`` itself rather than
trusting what the driver says it did.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from tests.support.storage import MIB, info, make_base, vm
from vocloud.drivers.base import CommandResult, DiskSpec, HostRef
from vocloud.drivers.storage import FullCopyDriver, ImageCache, Qcow2OverlayDriver, local_runner
from vocloud.drivers.storage.lvm import LvmSnapshotDriver, lvm_unavailable
from vocloud.errors import DriverError

LOCAL = HostRef(id=1, name="h1")


def _require(tool: str) -> None:
    if shutil.which(tool) is None:
        reason = f"{tool} not installed (apt-get install qemu-utils util-linux)"
        if os.environ.get("VOCLOUD_REQUIRE_QEMU"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def _tools() -> None:
    for tool in ("qemu-img", "flock", "sha256sum"):
        _require(tool)


class Sums:
    """A checksum lookup standing in for the image repository (DiskSpec carries no sha256 yet)."""

    def __init__(self) -> None:
        self.by_path: dict[str, str] = {}

    def __call__(self, disk: DiskSpec) -> str | None:
        return self.by_path.get(disk.source)


@pytest.fixture
def base(tmp_path: Path) -> tuple[str, str]:
    path = tmp_path / "repo" / "base.qcow2"
    path.parent.mkdir()
    return str(path), make_base(path)


@pytest.fixture
def sums(base: tuple[str, str]) -> Sums:
    s = Sums()
    s.by_path[base[0]] = base[1]
    return s


@pytest.fixture
def ds(tmp_path: Path) -> Path:
    return tmp_path / "ds"


# ------------------------------------------------------------------ overlays


def test_overlay_is_backed_by_the_cached_base(base: tuple[str, str], sums: Sums, ds: Path) -> None:
    path, sha = base
    driver = Qcow2OverlayDriver(str(ds), checksum_for=sums)
    staged = driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", path, image_id=7)))
    (disk,) = staged.disks
    cached = ds / "cache" / f"{sha}.qcow2"
    assert disk.source == str(ds / "vms" / "vc-1" / "vda.qcow2")
    assert (disk.format, disk.persistent, disk.image_id) == ("qcow2", False, 7)
    doc = info(disk.source)
    assert doc["format"] == "qcow2"
    assert doc["full-backing-filename"] == str(cached)
    assert doc["backing-filename"] == str(cached)
    assert doc["backing-filename-format"] == "qcow2"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == sha
    assert os.path.getsize(disk.source) < MIB  # an overlay, not a copy


def test_second_vm_from_the_same_image_hits_the_cache(base: tuple[str, str], sums: Sums,
                                                      ds: Path) -> None:
    driver = Qcow2OverlayDriver(str(ds), checksum_for=sums)
    a = driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0])))
    b = driver.stage(LOCAL, vm("vc-2", DiskSpec("vda", base[0])))
    assert (driver.cache.stats.misses, driver.cache.stats.hits) == (1, 1)
    assert a.disks[0].source != b.disks[0].source
    backing = "full-backing-filename"
    assert info(a.disks[0].source)[backing] == info(b.disks[0].source)[backing]
    assert sorted(p.name for p in (ds / "cache").glob("*.qcow2")) == [f"{base[1]}.qcow2"]


def test_each_host_gets_its_own_cache(base: tuple[str, str], sums: Sums, tmp_path: Path) -> None:
    h2 = HostRef(id=2, name="h2", attrs={"DATASTORE_DIR": str(tmp_path / "h2")})
    driver = Qcow2OverlayDriver(str(tmp_path / "h1"), checksum_for=sums)
    driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0])))
    staged = driver.stage(h2, vm("vc-2", DiskSpec("vda", base[0])))
    assert driver.cache.stats.misses == 2
    assert info(staged.disks[0].source)["full-backing-filename"] == str(
        tmp_path / "h2" / "cache" / f"{base[1]}.qcow2")


def test_an_image_without_a_recorded_sum_is_hashed_once(base: tuple[str, str], ds: Path) -> None:
    driver = Qcow2OverlayDriver(str(ds))  # no checksum lookup: nothing recorded
    for i in range(1, 4):
        driver.stage(LOCAL, vm(f"vc-{i}", DiskSpec("vda", base[0])))
    assert (driver.cache.stats.hashed, driver.cache.stats.misses, driver.cache.stats.hits) == (1, 1, 2)
    assert (ds / "cache" / f"{base[1]}.qcow2").exists()
    # the repository file is replaced by another image: the remembered sum must not be reused
    new_sha = make_base(Path(base[0]), seed=2)
    staged = driver.stage(LOCAL, vm("vc-9", DiskSpec("vda", base[0])))
    assert driver.cache.stats.hashed == 2
    assert info(staged.disks[0].source)["full-backing-filename"] == str(ds / "cache" / f"{new_sha}.qcow2")


def test_stage_and_unstage_are_idempotent(base: tuple[str, str], sums: Sums, ds: Path) -> None:
    driver = Qcow2OverlayDriver(str(ds), checksum_for=sums)
    spec = vm("vc-1", DiskSpec("vda", base[0]), DiskSpec("vdb", base[0], size_mib=16))
    first = driver.stage(LOCAL, spec)
    inodes = [os.stat(d.source).st_ino for d in first.disks]
    again = driver.stage(LOCAL, spec)
    assert again == first
    assert [os.stat(d.source).st_ino for d in again.disks] == inodes  # kept, not recreated
    assert info(again.disks[1].source)["virtual-size"] == 16 * MIB
    driver.unstage(LOCAL, "vc-1")
    driver.unstage(LOCAL, "vc-1")
    driver.unstage(LOCAL, "vc-never-staged")
    assert not (ds / "vms" / "vc-1").exists()
    assert (ds / "cache" / f"{base[1]}.qcow2").exists()  # the cache survives
    assert hashlib.sha256(Path(base[0]).read_bytes()).hexdigest() == base[1]


def test_a_stray_overlay_is_replaced(base: tuple[str, str], sums: Sums, ds: Path, tmp_path: Path) -> None:
    driver = Qcow2OverlayDriver(str(ds), checksum_for=sums)
    other = tmp_path / "other.qcow2"
    make_base(other, seed=3)
    target = ds / "vms" / "vc-1" / "vda.qcow2"
    target.parent.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(other),
                    str(target)], check=True)
    staged = driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0])))
    assert info(staged.disks[0].source)["full-backing-filename"] == str(ds / "cache" / f"{base[1]}.qcow2")


@pytest.mark.parametrize("garbage", [b"", b"not an image at all" * 100, b"QFI\xfb" + b"\xff" * 4096])
def test_a_corrupt_overlay_is_recreated(base: tuple[str, str], sums: Sums, ds: Path,
                                        garbage: bytes) -> None:
    driver = Qcow2OverlayDriver(str(ds), checksum_for=sums)
    target = ds / "vms" / "vc-1" / "vda.qcow2"
    target.parent.mkdir(parents=True)
    target.write_bytes(garbage)
    staged = driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0])))
    doc = info(staged.disks[0].source)
    assert (doc["format"], doc["full-backing-filename"]) == ("qcow2", str(ds / "cache" / f"{base[1]}.qcow2"))


@pytest.mark.parametrize(("fmt", "size_mib"), [("qcow2", None), ("qcow2", 16), ("raw", None)])
def test_overlays_from_the_template_equal_what_qemu_img_writes(ds: Path, tmp_path: Path, fmt: str,
                                                              size_mib: int | None) -> None:
    """On a local host only the first overlay of a base runs qemu-img; the others are its bytes.
    They must be exactly what ``qemu-img create`` writes for that backing file, and pass
    ``qemu-img check``."""
    src = tmp_path / f"base.{fmt}"
    sha = make_base(src, fmt=fmt)
    driver = Qcow2OverlayDriver(str(ds), checksum_for=lambda d: sha)
    staged = [driver.stage(LOCAL, vm(f"vc-{i}", DiskSpec("vda", str(src), format=fmt, size_mib=size_mib)))
              for i in range(1, 4)]
    cached = str(ds / "cache" / f"{sha}.{fmt}")
    reference = tmp_path / "reference.qcow2"
    argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", cached, str(reference)]
    subprocess.run(argv + ([f"{size_mib}M"] if size_mib else []), check=True, capture_output=True)
    for s in staged:
        (disk,) = s.disks
        assert Path(disk.source).read_bytes() == reference.read_bytes()
        assert os.stat(disk.source).st_mode & 0o777 == os.stat(reference).st_mode & 0o777
        subprocess.run(["qemu-img", "check", "-q", disk.source], check=True)
        doc = info(disk.source)
        assert (doc["full-backing-filename"], doc["backing-filename-format"]) == (cached, fmt)
    assert len(driver._templates) == 1


def test_template_path_keeps_replaces_and_rolls_back_like_qemu_img(base: tuple[str, str], sums: Sums,
                                                                   ds: Path, tmp_path: Path) -> None:
    driver = Qcow2OverlayDriver(str(ds), checksum_for=sums)
    first = driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0])))  # makes the template
    assert driver._templates
    # re-stage keeps the file (same inode); a corrupt or stray one is replaced from the template
    inode = os.stat(first.disks[0].source).st_ino
    assert driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0]))) == first
    assert os.stat(first.disks[0].source).st_ino == inode
    target = ds / "vms" / "vc-2" / "vda.qcow2"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"garbage" * 100)
    staged = driver.stage(LOCAL, vm("vc-2", DiskSpec("vda", base[0])))
    assert Path(staged.disks[0].source).read_bytes() == Path(first.disks[0].source).read_bytes()
    # a failing second disk removes the first disk this call made, and the empty VM directory
    with pytest.raises(DriverError, match="does not exist"):
        driver.stage(LOCAL, vm("vc-3", DiskSpec("vda", base[0]), DiskSpec("vdb", str(tmp_path / "no.qcow2"))))
    assert not (ds / "vms" / "vc-3").exists()


def test_a_local_cache_hit_runs_no_process(base: tuple[str, str], sums: Sums, ds: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    driver = Qcow2OverlayDriver(str(ds), checksum_for=sums)
    driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0])))

    def no_process(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"a process was started: {args}")

    monkeypatch.setattr(subprocess, "run", no_process)
    monkeypatch.setattr(subprocess, "Popen", no_process)
    staged = driver.stage(LOCAL, vm("vc-2", DiskSpec("vda", base[0])))
    monkeypatch.undo()
    assert driver.cache.stats.hits == 1
    subprocess.run(["qemu-img", "check", "-q", staged.disks[0].source], check=True)


def test_persistent_image_is_used_in_place(base: tuple[str, str], ds: Path) -> None:
    calls: list[list[str]] = []

    def spy(argv: list[str], input: bytes | None = None, timeout: float | None = None) -> CommandResult:
        calls.append(argv)
        return local_runner(argv, input, timeout)

    driver = Qcow2OverlayDriver(str(ds), runner_for=lambda h: spy)
    disk = DiskSpec("vda", base[0], persistent=True, image_id=3)
    staged = driver.stage(LOCAL, vm("vc-1", disk))
    assert staged.disks == (disk,)
    assert not any("cp" in argv or "flock" in " ".join(argv) for argv in calls)  # no copy, no cache
    assert not (ds / "cache").exists()
    assert not (ds / "vms" / "vc-1").exists()  # nothing staged for it
    driver.unstage(LOCAL, "vc-1")
    assert hashlib.sha256(Path(base[0]).read_bytes()).hexdigest() == base[1]


def test_a_missing_persistent_image_is_an_error(ds: Path, tmp_path: Path) -> None:
    driver = Qcow2OverlayDriver(str(ds))
    with pytest.raises(DriverError, match="does not exist"):
        driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", str(tmp_path / "gone.qcow2"), persistent=True)))
    assert not (ds / "vms" / "vc-1").exists()


# ------------------------------------------------------------------ bad images


@pytest.mark.parametrize("cls", [Qcow2OverlayDriver, FullCopyDriver])
def test_missing_base_is_a_clear_error_and_leaves_nothing(cls: type, ds: Path, tmp_path: Path) -> None:
    driver = cls(str(ds))
    missing = str(tmp_path / "repo" / "nope.qcow2")
    with pytest.raises(DriverError, match=r"nope\.qcow2 does not exist"):
        driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", missing)))
    with pytest.raises(DriverError, match=r"nope\.qcow2 does not exist"):
        driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", missing)))
    assert not (ds / "vms" / "vc-1").exists()
    assert [p.name for p in (ds / "cache").glob("*.qcow2*")] == []


@pytest.mark.parametrize("cls", [Qcow2OverlayDriver, FullCopyDriver])
def test_corrupt_qcow2_base_is_refused_and_evicted(cls: type, ds: Path, tmp_path: Path) -> None:
    bad = tmp_path / "corrupt.qcow2"
    bad.write_bytes(b"QFI\xfb" + os.urandom(64 * 1024))  # qcow2 magic, garbage header
    driver = cls(str(ds))
    with pytest.raises(DriverError, match=r"corrupt\.qcow2.*not a usable image"):
        driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", str(bad))))
    assert not (ds / "vms" / "vc-1").exists()
    assert list((ds / "cache").glob("*.qcow2")) == []  # not kept for the next VM


def test_a_qcow2_flagged_corrupt_is_refused(base: tuple[str, str], sums: Sums, ds: Path) -> None:
    path = Path(base[0])
    with path.open("r+b") as fh:  # set the qcow2 v3 "corrupt" incompatible-feature bit
        fh.seek(72)
        fh.write((2).to_bytes(8, "big"))
    sums.by_path[base[0]] = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(DriverError, match="corrupt"):
        Qcow2OverlayDriver(str(ds), checksum_for=sums).stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0])))


def test_format_must_match_the_declared_one(base: tuple[str, str], ds: Path, tmp_path: Path) -> None:
    driver = Qcow2OverlayDriver(str(ds))
    with pytest.raises(DriverError, match="declared raw but qemu-img reads it as qcow2"):
        driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0], format="raw")))
    raw = tmp_path / "plain.img"
    make_base(raw, fmt="raw")
    with pytest.raises(DriverError, match="declared qcow2 but qemu-img reads it as raw"):
        driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", str(raw))))
    assert not (ds / "vms" / "vc-1").exists()


def test_a_raw_base_gets_a_qcow2_overlay(ds: Path, tmp_path: Path) -> None:
    raw = tmp_path / "plain.img"
    sha = make_base(raw, fmt="raw")
    staged = Qcow2OverlayDriver(str(ds)).stage(LOCAL, vm("vc-1", DiskSpec("vda", str(raw), format="raw")))
    doc = info(staged.disks[0].source)
    assert staged.disks[0].format == doc["format"] == "qcow2"
    assert doc["backing-filename-format"] == "raw"
    assert doc["full-backing-filename"] == str(ds / "cache" / f"{sha}.raw")


def test_one_bad_disk_rolls_back_the_others(base: tuple[str, str], sums: Sums, ds: Path) -> None:
    driver = Qcow2OverlayDriver(str(ds), checksum_for=sums)
    spec = vm("vc-1", DiskSpec("vda", base[0]), DiskSpec("vdb", "/nonexistent/data.qcow2"))
    with pytest.raises(DriverError, match="does not exist"):
        driver.stage(LOCAL, spec)
    assert not (ds / "vms" / "vc-1").exists()


def test_rollback_keeps_overlays_of_an_earlier_stage(base: tuple[str, str], sums: Sums, ds: Path) -> None:
    driver = Qcow2OverlayDriver(str(ds), checksum_for=sums)
    first = driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0])))
    with pytest.raises(DriverError, match="can only grow"):
        driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0]), DiskSpec("vdb", base[0], size_mib=1)))
    assert Path(first.disks[0].source).exists()  # a running guest may be using it
    assert not (ds / "vms" / "vc-1" / "vdb.qcow2").exists()


# ------------------------------------------------------------------ checksums


def test_source_not_matching_its_recorded_sum_is_refused(base: tuple[str, str], ds: Path) -> None:
    sums = Sums()
    sums.by_path[base[0]] = "0" * 64
    driver = Qcow2OverlayDriver(str(ds), checksum_for=sums)
    with pytest.raises(DriverError, match=f"sha256 is {base[1]}, the repository recorded 0{{64}}"):
        driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0])))
    assert [p.name for p in (ds / "cache").iterdir() if not p.name.endswith(".lock")] == []
    assert not (ds / "vms" / "vc-1").exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "replace"])
def test_a_damaged_cached_base_is_detected_and_refetched(base: tuple[str, str], sums: Sums, ds: Path,
                                                         damage: str) -> None:
    driver = Qcow2OverlayDriver(str(ds), checksum_for=sums)
    driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0])))
    cached = ds / "cache" / f"{base[1]}.qcow2"
    if damage == "flip":
        with cached.open("r+b") as fh:
            fh.seek(2 * MIB)
            fh.write(b"\x00" * 16)
    elif damage == "truncate":
        os.truncate(cached, MIB)
    else:
        cached.unlink()
        cached.write_bytes(b"QFI\xfb" + b"\x00" * 4096)
    staged = driver.stage(LOCAL, vm("vc-2", DiskSpec("vda", base[0])))
    assert driver.cache.stats.refetches == 1
    assert driver.cache.stats.misses == 2
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == base[1]
    assert info(staged.disks[0].source)["full-backing-filename"] == str(cached)


def test_cached_base_without_a_stamp_is_verified_not_recopied(base: tuple[str, str], sums: Sums,
                                                             ds: Path) -> None:
    cache = ImageCache(str(ds))
    cached = cache.ensure(LOCAL, base[0], base[1])
    Path(cached + ".ok").unlink()  # as after a crash between rename and stamp
    assert cache.ensure(LOCAL, base[0], base[1]) == cached
    assert (cache.stats.misses, cache.stats.hits, cache.stats.refetches) == (1, 1, 0)
    assert Path(cached + ".ok").exists()


def test_scrub_catches_an_in_place_flip_the_stamp_cannot_see(base: tuple[str, str], sums: Sums,
                                                             ds: Path) -> None:
    driver = Qcow2OverlayDriver(str(ds), checksum_for=sums)
    driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0])))
    cached = ds / "cache" / f"{base[1]}.qcow2"
    before = os.stat(cached)
    with cached.open("r+b") as fh:  # bit rot: same size, same inode, mtime put back
        fh.seek(3 * MIB)
        fh.write(b"\xff" * 8)
    os.utime(cached, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert driver.cache.scrub(LOCAL) == [str(cached)]
    assert not cached.exists()
    assert driver.cache.scrub(LOCAL) == []
    driver.stage(LOCAL, vm("vc-2", DiskSpec("vda", base[0])))
    assert driver.cache.stats.misses == 2
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == base[1]


def test_scrub_of_an_empty_or_missing_cache_finds_nothing(ds: Path) -> None:
    assert ImageCache(str(ds)).scrub(LOCAL) == []


# ------------------------------------------------------------------ concurrency


def test_concurrent_stagings_of_one_image_copy_it_once(tmp_path: Path, ds: Path) -> None:
    path = tmp_path / "big.qcow2"
    sha = make_base(path, mib=48)
    copies: list[str] = []
    lock = threading.Lock()

    def counting(argv: list[str], input: bytes | None = None,
                 timeout: float | None = None) -> CommandResult:
        result = local_runner(argv, input, timeout)
        if b"FETCHED" in result.stdout:
            with lock:
                copies.append(argv[-1])
        return result

    # two cache objects = two daemons sharing the host: only the host-side lock can serialise them
    drivers = [Qcow2OverlayDriver(str(ds), runner_for=lambda h: counting,
                                  checksum_for=lambda d: sha) for _ in range(2)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def stage(i: int) -> None:
        try:
            barrier.wait()
            drivers[i % 2].stage(LOCAL, vm(f"vc-{i}", DiskSpec("vda", str(path))))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=stage, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == []
    assert len(copies) == 1
    stats = [d.cache.stats for d in drivers]
    assert sum(s.misses for s in stats) == 1
    assert sum(s.hits for s in stats) == 7
    assert not list((ds / "cache").glob("*.part"))
    for i in range(8):
        assert info(str(ds / "vms" / f"vc-{i}" / "vda.qcow2"))["full-backing-filename"] == str(
            ds / "cache" / f"{sha}.qcow2")


# ------------------------------------------------------------------ full copy


def test_full_copy_content_equals_the_base(base: tuple[str, str], sums: Sums, ds: Path) -> None:
    driver = FullCopyDriver(str(ds), checksum_for=sums)
    staged = driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0])))
    (disk,) = staged.disks
    assert disk.source == str(ds / "vms" / "vc-1" / "vda.qcow2")
    assert hashlib.sha256(Path(disk.source).read_bytes()).hexdigest() == base[1]
    assert "backing-filename" not in info(disk.source)
    cached = ds / "cache" / f"{base[1]}.qcow2"
    assert os.stat(disk.source).st_ino != os.stat(cached).st_ino
    inode = os.stat(disk.source).st_ino
    assert driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0]))) == staged
    assert os.stat(disk.source).st_ino == inode  # idempotent: not copied again
    driver.unstage(LOCAL, "vc-1")
    assert not Path(disk.source).exists()
    assert cached.exists()


def test_full_copy_grows_on_request_and_replaces_a_truncated_copy(base: tuple[str, str], sums: Sums,
                                                                  ds: Path) -> None:
    driver = FullCopyDriver(str(ds), checksum_for=sums)
    staged = driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0], size_mib=32)))
    assert info(staged.disks[0].source)["virtual-size"] == 32 * MIB
    raw = ds / "repo.raw"
    raw_sha = make_base(raw, fmt="raw")
    sums.by_path[str(raw)] = raw_sha
    spec = vm("vc-2", DiskSpec("vda", str(raw), format="raw"))
    dest = Path(driver.stage(LOCAL, spec).disks[0].source)
    os.truncate(dest, MIB)
    driver.stage(LOCAL, spec)
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == raw_sha


# ------------------------------------------------------------------ lvm


def test_lvm_snapshot_driver(base: tuple[str, str], sums: Sums, ds: Path) -> None:
    vg = os.environ.get("VOCLOUD_TEST_VG")
    reason = lvm_unavailable(local_runner, vg)
    if reason is not None:
        pytest.skip(f"LVM snapshots unavailable here: {reason}")
    if vg is None:
        pytest.skip("set VOCLOUD_TEST_VG to a scratch volume group to run the LVM driver test")
    driver = LvmSnapshotDriver(vg, str(ds), checksum_for=sums)
    staged = driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0])))
    again = driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0])))
    assert staged == again
    assert staged.disks[0].source == f"/dev/{vg}/vc-1--vda"
    assert staged.disks[0].format == "raw"
    driver.unstage(LOCAL, "vc-1")
    driver.unstage(LOCAL, "vc-1")
    assert not Path(staged.disks[0].source).exists()


class FakeLvm:
    """LVM commands answered from a dict (no device-mapper on the build machines); everything
    else (cache, qemu-img) runs for real. Checks the driver's command sequence and idempotency."""

    def __init__(self) -> None:
        self.lvs: dict[str, dict[str, str]] = {}  # name -> {"origin": ..., "tag": ...}
        self.fills = 0
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str], input: bytes | None = None,
                 timeout: float | None = None) -> CommandResult:
        self.calls.append(argv)
        ok = CommandResult(0, b"", b"")
        if argv[:2] == ["sh", "-c"] and "lvcreate -y -n" in " ".join(argv):
            vg, lv = argv[8], argv[9]
            assert vg == "vg0"
            if lv in self.lvs:
                return CommandResult(0, b"HIT\n", b"")
            self.fills += 1
            self.lvs[lv] = {"origin": "", "tag": "vocloud_complete"}
            return CommandResult(0, b"FILLED\n", b"")
        if argv[0] == "lvs" and "origin" in argv:
            name = argv[-1].split("/", 1)[1]
            if name not in self.lvs:
                return CommandResult(5, b"", b"Failed to find logical volume\n")
            return CommandResult(0, f"  {self.lvs[name]['origin']}\n".encode(), b"")
        if argv[0] == "lvs" and "--select" in argv:
            tag = argv[argv.index("--select") + 1].removeprefix("lv_tags=")
            names = [n for n, lv in self.lvs.items() if lv["tag"] == tag]
            return CommandResult(0, "".join(f"  {n}\n" for n in names).encode(), b"")
        if argv[0] == "lvremove":
            self.lvs.pop(argv[-1].split("/", 1)[1], None)
            return ok
        if argv[0] == "lvcreate":
            assert "-s" in argv
            name, origin = argv[argv.index("-n") + 1], argv[-1].split("/", 1)[1]
            assert origin in self.lvs, "snapshot of a base that was never filled"
            self.lvs[name] = {"origin": origin, "tag": argv[argv.index("--addtag") + 1]}
            return ok
        return local_runner(argv, input, timeout)


def test_lvm_driver_command_sequence(base: tuple[str, str], sums: Sums, ds: Path) -> None:
    lvm = FakeLvm()
    driver = LvmSnapshotDriver("vg0", str(ds), runner_for=lambda h: lvm, checksum_for=sums)
    first = driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0]), DiskSpec("vdb", base[0])))
    assert [d.source for d in first.disks] == ["/dev/vg0/vc-1--vda", "/dev/vg0/vc-1--vdb"]
    assert {d.format for d in first.disks} == {"raw"}
    base_lv = f"vcbase-{base[1][:24]}-qcow2"
    assert lvm.lvs["vc-1--vda"] == {"origin": base_lv, "tag": "vcvm.vc-1"}
    assert driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0]), DiskSpec("vdb", base[0]))) == first
    driver.stage(LOCAL, vm("vc-12", DiskSpec("vda", base[0])))
    assert lvm.fills == 1  # the base LV is written once
    assert sum(1 for c in lvm.calls if c[0] == "lvcreate") == 3  # re-stage made no new snapshot
    driver.unstage(LOCAL, "vc-1")
    assert set(lvm.lvs) == {base_lv, "vc-12--vda"}  # vc-12 is not vc-1's, the base stays
    driver.unstage(LOCAL, "vc-1")
    assert not (ds / "vms" / "vc-1").exists()


def test_lvm_driver_refuses_what_a_snapshot_cannot_do(base: tuple[str, str], sums: Sums, ds: Path) -> None:
    lvm = FakeLvm()
    driver = LvmSnapshotDriver("vg0", str(ds), runner_for=lambda h: lvm, checksum_for=sums)
    with pytest.raises(DriverError, match="cannot resize"):
        driver.stage(LOCAL, vm("vc-1", DiskSpec("vda", base[0], size_mib=64)))
    with pytest.raises(DriverError, match="letters and digits"):
        driver.stage(LOCAL, vm("vc-1", DiskSpec("vd_a", base[0])))
    assert not [n for n in lvm.lvs if n.startswith("vc-1")]
