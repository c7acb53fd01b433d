"""``vocloud pool`` against a daemon whose VO-pool controller watches the ``sim`` batch system.

Two VOs submit jobs; their pools grow, the jobs run on the workers, the idle workers are drained
and shut down, and the pools return to their minimum — all through the real daemon, its loops and
the CLI, with the sim batch system standing in for Slurm (whose end-to-end run needs a worker image
with slurmd: the VO-cluster issue).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, start_daemon, stop_daemon
from vocloud.batch.sim import SimBatch

POOL_LOOPS = {"VOCLOUD_BATCH_SYSTEM": "sim", "VOCLOUD_POOL_INTERVAL": "0.3"}


@pytest.fixture
def pool_daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = start_daemon(tmp_path, POOL_LOOPS)
    try:
        yield d
    finally:
        stop_daemon(d)


def test_pools_grow_run_jobs_and_shrink(pool_daemon: Daemon, tmp_path: Path) -> None:
    d = pool_daemon
    d.ok("host", "create", "node1", "--vmm", "sim", "--cpu", "8", "--memory", "16G")
    for vo in ("atlas", "cms"):
        d.ok("group", "create", vo)
        tmpl = tmp_path / f"{vo}.tmpl"
        tmpl.write_text(f'NAME="{vo}-worker"\nCPU=1\nMEMORY=1024\n')
        d.ok("template", "create", str(tmpl), "--public")
        d.ok("pool", "create", vo, "--template", f"{vo}-worker", "--cores", "1", "--memory", "1G",
             "--min", "0", "--max", "4", "--idle-timeout", "1", "--scale-down-delay", "0")
    # bad input: unknown VO, min > max, unknown template
    assert "nope" in d.fails("pool", "create", "nope", "--template", "atlas-worker").err
    d.fails("pool", "update", "atlas", "--min", "9", "--max", "2")
    d.fails("pool", "create", "cms", "--template", "no-such-template")
    batch = SimBatch(path=d.data_dir / "batch-sim.json")
    jobs = [batch.submit("atlas", cores=1, memory=512, runtime=2) for _ in range(6)]
    jobs += [batch.submit("cms", cores=1, memory=512, runtime=2) for _ in range(3)]

    def pools() -> dict[str, dict[str, int]]:
        return {p["vo"]: p for p in d.api("GET", "/pools")}

    d.wait_for("both pools to run workers",
               lambda: all(p["running"] > 0 for p in pools().values()), timeout=60)
    assert pools()["atlas"]["running"] <= 4 and pools()["cms"]["running"] <= 3
    d.wait_for("every job to finish", lambda: set(batch.finished) == set(jobs), timeout=90)
    assert batch.killed == []
    d.wait_for("pools back to their minimum",
               lambda: all(p["running"] + p["booting"] + p["draining"] == 0 for p in pools().values()),
               timeout=90)
    listing = d.ok("pool", "list").out
    assert "atlas" in listing and "cms" in listing and "DESIRED" in listing
    ev = d.ok("pool", "events", "atlas").out
    assert "boot" in ev and "drain" in ev
    shown = d.ok("pool", "show", "atlas", "--json").json()
    assert shown["vo"] == "atlas" and shown["max"] == 4
    assert shown["owner"] == "pool.atlas"  # the workers were created as the VO
    assert all(v["user"] == f"pool.{v['group']}" for v in d.api("GET", "/vms", params={"all": True}))
    # the site template: an administrator's template only; a VO's own pool template may hold
    # nothing only an administrator may set
    assert "does not exist" in d.fails("pool", "update", "atlas", "--site-template", "nope").err
    site = tmp_path / "site.tmpl"
    site.write_text('NAME="site-wn"\nCONTEXT=[SITE="yes"]\n')
    d.ok("template", "create", str(site))
    d.ok("pool", "update", "atlas", "--site-template", "site-wn")
    assert "SITE_TEMPLATE" in d.ok("pool", "show", "atlas").out
    bad = tmp_path / "bad.tmpl"
    bad.write_text('NAME="virtfs-worker"\nCPU=1\nMEMORY=1024\nVIRTFS="/"\n')
    d.ok("template", "create", str(bad), "--public")
    assert "VIRTFS" in d.fails("pool", "update", "atlas", "--template", "virtfs-worker").err
    d.ok("pool", "delete", "cms")
    assert [p["vo"] for p in d.api("GET", "/pools")] == ["atlas"]
