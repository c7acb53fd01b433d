"""The ``sim`` virtualization driver: guests that exist only as small files.

Each host gets a directory; each guest is one JSON file named by its deploy id, holding its state
and the times its boot or shutdown started. Because the files outlive the daemon, a daemon that
is killed and restarted finds its "guests" exactly as it would find real qemu processes — which is
what the restart tests need. Boot and shutdown take configurable delays, read against a clock the
caller supplies (wall time in the daemon, a virtual clock in tests and the simulator).

Per-host knobs (host attributes): ``SIM_BOOT_DELAY``, ``SIM_SHUTDOWN_DELAY`` (seconds). A host
is unreachable while ``<dir>/UNREACHABLE`` exists. Per-VM knob (template attribute ``SIM_BOOT``):
``fail`` makes the guest crash during boot, ``hang`` makes it never come up.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vocloud.drivers.base import DomainInfo, DomainSpec, DomainState, HostInfo, HostRef
from vocloud.errors import DriverError, HostUnreachable

_SAFE = re.compile(r"^[A-Za-z0-9._-]+$")


class SimDriver:
    name = "sim"

    def __init__(self, root: Path, boot_delay: float = 1.0, shutdown_delay: float = 0.5,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = root
        self.boot_delay = boot_delay
        self.shutdown_delay = shutdown_delay
        self.clock = clock
        self._made: set[str] = set()  # host directories this process made (or found) already

    # ------------------------------------------------------------ files
    def host_dir(self, host: HostRef) -> Path:
        if not _SAFE.match(host.name):
            raise DriverError(f"bad host name {host.name!r}")
        d = self.root / host.name
        if host.name not in self._made:  # one mkdir per host, not one per guest operation
            d.mkdir(parents=True, exist_ok=True)
            self._made.add(host.name)
        return d

    def _reachable(self, host: HostRef) -> Path:
        d = self.host_dir(host)
        if (d / "UNREACHABLE").exists():
            raise HostUnreachable(f"host {host.name} does not answer (sim: UNREACHABLE is set)")
        return d

    def _path(self, host: HostRef, deploy_id: str) -> Path:
        if not _SAFE.match(deploy_id):
            raise DriverError(f"bad deploy id {deploy_id!r}")
        return self._reachable(host) / f"{deploy_id}.json"

    def _load(self, path: Path) -> dict[str, Any] | None:
        try:
            with open(path, "rb") as f:
                return dict(json.loads(f.read()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise DriverError(f"sim domain file {path} is unreadable: {exc}") from None

    def _save(self, path: Path, doc: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(doc))
        except FileNotFoundError:  # the host directory was removed behind our back
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(doc))
        os.replace(tmp, path)

    def _delay(self, host: HostRef, key: str, default: float) -> float:
        try:
            return float(host.attrs.get(key, default))
        except ValueError:
            return default

    # ------------------------------------------------------------ state
    def _info(self, host: HostRef, deploy_id: str, doc: dict[str, Any] | None) -> DomainInfo:
        return self._state(deploy_id, doc, self.clock())

    def _state(self, deploy_id: str, doc: dict[str, Any] | None, now: float) -> DomainInfo:
        """The guest's state at ``now`` from its file's ``doc`` (None: there is no file)."""
        if doc is None:
            return DomainInfo(deploy_id, DomainState.MISSING)
        state = doc["state"]
        if state == "booting":
            if doc.get("mode") == "fail":
                return DomainInfo(deploy_id, DomainState.FAILED, "sim: guest crashed during boot")
            if doc.get("mode") != "hang" and now - doc["since"] >= doc["boot_delay"]:
                return self._as(deploy_id, doc, DomainState.RUNNING)
            return self._as(deploy_id, doc, DomainState.BOOTING)
        if state == "stopping":
            if now - doc["since"] >= doc["shutdown_delay"]:
                return DomainInfo(deploy_id, DomainState.MISSING)
            return self._as(deploy_id, doc, DomainState.SHUTTING_DOWN)
        return self._as(deploy_id, doc, DomainState(state.upper()))

    @staticmethod
    def _as(deploy_id: str, doc: dict[str, Any], state: DomainState) -> DomainInfo:
        return DomainInfo(deploy_id, state, cpu_used=float(doc.get("cpu", 0)),
                          memory_mib=int(doc.get("memory", 0)))

    # ------------------------------------------------------------ VMMDriver
    def deploy(self, host: HostRef, spec: DomainSpec) -> DomainInfo:
        path = self._path(host, spec.deploy_id)
        doc = self._load(path)
        info = self._info(host, spec.deploy_id, doc)
        if info.state not in (DomainState.MISSING, DomainState.OFF):
            return info  # idempotent: it is already there
        doc = {
            "state": "booting", "since": self.clock(), "vm_id": spec.vm_id, "name": spec.name,
            "cpu": spec.cpu, "memory": spec.memory_mib,
            "boot_delay": self._delay(host, "SIM_BOOT_DELAY", self.boot_delay),
            "shutdown_delay": self._delay(host, "SIM_SHUTDOWN_DELAY", self.shutdown_delay),
            "mode": (spec.sim_boot or "ok").lower(),
            "boots": int((doc or {}).get("boots", 0)) + 1,
        }
        self._save(path, doc)
        return self._info(host, spec.deploy_id, doc)

    def deploy_many(self, host: HostRef, specs: Sequence[DomainSpec]) -> list[DomainInfo | DriverError]:
        """``deploy`` for many guests of one host (drivers/base.py::BulkBoot): the host is checked
        once and its directory listed once, so a new guest costs one file write (and a rename)
        instead of a poll, a read and a write; a guest whose file exists takes ``deploy``'s path."""
        d = self._reachable(host)
        try:
            present = set(os.listdir(d))
        except FileNotFoundError:  # the host directory was removed behind our back
            d.mkdir(parents=True, exist_ok=True)
            present = set()
        boot_delay = self._delay(host, "SIM_BOOT_DELAY", self.boot_delay)
        shutdown_delay = self._delay(host, "SIM_SHUTDOWN_DELAY", self.shutdown_delay)
        now = self.clock()
        ddir = str(d)
        out: list[DomainInfo | DriverError] = []
        for spec in specs:
            try:
                if not _SAFE.match(spec.deploy_id):
                    raise DriverError(f"bad deploy id {spec.deploy_id!r}")
                name = f"{spec.deploy_id}.json"
                if name in present:  # there already (or a stopped guest's file): deploy decides
                    out.append(self.deploy(host, spec))
                    continue
                doc = {"state": "booting", "since": now, "vm_id": spec.vm_id, "name": spec.name,
                       "cpu": spec.cpu, "memory": spec.memory_mib, "boot_delay": boot_delay,
                       "shutdown_delay": shutdown_delay, "mode": (spec.sim_boot or "ok").lower(),
                       "boots": 1}
                tmp = os.path.join(ddir, spec.deploy_id + ".tmp")  # what _save does, minus pathlib
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    os.write(fd, json.dumps(doc).encode())
                finally:
                    os.close(fd)
                os.replace(tmp, os.path.join(ddir, name))
                out.append(self._info(host, spec.deploy_id, doc))
            except HostUnreachable:
                raise
            except DriverError as exc:
                out.append(exc)
            except OSError as exc:
                out.append(DriverError(f"sim: cannot write guest {spec.deploy_id} on {host.name}: {exc}"))
        return out

    def poll(self, host: HostRef, deploy_id: str) -> DomainInfo:
        path = self._path(host, deploy_id)
        doc = self._load(path)
        info = self._info(host, deploy_id, doc)
        if info.state == DomainState.MISSING and doc is not None:
            path.unlink(missing_ok=True)  # a finished shutdown: the guest is gone
        return info

    def shutdown(self, host: HostRef, deploy_id: str, hard: bool) -> None:
        path = self._path(host, deploy_id)
        doc = self._load(path)
        if doc is None:
            return
        if hard:
            path.unlink(missing_ok=True)
            return
        if doc["state"] != "stopping":
            doc.update(state="stopping", since=self.clock())
            self._save(path, doc)

    def reboot(self, host: HostRef, deploy_id: str) -> None:
        path = self._path(host, deploy_id)
        doc = self._load(path)
        if doc is None:
            raise DriverError(f"cannot reboot {deploy_id}: no such guest on {host.name}")
        doc.update(state="booting", since=self.clock())
        self._save(path, doc)

    def save(self, host: HostRef, deploy_id: str) -> None:
        path = self._path(host, deploy_id)
        doc = self._load(path)
        if doc is None:
            raise DriverError(f"cannot save {deploy_id}: no such guest on {host.name}")
        doc.update(state="saved", since=self.clock())
        self._save(path, doc)

    def restore(self, host: HostRef, spec: DomainSpec) -> DomainInfo:
        path = self._path(host, spec.deploy_id)
        doc = self._load(path)
        if doc is not None and doc["state"] == "saved":
            doc.update(state="running", since=self.clock())
            self._save(path, doc)
            return self._info(host, spec.deploy_id, doc)
        return self.deploy(host, spec)

    def migrate(self, src: HostRef, dst: HostRef, spec: DomainSpec) -> DomainInfo:
        spath = self._path(src, spec.deploy_id)
        doc = self._load(spath)
        if doc is None:
            raise DriverError(f"cannot migrate {spec.deploy_id}: no such guest on {src.name}")
        dpath = self._path(dst, spec.deploy_id)
        self._save(dpath, doc)
        spath.unlink(missing_ok=True)
        return self._info(dst, spec.deploy_id, doc)

    def console(self, host: HostRef, deploy_id: str, max_bytes: int = 65536) -> str:
        """A sim guest has no console; this reports its recorded life instead."""
        doc = self._load(self._path(host, deploy_id))
        if doc is None:
            return ""
        text = (f"sim guest {deploy_id} ({doc.get('name', '')}): state {doc['state']} since "
                f"{doc['since']:.3f}, boots {doc.get('boots', 1)}, mode {doc.get('mode', 'ok')}\n")
        return text[-max_bytes:]

    def cleanup(self, host: HostRef, deploy_id: str) -> None:
        self._path(host, deploy_id).unlink(missing_ok=True)

    def monitor(self, host: HostRef) -> HostInfo:
        got = self._probe(host)
        if isinstance(got, DriverError):
            raise got
        return got

    def monitor_many(self, hosts: Sequence[HostRef]) -> list[HostInfo | DriverError]:
        """``monitor`` for many hosts in one call (drivers/base.py::BulkMonitor): one answer per
        host, in order, its HostInfo or the DriverError (HostUnreachable too) it met. At 2,000
        hosts / 10,000 guests the per-host path spent most of a monitor pass in pathlib and
        buffered opens; this reads each guest file with plain ``os`` calls. A subclass that
        overrides ``monitor`` (a test watching its probes) is still asked host by host."""
        if type(self).monitor is not SimDriver.monitor:
            out: list[HostInfo | DriverError] = []
            for h in hosts:
                try:
                    out.append(self.monitor(h))
                except DriverError as exc:
                    out.append(exc)
            return out
        return [self._probe(h) for h in hosts]

    def _probe(self, host: HostRef) -> HostInfo | DriverError:
        """One host's probe: one directory scan, one read per guest; a finished shutdown's file
        is removed, as poll() does."""
        try:
            d = str(self.host_dir(host))
        except DriverError as exc:
            return exc
        if os.path.exists(os.path.join(d, "UNREACHABLE")):
            return HostUnreachable(f"host {host.name} does not answer (sim: UNREACHABLE is set)")
        try:
            total_cpu = float(host.attrs.get("TOTAL_CPU", "0"))
            total_mem = int(float(host.attrs.get("TOTAL_MEM", "0")))
        except ValueError as exc:
            return DriverError(f"sim host {host.name} has bad capacity attributes: {exc}")
        try:
            names = sorted(n for n in os.listdir(d) if n.endswith(".json"))
        except FileNotFoundError:
            names = []
        now = self.clock()
        domains: dict[str, DomainInfo] = {}
        used_cpu, used_mem = 0.0, 0
        for name in names:  # plain strings and os calls: 10,000 guests per pass at scale
            path = f"{d}/{name}"
            try:
                doc = _read_doc(path)
            except (OSError, ValueError) as exc:
                return DriverError(f"sim domain file {path} is unreadable: {exc}")
            stem = name[:-5]
            info = self._state(stem, doc, now)
            if info.state == DomainState.MISSING:
                if doc is not None:
                    _unlink(path)  # a finished shutdown, as poll() does
                continue
            domains[stem] = info
            if info.state != DomainState.SAVED:
                used_cpu += info.cpu_used
                used_mem += info.memory_mib
        return HostInfo(total_cpu=total_cpu, total_mem_mib=total_mem, used_cpu=used_cpu,
                        used_mem_mib=used_mem, domains=domains, attrs={"HYPERVISOR": "sim"})

    # ------------------------------------------------------------ for tests and operators
    def set_reachable(self, host: HostRef, reachable: bool) -> None:
        flag = self.host_dir(host) / "UNREACHABLE"
        if reachable:
            flag.unlink(missing_ok=True)
        else:
            flag.touch()


def _read_doc(path: str) -> dict[str, Any] | None:
    """A guest file's document, None if it is gone (removed since the directory was listed)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        parts = [os.read(fd, 65536)]
        while len(parts[-1]) == 65536:
            parts.append(os.read(fd, 65536))
    finally:
        os.close(fd)
    return dict(json.loads(b"".join(parts).decode()))


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
