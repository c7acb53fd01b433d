"""``vocloud simulate --validate`` / ``--voc-report`` refuse bad input in one line, exit 2,
before anything real is started; ``--voc-report`` writes its section and plot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from vocloud.cli.main import run
from vocloud.sim.synth import bursty


def vocloud(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vocloud.cli.main", *args], capture_output=True,
                          text=True, timeout=300, check=False)


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    p = tmp_path / "b.swf"
    p.write_text(bursty(5, n=200, vos=2))
    return p


@pytest.mark.parametrize(("args", "message"), [
    (("--jobs", "0"), "--jobs must be >= 1"),
    (("--jobs", "500"), "fewer than --jobs 500"),
    (("--compress", "0.5"), "--compress must be >= 1"),
    (("--compress", "nan"), "--compress must be >= 1"),
    (("--val-max-runtime", "-1"), "run-time cap must be > 0"),
    (("--val-start", "190", "--jobs", "20"), "--val-start must be in [0, 180]"),
    (("--boot-time", "uniform:30,90"), "fixed boot and shutdown times"),
    (("--jobs", "20", "--compress", "1", "--val-max-runtime", "100000"), "real time"),
])
def test_validate_refuses_bad_input_before_starting_anything(
        trace: Path, args: tuple[str, ...], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    # in-process (the CLI's own entry point): a subprocess per case would cost seconds each
    assert run(["simulate", str(trace), "--validate", *args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert "Traceback" not in err


def test_voc_report_needs_a_report_dir_and_writes_its_section(trace: Path, tmp_path: Path) -> None:
    proc = vocloud("simulate", str(trace), "--voc-report", "--no-progress")
    assert proc.returncode == 2 and "give --report DIR" in proc.stderr, proc.stderr
    out = tmp_path / "r"
    proc = vocloud("simulate", str(trace), "--voc-report", "--report", str(out), "--hosts", "4",
                   "--no-progress")
    assert proc.returncode == 0, proc.stderr
    summary = (out / "summary.md").read_text()
    assert summary.count("## The VOC findings") == 1 and "![voc.png](voc.png)" in summary
    assert "The pool tracks the load" in proc.stdout
    assert (out / "voc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
