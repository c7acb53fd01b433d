"""Driver interfaces: one small Protocol per role, as in OpenNebula's driver split.

Rules every driver keeps, because the reconcile loops depend on them:

* **Idempotent.** ``deploy`` of a domain that already exists returns its info without starting a
  second one; ``shutdown``/``cleanup`` of a missing domain succeed. The loops retry freely.
* **Non-blocking where it matters.** ``deploy`` and ``shutdown`` *start* an operation; ``poll``
  tells where it is. The lifecycle loop owns timeouts (it stores when a step started), so a
  daemon restart in the middle of a boot neither loses nor repeats the guest.
* **Named by deploy id.** A domain is found again by its deploy id (``vc<instance tag>-<vm id>``,
  e.g. ``vcq7x-12``: unique per installation, see store.schema.SiteSetting), never by an
  in-memory handle, so a restarted daemon re-attaches to the guests that kept running.
* Drivers raise :class:`~vocloud.errors.DriverError` with a message a site admin can act on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from vocloud.errors import DriverError, HostUnreachable


class DomainState(StrEnum):
    """What a hypervisor says about one guest."""

    BOOTING = "BOOTING"  # process/instance started, guest not yet up
    RUNNING = "RUNNING"  # guest is up (console marker, guest agent, or sim delay elapsed)
    SHUTTING_DOWN = "SHUTTING_DOWN"
    PAUSED = "PAUSED"  # suspended in memory
    SAVED = "SAVED"  # state saved to disk, no process
    OFF = "OFF"  # defined but powered off (disk kept)
    FAILED = "FAILED"  # crashed or never came up; ``detail`` says why
    MISSING = "MISSING"  # the hypervisor does not know it


@dataclass(frozen=True, slots=True)
class HostRef:
    """How to reach a host: ``local`` or ``ssh://user@address[:port]``, plus driver names."""

    id: int
    name: str
    vmm: str = "sim"
    transport: str = "local"
    attrs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DiskSpec:
    target: str  # vda, vdb, ...
    source: str  # path or URL of the image (base for overlays)
    format: str = "qcow2"
    persistent: bool = False
    size_mib: int | None = None
    image_id: int | None = None
    sha256: str = ""  # the image's recorded sum: the host cache verifies copies against it


@dataclass(frozen=True, slots=True)
class NicSpec:
    network: str
    ip: str
    mac: str
    bridge: str | None = None
    #: 802.1Q: the network's VLAN (None: untagged) and the host device that carries it ("": the
    #: VLAN stays on this host's bridge)
    vlan_id: int | None = None
    phydev: str = ""


@dataclass(frozen=True, slots=True)
class DomainSpec:
    """Everything a VMM driver needs to start one guest; built from the VM's stored template.

    Only typed fields, never a bag of raw template attributes: a driver can act only on what is
    declared here, and every field comes from the stored template the service wrote after its
    checks (docs/security.md). ``kernel``/``initrd``/``virtfs`` are host paths, ``machine`` and
    ``accel`` hypervisor choices: administrators set them, users reach a kernel only through a
    registered image (``KERNEL_IMAGE``), which the service resolves to ``kernel``.
    """

    vm_id: int
    deploy_id: str
    name: str
    cpu: float
    vcpu: int
    memory_mib: int
    disks: tuple[DiskSpec, ...] = ()
    nics: tuple[NicSpec, ...] = ()
    context: dict[str, str] = field(default_factory=dict)
    kernel: str | None = None  # boot this kernel directly (-kernel)
    initrd: str | None = None
    kernel_cmd: str | None = None  # None: the driver's default command line
    machine: str | None = None  # None: the driver's choice (microvm with a kernel, else pc)
    accel: str | None = None  # None: the host's probed accelerator
    ready_marker: str | None = None  # None: the driver's default console marker
    virtfs: str | None = None  # host directory exported read-only over 9p
    sim_boot: str | None = None  # the sim driver's boot outcome: ok, fail, hang


@dataclass(frozen=True, slots=True)
class DomainInfo:
    deploy_id: str
    state: DomainState
    detail: str = ""
    cpu_used: float = 0.0
    memory_mib: int = 0


