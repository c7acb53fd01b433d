"""The ``lvm`` driver: the base is written once into a logical volume, each VM disk is a snapshot.

This is the CERN-style setup: block devices avoid the file system in the I/O path and an
``lvcreate -s`` snapshot is as quick to make as a qcow2 overlay. The base still goes through the
per-host file cache first (checksum-verified), then ``qemu-img convert`` writes it raw into
``vcbase-<sha256 prefix>`` in the volume group, once, under the same kind of flock as the cache;
the LV is tagged ``vocloud_complete`` only after the write finished, so a crash mid-fill is
redone rather than snapshotted. Snapshots carry the tag ``vcvm.<deploy_id>`` so ``unstage`` finds
exactly one VM's volumes. Snapshots get copy-on-write space equal to the base by default, so a
guest that rewrites its whole disk cannot overflow (and thereby invalidate) its snapshot.
"""

from __future__ import annotations

import re

from vocloud.drivers.base import DiskSpec, DomainSpec, HostRef
from vocloud.drivers.storage.cache import FeederFactory, ImageCache
from vocloud.drivers.storage.move import pairs
from vocloud.drivers.storage.qimg import MIB, ImageInfo
from vocloud.drivers.storage.runner import (
    Runner,
    RunnerFactory,
    check,
    locked_argv,
    safe_name,
    stderr_text,
)
from vocloud.drivers.storage.staging import ChecksumLookup, StagingDriver
from vocloud.errors import DriverError

_TARGET = re.compile(r"[a-z]+[0-9a-z]*")
_VG = re.compile(r"[A-Za-z0-9+_][A-Za-z0-9+_.-]*")

# $1 vg, $2 lv, $3 cached base, $4 its format, $5 size in MiB. Prints HIT | FILLED.
_FILL = r"""
set -u
vg=$1 lv=$2 src=$3 fmt=$4 mib=$5
if lvs --noheadings -o lv_tags "$vg/$lv" 2>/dev/null | grep -q vocloud_complete; then echo HIT; exit 0; fi
lvremove -f "$vg/$lv" >/dev/null 2>&1
lvcreate -y -n "$lv" -L "${mib}m" "$vg" >&2 || exit 4
if ! qemu-img convert -f "$fmt" -O raw "$src" "/dev/$vg/$lv" >&2; then lvremove -f "$vg/$lv"; exit 4; fi
lvchange --addtag vocloud_complete "$vg/$lv" >&2 || exit 4
echo FILLED
"""


def lvm_unavailable(run: Runner, vg: str | None = None) -> str | None:
    """Why LVM snapshots cannot work on a host (``None`` if they can): tests skip with this."""
    misc = run(["cat", "/proc/misc"])
    if misc.returncode == 0 and b"device-mapper" not in misc.stdout:
        return "the kernel has no device-mapper (not in /proc/misc; no dm_mod module to load)"
    result = run(["dmsetup", "targets"])
    if result.returncode != 0:
        return f"device-mapper unavailable: {stderr_text(result)}"
    if b"snapshot" not in result.stdout:
        return "device-mapper has no snapshot target (dm-snapshot module not loaded)"
    if vg is not None:
        result = run(["vgs", "--noheadings", "-o", "vg_name", vg])
        if result.returncode != 0:
            return f"volume group {vg}: {stderr_text(result)}"
    return None


