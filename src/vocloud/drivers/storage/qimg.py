"""``qemu-img`` as the judge of an image file: format, virtual size, backing file, corruption.

We never trust a file's name or the format recorded in a template: a raw image declared qcow2
(or a qcow2 declared raw, which would hand the guest the header) or a truncated qcow2 is refused
here, before a VM is pointed at it. ``-U`` (force-share) lets us inspect images a running guest
holds open, which re-staging a running VM does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from vocloud.drivers.storage.runner import Runner, check, stderr_text
from vocloud.errors import DriverError

FORMATS = ("qcow2", "raw")
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class ImageInfo:
    path: str
    format: str
    virtual_size: int
    backing: str | None = None  # full-backing-filename, as qemu resolves it
    backing_format: str | None = None


def check_format(fmt: str, what: str) -> str:
    if fmt not in FORMATS:
        raise DriverError(f"{what}: unsupported image format {fmt!r} (qcow2 or raw)")
    return fmt


def probe(run: Runner, path: str, what: str) -> ImageInfo | None:
    """The image's info, ``None`` if the file does not exist, DriverError if qemu cannot read it."""
    result = run(["qemu-img", "info", "--output=json", "-U", "--", path], timeout=60)
    if result.returncode != 0:
        reason = stderr_text(result)
        if "No such file or directory" in reason:
            return None
        raise DriverError(f"{what}: {path} is not a usable image: {reason}")
    try:
        doc = json.loads(result.stdout)
        info = ImageInfo(path=path, format=str(doc["format"]), virtual_size=int(doc["virtual-size"]),
                         backing=doc.get("full-backing-filename") or doc.get("backing-filename"),
                         backing_format=doc.get("backing-filename-format"))
    except (ValueError, KeyError, TypeError) as exc:
        raise DriverError(f"{what}: cannot parse qemu-img info for {path}: {exc}") from None
    corrupt = doc.get("format-specific", {}).get("data", {}).get("corrupt", False)
    if corrupt:
        raise DriverError(f"{what}: {path} is a corrupt qcow2 (qemu marked it corrupt; "
                          f"run qemu-img check -r all)")
    return info


def inspect(run: Runner, path: str, fmt: str, what: str) -> ImageInfo:
    """Like :func:`probe` but the image must exist and be of the declared format."""
    info = probe(run, path, what)
    if info is None:
        raise DriverError(f"{what}: image file {path} does not exist")
    if info.format != fmt:
        raise DriverError(f"{what}: {path} is declared {fmt} but qemu-img reads it as {info.format}")
    return info


def overlay_size(base: ImageInfo, size_mib: int | None, what: str) -> int | None:
    """Bytes to give a clone: ``None`` keeps the base size; shrinking below the base is refused."""
    if size_mib is None:
        return None
    if size_mib <= 0 or size_mib * MIB < base.virtual_size:
        raise DriverError(f"{what}: SIZE {size_mib} MiB is smaller than the image "
                          f"({base.virtual_size // MIB} MiB); disks can only grow")
    return size_mib * MIB if size_mib * MIB != base.virtual_size else None


# $1 overlay, $2 size or "", $3 "keep" to leave an existing file alone; then qemu-img's -F/-b args.
_CREATE = ('dest=$1 size=$2 keep=$3; shift 3; d=${dest%/*}; { [ -d "$d" ] || mkdir -p -- "$d"; } || exit 1; '
           'if [ "$keep" = keep ] && [ -e "$dest" ]; then echo EXISTS; exit 0; fi; '
           'exec qemu-img create -q -f qcow2 "$@" "$dest" $size')


def create_overlay(run: Runner, base: str, base_fmt: str, dest: str, size: int | None, what: str,
                   keep_existing: bool = False) -> bool:
    """Create ``dest`` (and its directory) as an overlay on ``base``; False if ``keep_existing``
    and a file was already there (the caller then checks it).

    One ``qemu-img create`` straight to ``dest``, in the same command as the directory check: no
    ``.part``, rename or sync, because an overlay is never trusted by its name. Re-staging probes
    it (format, backing file, size) and replaces a torn or stray one, and the caller deletes it if
    the stage fails. That keeps a clone at one host command, the whole point of this driver."""
    argv = ["sh", "-c", _CREATE, "vocloud", dest, "" if size is None else str(size),
            "keep" if keep_existing else "", "-F", base_fmt, "-b", base]
    result = check(run, argv, f"{what}: cannot create overlay {dest}", timeout=120)
    return result.stdout.strip() != b"EXISTS"
