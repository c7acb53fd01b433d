"""Decide between ``-accel kvm`` and ``-accel tcg`` by booting a guest, not by looking at /dev/kvm.

On the grid sites this toolkit targets, /dev/kvm can open and ``-accel kvm`` can start while no
guest ever runs: nested or paravirtual KVM (PVM, ``/sys/module/kvm_pvm``) accepts the ioctls and
then either hangs the guest silently or dies with "KVM internal error". Only a real boot tells, so
the probe boots the tiny test guest under KVM with a short timeout and looks for its ready marker
on the serial console. Anything else (no /dev/kvm, no marker in time, qemu refused) selects TCG,
which is slow but always works.

A probe costs up to ``timeout`` seconds, so results are cached per host: in memory for the life of
the driver and in ``<state_dir>/accel.json``, keyed by everything that could change the answer
(qemu's version, the host kernel, whether /dev/kvm opens), so a restarted daemon does not probe again.
``VOCLOUD_ACCEL=kvm|tcg`` skips the probe for sites that know better.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

PROBE_TIMEOUT = 10.0
#: The console line a vocloud guest prints once it is up (guest/build.py writes it into the
#: guest's init): the probe's and the qemu driver's sign of a running guest.
READY_MARKER = "VOCLOUD-READY"


@dataclass(frozen=True, slots=True)
class AccelResult:
    """The accelerator to use and why, for the host attribute and for the admin reading it."""

    accel: str  # "kvm" or "tcg"
    reason: str
    probe_seconds: float = 0.0
    key: str = ""


def kvm_usable_device(path: str = "/dev/kvm") -> str | None:
    """None if /dev/kvm can be opened read-write, else why not (the cheap first check)."""
    if not os.path.exists(path):
        return f"{path} does not exist"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"cannot open {path}: {exc.strerror}"
    os.close(fd)
    return None


def qemu_version(binary: str = "qemu-system-x86_64") -> str:
    try:
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def probe_argv(binary: str, kernel: Path, initrd: Path, cmdline: str, console: Path) -> list[str]:
    """The smallest machine that still exercises what a real guest needs from KVM."""
    return [
        binary, "-M", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "128",
        "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
        "-serial", f"file:{console}", "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", cmdline,
    ]


def boot_under_kvm(binary: str, kernel: Path, initrd: Path, cmdline: str,
                   timeout: float = PROBE_TIMEOUT) -> tuple[bool, str]:
    """Boot once under KVM; (True, detail) if the ready marker appeared within ``timeout``."""
    with tempfile.TemporaryDirectory(prefix="vocloud-accel-") as tmp:
        console = Path(tmp) / "console.log"
        console.touch()
        argv = probe_argv(binary, kernel, initrd, cmdline, console)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if READY_MARKER.encode() in console.read_bytes():
                    return True, "KVM guest reached the ready marker"
                if proc.poll() is not None:
                    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                    return False, f"qemu -accel kvm exited {proc.returncode}: {err[-300:]}"
                time.sleep(0.05)
            tail = console.read_bytes()[-200:].decode(errors="replace").strip()
            return False, f"KVM guest printed no ready marker within {timeout:g} s" + (
                f" (console: {tail})" if tail else " (console empty)")
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            if proc.stderr:
                proc.stderr.close()


class AccelProbe:
    """Per-host cache around :func:`boot_under_kvm`; local host only for now."""

    def __init__(self, state_dir: Path, binary: str = "qemu-system-x86_64",
                 timeout: float = PROBE_TIMEOUT, forced: str = "") -> None:
        """``forced``: ``kvm`` or ``tcg`` skips the probe (the daemon's ``accel`` setting)."""
        self.state_dir = state_dir
        self.forced = forced.strip().lower()
        self.binary = binary
        self.timeout = timeout
        self._memo: dict[str, AccelResult] = {}

    def _cache_file(self) -> Path:
        return self.state_dir / "accel.json"

    def _load(self, key: str) -> AccelResult | None:
        try:
            doc = json.loads(self._cache_file().read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("key") != key:
            return None
        return AccelResult(accel=str(doc["accel"]), reason=str(doc["reason"]),
                           probe_seconds=float(doc.get("probe_seconds", 0)), key=key)

    def _store(self, result: AccelResult) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._cache_file().with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(result), indent=2) + "\n")
        tmp.replace(self._cache_file())

    def get(self, host_name: str, guest: Callable[[], tuple[Path, Path, str]]) -> AccelResult:
        """The cached answer for this host, probing once if nothing valid is cached.

        ``guest`` returns (kernel, initrd, cmdline) of the probe guest; it is called only when a
        probe really runs, because finding (or building) the guest image is itself not free.
        """
        if self.forced in ("kvm", "tcg"):
            return AccelResult(self.forced, "forced by the accel setting (VOCLOUD_ACCEL)")
        if host_name in self._memo:
            return self._memo[host_name]
        device_problem = kvm_usable_device()
        key = json.dumps([qemu_version(self.binary), os.uname().release, device_problem is None])
        result = self._load(key)
        if result is None:
            result = self._probe(guest, device_problem, key)
            self._store(result)
        self._memo[host_name] = result
        return result

    def _probe(self, guest: Callable[[], tuple[Path, Path, str]], device_problem: str | None,
               key: str) -> AccelResult:
        if device_problem is not None:
            return AccelResult("tcg", device_problem, key=key)
        kernel, initrd, cmdline = guest()
        t0 = time.monotonic()
        ok, detail = boot_under_kvm(self.binary, kernel, initrd, cmdline, self.timeout)
        took = round(time.monotonic() - t0, 2)
        return AccelResult("kvm" if ok else "tcg", detail, probe_seconds=took, key=key)
