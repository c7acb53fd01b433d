"""The ``copy`` driver: every VM gets a full private copy of its base (the baseline).

It is what a site without copy-on-write does, and what the overlay driver is benchmarked
against. The copy is made from the host's cached base (the network is crossed once per host in
both drivers, so the comparison measures cloning alone), written to ``.part``, synced to disk and renamed,
so an existing file at the destination is always a finished copy. The sync is part of the cost
the bench measures: a copy that still sits in the page cache is not finished, its gigabyte of
writes is only deferred.
"""

from __future__ import annotations

from vocloud.drivers.base import DiskSpec
from vocloud.drivers.storage.qimg import ImageInfo, overlay_size, probe
from vocloud.drivers.storage.runner import Runner, check
from vocloud.drivers.storage.staging import StagingDriver
from vocloud.errors import DriverError

# $1 cached base, $2 destination, $3 format, $4 new size in bytes or "", $5 "keep" to leave an
# existing destination alone (prints EXISTS; the caller checks it). Synced before the rename:
# an existing destination is taken as a finished copy, so it must survive a power cut whole.
_COPY = r"""
src=$1 dest=$2 fmt=$3 size=$4 keep=$5 tmp="$2.part" d=${2%/*}
{ [ -d "$d" ] || mkdir -p -- "$d"; } || exit 1
if [ "$keep" = keep ] && [ -e "$dest" ]; then echo EXISTS; exit 0; fi
rm -f -- "$tmp"
if cp --reflink=never -- "$src" "$tmp" \
    && { [ -z "$size" ] || qemu-img resize -q -f "$fmt" "$tmp" "$size"; } \
    && sync -- "$tmp" && mv -f -- "$tmp" "$dest"; then exit 0; fi
rm -f -- "$tmp"
exit 1
"""


COPY_TIMEOUT_S = 3600.0  # a full copy moves the whole image; a transport's default is too short


class FullCopyDriver(StagingDriver):
    """``FullCopyDriver(root, runner_for=None, cache=None, checksum_for=None)``."""

    name = "copy"

    def clone(self, run: Runner, base: ImageInfo, disk: DiskSpec, vm_dir: str, what: str,
              created: list[str]) -> DiskSpec:
        dest = f"{vm_dir}/{disk.target}.{disk.format}"
        size = overlay_size(base, disk.size_mib, what)
        argv = ["sh", "-c", _COPY, "vocloud", base.path, dest, disk.format, "" if size is None else str(size)]
        created += [f"{dest}.part", dest]
        result = check(run, [*argv, "keep"], f"{what}: cannot copy {base.path}", timeout=COPY_TIMEOUT_S)
        if result.stdout.strip() == b"EXISTS":
            created.remove(dest)  # there before this call: not ours to roll back
            if not self._is_copy(run, dest, disk.format, size or base.virtual_size, what):
                created.append(dest)
                check(run, [*argv, ""], f"{what}: cannot copy {base.path}", timeout=COPY_TIMEOUT_S)
        return DiskSpec(target=disk.target, source=dest, format=disk.format, persistent=False,
                        size_mib=disk.size_mib, image_id=disk.image_id)

    @staticmethod
    def _is_copy(run: Runner, path: str, fmt: str, size: int, what: str) -> bool:
        try:
            info = probe(run, path, what)
        except DriverError:
            return False
        return info is not None and info.format == fmt and info.virtual_size == size
