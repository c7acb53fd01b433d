"""Storage drivers, the parts that need no qemu-img: input checks, registry, runner, wiring.

Bad input must be refused *before* any command runs on the host, so most tests hand the driver
a recording runner and assert it was never called.
"""

from __future__ import annotations

import inspect
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
from vocloud.drivers.transport.feed import Source
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


# ------------------------------------------------------------------ local fast path, push


def test_runs_here_recognises_only_the_local_runners() -> None:
    import functools

    from vocloud.drivers.storage.runner import runs_here
    from vocloud.drivers.transport import LocalTransport, SshTransport

    assert runs_here(local_runner)
    assert runs_here(functools.partial(LocalTransport().run, LOCAL))
    assert not runs_here(Recorder())
    assert not runs_here(lambda argv, input=None, timeout=None: local_runner(argv, input, timeout))
    assert not runs_here(functools.partial(SshTransport().run, LOCAL))


def test_stamp_matches_what_the_host_scripts_write(tmp_path: Path) -> None:
    import os

    from vocloud.drivers.storage.cache import stamp_of

    f = tmp_path / "f"
    f.write_bytes(b"x" * 1234)
    out = local_runner(["stat", "-c", "%s %.9Y %i", "--", str(f)])
    assert out.stdout.decode().strip() == stamp_of(os.stat(f))


@pytest.mark.parametrize(("value", "mode"), [(None, "AUTO"), ("", "AUTO"), ("yes", "YES"),
                                             (" No ", "NO"), ("auto", "AUTO")])
def test_image_path_shared_attribute(value: str | None, mode: str) -> None:
    from vocloud.drivers.storage.cache import shared_mode

    attrs = {} if value is None else {"IMAGE_PATH_SHARED": value}
    assert shared_mode(HostRef(id=2, name="h2", attrs=attrs)) == mode


def test_a_bad_image_path_shared_value_is_refused_before_any_command() -> None:
    run = Recorder()
    cache = ImageCache("/ds", runner_for=lambda h: run)
    host = HostRef(id=2, name="h2", attrs={"IMAGE_PATH_SHARED": "sometimes"})
    with pytest.raises(DriverError, match="IMAGE_PATH_SHARED='SOMETIMES' is not one of"):
        cache.ensure(host, "/images/x.qcow2", SHA)
    assert run.calls == []


class CountingFeeder:
    """The local transport's ``feed``, counting calls and bytes, optionally tampering or cutting."""

    def __init__(self, tamper: bool = False, cut_after: int | None = None, delay: float = 0.0) -> None:
        from vocloud.drivers.transport import LocalTransport

        self.inner = LocalTransport()
        self.tamper, self.cut_after, self.delay = tamper, cut_after, delay
        self.calls = 0
        self.sent = 0
        self.offsets: list[int] = []  # where the host asked each push to start

    def feed(self, host: HostRef, argv: list[str], source: Source, ready: bytes = b"SEND",
             timeout: float | None = None) -> tuple[CommandResult, int]:
        import time
        from collections.abc import Iterator

        def altered(arg: bytes) -> Iterator[bytes]:
            self.offsets.append(int(arg))
            total = 0
            for i, chunk in enumerate(source(arg)):
                if self.delay:
                    time.sleep(self.delay)
                if self.tamper and i == 0:
                    chunk = bytes([chunk[0] ^ 1]) + chunk[1:]
                if self.cut_after is not None and total + len(chunk) > self.cut_after:
                    yield chunk[: self.cut_after - total]
                    return
                total += len(chunk)
                yield chunk

        self.calls += 1
        result, sent = self.inner.feed(host, argv, altered, ready=ready, timeout=timeout)
        self.sent += sent
        return result, sent


