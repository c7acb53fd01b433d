"""Build the tiny test guest from Debian packages and cache it.

The integration tests, the benchmarks and the demo need a guest that boots in about two seconds
under TCG, prints a marker when it is up, echoes its context back and powers off on an ACPI button
press. A distribution cloud image does none of that quickly, and the brief forbids downloads from
outside the package registries, so the guest is assembled here from two Debian packages:

* ``linux-image-<abi>-amd64``: the kernel, unpacked to an *uncompressed* ``vmlinux`` because the
  in-guest xz decompressor alone costs seconds under TCG, plus the handful of modules the
  initramfs must load (virtio, ext4, isofs, the ACPI button, evdev for acpid);
* ``busybox-static``: PID 1 (``init.sh`` shipped next to this module) and every tool it uses.

The result lives in ``$VOCLOUD_CACHE`` (default ``~/.cache/vocloud/guest``) in a directory named by
the package versions and the builder's own inputs, so a new kernel or a changed init script makes a
new build while an unchanged one costs a single ``apt-cache`` call. Run it as
``python -m vocloud.guest.build [--force]``; it prints the paths it produced.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import io
import json
import lzma
import os
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

#: Bumped when the image layout changes in a way the inputs below do not capture.
BUILD_FORMAT = 1
CONTEXT_MARKER = "VOCLOUD-CONTEXT"
DISK_ID = "vocloud-base-disk"
BASE_DISK_MIB = 64

#: Modules loaded by init, in this order; their dependencies are resolved from the .ko files.
#: crc32c_generic first because ext4 only *soft*-depends on it and there is no modprobe to ask.
#: No SCSI/ATA CD-ROM stack: the driver attaches the context seed as a read-only virtio disk,
#: which works on microvm (no IDE) and pc alike and saves ~0.5 s of module loading under TCG.
GUEST_MODULES = (
    "crc32c_generic",
    "virtio_mmio",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "ext4",
    "isofs",
    "evdev",
    "button",
)

KERNEL_META = "linux-image-amd64"
BUSYBOX = "busybox-static"


@dataclass(frozen=True, slots=True)
class GuestImage:
    """Paths of one built guest; what the driver, tests and benchmarks consume."""

    root: Path
    vmlinux: Path
    initramfs: Path
    base_disk: Path
    kernel_version: str
    cmdline: str

    @classmethod
    def load(cls, root: Path) -> GuestImage:
        manifest = json.loads((root / "manifest.json").read_text())
        return cls(
            root=root,
            vmlinux=root / "vmlinux",
            initramfs=root / "initramfs.cpio.gz",
            base_disk=root / "base.qcow2",
            kernel_version=str(manifest["kernel_release"]),
            cmdline=str(manifest["cmdline"]),
        )


def log(msg: str) -> None:
    """Progress goes to stderr so stdout stays machine-readable (the JSON summary)."""
    print(f"[guest-build] {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    env = os.environ.get("VOCLOUD_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "vocloud" / "guest"


def default_cmdline() -> str:
    """Kernel arguments measured to boot reliably and fast under TCG on microvm and pc.

    ``no_timer_check`` avoids a panic on a loaded host where the timer IRQ check times out;
    ``tsc_early_khz`` skips TSC calibration that microvm (no PIT) cannot do; ``quiet`` keeps the
    emulated UART, which is slow under TCG, out of the critical path while errors still print.
    """
    return "console=ttyS0 no_timer_check tsc_early_khz=2000000 quiet panic=0 rdinit=/init"


# ---------------------------------------------------------------- package resolution


def _apt_show(*packages: str) -> dict[str, dict[str, str]]:
    """Candidate stanzas (``Version``, ``Depends``, ...) per package, in one apt-cache call.

    One call matters: apt-cache loads the whole package cache each time (~1 s here), and this
    runs on every ``ensure_image`` — that is, on every test session.
    """
    out = subprocess.run(["apt-cache", "show", "--no-all-versions", *packages],
                         capture_output=True, text=True, check=True).stdout
    stanzas: dict[str, dict[str, str]] = {}
    for block in out.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            stanzas[fields["Package"]] = fields
    return stanzas


def _kernel_dependency(depends: str) -> tuple[str, str]:
    """``linux-image-6.1.0-56-amd64 (= 6.1.192-2)`` -> (package, version)."""
    for alt in depends.split(","):
        name, _, rest = alt.strip().partition(" ")
        if name.startswith("linux-image-") and "=" in rest:
            return name, rest.split("=", 1)[1].strip(" )")
    raise RuntimeError(f"cannot resolve the kernel package behind {KERNEL_META} from {depends!r}")


def resolve_inputs() -> dict[str, str]:
    """Package names and versions plus a digest of the builder itself: the cache key's inputs."""
    stanzas = _apt_show(KERNEL_META, BUSYBOX)
    for pkg in (KERNEL_META, BUSYBOX):
        if pkg not in stanzas:
            raise RuntimeError(f"apt-cache knows no installable {pkg}; run apt-get update")
    kernel_pkg, kernel_version = _kernel_dependency(stanzas[KERNEL_META].get("Depends", ""))
    return {
        "kernel_package": kernel_pkg,
        "kernel_version": kernel_version,
        "busybox_version": stanzas[BUSYBOX]["Version"],
        "modules": ",".join(GUEST_MODULES),
        "init_sha256": hashlib.sha256(_init_script()).hexdigest(),
        "cmdline": default_cmdline(),
        "format": str(BUILD_FORMAT),
    }


