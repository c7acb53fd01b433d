"""Parallel traces in the virtual scenarios: the static layout, and a reduced SDSC-SP2 replay in
which every runnable job runs in physical, static and elastic with default options."""

from __future__ import annotations

from pathlib import Path

import pytest

from vocloud.sim.run import SimConfig, default_spec, load_trace, run_all
from vocloud.sim.sites import static_layout

SDSC = Path(__file__).resolve().parents[2].parent / "shared/traces/SDSC-SP2-1998-4.2-cln.swf.gz"
SDSC = SDSC if SDSC.exists() else Path("/work/shared/traces/SDSC-SP2-1998-4.2-cln.swf.gz")


def test_static_layout_shares_hosts_between_vos_too_wide_for_their_own() -> None:
    # 2-core hosts; VO 0 has 6 hosts and 4-core jobs (fits), VO 1 one host and a 6-core job
    # (3 hosts), VO 2 two hosts and 2-core jobs, VO 3 one host and serial jobs: VO 1 shares, then
    # the smallest dedicated VOs join (VO 3, then VO 2) until the shared partition has 3 hosts
    assert static_layout([4, 6, 2, 1], [6, 1, 2, 1], 2) == {1, 2, 3}
    assert static_layout([4, 2, 2], [6, 1, 1], 2) == set()  # everyone fits: no shared partition
    # nothing left to add: every VO shares the whole site
    assert static_layout([8, 8], [1, 1], 2) == {0, 1}


@pytest.mark.skipif(not SDSC.exists(), reason="needs ../shared/traces/SDSC-SP2-1998-4.2-cln.swf.gz")
def test_every_runnable_sdsc_job_runs_in_every_scenario() -> None:
    lt = load_trace(SDSC, limit=1000)
    config = SimConfig(spec=default_spec(lt.max_procs, None, None, None))  # 64 hosts x 2 cores
    results = {r.name: r.figures for r in run_all(lt.workload, config)}
    assert max(lt.workload.procs) >= 64  # jobs as wide as half the machine
    for name, f in results.items():
        assert f["conservation_ok"], name
        assert f["runnable_never_ran"] == 0, (name, f["never_ran_reasons"])
        assert not f["incomplete"], name
    assert results["static"]["static_shared_vos"] > 0
    assert results["elastic"]["refused_shutdowns"] == 0
    assert results["elastic"]["peak_vms"] > 0
