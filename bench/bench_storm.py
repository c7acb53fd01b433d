"""Benchmark: a boot storm. N guests from one image at once through the daemon, against N bare
``qemu-system-x86_64`` started at once by hand, same run (target: daemon/bare <= 1.2).

Both sides boot the same kernel, initramfs, command line, machine, memory and accelerator, each
guest on its own qcow2 overlay of one base image (the bare side makes its overlays with
``qemu-img create -b`` inside the timed window, as the daemon's storage driver does):

* **bare**: make N overlays, start N qemu at once, until every serial log shows the marker;
* **daemon**: one ``POST /api/v1/vms`` with ``count=N`` (a real ``vocloud serve``, a local qemu
  host, the image registered and already in the host's cache from a warm-up guest), until the
  API shows all N RUNNING (placement, overlays, qemu, QMP, the console marker).

N defaults to as many 128 MiB guests as fit in half the machine's available memory, at most
4 per CPU: under TCG the guests are CPU-bound, and 16 guests at once on 2 cores did not all
reach their marker within 600 s even bare (their kernels stall when starved that much).

    python -m bench.bench_storm [--count N] [--memory 128] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.daemon import Daemon
from tests.support.qemu import qemu_test_daemon

from vocloud.devtools.localprocs import poll_until
from vocloud.drivers.accel import READY_MARKER, AccelProbe
from vocloud.drivers.base import HostRef
from vocloud.drivers.vmm.qemu import QemuDriver
from vocloud.guest.build import GuestImage, cache_root, ensure_image, probe_guest

TARGET_RATIO = 1.2
TIMEOUT_S = 600.0
LOCAL = HostRef(id=0, name="local", vmm="qemu")


def default_count(memory_mib: int) -> int:
    with open("/proc/meminfo") as f:
        avail = next(int(line.split()[1]) // 1024 for line in f if line.startswith("MemAvailable"))
    return max(2, min(4 * (os.cpu_count() or 1), avail // 2 // (memory_mib + 64)))


def bare_storm(image: GuestImage, accel: str, work: Path, n: int, memory_mib: int) -> float:
    """Seconds from the first overlay to the last guest's marker."""
    procs: list[subprocess.Popen[bytes]] = []
    logs = [work / f"bare-{i}.log" for i in range(n)]
    t0 = time.monotonic()
    try:
        for i, log in enumerate(logs):
            ovl = work / f"bare-{i}.qcow2"
            subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(image.base_disk),
                            "-F", "qcow2", str(ovl)], check=True)
            log.touch()
            argv = ["qemu-system-x86_64", "-M", "microvm", "-accel", accel, "-m", str(memory_mib),
                    "-smp", "1", "-nodefaults", "-no-user-config", "-display", "none",
                    "-monitor", "none", "-serial", f"file:{log}", "-kernel", str(image.vmlinux),
                    "-initrd", str(image.initramfs), "-append", image.cmdline,
                    "-drive", f"file={ovl},if=none,id=disk-vda,format=qcow2,cache=none,aio=threads",
                    "-device", "virtio-blk-device,drive=disk-vda"]
            if accel == "kvm":
                argv += ["-cpu", "host"]
            procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        left = set(range(n))

        def all_ready() -> bool:
            for i in sorted(left):
                if procs[i].poll() is not None:
                    raise RuntimeError(f"bare qemu {i} exited (rc={procs[i].returncode})")
                if READY_MARKER.encode() in logs[i].read_bytes():
                    left.discard(i)
            return not left

        poll_until(all_ready, TIMEOUT_S, f"{n} bare guests' markers", interval=0.05)
        return time.monotonic() - t0
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def _states(d: Daemon, ids: list[int]) -> dict[int, str]:
    rows = d.api("GET", "/vms", params={"all": True})
    return {r["id"]: r["state"] for r in rows if r["id"] in ids}


def _wait(d: Daemon, ids: list[int], want: str) -> None:
    def done() -> bool:
        st = _states(d, ids)
        bad = [i for i, s in st.items() if "FAILURE" in s]
        if bad:
            raise RuntimeError(f"VMs failed: {[d.api('GET', f'/vms/{i}')['error'] for i in bad]}")
        return all(st.get(i) == want for i in ids)

    poll_until(done, TIMEOUT_S, f"{len(ids)} VMs {want}", interval=0.05)


def daemon_storm(d: Daemon, image: GuestImage, n: int, memory_mib: int) -> float:
    template = (f'CPU=0.01\nVCPU=1\nMEMORY={memory_mib}\nKERNEL="{image.vmlinux}"\n'
                f'INITRD="{image.initramfs}"\nKERNEL_CMD="{image.cmdline}"\n'
                'DISK=[IMAGE="tiny", TARGET="vda"]\n')
    warm = d.api("POST", "/vms", json={"template": template, "name": "warm"})["ids"]
    _wait(d, warm, "RUNNING")  # the base is now in the host's cache, as the bare side's file is
    d.api("POST", f"/vms/{warm[0]}/action", json={"action": "terminate-hard"})
    _wait(d, warm, "DONE")
    t0 = time.monotonic()
    ids = d.api("POST", "/vms", json={"template": template, "count": n, "name": "storm"})["ids"]
    _wait(d, ids, "RUNNING")
    took = time.monotonic() - t0
    for i in ids:
        d.api("POST", f"/vms/{i}/action", json={"action": "terminate-hard"})
    _wait(d, ids, "DONE")
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=0, help="guests at once (default: what fits)")
    parser.add_argument("--memory", type=int, default=128, help="MiB per guest")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    n = args.count or default_count(args.memory)
    image = ensure_image()
    with tempfile.TemporaryDirectory(prefix="vocloud-bench-storm-") as tmp:
        work = Path(tmp)
        accel = QemuDriver(work / "probe", accel_probe=AccelProbe(cache_root() / "accel"),
                           probe_guest=probe_guest).accel(LOCAL).accel
        bare = bare_storm(image, accel, work, n, args.memory)
        with qemu_test_daemon(work / "d", VOCLOUD_ACCEL=accel, VOCLOUD_MONITOR_INTERVAL="1",
                              VOCLOUD_LOG_LEVEL="warning") as d:
            d.api("POST", "/hosts", json={"name": "local", "vmm": "qemu"})
            poll_until(lambda: d.api("GET", "/hosts")[0]["state"] == "MONITORED", 60,
                       "the local host monitored")
            default = d.data_dir / "datastores" / "default"
            shutil.copyfile(image.base_disk, default / "tiny.qcow2")
            d.api("POST", "/images", json={"name": "tiny", "path": str(default / "tiny.qcow2")})
            daemon = daemon_storm(d, image, n, args.memory)
        bare2 = bare_storm(image, accel, work, n, args.memory)  # again: drift hits both sides
    bare_s = min(bare, bare2)
    ratio = daemon / bare_s
    result = {"accel": accel, "count": n, "memory_mib": args.memory, "cpus": os.cpu_count(),
              "bare_s": [round(bare, 2), round(bare2, 2)], "daemon_s": round(daemon, 2),
              "ratio": round(ratio, 3), "target_ratio": TARGET_RATIO, "ok": ratio <= TARGET_RATIO}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"accel {accel}, {n} guests x {args.memory} MiB at once, {os.cpu_count()} CPUs")
        print(f"bare qemu, all at their marker   : {bare:6.2f} s, again {bare2:6.2f} s")
        print(f"through the daemon, all RUNNING  : {daemon:6.2f} s")
        print(f"ratio daemon/bare (best bare)    : {ratio:6.2f}   (target <= {TARGET_RATIO})  "
              f"{'OK' if result['ok'] else 'MISSED'}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
