"""What every file-based storage driver shares: input checks, the VM directory, all-or-nothing.

A VM's staged disks live in ``<datastore>/vms/<deploy_id>/`` and nowhere else, so ``unstage`` is
one ``rm -rf`` of a directory that can never hold a cached base or a persistent image. ``stage``
checks the whole spec before touching the host and, if any disk fails, removes what this call
created, so a bad image leaves no half-staged VM behind. Subclasses only say how one
non-persistent disk becomes a file (:meth:`StagingDriver.clone`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable

from vocloud.drivers.base import DiskSpec, DomainSpec, HostRef
from vocloud.drivers.storage.cache import FeederFactory, ImageCache, datastore_dir
from vocloud.drivers.storage.move import move_disks
from vocloud.drivers.storage.qimg import ImageInfo, check_format, inspect
from vocloud.drivers.storage.runner import Runner, RunnerFactory, absolute, check, local_only, safe_name
from vocloud.errors import DriverError

ChecksumLookup = Callable[[DiskSpec], str | None]


def recorded_sha256(disk: DiskSpec) -> str | None:
    """The image's recorded sum, once DiskSpec carries one (proposed ``sha256`` field)."""
    value = getattr(disk, "sha256", None)
    return value if isinstance(value, str) and value else None


class StagingDriver:
    """Base of the ``qcow2``, ``copy`` and ``lvm`` drivers; see the module docstring."""

    name = "abstract"

    def __init__(self, root: str, runner_for: RunnerFactory | None = None,
                 cache: ImageCache | None = None, checksum_for: ChecksumLookup | None = None,
                 transports: FeederFactory | None = None) -> None:
        self.root = str(root)
        self.runner_for = runner_for or local_only
        self.cache = cache or ImageCache(self.root, self.runner_for, transports=transports)
        self.checksum_for = checksum_for or recorded_sha256

    def vm_dir(self, host: HostRef, deploy_id: str) -> str:
        return f"{datastore_dir(host, self.root)}/vms/{safe_name(deploy_id, 'deploy id')}"

    def stage(self, host: HostRef, spec: DomainSpec) -> DomainSpec:
        """Make every disk of ``spec`` usable on ``host``; return the spec pointing at them."""
        self._validate(spec)
        run = self.runner_for(host)
        vm_dir = self.vm_dir(host, spec.deploy_id)
        created: list[str] = []
        staged: list[DiskSpec] = []
        try:
            for disk in spec.disks:
                what = f"{spec.deploy_id}: disk {disk.target}"
                if disk.persistent:
                    inspect(run, disk.source, disk.format, what)
                    staged.append(disk)
                    continue
                base = self._base(host, run, disk, what)
                staged.append(self.clone(run, base, disk, vm_dir, what, created))
        except BaseException:
            # best effort: the error that stopped the stage is the one the admin must see
            with contextlib.suppress(Exception):
                if created:
                    run(["rm", "-f", "--", *created])
                run(["rmdir", "--ignore-fail-on-non-empty", "--", vm_dir])
            raise
        return dataclasses.replace(spec, disks=tuple(staged))

    def unstage(self, host: HostRef, deploy_id: str) -> None:
        """Remove the VM's staged disks; a VM never staged (or already unstaged) is a success."""
        run = self.runner_for(host)
        vm_dir = self.vm_dir(host, deploy_id)
        check(run, ["rm", "-rf", "--", vm_dir], f"{deploy_id}: cannot remove {vm_dir}")

    def move_disks(self, src: HostRef, src_spec: DomainSpec, dst: HostRef, dst_spec: DomainSpec) -> int:
        """Cold migration: the target's staged disks (``dst_spec``, staged by :meth:`stage` on
        ``dst``) get what the shut-down VM's disks on ``src`` hold; the bytes copied (0 when both
        hosts stage the same files: shared storage). See :mod:`.move`."""
        return move_disks(self.runner_for(src), src_spec, self.runner_for(dst), dst_spec)

    def clone(self, run: Runner, base: ImageInfo, disk: DiskSpec, vm_dir: str, what: str,
              created: list[str]) -> DiskSpec:
        """Turn the cached ``base`` into this VM's disk in ``vm_dir`` (creating the directory in
        the same host command, to keep staging at the fewest round trips); append every file this
        call made to ``created``, so a failed stage can remove exactly those."""
        raise NotImplementedError

    def _base(self, host: HostRef, run: Runner, disk: DiskSpec, what: str) -> ImageInfo:
        """The verified cached base of ``disk`` and what qemu-img says about it."""
        cached = self.cache.ensure(host, disk.source, self.checksum_for(disk), disk.format)
        return self.cache.info(run, cached, disk.format, f"{what} (image {disk.source})")

    @staticmethod
    def _validate(spec: DomainSpec) -> None:
        """Refuse a bad spec before any command runs: nothing to clean up on bad input."""
        safe_name(spec.deploy_id, "deploy id")
        seen: set[str] = set()
        for disk in spec.disks:
            target = safe_name(disk.target, "disk target")
            if target in seen:
                raise DriverError(f"{spec.deploy_id}: disk target {target} is used twice")
            seen.add(target)
            what = f"{spec.deploy_id}: disk {target}"
            check_format(disk.format, what)
            absolute(disk.source, what)
            if disk.size_mib is not None and disk.size_mib <= 0:
                raise DriverError(f"{what}: SIZE must be a positive number of MiB, not {disk.size_mib}")