def cache_key(inputs: dict[str, str]) -> str:
    blob = json.dumps(inputs, sort_keys=True).encode()
    return f"{inputs['kernel_version']}-{hashlib.sha256(blob).hexdigest()[:12]}"


def _init_script() -> bytes:
    return resources.files("vocloud.guest").joinpath("init.sh").read_bytes()


# ---------------------------------------------------------------- kernel


def extract_vmlinux(bzimage: bytes) -> bytes:
    """Return the uncompressed ELF kernel embedded in a bzImage.

    The compressed payload is found by its stream magic rather than by parsing the setup header,
    because that is stable across kernel versions; the first candidate that decompresses to an ELF
    image wins (the magic bytes can also occur by chance inside the setup code).
    """
    for magic, decompress in ((b"\xfd7zXZ\x00", _unxz), (b"\x1f\x8b\x08", _gunzip)):
        start = bzimage.find(magic)
        while start != -1:
            try:
                data = decompress(bzimage[start:])
            except (lzma.LZMAError, zlib.error, EOFError):
                data = b""
            if data.startswith(b"\x7fELF"):
                return data
            start = bzimage.find(magic, start + 1)
    raise RuntimeError("no xz or gzip compressed ELF kernel found in the bzImage")


def _unxz(blob: bytes) -> bytes:
    return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(blob)


def _gunzip(blob: bytes) -> bytes:
    return zlib.decompressobj(wbits=31).decompress(blob)


# ---------------------------------------------------------------- modules


def module_index(moddir: Path) -> dict[str, Path]:
    """Map module name (dashes normalised to underscores, as the kernel does) to its .ko file."""
    index: dict[str, Path] = {}
    for ko in moddir.rglob("*.ko"):
        index[ko.stem.replace("-", "_")] = ko
    return index


def module_depends(ko: Path) -> list[str]:
    """Hard dependencies from the module's own ``.modinfo`` (no depmod run needed)."""
    data = ko.read_bytes()
    pos = data.find(b"\x00depends=")
    if pos == -1:
        return []
    end = data.index(b"\x00", pos + 1)
    value = data[pos + len(b"\x00depends="):end].decode()
    return [d.replace("-", "_") for d in value.split(",") if d]


