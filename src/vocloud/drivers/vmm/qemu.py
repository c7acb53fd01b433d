"""The qemu virtualization driver: one detached ``qemu-system-x86_64`` per VM, driven over QMP.

Every guest owns a run directory ``<host dir>/<deploy_id>/`` (the host dir is ``<state_dir>`` for
the local host, ``<state_dir>/hosts/<host name>`` for any other: see :meth:`QemuDriver.host_state_dir`);
the directory *is* the record, so a restarted daemon (or a new driver object) finds its guests by
listing it and never needs memory:

=================  ===============================================================================
``spec.json``      the DomainSpec the guest was started from
``argv.json``      the exact qemu command line (restore re-uses it: devices must match the save)
``qemu.pid``       written by qemu itself (``-pidfile``); checked against /proc/<pid>/cmdline
``qmp.sock``       the QMP control socket
``console.log``    everything the guest wrote on ttyS0 (``vocloud vm log``); the ready marker
``console.sock``   the same serial line, attachable (``socat - UNIX:console.sock``)
``qemu.log``       qemu's own stderr (load errors, "KVM internal error", ...)
``context.iso``    the cloud-init NoCloud seed, attached read-only as a virtio disk
``intent``         what vocloud last asked for (``shutdown``, ``save``), to tell OFF from a crash
``powerdown_at``   when the ACPI button was last pressed (pressed again while the guest runs on)
``ready``          present once the marker was seen since the last (re)boot
``boot_offset``    console size at the last reboot: the marker must appear after it
``state.sav``      saved RAM and device state (``save``), fed back with ``-incoming``
=================  ===============================================================================

A guest that migrated in also has ``console.before.log`` (what it wrote on the hosts it came
from; ``vm log`` shows it before ``console.log``) and ``migrated.json`` (the last move's figures).

qemu runs with ``-daemonize``: it double-forks into its own session, so it survives the daemon,
is reaped by init rather than left a zombie of ours, and its parent exits only after the machine
is built, which surfaces a bad kernel or disk as an exit status at deploy time.

Save/restore uses migration to a file (``migrate exec:cat > state.sav`` after ``stop``, then
``-incoming exec:cat state.sav``) rather than ``savevm``: it works with raw disks, with a read-only
context ISO and without kernel-booted guests having a qcow2 to hold the snapshot, and it leaves
the overlay disks untouched (the guest is stopped while saving, so disk and RAM agree).

Filesystem and process access goes through :class:`HostOps`: :class:`LocalOps` for
``transport="local"``, :class:`~vocloud.drivers.transport.ops.SshOps` (commands over the host's
transport) for ``ssh://`` hosts. Each public method binds the right one for its host
(:func:`_on_host`), so the driver logic is the same for both.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

from vocloud.drivers.accel import READY_MARKER, AccelProbe, AccelResult
from vocloud.drivers.base import (
    DiskSpec,
    DomainInfo,
    DomainSpec,
    DomainState,
    HostInfo,
    HostRef,
    NicSpec,
    Transport,
)
from vocloud.drivers.context import build_seed_iso
from vocloud.drivers.net.bridge import tap_name
from vocloud.drivers.qmp import QMPError, qmp_execute
from vocloud.drivers.transport.ops import SshOps
from vocloud.drivers.vmm.hostops import HostOps
from vocloud.drivers.vmm.qemu_migrate import migrate_live
from vocloud.drivers.vmm.qemu_snapshot import PrefetchedOps
from vocloud.errors import DriverError

PANIC_MARKERS = ("Kernel panic - not syncing", "KVM internal error")
POWERED_OFF_MARKERS = ("reboot: Power down", "reboot: System halted")
DETAIL_LINES = 15
POWERDOWN_REPEAT_S = 5.0
CONTEXT_TARGET = "vdz"  # sorts after any real disk, so the seed never takes vda
_SAFE_ID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


# ---------------------------------------------------------------- the host seam


class LocalOps:
    """:class:`HostOps` on this machine: plain files, /proc and signals."""

    def read_bytes(self, path: Path, offset: int = 0) -> bytes | None:
        try:
            with path.open("rb") as fh:
                fh.seek(offset)
                return fh.read()
        except OSError:
            return None

    def size(self, path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0

    def write_text(self, path: Path, text: str) -> None:
        # the writer's own temporary name: two loop threads may write the same file at once
        tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(text)
        tmp.replace(path)

    def exists(self, path: Path) -> bool:
        return path.exists()

    def mkdir(self, path: Path) -> None:
        # 0700: a run dir holds the VM's context (e.g. a worker's munge key) in spec.json
        path.mkdir(mode=0o700, parents=True, exist_ok=True)

    def remove(self, path: Path) -> None:
        path.unlink(missing_ok=True)


    def remove_tree(self, path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)

    def put_file(self, local: Path, path: Path) -> None:
        if local.resolve() != path.resolve():
            shutil.copyfile(local, path)

    def list_dir(self, path: Path) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except OSError:
            return []

    def start_daemon(self, argv: list[str], stderr_path: Path, timeout: float) -> tuple[int, str]:
        """Run a self-daemonizing command; its exit status says whether the child got going."""
        with stderr_path.open("ab") as err:
            try:
                proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err,
                                      timeout=timeout, start_new_session=True)
            except subprocess.TimeoutExpired:
                return 124, f"qemu did not finish starting within {timeout:g} s"
            except OSError as exc:
                return 127, f"cannot run {argv[0]}: {exc}"
        return proc.returncode, ""

    def cmdline(self, pid: int) -> list[str] | None:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return [a.decode(errors="replace") for a in raw.split(b"\x00") if a] or None

    def kill(self, pid: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def qmp(self, sock: Path, command: str, arguments: dict[str, Any] | None = None,
            timeout: float = 5.0) -> Any:
        return qmp_execute(str(sock), command, arguments, timeout=timeout)

    def resources(self) -> tuple[int, int, int]:
        """(CPUs, MemTotal MiB, MemAvailable MiB) from /proc, as the monitor reports them."""
        mem: dict[str, int] = {}
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            mem[key] = int(rest.split()[0]) if rest.split() else 0
        return os.cpu_count() or 1, mem["MemTotal"] // 1024, mem.get("MemAvailable", 0) // 1024

    def usage(self, pid: int) -> tuple[float, int]:
        """(average CPUs used since start, RSS MiB): cheap and stateless, good enough to monitor."""
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            uptime = float(Path("/proc/uptime").read_text().split()[0])
        except OSError:
            return 0.0, 0
        fields = stat.rsplit(")", 1)[1].split()
        hz = os.sysconf("SC_CLK_TCK")
        cpu_s = (int(fields[11]) + int(fields[12])) / hz
        age = max(uptime - int(fields[19]) / hz, 1e-3)
        rss_mib = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") // (1024 * 1024)
        return round(cpu_s / age, 3), rss_mib


# ---------------------------------------------------------------- command line


def machine_for(spec: DomainSpec) -> str:
    """microvm boots a kernel fastest; a guest without a kernel needs firmware, hence pc."""
    return spec.machine or ("microvm" if spec.kernel else "pc")


def virtio_suffix(machine: str) -> str:
    return "device" if machine.startswith("microvm") else "pci"


def disk_args(disks: tuple[DiskSpec, ...], suffix: str, readonly: frozenset[str] = frozenset()) -> list[str]:
    """virtio-blk for every disk, in target order so the guest sees vda, vdb, ... as named."""
    args: list[str] = []
    for disk in sorted(disks, key=lambda d: d.target):
        node = f"disk-{disk.target}"
        ro = ",readonly=on" if disk.target in readonly else ""
        args += ["-drive", f"file={_escape(disk.source)},if=none,id={node},format={disk.format},"
                 f"cache=none,aio=threads{ro}",
                 "-device", f"virtio-blk-{suffix},drive={node}"]
    return args


def nic_args(deploy_id: str, nics: tuple[NicSpec, ...], suffix: str) -> list[str]:
    args: list[str] = []
    for i, nic in enumerate(nics):
        args += ["-netdev", f"tap,id=net{i},ifname={tap_name(deploy_id, i)},script=no,downscript=no",
                 "-device", f"virtio-net-{suffix},netdev=net{i},mac={nic.mac}"]
    return args


def _escape(value: str) -> str:
    """qemu option values escape a comma by doubling it."""
    return value.replace(",", ",,")


HOSTROOT_TAG = "hostroot"
#: The file that marks a worker export tree (vocloud.guest.export writes it). ``VIRTFS`` must
#: name a directory holding it: the driver never exports the host's ``/`` or any other directory
#: the guest tooling did not build for guests (docs/worker.md, *The export tree*).
EXPORT_MANIFEST = ".vocloud-export.json"


def virtfs_args(machine: str, path: str, tag: str = HOSTROOT_TAG) -> list[str]:
    """qemu arguments exporting the tree ``path`` read-only as 9p share ``tag``.

    ``-fsdev`` + ``-device`` rather than ``-virtfs`` because microvm has no PCI bus (virtio-mmio
    ``virtio-9p-device``); ``readonly=on``: the guest writes to its own tmpfs overlays only;
    ``multidevs=remap`` in case a tree spans several host filesystems (inode numbers would
    otherwise collide in the guest); ``security_model=none`` because the guest only reads, as
    root, and must see the files' real owners and modes (munge checks them). qemu resolves every
    9p name below ``path`` without following host symlinks, so the guest sees the tree only.
    """
    device = "virtio-9p-device" if machine.startswith("microvm") else "virtio-9p-pci"
    return ["-fsdev", f"local,id={tag},path={path},security_model=none,readonly=on,multidevs=remap",
            "-device", f"{device},fsdev={tag},mount_tag={tag}"]


def build_argv(spec: DomainSpec, run: Path, accel: str, binary: str, default_cmdline: str,
               context_iso: Path | None) -> list[str]:
    """The whole qemu command line for ``spec``; pure, so it is unit-testable and stored as-is."""
    machine = machine_for(spec)
    suffix = virtio_suffix(machine)
    argv = [
        binary, "-name", f"{spec.deploy_id},process=vocloud-{spec.deploy_id}",
        "-M", machine, "-accel", accel, "-m", str(spec.memory_mib), "-smp", str(max(spec.vcpu, 1)),
        "-nodefaults", "-no-user-config", "-display", "none",
        "-daemonize", "-pidfile", str(run / "qemu.pid"),
        "-qmp", f"unix:{run / 'qmp.sock'},server=on,wait=off",
        "-chardev", f"socket,id=serial0,path={run / 'console.sock'},server=on,wait=off,"
                    f"logfile={run / 'console.log'},logappend=on",
        "-serial", "chardev:serial0",
        "-D", str(run / "qemu.log"),
    ]
    if accel == "kvm":
        argv += ["-cpu", "host"]
    if spec.kernel:
        cmdline = spec.kernel_cmd if spec.kernel_cmd is not None else default_cmdline
        argv += ["-kernel", spec.kernel, "-append", cmdline]
        if spec.initrd:
            argv += ["-initrd", spec.initrd]
    disks = spec.disks
    if context_iso is not None:
        disks = (*disks, DiskSpec(target=CONTEXT_TARGET, source=str(context_iso), format="raw"))
    argv += disk_args(disks, suffix, frozenset({CONTEXT_TARGET}))
    argv += nic_args(spec.deploy_id, spec.nics, suffix)
    if spec.virtfs:  # a directory shared read-only over 9p (worker guests' root)
        argv += virtfs_args(machine, path=spec.virtfs)
    return argv


_LEGACY_ATTRS = {"kernel": "KERNEL", "initrd": "INITRD", "kernel_cmd": "KERNEL_CMD",
                 "machine": "MACHINE", "accel": "ACCEL", "ready_marker": "READY_MARKER",
                 "virtfs": "VIRTFS", "sim_boot": "SIM_BOOT"}


def spec_to_json(spec: DomainSpec) -> str:
    return json.dumps(asdict(spec), indent=2, sort_keys=True) + "\n"


def spec_from_json(text: str) -> DomainSpec:
    doc = json.loads(text)
    legacy = doc.pop("attrs", None)  # run dirs written before DomainSpec had typed fields
    if isinstance(legacy, dict):
        for name, key in _LEGACY_ATTRS.items():
            if legacy.get(key) is not None:
                doc.setdefault(name, legacy[key])
    doc["disks"] = tuple(DiskSpec(**d) for d in doc.get("disks", ()))
    doc["nics"] = tuple(NicSpec(**n) for n in doc.get("nics", ()))
    return DomainSpec(**doc)


# ---------------------------------------------------------------- which host a call is about

P = ParamSpec("P")
R = TypeVar("R")

#: (id of the driver, ops of the host, its state dir) for the public call in progress on this thread.
_BOUND_OPS: contextvars.ContextVar[tuple[int, HostOps, Path] | None] = contextvars.ContextVar(
    "vocloud_qemu_bound_ops", default=None)


def _on_host(method: Callable[Concatenate[QemuDriver, HostRef, P], R]
             ) -> Callable[Concatenate[QemuDriver, HostRef, P], R]:
    """Bind ``self.ops`` to the host a public method was called for, for the whole call.

    The driver logic is written against one ``self.ops``; binding it per call (in a context
    variable, so concurrent calls from the daemon's threads each see their own host) lets the same
    code drive a local host and SSH hosts without threading the host through every helper.
    """

    @functools.wraps(method)
    def bound(self: QemuDriver, host: HostRef, /, *args: P.args, **kwargs: P.kwargs) -> R:
        with self.bound(host):
            return method(self, host, *args, **kwargs)

    return bound


# ---------------------------------------------------------------- the driver


class QemuDriver:
    """:class:`~vocloud.drivers.base.VMMDriver` for qemu on local and SSH hosts.

    SSH hosts need ``transports`` (normally :func:`~vocloud.drivers.transport.transport_for`): the
    wiring that creates the driver opts in to remote hosts explicitly, so a driver built for local
    use never opens a connection to an address that happens to be in the store.
    """

    name = "qemu"

    def __init__(
        self,
        state_dir: Path,
        binary: str = "qemu-system-x86_64",
        default_cmdline: str = "console=ttyS0 no_timer_check tsc_early_khz=2000000 quiet panic=0",
        ops: HostOps | None = None,
        accel_probe: AccelProbe | None = None,
        probe_guest: Callable[[], tuple[Path, Path, str]] | None = None,
        start_timeout: float = 30.0,
        transports: Callable[[HostRef], Transport] | None = None,
        batch_monitor: bool = True,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.binary = binary
        self.default_cmdline = default_cmdline
        self.local_ops: HostOps = ops or LocalOps()
        self.transports = transports
        self._remote_ops: dict[tuple[str, str], HostOps] = {}
        self.accel_probe = accel_probe or AccelProbe(self.state_dir)
        self.probe_guest = probe_guest or _no_probe_guest
        self.start_timeout = start_timeout
        self.batch_monitor = batch_monitor  # False: the old per-read monitor (bench baseline)

    # ------------------------------------------------------------ paths and small helpers

    def ops_for(self, host: HostRef) -> HostOps:
        """LocalOps for ``transport="local"``, else an :class:`SshOps` over the host's transport."""
        if host.transport == "local":
            return self.local_ops
        if self.transports is None:
            raise DriverError(f"host {host.name}: this qemu driver was built without remote "
                              f"transports, so it supports only local hosts (transport "
                              f"{host.transport!r}); pass transports=transport_for")
        key = (host.name, host.transport)
        ops = self._remote_ops.get(key)
        if ops is None:
            ops = self._remote_ops[key] = SshOps(self.transports(host), host)
        return ops

    @contextlib.contextmanager
    def bound(self, host: HostRef) -> Iterator[None]:
        """Make ``self.ops`` and ``run_dir`` refer to ``host`` inside the block (see :func:`_on_host`);
        migration binds the source and the target in turn within one call."""
        token = _BOUND_OPS.set((id(self), self.ops_for(host), self.host_state_dir(host)))
        try:
            yield
        finally:
            _BOUND_OPS.reset(token)

    @contextlib.contextmanager
    def _ops_bound(self, ops: HostOps) -> Iterator[None]:
        """Swap the bound host's ops (same host, same state dir) inside the block."""
        bound = _BOUND_OPS.get()
        token = _BOUND_OPS.set((id(self), ops, bound[2] if bound else self.state_dir))
        try:
            yield
        finally:
            _BOUND_OPS.reset(token)

    def host_state_dir(self, host: HostRef) -> Path:
        """Where ``host``'s run dirs live: the state dir itself for the local host (as before),
        ``<state_dir>/hosts/<name>`` for every other host.

        Per host because SSH hosts may share this machine's filesystem (or one NFS export): two
        hosts listing one directory would count, poll and sweep each other's guests, and a VM
        migrating between them would find its own run dir on both sides.
        """
        if host.transport == "local":
            return self.state_dir
        if not host.name or not set(host.name) <= _SAFE_ID or host.name.startswith("."):
            raise DriverError(f"host name {host.name!r} cannot name a state directory "
                              "(letters, digits, '.', '_' and '-' only)")
        return self.state_dir / "hosts" / host.name

    @property
    def ops(self) -> HostOps:
        """The ops of the host the current call is about (see :func:`_on_host`)."""
        bound = _BOUND_OPS.get()
        return bound[1] if bound is not None and bound[0] == id(self) else self.local_ops

    @property
    def host_dir(self) -> Path:
        """The state dir of the host the current call is about."""
        bound = _BOUND_OPS.get()
        return bound[2] if bound is not None and bound[0] == id(self) else self.state_dir

    def run_dir(self, deploy_id: str) -> Path:
        if not deploy_id or not set(deploy_id) <= _SAFE_ID or deploy_id.startswith("."):
            raise DriverError(f"bad deploy id {deploy_id!r}")
        return self.host_dir / deploy_id

    def _pid(self, run: Path) -> int | None:
        """The guest's pid if its process is alive *and* is our qemu for this run dir."""
        raw = self.ops.read_bytes(run / "qemu.pid")
        if not raw:
            return None
        try:
            pid = int(raw.strip())
        except ValueError:
            return None
        argv = self.ops.cmdline(pid)
        if not argv or str(run / "qmp.sock") not in " ".join(argv):
            return None
        return pid

    def _intent(self, run: Path) -> str:
        raw = self.ops.read_bytes(run / "intent")
        return raw.decode().strip() if raw else ""

    def _set_intent(self, run: Path, intent: str) -> None:
        if intent:
            self.ops.write_text(run / "intent", intent + "\n")
        else:
            self.ops.remove(run / "intent")

    def _console_tail(self, run: Path, lines: int = DETAIL_LINES) -> str:
        size = self.ops.size(run / "console.log")
        raw = self.ops.read_bytes(run / "console.log", max(0, size - 8192)) or b""
        text = raw.decode(errors="replace").replace("\r", "")
        return "\n".join(text.strip().splitlines()[-lines:])

    def _failure_detail(self, run: Path, why: str) -> str:
        parts = [why]
        err = (self.ops.read_bytes(run / "qemu.log") or b"").decode(errors="replace").strip()
        if err:
            parts.append("qemu: " + "\n".join(err.splitlines()[-5:]))
        console = self._console_tail(run)
        parts.append("console:\n" + console if console else "console: (empty)")
        return "\n".join(parts)

    def _boot_console(self, run: Path) -> str:
        raw = self.ops.read_bytes(run / "boot_offset")
        offset = int(raw) if raw and raw.strip().isdigit() else 0
        return (self.ops.read_bytes(run / "console.log", offset) or b"").decode(errors="replace")

    def _spec(self, run: Path) -> DomainSpec | None:
        raw = self.ops.read_bytes(run / "spec.json")
        return spec_from_json(raw.decode()) if raw else None

    def _marker(self, spec: DomainSpec | None) -> str:
        return (spec.ready_marker or READY_MARKER) if spec else READY_MARKER

    def _info(self, run: Path, deploy_id: str, state: DomainState, detail: str = "",
              pid: int | None = None) -> DomainInfo:
        spec = self._spec(run)
        cpu, mem = self.ops.usage(pid) if pid else (0.0, 0)
        return DomainInfo(deploy_id, state, detail, cpu_used=cpu,
                          memory_mib=mem or (spec.memory_mib if spec and pid else 0))

    # ------------------------------------------------------------ accel

    @_on_host
    def accel(self, host: HostRef) -> AccelResult:
        """KVM only where a probe guest really boots under it; cached per host (see accel.py)."""
        forced = host.attrs.get("ACCEL", "").lower()
        if forced in ("kvm", "tcg"):
            return AccelResult(forced, "set by the host attribute ACCEL")
        if host.transport != "local":
            if self.accel_probe.forced in ("kvm", "tcg"):
                return AccelResult(self.accel_probe.forced, "forced by the accel setting (VOCLOUD_ACCEL)")
            # The probe boots a guest on this machine, which says nothing about a remote one.
            return AccelResult("tcg", "no KVM probe over SSH yet: set the host attribute ACCEL=kvm "
                                      "where KVM is known to run guests")
        return self.accel_probe.get(host.name, self.probe_guest)

    # ------------------------------------------------------------ checks before starting

    def _check_inputs(self, spec: DomainSpec) -> None:
        """Bad input fails before anything starts, with the path an admin needs to fix."""
        if spec.memory_mib < 16:
            raise DriverError(f"{spec.deploy_id}: memory {spec.memory_mib} MiB is too small for qemu")
        for key, path in (("KERNEL", spec.kernel), ("INITRD", spec.initrd)):
            if path and not self.ops.exists(Path(path)):
                raise DriverError(f"{spec.deploy_id}: {key} file {path} does not exist")
        virtfs = spec.virtfs
        if virtfs and (not virtfs.startswith("/") or os.path.normpath(virtfs) == "/"
                       or not self.ops.exists(Path(virtfs) / EXPORT_MANIFEST)):
            raise DriverError(f"{spec.deploy_id}: VIRTFS {virtfs} is not a worker export tree (no "
                              f"{EXPORT_MANIFEST}; build one with python -m vocloud.guest.export): "
                              "the host's / or another host directory is never exported")
        for disk in spec.disks:
            if not self.ops.exists(Path(disk.source)):
                raise DriverError(f"{spec.deploy_id}: disk {disk.target}: image file {disk.source} "
                                  "does not exist (was it staged?)")
            if disk.format not in ("qcow2", "raw"):
                raise DriverError(f"{spec.deploy_id}: disk {disk.target}: unsupported format "
                                  f"{disk.format!r} (qcow2 or raw)")

    # ------------------------------------------------------------ VMMDriver

    @_on_host
    def deploy(self, host: HostRef, spec: DomainSpec) -> DomainInfo:
        """Start the guest, or return the running one: a second call never starts a second qemu."""
        run = self.run_dir(spec.deploy_id)
        if self._pid(run) is not None:
            return self.poll(host, spec.deploy_id)
        if self.poll(host, spec.deploy_id).state == DomainState.SAVED:
            return self.restore(host, spec)  # never throw a saved guest's memory away
        self._check_inputs(spec)
        accel = spec.accel or self.accel(host).accel
        self._prepare_run_dir(run, spec)
        iso = self._seed_iso(host, spec, run) if spec.context else None
        argv = build_argv(spec, run, accel, self.binary, self.default_cmdline, iso)
        self.ops.write_text(run / "argv.json", json.dumps(argv, indent=1) + "\n")
        return self._launch(host, run, spec.deploy_id, argv)

    def _seed_iso(self, host: HostRef, spec: DomainSpec, run: Path) -> Path:
        """The NoCloud seed in the run dir; built here and copied when the host is remote."""
        dest = run / "context.iso"
        if host.transport == "local":
            return build_seed_iso(spec, dest)
        with tempfile.TemporaryDirectory(prefix="vocloud-seed-") as tmp:
            self.ops.put_file(build_seed_iso(spec, Path(tmp) / "context.iso"), dest)
        return dest

    def _prepare_run_dir(self, run: Path, spec: DomainSpec) -> None:
        """A fresh boot: keep the previous console as console.prev.log, forget old state."""
        self.ops.mkdir(run)
        if self.ops.exists(run / "console.log"):
            prev = self.full_console(run)
            self.ops.write_text(run / "console.prev.log", prev.decode(errors="replace"))
            self.ops.remove(run / "console.log")
            self.ops.remove(run / "console.before.log")
        for name in ("ready", "boot_offset", "intent", "powerdown_at", "qemu.log", "qemu.pid",
                     "state.sav"):
            self.ops.remove(run / name)
        self.ops.write_text(run / "spec.json", spec_to_json(spec))

    def _launch(self, host: HostRef, run: Path, deploy_id: str, argv: list[str]) -> DomainInfo:
        rc, why = self.ops.start_daemon(argv, run / "qemu.log", self.start_timeout)
        if rc != 0:
            detail = self._failure_detail(run, why or f"qemu exited with status {rc} while starting")
            return DomainInfo(deploy_id, DomainState.FAILED, detail)
        return self.poll(host, deploy_id)

    @_on_host
    def poll(self, host: HostRef, deploy_id: str) -> DomainInfo:
        return self._poll(deploy_id)

    def _poll(self, deploy_id: str) -> DomainInfo:
        """:meth:`poll` on the ops already bound (the monitor binds prefetched ones)."""
        run = self.run_dir(deploy_id)
        if not self.ops.exists(run / "spec.json"):
            return DomainInfo(deploy_id, DomainState.MISSING)
        pid = self._pid(run)
        if pid is None:
            return self._poll_dead(run, deploy_id)
        return self._poll_alive(run, deploy_id, pid)

    def _poll_dead(self, run: Path, deploy_id: str) -> DomainInfo:
        intent = self._intent(run)
        if intent == "saved" and self.ops.exists(run / "state.sav"):
            return self._info(run, deploy_id, DomainState.SAVED)
        if intent == "shutdown":
            return self._info(run, deploy_id, DomainState.OFF)
        tail = self._console_tail(run, 3)
        if any(m in tail for m in POWERED_OFF_MARKERS):
            return self._info(run, deploy_id, DomainState.OFF, "the guest powered itself off")
        return self._info(run, deploy_id, DomainState.FAILED,
                          self._failure_detail(run, "the qemu process is gone"))

    def _poll_alive(self, run: Path, deploy_id: str, pid: int) -> DomainInfo:
        try:
            status = str(self.ops.qmp(run / "qmp.sock", "query-status").get("status", ""))
        except QMPError:
            status = "unknown"  # busy socket or still starting: judge by the console
        if status in ("paused", "suspended"):
            return self._info(run, deploy_id, DomainState.PAUSED, pid=pid)
        if status in ("inmigrate", "restore-vm"):
            return self._info(run, deploy_id, DomainState.BOOTING, f"restoring (qemu: {status})", pid)
        if status in ("finish-migrate", "postmigrate", "save-vm"):
            return self._info(run, deploy_id, DomainState.SHUTTING_DOWN, f"saving (qemu: {status})", pid)
        if status in ("internal-error", "io-error", "guest-panicked"):
            return self._info(run, deploy_id, DomainState.FAILED,
                              self._failure_detail(run, f"qemu status {status}"), pid)
        if status == "shutdown" or self._intent(run) == "shutdown":
            if status == "running":
                self._press_again(run)
            return self._info(run, deploy_id, DomainState.SHUTTING_DOWN, pid=pid)
        return self._boot_state(run, deploy_id, pid)

    def _boot_state(self, run: Path, deploy_id: str, pid: int) -> DomainInfo:
        """RUNNING only once the guest printed its marker; a panic on the console is a failure."""
        if self.ops.exists(run / "ready"):
            return self._info(run, deploy_id, DomainState.RUNNING, pid=pid)
        console = self._boot_console(run)
        if self._marker(self._spec(run)) in console:
            self.ops.write_text(run / "ready", f"{time.time():.3f}\n")
            return self._info(run, deploy_id, DomainState.RUNNING, pid=pid)
        panic = _first_line_with(console, PANIC_MARKERS)
        if panic:
            return self._info(run, deploy_id, DomainState.FAILED,
                              self._failure_detail(run, f"the guest failed: {panic}"), pid)
        return self._info(run, deploy_id, DomainState.BOOTING, pid=pid)

    @_on_host
    def shutdown(self, host: HostRef, deploy_id: str, hard: bool) -> None:
        """Graceful: ACPI power button, the guest powers off. Hard: ``quit``, then SIGKILL."""
        run = self.run_dir(deploy_id)
        pid = self._pid(run)
        if pid is None:
            if self.ops.exists(run / "spec.json"):
                self._set_intent(run, "shutdown")
            return
        self._set_intent(run, "shutdown")
        if hard:
            self._kill(run, pid)
            return
        try:
            if self.ops.qmp(run / "qmp.sock", "query-status").get("status") == "paused":
                self.ops.qmp(run / "qmp.sock", "cont")  # a paused guest cannot see the button
            self._press_power_button(run)
        except QMPError as exc:
            raise DriverError(f"{deploy_id}: ACPI power-down request failed: {exc}") from exc

    def _press_power_button(self, run: Path) -> None:
        self.ops.qmp(run / "qmp.sock", "system_powerdown")
        self.ops.write_text(run / "powerdown_at", f"{time.time():.3f}\n")

    def _press_again(self, run: Path) -> None:
        """Re-press the button every few seconds while the guest runs on.

        A guest still booting (or whose ACPI daemon is not listening yet) drops the event; the
        lifecycle loop would then escalate to a hard stop although a second press would work.
        """
        raw = self.ops.read_bytes(run / "powerdown_at")
        try:
            last = float(raw) if raw else 0.0
        except ValueError:
            last = 0.0
        if time.time() - last >= POWERDOWN_REPEAT_S:
            with contextlib.suppress(QMPError):
                self._press_power_button(run)

    def _kill(self, run: Path, pid: int, grace: float = 3.0) -> None:
        """``quit`` over QMP (clean exit, flushed disks); SIGTERM/SIGKILL if qemu is wedged."""
        try:
            self.ops.qmp(run / "qmp.sock", "quit", timeout=2.0)
        except QMPError:
            self.ops.kill(pid, signal.SIGTERM)
        if self._wait_gone(run, grace):
            return
        self.ops.kill(pid, signal.SIGKILL)
        if not self._wait_gone(run, grace):
            raise DriverError(f"qemu pid {pid} ({run.name}) survived SIGKILL")

    def _wait_gone(self, run: Path, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._pid(run) is None:
                return True
            time.sleep(0.05)
        return self._pid(run) is None

    @_on_host
    def reboot(self, host: HostRef, deploy_id: str) -> None:
        """Hard reset; the guest is BOOTING until it prints its marker again."""
        run = self.run_dir(deploy_id)
        pid = self._require_alive(run, deploy_id, "reboot")
        del pid
        self.ops.write_text(run / "boot_offset", f"{self.ops.size(run / 'console.log')}\n")
        self.ops.remove(run / "ready")
        self._qmp(run, deploy_id, "system_reset")

    @_on_host
    def suspend(self, host: HostRef, deploy_id: str) -> None:
        """Pause the vCPUs (``stop``); memory stays allocated. Not in VMMDriver yet (see docs)."""
        run = self.run_dir(deploy_id)
        self._require_alive(run, deploy_id, "suspend")
        self._set_intent(run, "suspend")
        self._qmp(run, deploy_id, "stop")

    @_on_host
    def resume(self, host: HostRef, deploy_id: str) -> None:
        """Undo :meth:`suspend` (``cont``)."""
        run = self.run_dir(deploy_id)
        self._require_alive(run, deploy_id, "resume")
        self._qmp(run, deploy_id, "cont")
        self._set_intent(run, "")

    @_on_host
    def save(self, host: HostRef, deploy_id: str) -> None:
        """Stop the guest, migrate its state to ``state.sav``, quit qemu: SAVED, no process."""
        run = self.run_dir(deploy_id)
        pid = self._require_alive(run, deploy_id, "save")
        self._set_intent(run, "save")
        partial, final = run / "state.sav.part", run / "state.sav"
        self.ops.remove(partial)
        self.ops.remove(final)
        self._qmp(run, deploy_id, "stop")
        # The shell renames only after cat has written everything: "completed" in query-migrate
        # means qemu closed the pipe, not that cat has flushed, so wait for the final name.
        part_q, final_q = shlex.quote(str(partial)), shlex.quote(str(final))
        try:
            self._qmp(run, deploy_id, "migrate",
                      {"uri": f"exec:cat > {part_q} && mv {part_q} {final_q}"})
            self._wait_migration(run, deploy_id, timeout=120.0)
            self._wait_file(final, deploy_id, timeout=30.0)
        except DriverError:
            self._undo_save(run, deploy_id)
            raise
        self._set_intent(run, "saved")
        self._kill(run, pid)

    def _undo_save(self, run: Path, deploy_id: str) -> None:
        """A failed save leaves the guest running as before, not silently paused."""
        with contextlib.suppress(DriverError):
            self._qmp(run, deploy_id, "migrate_cancel")
        with contextlib.suppress(DriverError):
            self._qmp(run, deploy_id, "cont")
        self._set_intent(run, "")
        self.ops.remove(run / "state.sav.part")

    def _wait_file(self, path: Path, deploy_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.ops.exists(path):
            if time.monotonic() > deadline:
                raise DriverError(f"{deploy_id}: saved state {path} was not written")
            time.sleep(0.02)

    def _wait_migration(self, run: Path, deploy_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self._qmp(run, deploy_id, "query-migrate") or {}
            status = info.get("status", "")
            if status == "completed":
                return
            if status in ("failed", "cancelled"):
                raise DriverError(f"{deploy_id}: saving state failed: {info.get('error-desc', status)}")
            time.sleep(0.05)
        raise DriverError(f"{deploy_id}: saving state did not finish within {timeout:g} s")

    @_on_host
    def restore(self, host: HostRef, spec: DomainSpec) -> DomainInfo:
        """Start qemu with the saved command line and ``-incoming``, then continue the guest."""
        run = self.run_dir(spec.deploy_id)
        if self._pid(run) is not None:
            return self.poll(host, spec.deploy_id)
        if not self.ops.exists(run / "state.sav"):
            raise DriverError(f"{spec.deploy_id}: no saved state to restore ({run / 'state.sav'})")
        self._check_inputs(spec)
        raw = self.ops.read_bytes(run / "argv.json")
        if not raw:
            raise DriverError(f"{spec.deploy_id}: saved command line {run / 'argv.json'} is missing")
        argv = [*json.loads(raw), "-incoming", f"exec:cat {shlex.quote(str(run / 'state.sav'))}"]
        self.ops.remove(run / "qemu.log")
        self._set_intent(run, "restore")
        info = self._launch(host, run, spec.deploy_id, argv)
        if info.state == DomainState.FAILED:
            return info
        self._wait_incoming(run, spec.deploy_id, timeout=120.0)
        self._qmp(run, spec.deploy_id, "cont")
        self._set_intent(run, "")
        self.ops.remove(run / "state.sav")
        return self.poll(host, spec.deploy_id)

    def _wait_incoming(self, run: Path, deploy_id: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = (self._qmp(run, deploy_id, "query-status") or {}).get("status")
            if status != "inmigrate":
                return
            time.sleep(0.05)
        raise DriverError(f"{deploy_id}: restoring state did not finish within {timeout:g} s")

    def migrate(self, src: HostRef, dst: HostRef, spec: DomainSpec) -> DomainInfo:
        """Live migration to ``dst`` (``spec`` staged there); see :mod:`.qemu_migrate`."""
        if src == dst:
            return self.poll(src, spec.deploy_id)
        return migrate_live(self, src, dst, spec, build_argv, spec_to_json(spec))

    @_on_host
    def console(self, host: HostRef, deploy_id: str, max_bytes: int = 65536) -> str:
        """The tail of the guest's serial console (``vocloud vm log``), kept after a failure;
        a migrated guest's console goes on from what it wrote on the hosts it came from."""
        run = self.run_dir(deploy_id)
        size = self.ops.size(run / "console.log")
        if not size and not self.ops.exists(run / "console.log"):
            return ""
        raw = self.ops.read_bytes(run / "console.log", max(0, size - max_bytes)) or b""
        if len(raw) < max_bytes and self.ops.exists(run / "console.before.log"):
            before = self.ops.read_bytes(run / "console.before.log") or b""
            raw = (before + raw)[-max_bytes:]
        return raw.decode(errors="replace")

    def full_console(self, run: Path) -> bytes:
        """Everything the guest wrote since its boot, on this host and the ones before it."""
        before = self.ops.read_bytes(run / "console.before.log") or b""
        return before + (self.ops.read_bytes(run / "console.log") or b"")

    @_on_host
    def cleanup(self, host: HostRef, deploy_id: str) -> None:
        """Kill the guest if it still runs and remove its run dir (disks belong to storage)."""
        run = self.run_dir(deploy_id)
        pid = self._pid(run)
        if pid is not None:
            self._kill(run, pid)
        self.ops.remove_tree(run)

    @_on_host
    def monitor(self, host: HostRef) -> HostInfo:
        """Capacity from /proc plus every guest found in the state dir (survives restarts).

        ``used_*`` sum our guests (CPUs busy on average, RSS), as the sim driver does; what the
        rest of the machine uses shows in the ``FREE_MEM_MIB`` attribute.

        On a remote host the reads come from one snapshot command (transport/snapshot.py), so a
        pass costs one round trip per host instead of ~9 per guest; the poll logic is the same.
        """
        accel = self.accel(host)
        snapshot = getattr(self.ops, "snapshot", None) if self.batch_monitor else None
        snap = snapshot(self.host_dir) if snapshot is not None else None
        if snap is None:
            return self._monitor(accel)
        with self._ops_bound(PrefetchedOps(self.ops, snap, self.host_dir)):
            return self._monitor(accel)

    def _monitor(self, accel: AccelResult) -> HostInfo:
        ncpu, total_mib, avail_mib = self.ops.resources()
        domains: dict[str, DomainInfo] = {}
        for name in self.ops.list_dir(self.host_dir):
            if self.ops.exists(self.host_dir / name / "spec.json"):
                domains[name] = self._poll(name)
        return HostInfo(
            total_cpu=float(ncpu), total_mem_mib=total_mib,
            used_cpu=round(sum(d.cpu_used for d in domains.values()), 3),
            used_mem_mib=sum(d.memory_mib for d in domains.values()), domains=domains,
            attrs={"HYPERVISOR": "qemu", "ACCEL": accel.accel, "ACCEL_REASON": accel.reason,
                   "FREE_MEM_MIB": str(avail_mib)},
        )

    # ------------------------------------------------------------ helpers

    def _require_alive(self, run: Path, deploy_id: str, action: str) -> int:
        pid = self._pid(run)
        if pid is None:
            raise DriverError(f"cannot {action} {deploy_id}: its qemu process is not running")
        return pid

    def _qmp(self, run: Path, deploy_id: str, command: str,
             arguments: dict[str, Any] | None = None) -> Any:
        try:
            return self.ops.qmp(run / "qmp.sock", command, arguments)
        except QMPError as exc:
            raise DriverError(f"{deploy_id}: QMP {command} failed: {exc}") from exc

    def live_domains(self) -> list[tuple[str, int]]:
        """(deploy id, pid) of every qemu process this state dir owns; for tests and cleanup."""
        out: list[tuple[str, int]] = []
        for name in self.ops.list_dir(self.state_dir):
            run = self.state_dir / name
            pid = self._pid(run) if self.ops.exists(run / "spec.json") else None
            if pid is not None:
                out.append((name, pid))
        return out


def _first_line_with(text: str, needles: tuple[str, ...]) -> str:
    """The first console line holding one of ``needles``: the cause, before its stack trace."""
    for line in text.splitlines():
        if any(n in line for n in needles):
            return line.strip()
    return ""


def _no_probe_guest() -> tuple[Path, Path, str]:
    """Drivers do not build guests: the composition root (or a test) passes ``probe_guest``."""
    raise DriverError("the KVM probe needs a probe guest and none was configured "
                      "(set VOCLOUD_ACCEL=tcg or kvm to skip the probe)")
