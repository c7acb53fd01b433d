"""``vocloud simulate --validate`` end to end: 40 LPC-EGEE jobs through the real daemon, real
Slurm and sim VMs whose slurmd registers as a node, beside the simulator's prediction.

The short version of ``bench/bench_validate.py`` (300 jobs). It checks that the comparison is
produced (the table, every job in both runs, the causes) and that the two runs agree within a
tolerance derived from what the real run itself measured, not a fixed guess:

* every job ran on both sides, on workers of its own VO (Slurm's accounts and partitions);
* the real mean wait is at least the simulated one minus one poll interval (the poll phase is the
  only thing that can make the real site *faster* than the model), and at most the simulated one
  plus the latencies the model lacks on a job's path: a poll phase, the VM creation overshoot,
  the slurmd registration and Slurm's dispatch (their maxima/p95, as measured in this run);
* peak workers never exceed the site and differ by at most two;
* real VM boots are within two of the simulated ones below (the poll phase may merge the boots
  of jobs arriving within one poll) and at most three times as many above: a real worker joins
  later by the measured latencies, so the planner sees the same jobs pending longer and may boot
  for them (a saturated 50-job slice at x120 measured 25 real against 13 simulated).

A run in which the daemon stalled, workers never joined, or Slurm scheduled on the wrong VO's
nodes fails one of these.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vocloud.devtools.localslurm import missing_reason

pytestmark = pytest.mark.slow

LPC = Path(__file__).resolve().parents[3] / "shared" / "traces" / "LPC-EGEE-2004-1.2-cln.swf.gz"
LPC = LPC if LPC.exists() else Path("/work/shared/traces/LPC-EGEE-2004-1.2-cln.swf.gz")
JOBS = 40
#: a stretch of two VOs whose 40 jobs arrive over 25 s (x120) and need ~16 core-seconds: the
#: pools grow from zero and shrink, but the 8 workers never saturate. On a saturated site Slurm's
#: per-job latency (it holds a worker ~0.3-0.9 s before the script runs, uncompressed) adds load
#: the model lacks and the queue diverges (the bench shows it); here each job's wait is one chain
#: of latencies, which is what the tolerance below is made of.
START = 42407


@pytest.fixture(scope="module")
def validation(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    why = missing_reason()
    if why is not None:
        if os.environ.get("VOCLOUD_REQUIRE_SLURM"):
            pytest.fail(why)
        pytest.skip(why)
    if not LPC.exists():
        pytest.skip("LPC-EGEE trace not present")
    out = tmp_path_factory.mktemp("val")
    proc = subprocess.run(
        [sys.executable, "-m", "vocloud.cli.main", "simulate", str(LPC), "--validate", "--jobs",
         str(JOBS), "--compress", "120", "--val-max-runtime", "900", "--val-start", str(START),
         "--report", str(out)],
        capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    assert "| wait_mean_s |" in proc.stdout and "| vm_boots |" in proc.stdout, proc.stdout
    assert "Slurm's own scheduling cycle" in proc.stdout, proc.stdout
    doc = json.loads((out / "validation.json").read_text())
    assert (out / "validation.md").read_text().count("| metric |") == 1
    return dict(doc)


def _row(doc: dict[str, object], metric: str) -> dict[str, Any]:
    rows = doc["rows"]
    assert isinstance(rows, list)
    return next(r for r in rows if r["metric"] == metric)


@pytest.mark.timeout(300)
def test_validation_agrees_within_measured_latencies(validation: dict[str, object]) -> None:
    doc = validation
    assert doc["jobs"] == JOBS
    per_job = doc["per_job"]
    assert isinstance(per_job, dict)
    assert per_job["jobs"] == JOBS and per_job["sim_never_ran"] == 0
    assert all(w >= 0 for w in per_job["waits_real"]), per_job["waits_real"]
    site, lat = doc["site"], doc["latencies"]
    assert isinstance(site, dict) and isinstance(lat, dict)
    wait = _row(doc, "wait_mean_s")
    slack = (site["poll_s"] + max(0.0, lat["vm_create"]["max"]) + lat["registration"]["max"]
             + lat["dispatch"]["p95"])
    assert wait["sim"] - site["poll_s"] <= wait["real"] <= wait["sim"] + slack, (wait, lat)
    peak = _row(doc, "peak_workers")
    cores = site["hosts"] * site["cores_per_host"]
    assert 0 < peak["real"] <= cores and 0 < peak["sim"] <= cores, peak
    assert abs(peak["real"] - peak["sim"]) <= 2, peak
    boots = _row(doc, "vm_boots")
    assert boots["sim"] - 2 <= boots["real"] <= 3 * boots["sim"], boots
    assert lat["registration"]["n"] >= boots["real"] - 1, lat  # every worker's slurmd joined
    assert wait["verdict"] in ("ok", "MISSED") and boots["verdict"] in ("ok", "MISSED")
