"""``vocloud simulate`` as a user runs it: report directory, JSON output, clear errors."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from vocloud.cli.main import run
from vocloud.sim.synth import bursty, swf_line, swf_text

LPC = Path(__file__).resolve().parents[3] / "shared" / "traces" / "LPC-EGEE-2004-1.2-cln.swf.gz"
SDSC = LPC.with_name("SDSC-SP2-1998-4.2-cln.swf.gz")
SDSC = SDSC if SDSC.exists() else Path("/work/shared/traces/SDSC-SP2-1998-4.2-cln.swf.gz")  # worktrees


def vocloud(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vocloud.cli.main", *args], capture_output=True,
                          text=True, timeout=300, check=False)


def test_report_dir_with_metrics_summary_and_plots(tmp_path: Path) -> None:
    trace = tmp_path / "burst.swf.gz"
    trace.write_bytes(gzip.compress(bursty(11, n=300, vos=3).encode()))
    out = tmp_path / "report"
    proc = vocloud("simulate", str(trace), "--report", str(out), "--hosts", "4", "--seed", "3",
                   "--boot-time", "uniform:30,90", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "| physical |" in proc.stdout and "| elastic |" in proc.stdout
    for name in ("metrics.json", "summary.md", "queue_vs_pool.png", "utilization.png", "wait_cdf.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "queue_vs_pool.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads((out / "metrics.json").read_text())
    assert set(doc["scenarios"]) == {"physical", "static", "elastic"}
    assert all(s["conservation_ok"] for s in doc["scenarios"].values())
    first = (out / "metrics.json").read_bytes()
    again = vocloud("simulate", str(trace), "--report", str(out), "--hosts", "4", "--seed", "3",
                    "--boot-time", "uniform:30,90", "--no-progress")
    assert again.returncode == 0
    assert (out / "metrics.json").read_bytes() == first  # same seed: byte-identical


def test_json_output_and_scenario_selection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.swf"
    trace.write_text(swf_text([swf_line(i, i * 10, 30, group=1 + i % 2) for i in range(1, 40)]))
    assert run(["simulate", str(trace), "-s", "physical", "-s", "elastic", "--json", "--no-progress"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(doc["scenarios"]) == ["elastic", "physical"]
    assert doc["config"]["hosts"] == 4  # MaxProcs 8 from the header, 2 cores per host
    assert doc["trace"]["jobs_per_vo"] == {"g1": 19, "g2": 20}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--scenario", "cloudy"], "unknown scenario"),
        (["--strict"], ":12: expected 18 fields, found 3"),
        (["--boot-time", "gamma:1"], "--boot-time"),
        (["--hosts", "0"], "--hosts must be >= 1"),
        (["--vo-map", "nonsense"], "not a shorthand"),
        (["--static-split", "g1=x"], "not a whole number"),
        (["--headroom", "-1"], "--headroom must be between 0 and 10"),
        (["--headroom", "nan"], "--headroom must be between 0 and 10"),
        (["--reserve-after", "-1"], "--reserve-after must be a number of seconds >= 0"),
        (["--reserve-after", "nan"], "--reserve-after must be a number of seconds >= 0"),
        (["--reserve-after", "inf"], "--reserve-after must be a number of seconds >= 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    trace = tmp_path / "t.swf"
    trace.write_text(swf_text([swf_line(1, 0, 5), "1 2 3"]))
    assert run(["simulate", str(trace), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_truncated_gzip_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = gzip.compress(bursty(1, n=3000).encode())
    cut = tmp_path / "cut.swf.gz"
    cut.write_bytes(data[: len(data) // 3])
    assert run(["simulate", str(cut), "--no-progress"]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err
    assert run(["simulate", str(tmp_path / "none.swf"), "--no-progress"]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.skipif(not LPC.exists(), reason="LPC-EGEE trace not present")
def test_lpc_egee_slice_replays_in_all_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    """The one real-trace test: the first 3,000 jobs of LPC-EGEE, group -> VO, default site."""
    assert run(["simulate", str(LPC), "--limit", "3000", "--json", "--no-progress"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["hosts"] == 70 and doc["config"]["cores_per_host"] == 2
    assert doc["trace"]["read"]["skipped_total"] == 0
    for name, s in doc["scenarios"].items():
        assert s["conservation_ok"], name
        assert s["jobs_submitted"] == 3000
        assert s["utilization"] <= 1
    assert doc["scenarios"]["elastic"]["refused_shutdowns"] == 0


@pytest.mark.parametrize(("mode", "jobs"), [("compress", 39), ("replicate", 78)])
def test_scale_hosts(tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str, jobs: int) -> None:
    trace = tmp_path / "t.swf"  # MaxProcs 8 -> 4 hosts x 2 cores; 8 hosts doubles the site
    trace.write_text(swf_text([swf_line(i, i * 100, 30) for i in range(1, 40)]))
    argv = ["simulate", str(trace), "--scale-hosts", "8", "--scale-mode", mode, "--json", "--no-progress"]
    assert run(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["config"]["hosts"] == 8
    assert doc["trace"]["jobs"] == jobs and doc["trace"]["scale"] == f"{mode} x2"
    if mode == "compress":
        assert doc["trace"]["last_submit"] - doc["trace"]["first_submit"] == 3800 / 2
    assert all(s["conservation_ok"] for s in doc["scenarios"].values())


@pytest.mark.skipif(not SDSC.exists(), reason="SDSC-SP2 trace not present")
def test_sdsc_slice_with_default_options_writes_every_figure(tmp_path: Path) -> None:
    """A parallel trace as a user runs it (issue 17): default options, progress bar on, parallel
    scenario workers; every runnable job runs in every scenario, the recorded row follows the
    physical one, the summary names the model's known differences, and the progress says how far
    past the last arrival a scenario ran (the tail where a saturated elastic run spends minutes)."""
    out = tmp_path / "report"
    proc = vocloud("simulate", str(SDSC), "--limit", "1000", "--report", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("|")[1].strip() for line in proc.stdout.splitlines() if line.startswith("| ")]
    assert rows[1:5] == ["physical", "recorded (trace)", "static", "elastic"], rows
    assert "after the last arrival" in proc.stderr
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["trace"]["recorded"]["wait_mean_s"] > 0
    for name, s in doc["scenarios"].items():
        assert s["conservation_ok"] and s["runnable_never_ran"] == 0 and not s["incomplete"], name
        assert s["jobs_completed"] == s["jobs_runnable"] == 939, name
    summary = (out / "summary.md").read_text()
    assert "## Known differences of the model" in summary and "physical vs the machine" in summary
    for name in ("queue_vs_pool.png", "utilization.png", "wait_cdf.png"):
        assert (out / name).stat().st_size > 0, name