def load_order(wanted: Iterable[str], index: dict[str, Path]) -> list[str]:
    """Dependencies before dependents; names the kernel builds in are silently skipped."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name not in index:
            return
        seen.add(name)
        for dep in module_depends(index[name]):
            visit(dep)
        order.append(name)

    for name in wanted:
        visit(name)
    return order


# ---------------------------------------------------------------- initramfs (newc cpio)


@dataclass(frozen=True, slots=True)
class CpioEntry:
    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def _cpio_header(ino: int, entry: CpioEntry) -> bytes:
    name = entry.name.encode() + b"\x00"
    fields = (
        ino, entry.mode, 0, 0, 1, 0, len(entry.data), 0, 0,
        entry.rdev[0], entry.rdev[1], len(name), 0,
    )
    head = b"070701" + b"".join(f"{f:08x}".encode() for f in fields) + name
    return head + b"\x00" * (-len(head) % 4)


def write_cpio(entries: Iterable[CpioEntry]) -> bytes:
    """A newc archive written directly, so building needs neither root (device nodes) nor cpio."""
    out = io.BytesIO()
    ino = 1
    for entry in [*entries, CpioEntry("TRAILER!!!", 0)]:
        out.write(_cpio_header(ino, entry))
        out.write(entry.data + b"\x00" * (-len(entry.data) % 4))
        ino += 1
    blob = out.getvalue()
    return blob + b"\x00" * (-len(blob) % 512)


def initramfs_entries(busybox: bytes, init: bytes, modules: list[tuple[str, bytes]]) -> Iterator[CpioEntry]:
    d, f, x, c = 0o040755, 0o100644, 0o100755, 0o020600
    for name in ("bin", "dev", "etc", "etc/vocloud", "lib", "lib/modules", "proc", "sys", "mnt",
                 "run", "tmp", "root"):
        yield CpioEntry(name, d)
    yield CpioEntry("dev/console", c, rdev=(5, 1))
    yield CpioEntry("dev/null", 0o020666, rdev=(1, 3))
    yield CpioEntry("bin/busybox", x, busybox)
    yield CpioEntry("bin/sh", 0o120777, b"busybox")
    yield CpioEntry("init", x, init)
    yield CpioEntry("etc/vocloud/modules", f, "".join(f"{n}\n" for n, _ in modules).encode())
    for name, data in modules:
        yield CpioEntry(f"lib/modules/{name}.ko", f, data)


# ---------------------------------------------------------------- base disk


def make_base_disk(dest: Path, workdir: Path) -> None:
    """A small ext4 qcow2 with an id file: enough to prove an overlay's backing chain is read."""
    tree = workdir / "rootfs"
    tree.mkdir()
    (tree / "vocloud-disk-id").write_text(DISK_ID + "\n")
    raw = workdir / "base.raw"
    with raw.open("wb") as fh:
        fh.truncate(BASE_DISK_MIB * 1024 * 1024)
    _run(["mkfs.ext4", "-q", "-F", "-L", "vocloud-root", "-d", str(tree), str(raw)])
    _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(dest)])


# ---------------------------------------------------------------- orchestration


