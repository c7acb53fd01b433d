"""The README's first command runs ``vocloud demo``: a VO cluster on this machine, real or simulated.

What is asserted is what the demo claims in its summary, checked for consistency (every job ran,
on a worker of its own VO; workers booted and all DONE; pools back to 0), and that it leaves
nothing behind: every process it starts inherits the test's private ``TMPDIR``, so "no process
has that ``TMPDIR`` any more" covers the daemon, qemu, slurmctld, munged and job steps at once,
and the ``TMPDIR`` must be empty (data dir, Slurm dir removed).

The real demo needs root, qemu and Slurm; without them it is skipped, or fails when CI sets
``VOCLOUD_REQUIRE_QEMU`` / ``VOCLOUD_REQUIRE_SLURM`` (``procs.skip_or_fail``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import procs
from tests.support.cli import clean_env, vocloud_command
from vocloud.guest.build import cache_root


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A short TMPDIR for the demo: munged's socket path must fit in 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="vd-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _env(tmp: Path) -> dict[str, str]:
    env = clean_env(tmp / "home")
    env["TMPDIR"] = str(tmp / "t")
    env["VOCLOUD_CACHE"] = os.environ.get("VOCLOUD_CACHE") or str(cache_root())
    if os.environ.get("VOCLOUD_ACCEL"):
        env["VOCLOUD_ACCEL"] = os.environ["VOCLOUD_ACCEL"]
    (tmp / "t").mkdir()
    return env


def _demo(tmp: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*vocloud_command(), "demo", *args], capture_output=True, text=True,
                          timeout=timeout, env=_env(tmp))


def _processes_with(tmpdir: Path) -> list[str]:
    """Command lines of live processes whose environment carries ``TMPDIR=<tmpdir>``."""
    needle = f"TMPDIR={tmpdir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


def _assert_nothing_left(tmp: Path) -> None:
    # a SIGKILLed process may take a moment to be reaped
    procs.poll_until(lambda: not _processes_with(tmp / "t"), 5,
                     "no process with the demo's TMPDIR", lambda: str(_processes_with(tmp / "t")),
                     interval=0.1)
    assert list((tmp / "t").iterdir()) == []  # data dir and Slurm dir removed


def _check_summary(s: dict[str, Any], jobs: dict[str, int]) -> None:
    assert s["jobs_submitted"] == jobs and s["jobs_run"] == jobs, s
    assert s["jobs_on_own_vo_worker"] == sum(jobs.values()), s
    assert all(s["vms_booted"][vo] >= 1 for vo in jobs), s  # each VO's pool grew
    assert s["vms_booted_total"] == sum(s["vms_booted"].values()) >= 2, s
    assert s["vms_done"] == s["vms_booted_total"], s  # ... and shrank back: every worker DONE
    assert all(1 <= n <= 2 for n in s["peak_workers"].values()), s  # max 2 per pool
    assert 0 <= s["wait_mean_s"] <= s["wait_max_s"], s
    assert s["jobs_done_after_s"] <= s["pools_back_to_zero_after_s"] <= s["total_s"], s


def test_demo_simulated(short_tmp: Path) -> None:
    r = _demo(short_tmp, "--sim", "--json", "--job-seconds", "1", "--boot-delay", "0.5",
              timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads(r.stdout)
    _check_summary(s, {"atlas": 6, "cms": 3})
    assert s["mode"] == "simulated workers + sim batch"
    assert s["simulated"][0] == "--sim was given"
    assert "simulated worker VMs: sim host" in r.stderr
    assert "simulated batch system" in r.stderr
    assert "atlas boot" in r.stderr and "cms drain" in r.stderr  # decisions shown as made
    assert "daemon stopped (exit 0)" in r.stderr
    assert "VO pools" in r.stderr and "atlas-img" in r.stderr and "std-worker" in r.stderr
    _assert_nothing_left(short_tmp)


def test_demo_interrupted_cleans_up(short_tmp: Path) -> None:
    """SIGTERM (or Ctrl-C) in the middle of the burst: exit 130, nothing left."""
    proc = subprocess.Popen([*vocloud_command(), "demo", "--sim", "--job-seconds", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(short_tmp))
    assert proc.stdout is not None
    out = []
    for line in proc.stdout:
        out.append(line)
        if "joined" in line:  # a worker is up and running a job
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=60)
    text = "".join(out) + rest
    assert proc.returncode == 130, text
    assert "interrupted" in text and "daemon stopped (exit 0)" in text
    _assert_nothing_left(short_tmp)


def test_demo_plain_vms_still_works(short_tmp: Path) -> None:
    r = _demo(short_tmp, "--vms", "5", "--sim", "--boot-delay", "0.2", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "VMs created 5" in r.stdout and "DONE 5" in r.stdout


@pytest.mark.slow
def test_demo_real_vo_cluster(short_tmp: Path) -> None:
    """The README's first command on real parts: qemu workers join a local Slurm and run it all."""
    from vocloud.devtools.localslurm import missing_reason

    for tool in ("qemu-system-x86_64", "qemu-img", "ip"):
        if shutil.which(tool) is None:
            procs.skip_or_fail(f"{tool} not found: apt-get install qemu-system-x86 qemu-utils")
    reason = missing_reason()
    if reason is not None:
        procs.skip_or_fail(reason)
    try:
        from vocloud.guest.worker import ensure_worker_image

        ensure_worker_image()
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        procs.skip_or_fail(f"cannot build the worker guest: {exc}")
    t0 = time.monotonic()
    r = _demo(short_tmp, "--json", "--job-seconds", "8", timeout=900)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout + r.stderr
    s = json.loads(r.stdout)
    assert s["mode"] == "qemu workers + local Slurm" and s["simulated"] == [], (s, r.stderr)
    _check_summary(s, {"atlas": 6, "cms": 3})
    assert "own network namespace" in r.stderr
    assert "joined the batch system" in r.stderr and "drained and empty" in r.stderr
    _assert_nothing_left(short_tmp)
    after = procs.ip("-o", "link", "show").stdout
    assert "vcdemo" not in after, after  # the bridge (and its taps) lived in the demo's namespace
    print(f"\nreal demo: {took:.0f} s; summary {s}")
