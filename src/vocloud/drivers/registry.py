"""The driver registry: name → factory + declared capabilities, per role.

OpenNebula's ``oned.conf`` declares each ``VM_MAD``/``TM_MAD`` with what it can do, and the core
asks the declaration, never the driver's name. vocloud does the same: the composition root
(``vocloud.app.drivers``) registers every driver it offers; a host names its VMM (and may name
its STORAGE and NETWORK drivers); everything else is decided from what the drivers *declare*:

* which storage and network drivers a host gets when it names none (a VMM's ``defaults``);
* whether a host needs its capacity declared (``declared-capacity``: the ``sim`` VMM measures
  nothing) or whether a VM on it can be live-migrated (``migrate``) or moved powered off
  (``cold-migrate``: shut down, disks copied, booted on the target).

The registry itself is pure bookkeeping; factories run on first use, so a daemon that never
boots a qemu guest never builds the qemu driver. :class:`DriverCatalog` is the read-only view the
service layer gets (names and capabilities only: the service never holds a driver).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from vocloud.errors import DriverError, InvalidInput

NONE = "none"


class Role(StrEnum):
    VMM = "vmm"
    STORAGE = "storage"
    NETWORK = "network"
    TRANSPORT = "transport"
    BATCH = "batch"


class Cap(StrEnum):
    """Capabilities a driver may declare."""

    DECLARED_CAPACITY = "declared-capacity"  # VMM: measures nothing; hosts say --cpu/--memory
    REAL_GUESTS = "real-guests"  # VMM: guests are processes on the host (console, taps, disks)
    MIGRATE = "migrate"  # VMM: a running VM can move to another host (live)
    COLD_MIGRATE = "cold-migrate"  # VMM: a VM can move shut down: poweroff, disks copied, boot
    REMOTE = "remote"  # transport: reaches another machine


@dataclass(frozen=True, slots=True)
class DriverInfo:
    role: Role
    name: str
    description: str
    capabilities: frozenset[Cap] = frozenset()
    #: for VMMs: the storage and network driver a host gets when it names none
    defaults: Mapping[str, str] = field(default_factory=dict)

    def can(self, cap: Cap) -> bool:
        return cap in self.capabilities


@dataclass(frozen=True, slots=True)
class HostDrivers:
    """The drivers one host uses: its VMM, and storage/network (``None``: that step is skipped)."""

    vmm: str
    storage: str | None
    network: str | None


@dataclass(frozen=True)
class DriverCatalog:
    """What the registry declares, without the drivers: the service layer's view."""

    infos: tuple[DriverInfo, ...]

    def names(self, role: Role) -> tuple[str, ...]:
        return tuple(i.name for i in self.infos if i.role == role)

    def info(self, role: Role, name: str) -> DriverInfo:
        for i in self.infos:
            if i.role == role and i.name == name:
                return i
        known = ", ".join(self.names(role)) or "none"
        raise InvalidInput(f"unknown {role.value} driver {name!r}; one of: {known}")

    def for_host(self, host_name: str, vmm: str, attrs: Mapping[str, str]) -> HostDrivers:
        """Pure: the host's VMM, and its STORAGE/NETWORK attribute or else the VMM's defaults
        (``none`` turns a step off)."""
        info = self.info(Role.VMM, vmm)
        chosen: dict[str, str | None] = {}
        for role in (Role.STORAGE, Role.NETWORK):
            name = str(attrs.get(role.value.upper(), "") or info.defaults.get(role.value, NONE))
            if name == NONE:
                chosen[role.value] = None
                continue
            if name not in self.names(role):
                known = ", ".join((*self.names(role), NONE))
                raise InvalidInput(f"host {host_name}: unknown {role.value} driver {name!r}; one of: {known}")
            chosen[role.value] = name
        return HostDrivers(vmm, chosen["storage"], chosen["network"])


