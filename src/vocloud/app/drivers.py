"""Every driver this daemon offers, registered with what it declares (drivers/registry.py).

The one place that turns settings into drivers: the qemu driver gets the accelerator setting
and the probe guest, the SSH transport its keys, the storage drivers their datastore and the
host's command runner, the batch system its VO mapping. Nothing below this package reads a
setting or the environment.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable
from typing import Any

from vocloud.batch.base import BatchSystem, VOMapper
from vocloud.config import Settings
from vocloud.drivers.accel import AccelProbe
from vocloud.drivers.base import HostRef
from vocloud.drivers.registry import BUILTIN_INFOS, DriverInfo, DriverRegistry, Role
from vocloud.drivers.storage import Runner, get_storage_driver
from vocloud.drivers.transport import Transports
from vocloud.errors import DriverError, InvalidInput
from vocloud.guest.build import probe_guest


def _factories(settings: Settings, transports: Transports) -> dict[tuple[Role, str], Any]:
    def runner_for(host: HostRef) -> Runner:
        """Storage commands run on the VM's host: locally, or over the host's transport."""
        return functools.partial(transports(host).run, host)

    datastore = str(settings.shared_path / "datastore")

    def storage(name: str, **extra: Any) -> Any:
        return get_storage_driver(name, datastore, runner_for=runner_for, transports=transports, **extra)

    def lvm() -> Any:
        if not settings.lvm_vg:
            raise DriverError("the lvm storage driver needs a volume group: set lvm_vg (VOCLOUD_LVM_VG)")
        return get_storage_driver("lvm", datastore, runner_for=runner_for, vg=settings.lvm_vg)

    def qemu() -> Any:
        from vocloud.drivers.vmm.qemu import QemuDriver

        probe = AccelProbe(settings.shared_path / "qemu", forced=settings.accel)
        return QemuDriver(settings.shared_path / "qemu", transports=transports, accel_probe=probe,
                          probe_guest=probe_guest)

    def sim_vmm() -> Any:
        from vocloud.drivers.vmm.sim import SimDriver

        return SimDriver(settings.shared_path / "sim", settings.sim_boot_delay, settings.sim_shutdown_delay)

    def ec2() -> Any:
        from vocloud.drivers.vmm.ec2 import Ec2Driver

        try:
            import boto3  # noqa: F401
        except ImportError:
            raise DriverError("the ec2 driver needs boto3: pip install 'vocloud[cloud]'") from None
        return Ec2Driver(cloud_credentials(settings))

    def bridge() -> Any:
        from vocloud.drivers.net import BridgeDriver
        from vocloud.drivers.net.guard import TapGuard
        from vocloud.drivers.net.isolate import BridgeIsolation

        return BridgeDriver(transports=transports,
                            guard=TapGuard(transports) if settings.anti_spoofing else None,
                            isolation=(None if settings.route_between_networks
                                       else BridgeIsolation(transports)))

    return {
        (Role.VMM, "sim"): sim_vmm,
        (Role.VMM, "qemu"): qemu,
        (Role.VMM, "ec2"): ec2,
        (Role.STORAGE, "qcow2"): functools.partial(storage, "qcow2"),
        (Role.STORAGE, "copy"): functools.partial(storage, "copy"),
        (Role.STORAGE, "lvm"): lvm,
        (Role.NETWORK, "bridge"): bridge,
        (Role.TRANSPORT, "local"): lambda: transports.local,
        (Role.TRANSPORT, "ssh"): transports.ssh,
        (Role.BATCH, "sim"): functools.partial(make_batch, "sim", settings),
        (Role.BATCH, "slurm"): functools.partial(make_batch, "slurm", settings),
        (Role.BATCH, "gridengine"): functools.partial(make_batch, "gridengine", settings),
    }


def cloud_credentials(settings: Settings) -> Callable[[str], tuple[str, str]]:
    """The ``ec2`` driver's credentials: a site secret (docs/secrets.md) holding
    ``ACCESS_KEY_ID SECRET_ACCESS_KEY`` (whitespace or a newline between), read afresh per
    client (rotation needs no restart; the driver rebuilds its client when the key changes)."""
    from vocloud.engine.secrets import SecretDir, SecretError

    secrets = SecretDir(settings.secrets_path)

    def read(name: str) -> tuple[str, str]:
        try:
            text = base64.b64decode(secrets.read(name)).decode("utf-8", "replace")
        except SecretError as exc:
            raise DriverError(exc.message) from None
        parts = text.split()
        if len(parts) != 2:
            raise DriverError(f"secret {name!r} must hold 'ACCESS_KEY_ID SECRET_ACCESS_KEY' "
                              f"(two words), not {len(parts)} word(s)")
        return parts[0], parts[1]
    return read


def build_registry(settings: Settings, infos: tuple[DriverInfo, ...] = BUILTIN_INFOS) -> DriverRegistry:
    transports = Transports(settings.ssh_key, settings.ssh_known_hosts)
    factories = _factories(settings, transports)
    registry = DriverRegistry()
    for info in infos:
        registry.register(info, factories[(info.role, info.name)])
    return registry


def make_batch(kind: str, settings: Settings) -> BatchSystem:
    """The batch system the ``batch_system`` setting names (jobs map to VOs by
    ``batch_vo_attribute``); ``sim`` keeps its state in ``<shared_dir>/batch-sim.json`` (demo)."""
    if kind == "sim":
        from vocloud.batch.sim import SimBatch

        return SimBatch(path=settings.shared_path / "batch-sim.json")
    mapper = VOMapper(attribute=settings.batch_vo_attribute)
    if kind == "slurm":
        from vocloud.batch.slurm import SlurmBatch

        return SlurmBatch(mapper, partition=settings.batch_partition or None)
    if kind == "gridengine":
        from vocloud.batch.gridengine import GridEngineBatch

        return GridEngineBatch(mapper, hosts_file=settings.sge_hosts_file or None)
    raise InvalidInput(f"unknown batch system {kind!r}")


def batch_from(registry: DriverRegistry, settings: Settings) -> BatchSystem | None:
    """The configured batch system, or None when pools are off (``""`` or ``none``)."""
    kind = settings.batch_system.strip().lower()
    if kind in ("", "none"):
        return None
    names = registry.catalog().names(Role.BATCH)
    if kind not in names:
        raise InvalidInput(f"unknown batch system {kind!r}; one of: none, {', '.join(names)}")
    batch: BatchSystem = registry.get(Role.BATCH, kind)
    return batch
