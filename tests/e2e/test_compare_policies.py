"""``vocloud simulate --compare-policies``: table, JSON, plot; LPC-EGEE at 20,000 jobs, SDSC-SP2 at
2,000 (every peer) and at 20,000 (the peers that run every job)."""

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


@pytest.mark.slow
def test_first_jobs_of_lpc_egee() -> None:
    """The acceptance run: every policy on LPC-EGEE's first 20,000 jobs, as ``bench_policies --limit``."""
    loaded = load_trace(LPC, limit=20_000)
    w = loaded.workload
    # 1-core workers (worker shape ``fixed``): LPC-EGEE is serial, so the shape changes nothing
    # but the VM size, and the figures stay those of docs/policies.md
    config = SimConfig(spec=default_spec(loaded.max_procs, None, None, None),
                       knobs=ElasticKnobs(worker_shape="fixed"))
    results = compare.compare(w, config, compare.POLICIES, workers=2)
    by = {r.name: r.figures for r in results}
    assert list(by) == list(compare.POLICIES)
    for name, f in by.items():
        assert f["conservation_ok"], name
        assert f["vm_hours_per_useful_core_hour"] >= 1.0, name
        assert not f["incomplete"], name  # serial: every policy runs every job
    v = by["vocloud"]
    for peer in ("cloudscheduler", "vcycle"):  # dominated: more wait and more idle VM-hours
        assert v["wait_mean_s"] <= by[peer]["wait_mean_s"], peer
        assert v["vm_hours_idle"] <= by[peer]["vm_hours_idle"], peer
    # issue 20's goal: every peer is matched or beaten on both axes by some vocloud setting
    # (headroom, idle timeout); COBalD's RelativeSupplyController only with headroom
    # the settings that win (docs/policies.md; bench_policies sweeps all of compare.FRONTIER):
    # four vocloud replays instead of six keep CI inside its budget
    wins = ((0.0, 300.0), (0.0, 1800.0), (0.0, 3600.0), (0.25, 14400.0))
    verdicts = compare.frontier_verdicts(results, compare.frontier(w, config, wins, workers=2))
    assert not [line for line in verdicts if "no vocloud setting" in line], verdicts
    assert [line for line in verdicts if line.startswith("cobald-relative-tuned:")
            and "--headroom 0.25" in line], verdicts


# SDSC-SP2 with the pools' default worker shape (``job``): every peer sizes its workers as its own
# documentation says (docs/policies.md, "Worker shapes"). SDSC_JOBS is the largest prefix whose
# eight replays fit CI's budget (Vcycle and COBalD's linear controller churn; measured in
# docs/policies.md); ``bench_policies --limit 20000 --trace SDSC...`` runs the 20,000.
SDSC_JOBS = 2_000


@pytest.mark.slow
def test_first_jobs_of_sdsc_sp2_with_shaped_workers() -> None:
    loaded = load_trace(SDSC, limit=SDSC_JOBS)
    w = loaded.workload
    config = SimConfig(spec=default_spec(loaded.max_procs, None, None, None),
                       knobs=ElasticKnobs(worker_shape="job"))
    results = compare.compare(w, config, compare.POLICIES, workers=2)
    by = {r.name: r.figures for r in results}
    for name, f in by.items():
        assert f["conservation_ok"], name
    v, cs = by["vocloud"], by["cloudscheduler"]
    # the two queue-reading policies run every runnable job, wide ones spanning VMs
    assert not v["incomplete"] and v["runnable_never_ran"] == 0
    assert not cs["incomplete"] and cs["runnable_never_ran"] == 0
    # the queue-blind peers do not: a pool whose workers are idle never grows for a job wider
    # than them, so they leave wide jobs unrun (and wait far longer for the ones they run)
    blind = ("vcycle", "cobald-linear", "cobald-linear-tuned", "cobald-relative", "cobald-relative-tuned")
    for peer in blind:
        assert by[peer]["incomplete"], peer
        assert v["wait_mean_s"] < by[peer]["wait_mean_s"], peer
    # issue 20's goal on this prefix: vocloud better than cloudscheduler on both axes. Measured
    # (docs/policies.md, session 11): 10,728 s mean wait at 738 idle VM-hours against 22,836 s at
    # 894 h, so the margins asserted here (10 % fewer idle VM-hours, a third less wait) leave room
    # for small changes and still fail if the trade-off of sessions 8-10 came back (vocloud then
    # 11,691 s at 1,923 h: the reservation's VMs idle for its last cores)
    assert v["vm_hours_idle"] <= 0.9 * cs["vm_hours_idle"]
    assert v["wait_mean_s"] <= 0.67 * cs["wait_mean_s"]


# The first 20,000 jobs of SDSC-SP2 (the CI size) against the peers that run every job:
# the static pool and cloudscheduler (~30 s wall, 60 s CPU). The queue-blind peers leave thousands
# of wide jobs unrun at this size and take ~7 minutes; they are compared at 2,000 jobs above and
# at 20,000 in ``bench_policies --limit 20000 --trace SDSC...`` (docs/policies.md, session 11).
SDSC_COMPLETE_JOBS = 20_000


@pytest.mark.slow
def test_first_20000_jobs_of_sdsc_sp2_against_the_peers_that_run_every_job() -> None:
    loaded = load_trace(SDSC, limit=SDSC_COMPLETE_JOBS)
    config = SimConfig(spec=default_spec(loaded.max_procs, None, None, None),
                       knobs=ElasticKnobs(worker_shape="job"))
    results = compare.compare(loaded.workload, config, ("static", "vocloud", "cloudscheduler"),
                              workers=2)
    by = {r.name: r.figures for r in results}
    for name, f in by.items():
        assert f["conservation_ok"], name
        assert not f["incomplete"] and f["runnable_never_ran"] == 0, name
    v, cs, st = by["vocloud"], by["cloudscheduler"], by["static"]
    # issue 20's goal: better on both axes. Measured (session 11): vocloud 10,428 s mean wait at
    # 5,715 idle VM-hours, cloudscheduler 15,959 s at 5,817 h, static 17,862 s at 61,305 h. The
    # replay is deterministic, so the thin idle margin over cloudscheduler is pinned as "no more",
    # and the wait with room for small changes (a fifth less)
    assert v["vm_hours_idle"] <= cs["vm_hours_idle"]
    assert v["wait_mean_s"] <= 0.8 * cs["wait_mean_s"]
    assert v["vm_hours_idle"] < st["vm_hours_idle"] and v["wait_mean_s"] < st["wait_mean_s"]

