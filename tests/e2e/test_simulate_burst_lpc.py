"""Issue 13's simulator acceptance at CI size: the ``burst`` scenario on LPC-EGEE next to
``elastic``, on a site and on the same site cut to half its hosts.

The full-trace run is ``python -m bench.bench_burst`` (docs/bursting.md); the trace's first
20,000 jobs barely load a 70-host site, so CI replays the first 5,000 jobs on a site small
enough to queue (8 x 2 cores) and on its half (4 x 2): the shape of the bench's table, in ~15 s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vocloud.sim.burst import BurstKnobs
from vocloud.sim.dist import parse_duration
from vocloud.sim.run import SimConfig, load_trace, run_scenario
from vocloud.sim.sites import SiteSpec

LPC = Path(__file__).resolve().parents[3] / "shared" / "traces" / "LPC-EGEE-2004-1.2-cln.swf.gz"
JOBS = 5000


@pytest.mark.skipif(not LPC.exists(), reason="LPC-EGEE trace not present")
def test_burst_takes_the_wait_away_on_the_full_and_the_halved_site() -> None:
    loaded = load_trace(LPC, limit=JOBS)
    knobs = BurstKnobs(cloud_cores=140, boot=parse_duration("lognormal:120,0.5", "boot"),
                       price_core_hour=0.05, burst_limit=0)
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    for hosts in (8, 4):
        config = SimConfig(spec=SiteSpec(hosts, 2, 4096), scenarios=("elastic", "burst"), burst=knobs)
        for name in ("elastic", "burst"):
            rows[hosts, name] = run_scenario(name, loaded.workload, config).figures
    for (hosts, name), f in rows.items():
        print(f"site {hosts}x2 {name}: wait mean {f['wait_mean_s']:.0f} s, p95 {f['wait_p95_s']:.0f} s, "
              f"cloud VMs {f.get('cloud_vms_booted', 0)}, cost ${f.get('cloud_cost', 0.0):.2f}")
        # Every runnable job ran (the trace loader excludes a few it cannot replay: w.excluded).
        assert f["runnable_never_ran"] == 0 and not f["incomplete"], (hosts, name, f)
        assert f["jobs_completed"] == f["jobs_runnable"] > 0.99 * len(loaded.workload)
    full_e, full_b = rows[8, "elastic"], rows[8, "burst"]
    half_e, half_b = rows[4, "elastic"], rows[4, "burst"]
    # Elastic alone: halving the site makes the queue worse; both queue for hours at the peak.
    assert half_e["wait_mean_s"] > full_e["wait_mean_s"] > 600
    # Bursting takes the wait away on both sites (to the cloud's boot time, minutes at most) ...
    for burst, elastic in ((full_b, full_e), (half_b, half_e)):
        assert burst["wait_mean_s"] < elastic["wait_mean_s"] / 10
        assert burst["wait_p95_s"] < 600
        assert burst["cloud_vms_booted"] > 0 and burst["cloud_peak_vms"] <= 140
    # ... and the halved site pays for more cloud than the full one; elastic pays nothing.
    assert half_b["cloud_cost"] > full_b["cloud_cost"] > 0
    assert half_b["cloud_core_hours"] > full_b["cloud_core_hours"]
    assert "cloud_cost" not in full_e or not full_e["cloud_cost"]
