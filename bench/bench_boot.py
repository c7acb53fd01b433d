"""Benchmark: deploy-to-RUNNING of the tiny guest through the qemu driver (target: within 1.2x of
a bare ``qemu-system-x86_64`` boot of the same guest to its console marker, same run).

Both sides boot the same kernel, initramfs, command line, machine type, memory and accelerator
(whatever the KVM probe chose); runs alternate bare/driver so drift on a shared machine hits both.
The bare side starts qemu and polls its serial log for ``VOCLOUD-READY``; the driver side times
``deploy`` plus ``poll`` until RUNNING, i.e. everything the lifecycle loop would wait for (command
line, run dir, daemonize, QMP, marker). With ``--many N`` it also starts N guests at once through
the driver and reports the time until all are RUNNING (DESIGN.md measured 20 in ~31 s here).

    .venv/bin/python bench/bench_boot.py [--runs 5] [--many 20] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vocloud.devtools.localprocs import poll_until
from vocloud.drivers.accel import READY_MARKER, AccelProbe
from vocloud.drivers.base import DomainSpec, DomainState, HostRef
from vocloud.drivers.vmm.qemu import QemuDriver
from vocloud.guest.build import GuestImage, cache_root, ensure_image, probe_guest

TARGET_RATIO = 1.2
POLL_S = 0.02
TIMEOUT_S = 180.0
LOCAL = HostRef(id=0, name="local", vmm="qemu")


def bare_boot(image: GuestImage, accel: str, workdir: Path, memory_mib: int) -> float:
    """Seconds from exec to the marker on the serial log, qemu started by hand."""
    log = workdir / "bare.log"
    log.unlink(missing_ok=True)
    log.touch()
    argv = ["qemu-system-x86_64", "-M", "microvm", "-accel", accel, "-m", str(memory_mib),
            "-nodefaults", "-no-user-config", "-display", "none", "-monitor", "none",
            "-serial", f"file:{log}", "-kernel", str(image.vmlinux), "-initrd", str(image.initramfs),
            "-append", image.cmdline]
    if accel == "kvm":
        argv += ["-cpu", "host"]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"bare qemu exited (rc={proc.returncode}) before the marker")
        return READY_MARKER.encode() in log.read_bytes()

    try:
        poll_until(ready, TIMEOUT_S, "bare qemu's ready marker on its serial log", interval=POLL_S)
        return time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait()


def spec_for(image: GuestImage, vm_id: int, memory_mib: int) -> DomainSpec:
    return DomainSpec(vm_id=vm_id, deploy_id=f"vc-{vm_id}", name=f"bench-{vm_id}", cpu=1.0, vcpu=1,
                      memory_mib=memory_mib,
                      kernel=str(image.vmlinux), initrd=str(image.initramfs),
                      kernel_cmd=image.cmdline)


def driver_boot(drv: QemuDriver, image: GuestImage, vm_id: int, memory_mib: int) -> float:
    """Seconds from ``deploy`` to ``poll`` saying RUNNING; the guest is removed afterwards."""
    spec = spec_for(image, vm_id, memory_mib)
    t0 = time.monotonic()
    try:
        drv.deploy(LOCAL, spec)
        wait_running(drv, [spec.deploy_id], t0)
        return time.monotonic() - t0
    finally:
        drv.cleanup(LOCAL, spec.deploy_id)


def wait_running(drv: QemuDriver, ids: list[str], t0: float) -> None:
    pending = set(ids)

    def all_running() -> bool:
        for did in sorted(pending):
            info = drv.poll(LOCAL, did)
            if info.state == DomainState.RUNNING:
                pending.discard(did)
            elif info.state in (DomainState.FAILED, DomainState.MISSING):
                raise RuntimeError(f"{did} is {info.state}: {info.detail}")
        return not pending

    poll_until(all_running, max(0.0, TIMEOUT_S - (time.monotonic() - t0)),
               f"{len(ids)} guests RUNNING", lambda: f"not RUNNING yet: {sorted(pending)}",
               interval=POLL_S)


def many(drv: QemuDriver, image: GuestImage, count: int, memory_mib: int) -> float:
    specs = [spec_for(image, 1000 + i, memory_mib) for i in range(count)]
    t0 = time.monotonic()
    try:
        for spec in specs:
            drv.deploy(LOCAL, spec)
        wait_running(drv, [s.deploy_id for s in specs], t0)
        return time.monotonic() - t0
    finally:
        for spec in specs:
            drv.cleanup(LOCAL, spec.deploy_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--memory", type=int, default=128, help="MiB per guest")
    parser.add_argument("--many", type=int, default=0, help="also boot this many guests at once")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    image = ensure_image()
    with tempfile.TemporaryDirectory(prefix="vocloud-bench-boot-") as tmp:
        work = Path(tmp)
        # the probe's answer is cached beside the guest image, as the tests do: one probe per machine
        drv = QemuDriver(work / "state", accel_probe=AccelProbe(cache_root() / "accel"),
                         probe_guest=probe_guest)
        accel = drv.accel(LOCAL)
        bare: list[float] = []
        driven: list[float] = []
        for i in range(args.runs):
            bare.append(bare_boot(image, accel.accel, work, args.memory))
            driven.append(driver_boot(drv, image, i + 1, args.memory))
        many_s = many(drv, image, args.many, args.memory) if args.many else None

    bare_med, drv_med = statistics.median(bare), statistics.median(driven)
    ratio = drv_med / bare_med
    result = {
        "accel": accel.accel, "accel_reason": accel.reason, "runs": args.runs,
        "bare_median_s": round(bare_med, 3), "driver_median_s": round(drv_med, 3),
        "bare_s": [round(x, 3) for x in bare], "driver_s": [round(x, 3) for x in driven],
        "ratio": round(ratio, 3), "target_ratio": TARGET_RATIO, "ok": ratio <= TARGET_RATIO,
        "many": args.many, "many_all_running_s": round(many_s, 2) if many_s is not None else None,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"accel: {accel.accel} ({accel.reason})")
        print(f"bare qemu boot to marker   : median {bare_med:6.2f} s  {result['bare_s']}")
        print(f"driver deploy to RUNNING   : median {drv_med:6.2f} s  {result['driver_s']}")
        print(f"ratio driver/bare          : {ratio:6.2f}   (target <= {TARGET_RATIO})  "
              f"{'OK' if result['ok'] else 'MISSED'}")
        if many_s is not None:
            print(f"{args.many} guests at once, all RUNNING: {many_s:6.1f} s  (DESIGN.md: 20 in ~31 s)")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
