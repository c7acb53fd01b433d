"""Moving a shut-down VM's staged disks from one host to another (cold migration).

The target has already staged the VM (its own verified copy of the base in its cache, an empty
overlay of it, in its datastore): what travels is only what the VM made its own, the file in
``<datastore>/vms/<deploy_id>/``. It goes through the front-end in chunks (``dd`` on each side,
over each host's runner: the same SSH transport as every other host command), into
``<file>.part`` on the target; the part must then have the source's size and sha256, and only then
replaces the target's file. A qcow2 overlay names its base by path, and the target's cache is
another path: the copy is re-pointed at the target's base (``qemu-img rebase -u``, a header
change: both bases have the same verified content).

Why through the front-end and not host to host: it needs no key on the hosts and no new
listener; the overlay holds only what the guest wrote, usually small next to the base (which the
distribution hops, ``hops.py``, already carry host to host). A VM with many GiB of its own writes
pays twice the transfer; docs/qemu.md, *Cold migration*.
"""

from __future__ import annotations

import contextlib

from vocloud.drivers.base import DiskSpec, DomainSpec
from vocloud.drivers.storage.qimg import probe
from vocloud.drivers.storage.runner import Runner, check
from vocloud.errors import DriverError

MIB = 1 << 20
CHUNK_MIB = 16
_SIZE_AND_SUM = 'stat -c %s -- "$1" && sha256sum -- "$1"'


def pairs(src: DomainSpec, dst: DomainSpec) -> list[tuple[DiskSpec, DiskSpec]]:
    """The (source, target) staged disks that are different files: the ones to copy. A
    persistent disk is the same file on both (the target's stage checked it can see it)."""
    theirs = {d.target: d for d in dst.disks}
    out = []
    for disk in src.disks:
        there = theirs.get(disk.target)
        if there is None:
            raise DriverError(f"{src.deploy_id}: disk {disk.target} is not staged on the target")
        if not disk.persistent and there.source != disk.source:
            out.append((disk, there))
    return out


def size_and_sum(run: Runner, path: str, what: str) -> tuple[int, str]:
    res = check(run, ["sh", "-c", _SIZE_AND_SUM, "vocloud-sum", path], f"{what}: cannot read {path}")
    try:
        size_line, sum_line = res.stdout.decode().splitlines()[:2]
        return int(size_line), sum_line.split()[0]
    except (ValueError, IndexError):
        raise DriverError(f"{what}: cannot parse the size and sha256 of {path}") from None


def copy_file(src_run: Runner, src_path: str, dst_run: Runner, dst_path: str, what: str) -> int:
    """Copy ``src_path`` to ``dst_path`` (through this process), checked by size and sha256;
    the bytes copied. On any failure the target's part file is gone and its file untouched."""
    size, digest = size_and_sum(src_run, src_path, what)
    part = f"{dst_path}.part"
    check(dst_run, ["sh", "-c", ': > "$1"', "vocloud-part", part], f"{what}: cannot write {part}")
    try:
        for block in range(0, max(1, -(-size // MIB)), CHUNK_MIB):
            got = check(src_run, ["dd", f"if={src_path}", f"bs={MIB}", f"skip={block}",
                                  f"count={CHUNK_MIB}", "status=none"],
                        f"{what}: cannot read {src_path}").stdout
            if not got:
                break
            check(dst_run, ["dd", f"of={part}", f"bs={MIB}", f"seek={block}", "conv=notrunc",
                            "iflag=fullblock", "status=none"], f"{what}: cannot write {part}",
                  input=got)
        got_size, got_digest = size_and_sum(dst_run, part, what)
        if (got_size, got_digest) != (size, digest):
            raise DriverError(f"{what}: the copy of {src_path} does not match it (size {got_size} "
                              f"vs {size}, sha256 {got_digest[:12]} vs {digest[:12]})")
    except BaseException:
        with contextlib.suppress(Exception):
            dst_run(["rm", "-f", "--", part])
        raise
    return size


def move_disks(src_run: Runner, src: DomainSpec, dst_run: Runner, dst: DomainSpec) -> int:
    """Make the target's staged disks hold what the source's hold; the bytes copied."""
    total = 0
    for mine, there in pairs(src, dst):
        what = f"{src.deploy_id}: disk {mine.target}"
        info = probe(dst_run, there.source, what)  # the target's fresh stage: which base it names
        total += copy_file(src_run, mine.source, dst_run, there.source, what)
        part = f"{there.source}.part"
        try:
            if info is not None and info.backing:
                check(dst_run, ["qemu-img", "rebase", "-u", "-f", "qcow2",
                                "-F", info.backing_format or "qcow2", "-b", info.backing, part],
                      f"{what}: cannot point the copy at {info.backing}")
            check(dst_run, ["mv", "-f", "--", part, there.source], f"{what}: cannot replace {there.source}")
        except BaseException:
            with contextlib.suppress(Exception):
                dst_run(["rm", "-f", "--", part])
            raise
    return total