def _image(tmp_path: Path, mib: int = 3) -> tuple[str, str]:
    import hashlib

    path = tmp_path / "repo" / "base.img"
    path.parent.mkdir(exist_ok=True)
    data = b"".join(hashlib.sha256(bytes([i])).digest() * (MIB // 32) for i in range(mib)) + b"tail"
    path.write_bytes(data)
    return str(path), hashlib.sha256(data).hexdigest()


def _far(tmp_path: Path, mode: str = "NO") -> HostRef:
    return HostRef(id=5, name="far", attrs={"IMAGE_PATH_SHARED": mode,
                                             "DATASTORE_DIR": str(tmp_path / "far")})


def _cache_files(tmp_path: Path) -> list[str]:
    cache = tmp_path / "far" / "cache"
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) if cache.exists() else []


def test_push_sends_the_base_once_per_host(tmp_path: Path) -> None:
    import hashlib
    import os

    src, sha = _image(tmp_path)
    feeder = CountingFeeder()
    cache = ImageCache(str(tmp_path / "ds"), transports=lambda h: feeder)
    host = _far(tmp_path)
    cached = cache.ensure(host, src, sha, "raw")
    assert cached == str(tmp_path / "far" / "cache" / f"{sha}.raw")
    assert hashlib.sha256(Path(cached).read_bytes()).hexdigest() == sha
    assert (cache.stats.pushes, cache.stats.pushed_bytes, cache.stats.misses) == (1, os.path.getsize(src), 1)
    assert _cache_files(tmp_path) == [f"{sha}.raw", f"{sha}.raw.ok"]  # no .part
    # later VMs: a hit, nothing sent; another cache object (a second daemon) too
    assert cache.ensure(host, src, sha, "raw") == cached
    other = ImageCache(str(tmp_path / "ds"), transports=lambda h: feeder)
    assert other.ensure(host, src, sha, "raw") == cached
    assert feeder.sent == os.path.getsize(src)
    assert (cache.stats.hits, other.stats.hits, other.stats.pushes) == (1, 1, 0)


def test_push_of_a_damaged_cached_base_sends_it_again(tmp_path: Path) -> None:
    src, sha = _image(tmp_path)
    feeder = CountingFeeder()
    cache = ImageCache(str(tmp_path / "ds"), transports=lambda h: feeder)
    cached = Path(cache.ensure(_far(tmp_path), src, sha, "raw"))
    with cached.open("r+b") as fh:
        fh.write(b"\xff" * 8)
    cache.ensure(_far(tmp_path), src, sha, "raw")
    assert (cache.stats.pushes, cache.stats.refetches) == (2, 1)


def test_push_corrupted_in_transit_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    src, sha = _image(tmp_path)
    cache = ImageCache(str(tmp_path / "ds"), transports=lambda h: CountingFeeder(tamper=True))
    with pytest.raises(DriverError, match=r"host far: pushed copy of image .* arrived with sha256 "
                                          r"[0-9a-f]{64}, expected .*corrupted in transit"):
        cache.ensure(_far(tmp_path), src, sha, "raw")
    assert _cache_files(tmp_path) == []
    assert cache.stats.pushes == 0


def test_push_of_an_image_not_matching_its_record_is_refused(tmp_path: Path) -> None:
    src, sha = _image(tmp_path)
    cache = ImageCache(str(tmp_path / "ds"), transports=lambda h: CountingFeeder())
    with pytest.raises(DriverError, match=f"sha256 is {sha}, the repository recorded 0{{64}}"):
        cache.ensure(_far(tmp_path), src, "0" * 64, "raw")
    assert _cache_files(tmp_path) == []


def test_a_push_cut_short_is_resumed_where_it_stopped(tmp_path: Path) -> None:
    import hashlib
    import os

    src, sha = _image(tmp_path)
    size = os.path.getsize(src)
    cache = ImageCache(str(tmp_path / "ds"), transports=lambda h: CountingFeeder(cut_after=MIB + 7))
    with pytest.raises(DriverError, match=rf"cut short: the host has 1048583 of {size} bytes; kept, "
                                          r"the next push sends the rest"):
        cache.ensure(_far(tmp_path), src, sha, "raw")
    assert _cache_files(tmp_path) == [f"{sha}.raw.part"]  # never at the final name
    assert (tmp_path / "far" / "cache" / f"{sha}.raw.part").stat().st_size == MIB + 7
    assert cache.stats.pushes == 0
    feeder = CountingFeeder()
    again = ImageCache(str(tmp_path / "ds"), transports=lambda h: feeder)  # e.g. after a restart
    cached = again.ensure(_far(tmp_path), src, sha, "raw")
    assert hashlib.sha256(Path(cached).read_bytes()).hexdigest() == sha
    assert feeder.offsets == [MIB + 7] and feeder.sent == size - (MIB + 7)
    assert (again.stats.pushes, again.stats.resumed, again.stats.pushed_bytes) == (1, 1, size - MIB - 7)
    assert _cache_files(tmp_path) == [f"{sha}.raw", f"{sha}.raw.ok"]


def test_a_damaged_kept_part_costs_one_full_push_never_a_bad_base(tmp_path: Path) -> None:
    src, sha = _image(tmp_path)
    cut = ImageCache(str(tmp_path / "ds"), transports=lambda h: CountingFeeder(cut_after=2 * MIB))
    with pytest.raises(DriverError, match="cut short"):
        cut.ensure(_far(tmp_path), src, sha, "raw")
    part = tmp_path / "far" / "cache" / f"{sha}.raw.part"
    with part.open("r+b") as fh:
        fh.write(b"\x00" * 16)  # the kept prefix went bad on the host's disk
    feeder = CountingFeeder()
    cache = ImageCache(str(tmp_path / "ds"), transports=lambda h: feeder)
    with pytest.raises(DriverError, match=r"the front-end sent the right bytes: corrupted in transit, "
                                          rf"on the host's disk or in the {2 * MIB} bytes kept"):
        cache.ensure(_far(tmp_path), src, sha, "raw")
    assert _cache_files(tmp_path) == []  # the damaged part is gone with the failed check
    cache.ensure(_far(tmp_path), src, sha, "raw")
    assert feeder.offsets == [2 * MIB, 0] and cache.stats.resumed == 0


def test_a_kept_part_longer_than_the_image_is_dropped(tmp_path: Path) -> None:
    import os

    src, sha = _image(tmp_path)
    cache_dir = tmp_path / "far" / "cache"
    cache_dir.mkdir(parents=True)
    (cache_dir / f"{sha}.raw.part").write_bytes(b"x" * (os.path.getsize(src) + 1))
    feeder = CountingFeeder()
    cache = ImageCache(str(tmp_path / "ds"), transports=lambda h: feeder)
    cache.ensure(_far(tmp_path), src, sha, "raw")
    assert feeder.offsets == [0] and feeder.sent == os.path.getsize(src)


def test_push_of_a_missing_image_says_so(tmp_path: Path) -> None:
    feeder = CountingFeeder()
    cache = ImageCache(str(tmp_path / "ds"), transports=lambda h: feeder)
    with pytest.raises(DriverError, match="No such file or directory on the front-end"):
        cache.ensure(_far(tmp_path), str(tmp_path / "gone.img"), SHA, "raw")
    with pytest.raises(DriverError, match="No such file or directory on the front-end"):
        cache.ensure(_far(tmp_path), str(tmp_path / "gone.img"), None, "raw")  # nothing to hash
    assert feeder.calls == 0


def test_push_without_a_recorded_sum_hashes_on_the_front_end_once(tmp_path: Path) -> None:
    src, sha = _image(tmp_path)
    cache = ImageCache(str(tmp_path / "ds"), transports=lambda h: CountingFeeder())
    for _ in range(3):
        assert cache.ensure(_far(tmp_path), src, None, "raw").endswith(f"/{sha}.raw")
    assert (cache.stats.hashed, cache.stats.pushes, cache.stats.hits) == (1, 1, 2)


def test_concurrent_pushes_to_one_host_send_the_base_once(tmp_path: Path) -> None:
    import threading

    src, sha = _image(tmp_path, mib=6)
    feeder = CountingFeeder(delay=0.02)  # slow link: the others queue on the host's lock
    caches = [ImageCache(str(tmp_path / "ds"), transports=lambda h: feeder) for _ in range(2)]
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            barrier.wait()
            caches[i % 2].ensure(_far(tmp_path), src, sha, "raw")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sum(c.stats.pushes for c in caches) == 1
    assert sum(c.stats.hits for c in caches) == 5
    assert feeder.sent == Path(src).stat().st_size


def test_auto_pushes_only_when_the_host_lacks_the_path(tmp_path: Path) -> None:
    """AUTO (the default) on a host reached by a non-local runner: the host script reports the
    source missing, the front-end has it, so it is pushed; with YES the same host is an error."""
    src, sha = _image(tmp_path)

    def blind(argv: list[str], input: bytes | None = None, timeout: float | None = None) -> CommandResult:
        # this "remote" host sees the datastore but not the repository directory
        return local_runner([a.replace(src, "/nonexistent/base.img") for a in argv], input, timeout)

    feeder = CountingFeeder()
    cache = ImageCache(str(tmp_path / "ds"), runner_for=lambda h: blind, transports=lambda h: feeder)
    with pytest.raises(DriverError, match="does not exist"):
        cache.ensure(_far(tmp_path, "YES"), src, sha, "raw")
    assert feeder.calls == 0
    assert cache.ensure(_far(tmp_path, "AUTO"), src, sha, "raw").endswith(f"/{sha}.raw")
    assert cache.ensure(_far(tmp_path, "AUTO"), src, None, "raw").endswith(f"/{sha}.raw")
    assert (cache.stats.pushes, cache.stats.hits, feeder.calls) == (1, 1, 1)


def test_local_feed_protocol(tmp_path: Path) -> None:
    from vocloud.drivers.transport import LocalTransport

    t = LocalTransport()
    out = tmp_path / "got"
    script = 'echo before; echo SEND; cat > "$1"; echo done'
    asked: list[bytes] = []

    def source(arg: bytes) -> list[bytes]:
        asked.append(arg)
        return [b"ab", b"cd"][int(arg or 0):]

    result, sent = t.feed(LOCAL, ["sh", "-c", script, "x", str(out)], source)
    assert (result.returncode, result.stdout, sent, out.read_bytes()) == (0, b"before\nSEND\ndone\n",
                                                                          4, b"abcd")
    result, sent = t.feed(LOCAL, ["sh", "-c", 'echo SENDER; echo "SEND 1"; cat > "$1"', "x", str(out)],
                          source)  # "SENDER" is not the ready line; "SEND 1" is, with argument 1
    assert (result.returncode, sent, out.read_bytes(), asked) == (0, 2, b"cd", [b"", b"1"])
    never = t.feed(LOCAL, ["sh", "-c", "echo HIT; echo oops >&2; exit 0"], lambda _: iter([b"x" * 10]))
    assert never == (CommandResult(0, b"HIT\n", b"oops\n"), 0)
    stream = (b"y" * 65536 for _ in range(64))
    quits, sent = t.feed(LOCAL, ["sh", "-c", "echo SEND; head -c 3 >/dev/null; exit 4"], lambda _: stream)
    assert quits.returncode == 4 and sent < 64 * 65536
    # closed by the transport: an image file is not kept open
    assert inspect.getgeneratorstate(stream) == inspect.GEN_CLOSED
    with pytest.raises(DriverError, match="timed out"):
        t.feed(LOCAL, ["sleep", "5"], lambda _: [], timeout=0.3)
    assert t.feed(LOCAL, ["vocloud-no-such-program"], lambda _: [])[0].returncode == 127