def _run(argv: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")


def _download(packages: list[str], workdir: Path) -> dict[str, Path]:
    """``apt-get download`` then ``dpkg-deb -x`` each package into its own directory."""
    _run(["apt-get", "download", "-q", *packages], cwd=workdir)
    trees: dict[str, Path] = {}
    for pkg in packages:
        name = pkg.split("=", 1)[0]
        debs = sorted(workdir.glob(f"{name}_*.deb"))
        if not debs:
            raise RuntimeError(f"apt-get download produced no .deb for {name}")
        tree = workdir / name
        _run(["dpkg-deb", "-x", str(debs[-1]), str(tree)])
        trees[name] = tree
    return trees


def build(dest: Path, inputs: dict[str, str]) -> GuestImage:
    """Build into a temp dir next to ``dest`` and rename, so a crash never leaves half an image."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".build-") as tmp:
        work = Path(tmp)
        kpkg = inputs["kernel_package"]
        log(f"downloading {kpkg}={inputs['kernel_version']} and {BUSYBOX}={inputs['busybox_version']}")
        trees = _download(
            [f"{kpkg}={inputs['kernel_version']}", f"{BUSYBOX}={inputs['busybox_version']}"], work
        )
        out = work / "out"
        out.mkdir()
        release = _kernel_release(trees[kpkg])
        log(f"extracting vmlinux from vmlinuz-{release}")
        bz = (trees[kpkg] / "boot" / f"vmlinuz-{release}").read_bytes()
        (out / "vmlinux").write_bytes(extract_vmlinux(bz))
        index = module_index(trees[kpkg] / "lib" / "modules" / release)
        order = load_order(GUEST_MODULES, index)
        log(f"initramfs with busybox and {len(order)} modules: {' '.join(order)}")
        busybox = (trees[BUSYBOX] / "bin" / "busybox").read_bytes()
        mods = [(n, index[n].read_bytes()) for n in order]
        cpio = write_cpio(initramfs_entries(busybox, _init_script(), mods))
        (out / "initramfs.cpio.gz").write_bytes(gzip.compress(cpio, compresslevel=6, mtime=0))
        log(f"base disk ({BASE_DISK_MIB} MiB ext4, qcow2)")
        make_base_disk(out / "base.qcow2", work)
        manifest = {**inputs, "kernel_release": release, "modules_loaded": order,
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        _install(out, dest, work)
    return GuestImage.load(dest)


def _install(out: Path, dest: Path, work: Path) -> None:
    """Move a finished build into place without ever exposing a half-deleted or half-built one.

    Two test sessions may build the same key at once: whoever renames first wins and the other
    keeps the winner's files (identical inputs). A forced rebuild swaps the old directory out
    first, so guests booted from it keep their open files until the temp dir goes.
    """
    if dest.exists():
        dest.rename(work / "replaced")
    try:
        out.rename(dest)
    except OSError:
        if not (dest / "manifest.json").exists():
            raise
        log(f"another build of {dest.name} finished first; using it")


def _kernel_release(tree: Path) -> str:
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise RuntimeError("kernel package holds no /boot/vmlinuz-*")
    return kernels[-1].name.removeprefix("vmlinuz-")


def _newest_cached(root: Path) -> GuestImage | None:
    """Offline fallback: the most recent complete build, when apt cannot tell the versions."""
    builds = sorted(root.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    return GuestImage.load(builds[0].parent) if builds else None


def ensure_image(force: bool = False, root: Path | None = None) -> GuestImage:
    """The cached guest for the current package versions, building it if needed (idempotent)."""
    root = root or cache_root()
    try:
        inputs = resolve_inputs()
    except (OSError, subprocess.CalledProcessError, RuntimeError) as exc:
        cached = None if force else _newest_cached(root)
        if cached is None:
            raise RuntimeError(f"cannot resolve guest packages and no cached guest exists: {exc}") from exc
        log(f"apt unavailable ({exc}); using cached {cached.root}")
        return cached
    dest = root / cache_key(inputs)
    if not force and (dest / "manifest.json").exists():
        log(f"cached: {dest}")
        return GuestImage.load(dest)
    t0 = time.monotonic()
    image = build(dest, inputs)
    log(f"built {dest} in {time.monotonic() - t0:.1f} s")
    return image


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vocloud.guest.build", description=__doc__.split("\n")[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if a cached image exists")
    parser.add_argument("--cache", type=Path, default=None, help="cache directory (default $VOCLOUD_CACHE)")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    try:
        image = ensure_image(force=args.force, root=args.cache)
    except (RuntimeError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summary = {
        "root": str(image.root), "vmlinux": str(image.vmlinux), "initramfs": str(image.initramfs),
        "base_disk": str(image.base_disk), "kernel": image.kernel_version, "cmdline": image.cmdline,
        "seconds": round(time.monotonic() - t0, 2),
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


@functools.cache
def probe_guest() -> tuple[Path, Path, str]:
    """The cached test guest (built on first use) as the qemu driver's KVM-probe guest."""
    image = ensure_image()
    return image.vmlinux, image.initramfs, image.cmdline

