"""Live migration of a qemu guest between two hosts (``QemuDriver.migrate``).

The target starts the same machine (same devices, same accelerator, the guest's own run dir on the
target host) with ``-incoming defer`` and listens on its migration address; the source sends RAM
and device state over TCP while the guest keeps running, pauses it for the last dirty pages and
the target resumes it. When the two hosts see different disk files (the staged spec's paths
differ), the disks travel too: qemu's incremental block migration copies what the guest wrote to
its overlay onto the target's overlay of the same base.

Either the guest ends up running on the target and nothing of it is left on the source, or it runs
on at the source and nothing is left on the target; the error says why. The run dir's console log
travels with the guest, so ``vm log`` shows one history.

Why TCP straight between the hosts rather than through the daemon: the state of a guest is its
whole RAM; a detour through the front-end would double the traffic and the pause. The target
listens only on its ``MIGRATION_ADDRESS`` (or the address of its SSH URL) and only while one
migration is in progress (docs/qemu.md, *Live migration*).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import random
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from vocloud.drivers.base import DomainInfo, DomainSpec, HostRef
from vocloud.errors import DriverError


class _Ops(Protocol):
    """The part of the qemu driver's ``HostOps`` a migration uses."""

    def read_bytes(self, path: Path, offset: int = 0) -> bytes | None: ...

    def write_text(self, path: Path, text: str) -> None: ...

    def exists(self, path: Path) -> bool: ...

    def mkdir(self, path: Path) -> None: ...

    def remove_tree(self, path: Path) -> None: ...

    def put_file(self, local: Path, path: Path) -> None: ...

    def start_daemon(self, argv: list[str], stderr_path: Path, timeout: float) -> tuple[int, str]: ...


class QemuDriver(Protocol):
    """What :func:`migrate_live` needs of ``vocloud.drivers.vmm.qemu.QemuDriver`` (which calls it;
    a Protocol so that this module does not import it back)."""

    binary: str
    default_cmdline: str
    start_timeout: float

    @property
    def ops(self) -> _Ops: ...

    def bound(self, host: HostRef) -> AbstractContextManager[None]: ...

    def run_dir(self, deploy_id: str) -> Path: ...

    def poll(self, host: HostRef, deploy_id: str) -> DomainInfo: ...

    def full_console(self, run: Path) -> bytes: ...

    def _pid(self, run: Path) -> int | None: ...

    def _spec(self, run: Path) -> DomainSpec | None: ...

    def _require_alive(self, run: Path, deploy_id: str, action: str) -> int: ...

    def _qmp(self, run: Path, deploy_id: str, command: str,
             arguments: dict[str, Any] | None = None) -> Any: ...

    def _check_inputs(self, spec: DomainSpec) -> None: ...

    def _failure_detail(self, run: Path, why: str) -> str: ...

    def _set_intent(self, run: Path, intent: str) -> None: ...

    def _kill(self, run: Path, pid: int, grace: float = 3.0) -> None: ...


#: ``build_argv(spec, run, accel, binary, default_cmdline, context_iso)`` of the qemu driver
ArgvBuilder = Callable[[DomainSpec, Path, str, str, str, Path | None], list[str]]

#: Ports a target listens on for one incoming migration (IANA dynamic range).
PORTS = (49152, 65000)
BIND_TRIES = 6
MAX_BANDWIDTH = 1 << 30  # bytes/s; qemu's default (128 MiB/s) would stretch small guests' moves
DOWNTIME_LIMIT_MS = 300
INCOMING_START_S = 30.0


@dataclass(frozen=True, slots=True)
class MigrationStats:
    """What one migration cost: written to the target's run dir as ``migrated.json``."""

    source: str
    target: str
    block: bool
    downtime_ms: int
    total_ms: int
    ram_bytes: int
    disk_bytes: int

    def summary(self) -> str:
        kind = "live with its disks" if self.block else "live, shared storage"
        moved = f"{self.ram_bytes / 2**20:.0f} MiB RAM" + (  # qemu 7.2 reports no disk bytes
            f" + {self.disk_bytes / 2**20:.1f} MiB disk" if self.disk_bytes else "")
        return (f"migrated {kind} from {self.source} to {self.target}: guest paused "
                f"{self.downtime_ms} ms, {self.total_ms / 1000:.1f} s in all, {moved}")


