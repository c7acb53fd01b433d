"""The driver registry: declarations decide, names do not (drivers/registry.py, app/drivers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vocloud.app.drivers import batch_from, build_registry
from vocloud.batch.sim import SimBatch
from vocloud.batch.slurm import SlurmBatch
from vocloud.config import Settings
from vocloud.drivers.registry import (
    BUILTIN_INFOS,
    Cap,
    DriverInfo,
    DriverRegistry,
    HostDrivers,
    Role,
    builtin_catalog,
)
from vocloud.errors import DriverError, InvalidInput


def test_a_host_gets_what_its_vmm_declares_unless_it_names_its_own() -> None:
    cat = builtin_catalog()
    assert cat.for_host("h", "qemu", {}) == HostDrivers("qemu", "qcow2", "bridge")
    assert cat.for_host("h", "sim", {}) == HostDrivers("sim", None, None)
    own = cat.for_host("h", "qemu", {"STORAGE": "lvm", "NETWORK": "none"})
    assert own == HostDrivers("qemu", "lvm", None)
    assert cat.for_host("h", "qemu", {"STORAGE": "copy"}).storage == "copy"


def test_unknown_drivers_are_named_with_the_known_ones() -> None:
    cat = builtin_catalog()
    with pytest.raises(InvalidInput, match=r"unknown vmm driver 'xen'; one of: sim, qemu"):
        cat.for_host("h", "xen", {})
    with pytest.raises(InvalidInput, match=r"host h: unknown storage driver 'zfs'; one of: qcow2, copy, lvm"):
        cat.for_host("h", "qemu", {"STORAGE": "zfs"})


def test_capabilities_are_declared_not_inferred_from_names() -> None:
    cat = builtin_catalog()
    assert cat.info(Role.VMM, "sim").can(Cap.DECLARED_CAPACITY)
    assert not cat.info(Role.VMM, "qemu").can(Cap.DECLARED_CAPACITY)
    assert cat.info(Role.VMM, "qemu").can(Cap.MIGRATE)  # live migration (drivers/vmm/qemu_migrate.py)
    assert not cat.info(Role.VMM, "qemu").can(Cap.REMOTE)
    # a new VMM declaring defaults gets them without any code naming it
    extra = DriverInfo(Role.VMM, "cloud", "a public cloud", frozenset(), {"storage": "none"})
    reg = DriverRegistry()
    for info in (*BUILTIN_INFOS, extra):
        reg.register(info, lambda: object())
    assert reg.catalog().for_host("h", "cloud", {}) == HostDrivers("cloud", None, None)


def test_drivers_are_built_once_on_first_use() -> None:
    built: list[object] = []

    def factory() -> object:
        built.append(object())
        return built[-1]

    reg = DriverRegistry()
    reg.register(DriverInfo(Role.NETWORK, "n", "x"), factory)
    lazy = reg.lazy(Role.NETWORK)
    assert built == [] and list(lazy) == ["n"]
    assert lazy["n"] is lazy["n"] and len(built) == 1
    with pytest.raises(KeyError):
        lazy["other"]
    with pytest.raises(DriverError, match="no vmm driver 'qemu' is loaded"):
        reg.get(Role.VMM, "qemu")
    with pytest.raises(ValueError, match="registered twice"):
        reg.register(DriverInfo(Role.NETWORK, "n", "x"), object)


def test_the_daemon_registry_offers_every_builtin_and_the_lvm_one_needs_a_vg(tmp_path: Path) -> None:
    reg = build_registry(Settings(data_dir=tmp_path))
    assert set(reg.catalog().names(Role.STORAGE)) == {"qcow2", "copy", "lvm"}
    assert reg.get(Role.STORAGE, "qcow2").name == "qcow2"
    with pytest.raises(DriverError, match="set lvm_vg"):
        reg.get(Role.STORAGE, "lvm")
    reg2 = build_registry(Settings(data_dir=tmp_path, lvm_vg="vg0"))
    assert reg2.get(Role.STORAGE, "lvm").name == "lvm"


def test_the_batch_setting_names_a_registered_batch_system(tmp_path: Path) -> None:
    def batch(kind: str, **kw: str) -> object:
        s = Settings(data_dir=tmp_path, batch_system=kind, **kw)  # type: ignore[arg-type]
        return batch_from(build_registry(s), s)

    assert batch("") is None and batch("none") is None
    sim = batch("sim")
    assert isinstance(sim, SimBatch) and sim.path == tmp_path / "batch-sim.json"
    assert isinstance(batch("Slurm", batch_partition="p"), SlurmBatch)
    with pytest.raises(InvalidInput, match="unknown batch system 'pbs'; one of: none, sim, slurm, gridengi"):
        batch("pbs")
