"""``vocloud simulate --compare-policies``: the table, JSON and Pareto plot; both traces at 20,000 jobs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vocloud.cli.main import run
from vocloud.sim import compare
from vocloud.sim.elastic import ElasticKnobs
from vocloud.sim.run import SimConfig, default_spec, load_trace
from vocloud.sim.synth import bursty

pytest.importorskip("cobald")

TRACES = next((p / "shared" / "traces" for p in Path(__file__).resolve().parents
               if (p / "shared" / "traces").is_dir()), Path("shared/traces"))
LPC = TRACES / "LPC-EGEE-2004-1.2-cln.swf.gz"
SDSC = TRACES / "SDSC-SP2-1998-4.2-cln.swf.gz"
PNG = b"\x89PNG\r\n\x1a\n"


def test_table_json_plot_and_bad_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "burst.swf"
    trace.write_text(bursty(7, n=120, vos=2, span=4 * 3600.0))
    out = tmp_path / "report"
    assert run(["simulate", str(trace), "--hosts", "4", "--compare-policies",
                "cloudscheduler,cobald-relative", "--report", str(out), "--no-progress",
                "--workers", "1"]) == 0
    text = capsys.readouterr().out
    for name in ("static", "vocloud", "cloudscheduler", "cobald-relative"):
        assert f"| {name} |" in text
    assert "| vcycle |" not in text
    assert "vs cloudscheduler: " in text
    assert (out / "policies.png").read_bytes()[:8] == PNG
    assert run(["simulate", str(trace), "--hosts", "4", "--compare-policies", "all", "--json",
                "--report", str(out), "--no-progress"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["policy"] for r in doc["policies"]] == list(compare.POLICIES)
    assert all(r["wait_mean_s"] >= 0 and r["vm_boots"] >= 0 for r in doc["policies"])
    assert run(["simulate", str(trace), "--compare-policies", "vocloud,tardis", "--no-progress"]) == 2
    assert "unknown policy tardis" in capsys.readouterr().err


# SDSC-SP2's first 20,000 jobs span 202 days for 89 VOs: several CPU-minutes for the policies
# that churn VMs (Vcycle, COBalD's linear controller), too much for CI; CI replays its first 1,000
# and ``bench_policies --limit 20000`` the 20,000 (docs/policies.md).
@pytest.mark.slow
@pytest.mark.parametrize(("trace", "jobs"), [(LPC, 20_000), (SDSC, 1_000)], ids=["LPC-EGEE", "SDSC-SP2"])
def test_first_jobs_of_both_traces(trace: Path, jobs: int) -> None:
    """The acceptance run: every policy on each trace's first jobs, as ``bench_policies --limit``."""
    loaded = load_trace(trace, limit=jobs)
    w = loaded.workload
    # 1-core workers for every policy (worker shape ``fixed``): the peers are not shape-aware yet,
    # and with ``job``-shaped vocloud pools on SDSC-SP2 the peers churn for CPU-minutes on the
    # parallel jobs they cannot run (docs/policies.md, "Left")
    config = SimConfig(spec=default_spec(loaded.max_procs, None, None, None),
                       knobs=ElasticKnobs(worker_shape="fixed"))
    results = compare.compare(w, config, compare.POLICIES, workers=2)
    by = {r.name: r.figures for r in results}
    assert list(by) == list(compare.POLICIES)
    for name, f in by.items():
        assert f["conservation_ok"], name
        assert f["vm_hours_per_useful_core_hour"] >= 1.0, name
    serial = trace == LPC
    for name in compare.POLICIES:
        # LPC-EGEE is serial: every policy runs every job. SDSC-SP2's parallel jobs do not fit the
        # 1-core VMs of the elastic policies (issue 17): those rows are marked incomplete.
        if serial or name != "static":
            assert by[name]["incomplete"] is not serial, name
    if serial:
        v = by["vocloud"]
        for peer in ("cloudscheduler", "vcycle"):  # dominated: more wait and more idle VM-hours
            assert v["wait_mean_s"] <= by[peer]["wait_mean_s"], peer
            assert v["vm_hours_idle"] <= by[peer]["vm_hours_idle"], peer
        # issue 20's goal: every peer is matched or beaten on both axes by some vocloud setting
        # (headroom, idle timeout); COBalD's RelativeSupplyController only with headroom
        verdicts = compare.frontier_verdicts(results, compare.frontier(w, config))
        assert not [line for line in verdicts if "no vocloud setting" in line], verdicts
        assert [line for line in verdicts if line.startswith("cobald-relative-tuned:")
                and "--headroom 0.25" in line], verdicts