class LvmSnapshotDriver(StagingDriver):
    """``LvmSnapshotDriver(vg, root, runner_for=None, cache=None, checksum_for=None, cow_percent=100)``.

    ``vg`` is the volume group on every host using this driver; ``root`` the datastore directory
    holding the file cache.
    """

    name = "lvm"

    def __init__(self, vg: str, root: str, runner_for: RunnerFactory | None = None,
                 cache: ImageCache | None = None, checksum_for: ChecksumLookup | None = None,
                 cow_percent: int = 100, transports: FeederFactory | None = None) -> None:
        if not _VG.fullmatch(vg):
            raise DriverError(f"invalid volume group name {vg!r}")
        if not 1 <= cow_percent <= 100:
            raise DriverError(f"cow_percent must be 1..100, not {cow_percent}")
        super().__init__(root, runner_for, cache, checksum_for, transports)
        self.vg = vg
        self.cow_percent = cow_percent

    def clone(self, run: Runner, base: ImageInfo, disk: DiskSpec, vm_dir: str, what: str,
              created: list[str]) -> DiskSpec:
        if not _TARGET.fullmatch(disk.target):
            raise DriverError(f"{what}: the lvm driver needs a target of letters and digits")
        if disk.size_mib is not None and disk.size_mib * MIB != base.virtual_size:
            raise DriverError(f"{what}: the lvm driver cannot resize a snapshot (SIZE {disk.size_mib} MiB)")
        base_lv = self._fill(run, base, disk.format, what)
        deploy_id = vm_dir.rsplit("/", 1)[1]
        snap = f"{deploy_id}--{disk.target}"
        device = f"/dev/{self.vg}/{snap}"
        origin = run(["lvs", "--noheadings", "-o", "origin", f"{self.vg}/{snap}"])
        if origin.returncode != 0 or origin.stdout.decode().strip() != base_lv:
            run(["lvremove", "-f", f"{self.vg}/{snap}"])
            cow_mib = max(1, -(-base.virtual_size * self.cow_percent // (100 * MIB)))
            check(run, ["lvcreate", "-y", "-s", "-n", snap, "-L", f"{cow_mib}m",
                        "--addtag", f"vcvm.{deploy_id}", f"{self.vg}/{base_lv}"],
                  f"{what}: cannot snapshot {self.vg}/{base_lv}")
        return DiskSpec(target=disk.target, source=device, format="raw", persistent=False,
                        size_mib=disk.size_mib, image_id=disk.image_id)

    def move_disks(self, src: HostRef, src_spec: DomainSpec, dst: HostRef, dst_spec: DomainSpec) -> int:
        """A snapshot LV is tied to its host's base LV: not moved (yet); a cold migration between
        hosts with the lvm driver fails before the target boots, and the VM boots again where it was."""
        if pairs(src_spec, dst_spec):
            raise DriverError(f"{src_spec.deploy_id}: the lvm storage driver cannot move a VM's "
                              "snapshot to another host (cold migration needs qcow2 or copy)")
        return 0

    def unstage(self, host: HostRef, deploy_id: str) -> None:
        run = self.runner_for(host)
        tag = f"vcvm.{safe_name(deploy_id, 'deploy id')}"
        # --select, not "@tag": positional VG and tag arguments are OR-ed, which would list them all
        listed = check(run, ["lvs", "--noheadings", "-o", "lv_name", "--select", f"lv_tags={tag}", self.vg],
                       f"{deploy_id}: cannot list snapshots in {self.vg}")
        for lv in listed.stdout.decode().split():
            check(run, ["lvremove", "-f", f"{self.vg}/{lv}"], f"{deploy_id}: cannot remove {lv}")
        super().unstage(host, deploy_id)

    def _fill(self, run: Runner, base: ImageInfo, fmt: str, what: str) -> str:
        """Name of the complete base LV for ``base``, writing it the first time."""
        sha = base.path.rsplit("/", 1)[1].split(".", 1)[0]
        lv = f"vcbase-{sha[:24]}-{fmt}"
        mib = -(-base.virtual_size // MIB)
        result = run(locked_argv(f"{base.path}.lvlock", self.cache.lock_wait_s, _FILL,
                                 [self.vg, lv, base.path, fmt, str(mib)]),
                     timeout=2 * self.cache.lock_wait_s)
        if result.returncode != 0:
            raise DriverError(f"{what}: cannot write the base into {self.vg}/{lv}: {stderr_text(result)}")
        return lv
