"""Storage drivers, the parts that need no qemu-img: input checks, registry, runner, wiring.

Bad input must be refused *before* any command runs on the host, so most tests hand the driver
a recording runner and assert it was never called.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vocloud.drivers.base import CommandResult, DiskSpec, DomainSpec, HostRef
from vocloud.drivers.storage import (
    FullCopyDriver,
    LvmSnapshotDriver,
    Qcow2OverlayDriver,
    get_storage_driver,
    local_runner,
)
from vocloud.drivers.storage.cache import ImageCache, datastore_dir, normalise_sha
from vocloud.drivers.storage.qimg import MIB, ImageInfo, overlay_size
from vocloud.drivers.storage.runner import locked_argv, safe_name
from vocloud.errors import DriverError

LOCAL = HostRef(id=1, name="h1")
SHA = "ab" * 32


class Recorder:
    """A runner that records argvs and answers every command with ``result``."""

    def __init__(self, result: CommandResult | None = None) -> None:
        self.calls: list[list[str]] = []
        self.result = result or CommandResult(0, b"", b"")

    def __call__(self, argv: list[str], input: bytes | None = None,
                 timeout: float | None = None) -> CommandResult:
        self.calls.append(argv)
        return self.result


def spec(*disks: DiskSpec, deploy_id: str = "vc-1") -> DomainSpec:
    return DomainSpec(vm_id=1, deploy_id=deploy_id, name="t", cpu=1, vcpu=1, memory_mib=64,
                      disks=disks)


def disk(**kw: object) -> DiskSpec:
    args: dict[str, object] = {"target": "vda", "source": "/images/base.qcow2"}
    args.update(kw)
    return DiskSpec(**args)  # type: ignore[arg-type]


# ------------------------------------------------------------------ registry


@pytest.mark.parametrize(("name", "cls"), [("qcow2", Qcow2OverlayDriver), ("copy", FullCopyDriver)])
def test_registry_builds_each_file_driver(name: str, cls: type, tmp_path: Path) -> None:
    driver = get_storage_driver(name, str(tmp_path))
    assert isinstance(driver, cls)
    assert driver.name == name


def test_registry_builds_lvm_with_its_volume_group(tmp_path: Path) -> None:
    driver = get_storage_driver("lvm", str(tmp_path), vg="vg0")
    assert isinstance(driver, LvmSnapshotDriver)
    assert driver.vg == "vg0"


@pytest.mark.parametrize("name", ["", "QCOW2", "overlay", "nfs"])
def test_registry_refuses_unknown_names(name: str, tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="unknown storage driver"):
        get_storage_driver(name, str(tmp_path))


def test_registry_lvm_without_volume_group_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="volume group"):
        get_storage_driver("lvm", str(tmp_path))


@pytest.mark.parametrize("vg", ["", "-vg", "vg/0", "vg 0"])
def test_lvm_refuses_bad_volume_group_names(vg: str) -> None:
    with pytest.raises(DriverError, match="volume group"):
        LvmSnapshotDriver(vg, "/ds")


@pytest.mark.parametrize("pct", [0, 101, -5])
def test_lvm_refuses_bad_cow_percent(pct: int) -> None:
    with pytest.raises(DriverError, match="cow_percent"):
        LvmSnapshotDriver("vg0", "/ds", cow_percent=pct)


# ------------------------------------------------------------------ bad input runs nothing


@pytest.mark.parametrize("deploy_id", ["", "../etc", "a/b", ".hidden", "vc 1", "vc-1;rm", "x" * 200])
def test_unsafe_deploy_ids_are_refused_before_any_command(deploy_id: str) -> None:
    run = Recorder()
    driver = Qcow2OverlayDriver("/ds", runner_for=lambda h: run)
    with pytest.raises(DriverError, match="deploy id"):
        driver.stage(LOCAL, spec(disk(), deploy_id=deploy_id))
    with pytest.raises(DriverError, match="deploy id"):
        driver.unstage(LOCAL, deploy_id)
    assert run.calls == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"target": "../vda"}, "disk target"),
        ({"target": ""}, "disk target"),
        ({"format": "vmdk"}, "unsupported image format"),
        ({"format": ""}, "unsupported image format"),
        ({"source": "base.qcow2"}, "not an absolute path"),
        ({"source": ""}, "not an absolute path"),
        ({"source": "/images/a\x00b"}, "not an absolute path"),
        ({"size_mib": 0}, "SIZE must be a positive"),
        ({"size_mib": -1}, "SIZE must be a positive"),
    ],
)
def test_bad_disks_are_refused_before_any_command(bad: dict[str, object], message: str) -> None:
    run = Recorder()
    for cls in (Qcow2OverlayDriver, FullCopyDriver):
        driver = cls("/ds", runner_for=lambda h: run)
        with pytest.raises(DriverError, match=message):
            driver.stage(LOCAL, spec(disk(target="vdb"), disk(**bad)))
    assert run.calls == []


def test_a_target_used_twice_is_refused() -> None:
    run = Recorder()
    driver = Qcow2OverlayDriver("/ds", runner_for=lambda h: run)
    with pytest.raises(DriverError, match="used twice"):
        driver.stage(LOCAL, spec(disk(), disk(source="/images/other.qcow2")))
    assert run.calls == []


def test_ssh_host_without_a_runner_is_an_error_not_a_local_stage() -> None:
    remote = HostRef(id=2, name="far", transport="ssh://root@10.0.0.2")
    driver = Qcow2OverlayDriver("/ds")
    with pytest.raises(DriverError, match="no runner for transport"):
        driver.stage(remote, spec(disk()))
    with pytest.raises(DriverError, match="no runner for transport"):
        driver.unstage(remote, "vc-1")


def test_runner_factory_is_asked_per_host() -> None:
    asked: list[str] = []
    run = Recorder()

    def factory(host: HostRef) -> Recorder:
        asked.append(host.name)
        return run

    driver = Qcow2OverlayDriver("/ds", runner_for=factory)
    driver.unstage(HostRef(id=3, name="h3", transport="ssh://h3"), "vc-9")
    assert asked == ["h3"]
    assert run.calls == [["rm", "-rf", "--", "/ds/vms/vc-9"]]


def test_unstage_failure_is_reported() -> None:
    run = Recorder(CommandResult(1, b"", b"rm: cannot remove: Permission denied\n"))
    driver = FullCopyDriver("/ds", runner_for=lambda h: run)
    with pytest.raises(DriverError, match="Permission denied"):
        driver.unstage(LOCAL, "vc-1")


# ------------------------------------------------------------------ helpers


def test_datastore_dir_prefers_the_host_attribute() -> None:
    assert datastore_dir(LOCAL, "/ds/") == "/ds"
    host = HostRef(id=2, name="h2", attrs={"DATASTORE_DIR": "/srv/vocloud"})
    assert datastore_dir(host, "/ds") == "/srv/vocloud"
    with pytest.raises(DriverError, match="not absolute"):
        datastore_dir(HostRef(id=3, name="h3", attrs={"DATASTORE_DIR": "relative"}), "/ds")


def test_cache_path_is_content_addressed_per_host() -> None:
    cache = ImageCache("/ds")
    other = HostRef(id=2, name="h2", attrs={"DATASTORE_DIR": "/other"})
    assert cache.cached_path(LOCAL, SHA, "qcow2") == f"/ds/cache/{SHA}.qcow2"
    assert cache.cached_path(other, SHA, "raw") == f"/other/cache/{SHA}.raw"


@pytest.mark.parametrize("value", ["abc", "g" * 64, "ab" * 33, " "])
def test_malformed_recorded_checksums_are_refused(value: str) -> None:
    with pytest.raises(DriverError, match="not 64 hex digits"):
        normalise_sha(value, "/images/x")


def test_recorded_checksums_are_normalised() -> None:
    assert normalise_sha(" " + SHA.upper() + "\n", "/x") == SHA


def test_cache_refuses_a_bad_checksum_before_running_anything() -> None:
    run = Recorder()
    cache = ImageCache("/ds", runner_for=lambda h: run)
    with pytest.raises(DriverError, match="not 64 hex digits"):
        cache.ensure(LOCAL, "/images/x.qcow2", "deadbeef")
    with pytest.raises(DriverError, match="unsupported image format"):
        cache.ensure(LOCAL, "/images/x.qcow2", SHA, fmt="vdi")
    assert run.calls == []


@pytest.mark.parametrize(
    ("rc", "out", "message"),
    [
        (3, b"", "does not exist"),
        (5, b"MISMATCH " + b"cd" * 32, "the repository recorded"),
        (75, b"", "locked by another staging"),
        (1, b"", "cannot cache"),
        (0, b"", "cannot cache"),
    ],
)
def test_cache_turns_each_failure_into_a_clear_error(rc: int, out: bytes, message: str) -> None:
    err = b"image file /images/x.qcow2 does not exist\n" if rc == 3 else b""
    run = Recorder(CommandResult(rc, out, err))
    cache = ImageCache("/ds", runner_for=lambda h: run)
    with pytest.raises(DriverError, match=message):
        cache.ensure(LOCAL, "/images/x.qcow2", SHA)
    assert cache.stats.hits == cache.stats.misses == 0


def test_cache_counts_hits_misses_and_refetches() -> None:
    answers = iter([b"FETCHED\n", b"HIT\n", b"VERIFIED\n", b"BAD " + b"00" * 32 + b"\nFETCHED\n"])

    def run(argv: list[str], input: bytes | None = None, timeout: float | None = None) -> CommandResult:
        return CommandResult(0, next(answers), b"")

    cache = ImageCache("/ds", runner_for=lambda h: run)
    for _ in range(4):
        assert cache.ensure(LOCAL, "/images/x.qcow2", SHA) == f"/ds/cache/{SHA}.qcow2"
    assert (cache.stats.misses, cache.stats.hits, cache.stats.refetches) == (2, 2, 1)


def test_locked_argv_passes_arguments_without_shell_interpolation(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = f"$(touch {marker})"
    result = local_runner(locked_argv(f"{tmp_path}/locks/x.lock", 10, 'echo "$1"', [hostile]))
    assert result.returncode == 0, result.stderr
    assert result.stdout == hostile.encode() + b"\n"
    assert not marker.exists()
    assert (tmp_path / "locks" / "x.lock").exists()


def test_safe_name_accepts_ordinary_ids() -> None:
    for value in ("vc-1", "vc-1234", "one.vm_2"):
        assert safe_name(value, "deploy id") == value


def test_overlay_size_grows_but_never_shrinks() -> None:
    base = ImageInfo(path="/b", format="qcow2", virtual_size=64 * MIB)
    assert overlay_size(base, None, "d") is None
    assert overlay_size(base, 64, "d") is None
    assert overlay_size(base, 128, "d") == 128 * MIB
    with pytest.raises(DriverError, match="can only grow"):
        overlay_size(base, 32, "d")


def test_local_runner_reports_a_missing_program_and_a_timeout() -> None:
    missing = local_runner(["vocloud-no-such-program"])
    assert missing.returncode == 127
    assert b"not found" in missing.stderr
    slow = local_runner(["sleep", "5"], timeout=0.2)
    assert slow.returncode == 124
    echoed = local_runner(["cat"], input=b"data")
    assert (echoed.returncode, echoed.stdout) == (0, b"data")
