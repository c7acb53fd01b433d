"""Storage drivers: how a VM's disks come to exist on its host (see docs/storage.md).

``qcow2``  thin qcow2 overlays on a per-host cached base (the default; milliseconds per VM)
``copy``   a full private copy per VM (the baseline the overlay is benchmarked against)
``lvm``    an LV snapshot of the base written once into a volume group (needs device-mapper)

All three share the per-host, sha256-verified :class:`ImageCache` and run their host commands
through an injected runner, so the SSH transport plugs in without touching them.
"""

from __future__ import annotations

from typing import Any

from vocloud.drivers.base import StorageDriver
from vocloud.drivers.storage.cache import CacheStats, ImageCache
from vocloud.drivers.storage.copy import FullCopyDriver
from vocloud.drivers.storage.lvm import LvmSnapshotDriver
from vocloud.drivers.storage.overlay import Qcow2OverlayDriver
from vocloud.drivers.storage.runner import Runner, RunnerFactory, local_runner
from vocloud.errors import DriverError

DRIVERS = ("qcow2", "copy", "lvm")

__all__ = ["DRIVERS", "CacheStats", "FullCopyDriver", "ImageCache", "LvmSnapshotDriver",
           "Qcow2OverlayDriver", "Runner", "RunnerFactory", "get_storage_driver", "local_runner"]


def get_storage_driver(name: str, root: str, **options: Any) -> StorageDriver:
    """The storage driver called ``name`` with its datastore at ``root``.

    ``options`` go to the constructor (``runner_for``, ``cache``, ``checksum_for``, ``transports``; ``vg`` and
    ``cow_percent`` for ``lvm``), so a site's config can name a driver without importing it.
    """
    if name == "qcow2":
        return Qcow2OverlayDriver(root, **options)
    if name == "copy":
        return FullCopyDriver(root, **options)
    if name == "lvm":
        if "vg" not in options:
            raise DriverError("the lvm storage driver needs a volume group (vg=...)")
        return LvmSnapshotDriver(root=root, **options)
    raise DriverError(f"unknown storage driver {name!r} (one of: {', '.join(DRIVERS)})")
