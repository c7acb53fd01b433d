"""``bench_policies --idle-by-cause``: idle VM-hours by what the idle VM's VO was doing."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.bench_policies import CAUSES, idle_by_cause

from vocloud.sim.elastic import ElasticKnobs, ElasticSite
from vocloud.sim.run import SimConfig, default_spec, load_trace

TRACES = next((p / "shared" / "traces" for p in Path(__file__).resolve().parents
               if (p / "shared" / "traces").is_dir()), Path("shared/traces"))
SDSC = TRACES / "SDSC-SP2-1998-4.2-cln.swf.gz"


@pytest.mark.skipif(not SDSC.is_file(), reason="SDSC-SP2 trace not present")
def test_idle_hours_by_cause_add_up_and_name_the_reservation() -> None:
    loaded = load_trace(SDSC, limit=400)
    # the reservation at once (sessions 8-10; by default it waits a week, which 400 jobs never
    # reach): its cause must show
    config = SimConfig(spec=default_spec(loaded.max_procs, None, None, None),
                       knobs=ElasticKnobs(worker_shape="job", reserve_after_s=0.0))
    poll = ElasticSite.poll
    for name in ("vocloud", "cloudscheduler"):
        total, by = idle_by_cause(name, loaded.workload, config)
        assert total > 0
        # sampled at each poll: within a few percent of the replay's own idle VM-hours
        assert abs(sum(by.values()) - total) < 0.1 * total, (name, total, by)
        assert {cause for cause, _ in by} <= set(CAUSES)
        reserving = sum(h for (cause, _), h in by.items() if cause == CAUSES[1])
        if name == "vocloud":  # its reservation's VMs wait idle for the last cores (docs/policies.md)
            assert reserving > 0.5 * total, by
        else:  # cloudscheduler holds no reservation
            assert reserving == 0.0, by
    assert ElasticSite.poll is poll  # the sampling hook is removed again