def migration_address(host: HostRef) -> str:
    """The address the target listens on: its ``MIGRATION_ADDRESS``, else its SSH URL's host.

    The local host has no URL to borrow from: an administrator names the address remote hosts
    reach it at (on a single machine 127.0.0.1 works only between local guests).
    """
    raw = host.attrs.get("MIGRATION_ADDRESS", "").strip()
    if not raw and host.transport.startswith("ssh://"):
        raw = urlsplit(host.transport).hostname or ""
    raw = raw or "127.0.0.1"
    try:
        addr = ipaddress.ip_address(raw)
    except ValueError:
        raise DriverError(f"host {host.name}: MIGRATION_ADDRESS {raw!r} is not an IP address") from None
    return f"[{addr}]" if addr.version == 6 else str(addr)


def needs_block(src: DomainSpec | None, dst: DomainSpec) -> bool:
    """True when the target's disks are other files than the source's (no shared storage)."""
    if src is None:
        return bool(dst.disks)
    mine = {d.target: d.source for d in src.disks}
    return any(mine.get(d.target) != d.source for d in dst.disks)


def _option(argv: list[str], flag: str) -> str | None:
    for i, arg in enumerate(argv[:-1]):
        if arg == flag:
            return argv[i + 1]
    return None


@dataclass
class _Source:
    run: Path
    pid: int
    spec: DomainSpec | None
    accel: str
    iso: bytes | None
    ready: bool


def migrate_live(drv: QemuDriver, src: HostRef, dst: HostRef, spec: DomainSpec, build_argv: ArgvBuilder,
                 spec_json: str, timeout: float = 600.0) -> DomainInfo:
    """Move the running guest ``spec.deploy_id`` from ``src`` to ``dst`` (``spec``: staged there;
    ``spec_json``: it as the run dir's ``spec.json``)."""
    deploy_id = spec.deploy_id
    source = _read_source(drv, src, deploy_id)
    block = needs_block(source.spec, spec)
    address = migration_address(dst)
    drun = _start_target(drv, dst, spec, source, build_argv, spec_json)
    try:
        port = _listen(drv, dst, drun, deploy_id, address)
        stats = _send(drv, src, source, deploy_id, f"tcp:{address}:{port}", block, timeout, dst)
        _wait_target_running(drv, dst, drun, deploy_id)
    except DriverError as exc:
        _roll_back(drv, src, dst, source, drun, deploy_id)
        raise DriverError(f"{deploy_id}: live migration from {src.name} to {dst.name} failed, the "
                          f"guest runs on at {src.name}: {exc.message}") from None
    with drv.bound(src):  # paused for good now: its console is complete
        console = drv.full_console(source.run)
    with drv.bound(dst):
        drv.ops.write_text(drun / "console.before.log", console.decode(errors="replace"))
        drv.ops.write_text(drun / "migrated.json", json.dumps(asdict(stats)) + "\n")
        if source.ready:
            drv.ops.write_text(drun / "ready", f"{time.time():.3f}\n")
        drv._set_intent(drun, "")
    with drv.bound(src):
        drv._set_intent(source.run, "migrated")
        with contextlib.suppress(DriverError):
            drv._kill(source.run, source.pid)
        drv.ops.remove_tree(source.run)
    info = drv.poll(dst, deploy_id)
    return DomainInfo(info.deploy_id, info.state, stats.summary(), info.cpu_used, info.memory_mib)


def _read_source(drv: QemuDriver, src: HostRef, deploy_id: str) -> _Source:
    with drv.bound(src):
        run = drv.run_dir(deploy_id)
        pid = drv._require_alive(run, deploy_id, "migrate")
        status = (drv._qmp(run, deploy_id, "query-status") or {}).get("status")
        if status != "running":
            raise DriverError(f"{deploy_id}: only a running guest migrates live (qemu: {status})")
        argv = json.loads(drv.ops.read_bytes(run / "argv.json") or b"[]")
        iso = drv.ops.read_bytes(run / "context.iso") if "context.iso" in " ".join(argv) else None
        return _Source(run=run, pid=pid, spec=drv._spec(run), accel=_option(argv, "-accel") or "tcg",
                       iso=iso, ready=drv.ops.exists(run / "ready"))