class DriverRegistry:
    """Factories by role and name; each driver is built once, on first use."""

    def __init__(self) -> None:
        self._infos: dict[tuple[Role, str], DriverInfo] = {}
        self._factories: dict[tuple[Role, str], Callable[[], Any]] = {}
        self._built: dict[tuple[Role, str], Any] = {}

    def register(self, info: DriverInfo, factory: Callable[[], Any]) -> None:
        key = (info.role, info.name)
        if key in self._infos:
            raise ValueError(f"{info.role.value} driver {info.name!r} registered twice")
        self._infos[key] = info
        self._factories[key] = factory

    def catalog(self) -> DriverCatalog:
        return DriverCatalog(tuple(self._infos.values()))

    def get(self, role: Role, name: str) -> Any:
        key = (role, name)
        if key not in self._factories:
            known = ", ".join(n for r, n in self._infos if r == role) or "none"
            raise DriverError(f"no {role.value} driver {name!r} is loaded in this daemon (loaded: {known})")
        if key not in self._built:
            self._built[key] = self._factories[key]()
        return self._built[key]

    def loaded(self, role: Role) -> dict[str, Any]:
        """Every driver of ``role`` by name, built (what the loops get as their mapping)."""
        return {n: self.get(role, n) for r, n in list(self._infos) if r == role}

    def lazy(self, role: Role) -> Mapping[str, Any]:
        """A mapping of ``role``'s drivers that builds each one on first lookup."""
        return _LazyDrivers(self, role)


class _LazyDrivers(Mapping[str, Any]):
    def __init__(self, registry: DriverRegistry, role: Role) -> None:
        self._registry = registry
        self._role = role

    def _names(self) -> list[str]:
        return list(self._registry.catalog().names(self._role))

    def __getitem__(self, name: str) -> Any:
        if name not in self._names():
            raise KeyError(name)
        return self._registry.get(self._role, name)

    def __iter__(self) -> Any:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


def builtin_catalog() -> DriverCatalog:
    """The declarations of the drivers vocloud ships, for callers without a composition root
    (tests, tools). ``vocloud.app.drivers`` registers the same infos with their factories."""
    return DriverCatalog(BUILTIN_INFOS)


BUILTIN_INFOS: tuple[DriverInfo, ...] = (
    DriverInfo(Role.VMM, "sim", "simulated guests: no process, a boot delay (scale tests, demo)",
               frozenset({Cap.DECLARED_CAPACITY, Cap.MIGRATE})),
    DriverInfo(Role.VMM, "qemu", "qemu/KVM (TCG where KVM cannot run guests) on the host",
               frozenset({Cap.REAL_GUESTS, Cap.MIGRATE, Cap.COLD_MIGRATE}),
               {"storage": "qcow2", "network": "bridge"}),
    DriverInfo(Role.VMM, "ec2", "one region of an EC2-compatible cloud (boto3): bursting, docs/bursting.md",
               frozenset({Cap.DECLARED_CAPACITY})),
    DriverInfo(Role.STORAGE, "qcow2", "qcow2 overlays on a per-host, sha256-verified base cache"),
    DriverInfo(Role.STORAGE, "copy", "a full private copy of the base per VM"),
    DriverInfo(Role.STORAGE, "lvm", "an LV snapshot of the base (setting lvm_vg names the volume group)"),
    DriverInfo(Role.NETWORK, "bridge", "one tap per NIC on the network's Linux bridge; 802.1Q networks: "
               "a bridge per VLAN, PHYDEV.VLAN_ID as its uplink"),
    DriverInfo(Role.TRANSPORT, "local", "commands run on this machine"),
    DriverInfo(Role.TRANSPORT, "ssh", "commands run over SSH (asyncssh), ssh://[user@]address[:port]",
               frozenset({Cap.REMOTE})),
    DriverInfo(Role.BATCH, "sim", "a simulated batch system kept in <data dir>/batch-sim.json"),
    DriverInfo(Role.BATCH, "slurm", "Slurm: squeue/sinfo/scontrol"),
    DriverInfo(Role.BATCH, "gridengine", "Grid Engine: qstat/qhost/qconf/qmod"),
)
