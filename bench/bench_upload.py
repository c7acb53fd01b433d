"""Benchmark: upload a 1 GiB image with flat daemon memory and without stalling other writes.

Starts a real daemon (``vocloud serve`` on a temp SQLite store, loops idle), then, in one run:

1. **baseline**: a writer loop (create + delete a VM template over REST every 50 ms) alone;
2. **upload**: the same loop while ``vocloud image upload`` (the real CLI, another process)
   streams a 1 GiB raw image (random-looking, not zeros) to ``POST /api/v1/images/upload``;
3. **by path**: the same loop while the administrator registers a second 1 GiB file already in
   the datastore by path (sha256 + ``qemu-img info`` of 1 GiB).

Meanwhile the daemon's RSS (``/proc/PID/status`` VmRSS) is sampled every 20 ms. Printed: peak
RSS during the upload next to the RSS before it, and the longest write latency during the upload
and the registration next to the longest without them. The anchor is issue 9: on the old code
the sha256 of a 3 GiB file ran inside the write lock and stalled every other write for 5.9 s.

Usage: .venv/bin/python bench/bench_upload.py [--mib 1024] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from vocloud.client import Client, wait_healthy
from vocloud.devtools.localprocs import free_port

ANCHOR = "issue 9, old code: a 3 GiB sha256 inside the write lock stalled other writes 5.9 s"
MIB = 1 << 20


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _image(path: Path, mib: int) -> None:
    """``mib`` MiB cycling through 16 random 1 MiB blocks: incompressible-looking, not zeros."""
    blocks = [os.urandom(MIB) for _ in range(16)]
    with path.open("wb") as f:
        for i in range(mib):
            f.write(blocks[i % len(blocks)])


class Sampler(threading.Thread):
    """The daemon's RSS every 20 ms, tagged with the current phase."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.phase = "idle"
        self.samples: list[tuple[str, int]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((self.phase, _rss_kib(self.pid)))
            time.sleep(0.02)

    def of(self, phase: str) -> list[int]:
        return [kib for p, kib in self.samples if p == phase]


class Writer(threading.Thread):
    """Create and delete a VM template every 50 ms; each request's latency, by phase."""

    def __init__(self, url: str, token: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.token = token
        self.phase = "idle"
        self.latencies: list[tuple[str, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        with Client(self.url, self.token, timeout=120) as c:
            while not self.stop.is_set():
                n += 1
                text = f'NAME="w{n}"\nCPU=1\nMEMORY=64\n'
                for method, path, body in (("POST", "/templates", {"template": text}),
                                           ("DELETE", f"/templates/w{n}", None)):
                    phase = self.phase
                    t = time.perf_counter()
                    c.request(method, path, body=body)
                    self.latencies.append((phase, time.perf_counter() - t))
                time.sleep(0.05)

    def of(self, phase: str) -> list[float]:
        return [s for p, s in self.latencies if p == phase]


def _pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--mib", type=int, default=1024, help="image size in MiB (default 1 GiB)")
    ap.add_argument("--baseline-s", type=float, default=8.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vocloud-bench-upload-") as tmp:
        data_dir = Path(tmp) / "data"
        data_dir.mkdir()
        port = free_port()
        env = {**os.environ, "VOCLOUD_HOME": str(data_dir), "VOCLOUD_PORT": str(port),
               "VOCLOUD_LOG_LEVEL": "warning", "VOCLOUD_SCHEDULER_INTERVAL": "3600",
               "VOCLOUD_LIFECYCLE_INTERVAL": "3600", "VOCLOUD_MONITOR_INTERVAL": "3600"}
        env.pop("VOCLOUD_DB_URL", None)
        log = (Path(tmp) / "daemon.log").open("wb")
        proc = subprocess.Popen([sys.executable, "-m", "vocloud.app.serve_main"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            if not wait_healthy(url, lambda: proc.poll() is None, 30):
                raise SystemExit(f"the daemon did not answer on {url}; see its log")
            token = (data_dir / "admin.token").read_text().strip()
            src = Path(tmp) / "upload.raw"
            by_path = data_dir / "datastores" / "default" / "by-path.raw"
            t = time.perf_counter()
            _image(src, args.mib)
            _image(by_path, args.mib)
            make_s = time.perf_counter() - t
            with Client(url, token, timeout=60) as c:
                c.post("/groups", {"name": "bench-vo"})
                user_tok = c.post("/users", {"name": "bench-user", "group": "bench-vo"})["token"]
            sampler, writer = Sampler(proc.pid), Writer(url, token)
            sampler.start()
            writer.start()
            sampler.phase = writer.phase = "baseline"
            time.sleep(args.baseline_s)
            sampler.phase = writer.phase = "upload"
            cli_env = {**env, "VOCLOUD_URL": url, "VOCLOUD_TOKEN": user_tok}
            t = time.perf_counter()
            up = subprocess.run([sys.executable, "-m", "vocloud.cli.main", "image", "upload", "big",
                                 str(src), "--format", "raw", "--json"], env=cli_env, capture_output=True,
                                text=True, timeout=3600)
            upload_s = time.perf_counter() - t
            if up.returncode != 0:
                raise SystemExit(f"upload failed: {up.stderr}")
            img = json.loads(up.stdout)
            sampler.phase = writer.phase = "between"
            time.sleep(1.0)
            sampler.phase = writer.phase = "by_path"
            t = time.perf_counter()
            with Client(url, token, timeout=3600) as c:
                c.post("/images", {"name": "by-path", "path": str(by_path)})
            by_path_s = time.perf_counter() - t
            sampler.phase = writer.phase = "after"
            time.sleep(1.0)
            writer.stop.set()
            writer.join(30)
            sampler.stop.set()
            sampler.join(5)
            assert img["size_mib"] == args.mib, img
        finally:
            proc.terminate()
            proc.wait(30)
    base_rss, up_rss, path_rss = sampler.of("baseline"), sampler.of("upload"), sampler.of("by_path")
    base_lat, up_lat, path_lat = writer.of("baseline"), writer.of("upload"), writer.of("by_path")
    result: dict[str, Any] = {
        "image_mib": args.mib,
        "upload_s": round(upload_s, 2), "upload_mib_per_s": round(args.mib / upload_s, 1),
        "rss_before_mib": round(max(base_rss) / 1024, 1),
        "rss_peak_upload_mib": round(max(up_rss) / 1024, 1),
        "rss_growth_upload_mib": round((max(up_rss) - max(base_rss)) / 1024, 1),
        "rss_peak_by_path_mib": round(max(path_rss) / 1024, 1),
        "write_max_baseline_ms": round(max(base_lat) * 1000, 1),
        "write_p99_baseline_ms": round(_pct(base_lat, 0.99) * 1000, 1),
        "write_max_upload_ms": round(max(up_lat) * 1000, 1),
        "write_p99_upload_ms": round(_pct(up_lat, 0.99) * 1000, 1),
        "writes_during_upload": len(up_lat),
        "by_path_s": round(by_path_s, 2),
        "write_max_by_path_ms": round(max(path_lat) * 1000, 1),
        "writes_during_by_path": len(path_lat),
        "make_files_s": round(make_s, 1),
        "anchor": ANCHOR,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'figure':46} {'value':>12} {'baseline':>12}")
    rss_label = f"daemon RSS peak during {args.mib} MiB upload"
    path_label = f"longest write during {args.mib} MiB by-path register"
    print(f"{rss_label:46} {result['rss_peak_upload_mib']:>9.1f}MiB "
          f"{result['rss_before_mib']:>9.1f}MiB  (before the upload)")
    print(f"{'longest write during the upload':46} {result['write_max_upload_ms']:>10.1f}ms "
          f"{result['write_max_baseline_ms']:>10.1f}ms  (same loop, no upload)")
    print(f"{'p99 write during the upload':46} {result['write_p99_upload_ms']:>10.1f}ms "
          f"{result['write_p99_baseline_ms']:>10.1f}ms")
    print(f"{path_label:46} {result['write_max_by_path_ms']:>10.1f}ms "
          f"{result['write_max_baseline_ms']:>10.1f}ms")
    print(f"  upload {args.mib} MiB in {upload_s:.1f}s ({result['upload_mib_per_s']} MiB/s, CLI -> daemon, "
          f"{result['writes_during_upload']} writes meanwhile); by-path register {by_path_s:.1f}s "
          f"({result['writes_during_by_path']} writes); RSS peak while registering "
          f"{result['rss_peak_by_path_mib']} MiB")
    print(f"  anchor: {ANCHOR}")


if __name__ == "__main__":
    main()