def _start_target(drv: QemuDriver, dst: HostRef, spec: DomainSpec, source: _Source,
                  build_argv: ArgvBuilder, spec_json: str) -> Path:
    """The same machine on ``dst``, waiting for its state: ``-incoming defer``."""
    deploy_id = spec.deploy_id
    with drv.bound(dst):
        run = drv.run_dir(deploy_id)
        if drv._pid(run) is not None:
            raise DriverError(f"{deploy_id}: host {dst.name} already runs a qemu for this VM")
        drv._check_inputs(spec)
        drv.ops.remove_tree(run)
        drv.ops.mkdir(run)
        drv.ops.write_text(run / "spec.json", spec_json)
        iso = None
        if source.iso is not None:
            iso = run / "context.iso"
            with tempfile.TemporaryDirectory(prefix="vocloud-migrate-") as tmp:
                local = Path(tmp) / "context.iso"
                local.write_bytes(source.iso)
                drv.ops.put_file(local, iso)
        argv = build_argv(spec, run, source.accel, drv.binary, drv.default_cmdline, iso)
        drv.ops.write_text(run / "argv.json", json.dumps(argv, indent=1) + "\n")
        drv._set_intent(run, "incoming")
        rc, why = drv.ops.start_daemon([*argv, "-incoming", "defer"], run / "qemu.log", drv.start_timeout)
        if rc != 0:
            detail = drv._failure_detail(run, why or f"qemu exited with status {rc} while starting")
            drv.ops.remove_tree(run)
            raise DriverError(f"{deploy_id}: the target qemu on {dst.name} did not start: {detail}")
    return run


def _listen(drv: QemuDriver, dst: HostRef, run: Path, deploy_id: str, address: str) -> int:
    """Have the target listen on a free port of ``address``; the port."""
    last = ""
    with drv.bound(dst):
        for _ in range(BIND_TRIES):
            port = random.randint(*PORTS)
            try:
                drv._qmp(run, deploy_id, "migrate-incoming", {"uri": f"tcp:{address}:{port}"})
                return port
            except DriverError as exc:
                last = exc.message
    raise DriverError(f"the target cannot listen on {address}: {last}")


def _send(drv: QemuDriver, src: HostRef, source: _Source, deploy_id: str, uri: str, block: bool,
          timeout: float, dst: HostRef) -> MigrationStats:
    with drv.bound(src):
        run = source.run
        drv._qmp(run, deploy_id, "migrate-set-parameters",
                 {"max-bandwidth": MAX_BANDWIDTH, "downtime-limit": DOWNTIME_LIMIT_MS})
        args: dict[str, Any] = {"uri": uri}
        if block:
            args.update(blk=True, inc=True)  # the overlays share their base: copy what was written
        drv._qmp(run, deploy_id, "migrate", args)
        deadline = time.monotonic() + timeout
        while True:
            info = drv._qmp(run, deploy_id, "query-migrate") or {}
            status = info.get("status", "")
            if status == "completed":
                break
            if status in ("failed", "cancelled", ""):
                raise DriverError(str(info.get("error-desc") or f"migration {status or 'did not start'}"))
            if time.monotonic() > deadline:
                raise DriverError(f"not finished within {timeout:g} s (last status {status})")
            time.sleep(0.05)
    ram = info.get("ram") or {}
    disk = info.get("disk") or {}
    return MigrationStats(source=src.name, target=dst.name, block=block,
                          downtime_ms=int(info.get("downtime", 0)), total_ms=int(info.get("total-time", 0)),
                          ram_bytes=int(ram.get("transferred", 0)),
                          disk_bytes=int(disk.get("transferred", 0)))


def _wait_target_running(drv: QemuDriver, dst: HostRef, run: Path, deploy_id: str) -> None:
    with drv.bound(dst):
        deadline = time.monotonic() + INCOMING_START_S
        status = ""
        while time.monotonic() < deadline:
            status = (drv._qmp(run, deploy_id, "query-status") or {}).get("status", "")
            if status == "running":
                return
            if status not in ("inmigrate", "paused", "restore-vm"):
                break
            time.sleep(0.05)
        raise DriverError(f"the target did not resume the guest (qemu on {dst.name}: {status})")


def _roll_back(drv: QemuDriver, src: HostRef, dst: HostRef, source: _Source, drun: Path,
               deploy_id: str) -> None:
    """The guest runs on at the source; the target's half-built qemu and run dir go."""
    with drv.bound(src):
        with contextlib.suppress(DriverError):
            drv._qmp(source.run, deploy_id, "migrate_cancel")
        with contextlib.suppress(DriverError):
            status = (drv._qmp(source.run, deploy_id, "query-status") or {}).get("status")
            if status in ("paused", "postmigrate", "finish-migrate"):
                drv._qmp(source.run, deploy_id, "cont")
    with drv.bound(dst):
        pid = drv._pid(drun)
        if pid is not None:
            with contextlib.suppress(DriverError):
                drv._kill(drun, pid)
        drv.ops.remove_tree(drun)