@dataclass(frozen=True, slots=True)
class HostInfo:
    """One monitoring probe of a host."""

    total_cpu: float
    total_mem_mib: int
    used_cpu: float = 0.0
    used_mem_mib: int = 0
    domains: dict[str, DomainInfo] = field(default_factory=dict)
    attrs: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class VMMDriver(Protocol):
    """Virtualization: start, stop and observe guests on one host."""

    name: str

    def deploy(self, host: HostRef, spec: DomainSpec) -> DomainInfo: ...

    def poll(self, host: HostRef, deploy_id: str) -> DomainInfo: ...

    def shutdown(self, host: HostRef, deploy_id: str, hard: bool) -> None: ...

    def reboot(self, host: HostRef, deploy_id: str) -> None: ...

    def save(self, host: HostRef, deploy_id: str) -> None: ...

    def restore(self, host: HostRef, spec: DomainSpec) -> DomainInfo: ...

    def migrate(self, src: HostRef, dst: HostRef, spec: DomainSpec) -> DomainInfo: ...

    def cleanup(self, host: HostRef, deploy_id: str) -> None: ...

    def monitor(self, host: HostRef) -> HostInfo: ...

    def console(self, host: HostRef, deploy_id: str, max_bytes: int = 65536) -> str: ...


@runtime_checkable
class BulkBoot(Protocol):
    """Optional: start many guests on one host in one call (the sim driver: one directory scan
    and one file per guest instead of a poll, a read and a write each). Same rules as ``deploy``,
    per guest: idempotent, non-blocking; a guest already there is returned as it is (a SAVED or
    PAUSED one too: the caller restores it). One answer per spec, in order: its info, or the
    :class:`DriverError` that guest met. Raises :class:`HostUnreachable` (or a DriverError about
    the whole host) when nothing could be done on the host."""

    def deploy_many(self, host: HostRef, specs: Sequence[DomainSpec]) -> list[DomainInfo | DriverError]: ...


@runtime_checkable
class BulkMonitor(Protocol):
    """Optional: probe many hosts in one call (the sim driver: its guest files read with plain
    ``os`` calls, no per-host overhead). Same rules as ``monitor``, per host: one answer per
    host, in order, its :class:`HostInfo` or the :class:`DriverError` it met (a
    :class:`HostUnreachable` too) — returned, never raised, so one host's failure costs no
    other its probe. Drivers whose hosts are remote (qemu over SSH, clouds) keep ``monitor``:
    the monitor pass asks those hosts concurrently (engine/probes.py)."""

    def monitor_many(self, hosts: Sequence[HostRef]) -> list[HostInfo | DriverError]: ...


def boot_many(drv: VMMDriver, host: HostRef,
              specs: Sequence[DomainSpec]) -> list[DomainInfo | DriverError]:
    """Bring ``specs`` up on ``host``: for each guest, poll; start it if MISSING or OFF; restore it
    if SAVED or PAUSED. Through ``deploy_many`` when the driver has it (then a SAVED or PAUSED
    guest it returns is restored one by one), else guest by guest, the drivers' default (qemu,
    ssh, cloud). A :class:`HostUnreachable` is raised, never returned: nothing more is tried on
    that host in this call."""
    bulk = drv.deploy_many(host, specs) if isinstance(drv, BulkBoot) else None
    out: list[DomainInfo | DriverError] = []
    for i, spec in enumerate(specs):
        try:
            if bulk is not None:
                got = bulk[i]
                if isinstance(got, HostUnreachable):
                    raise got
                if isinstance(got, DriverError) or got.state not in (DomainState.SAVED,
                                                                     DomainState.PAUSED):
                    out.append(got)
                    continue
                out.append(drv.restore(host, spec))
                continue
            info = drv.poll(host, spec.deploy_id)
            if info.state in (DomainState.MISSING, DomainState.OFF):
                info = drv.deploy(host, spec)
            elif info.state in (DomainState.SAVED, DomainState.PAUSED):
                info = drv.restore(host, spec)
            out.append(info)
        except HostUnreachable:
            raise
        except DriverError as exc:
            out.append(exc)
    return out


class StorageDriver(Protocol):
    """Stage a VM's disks on a host (overlay, full copy, LVM snapshot) and remove them."""

    name: str

    def stage(self, host: HostRef, spec: DomainSpec) -> DomainSpec: ...

    def unstage(self, host: HostRef, deploy_id: str) -> None: ...


class NetworkDriver(Protocol):
    """Attach guest NICs to the host's bridges (tap devices) and detach them."""

    name: str

    def attach(self, host: HostRef, spec: DomainSpec) -> None: ...

    def detach(self, host: HostRef, deploy_id: str) -> None: ...


@dataclass(frozen=True, slots=True)
class CommandResult:
    returncode: int
    stdout: bytes
    stderr: bytes


class Transport(Protocol):
    """Run commands and move files on a host: locally or over SSH."""

    def run(self, host: HostRef, argv: list[str], input: bytes | None = None,
            timeout: float | None = None) -> CommandResult: ...

    def put(self, host: HostRef, local_path: str, remote_path: str) -> None: ...


class MonitorDriver(Protocol):
    """Probe a host's capacity and load independently of the hypervisor (``/proc`` etc.)."""

    def probe(self, host: HostRef) -> dict[str, str]: ...
