"""Pool administration: rights, validation (nothing changes on bad input), and the REST routes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests.support.pools import OWN, Site
from vocloud.api.pools import router
from vocloud.api.rest import create_app
from vocloud.errors import Conflict, Forbidden, InvalidInput, NotFound
from vocloud.service.cloud import Cloud
from vocloud.store.pools import PoolEventRow, PoolRow, PoolVMRow
from vocloud.store.schema import VM


def _snapshot(cloud: Cloud) -> list[tuple[Any, ...]]:
    with cloud.db.read() as s:
        rows = s.scalars(select(PoolRow).order_by(PoolRow.id)).all()
        events = s.scalar(select(func.count()).select_from(PoolEventRow))
        return [(r.vo, r.template_id, r.min_vms, r.max_vms, r.weight, r.cores, r.memory,
                 r.enabled) for r in rows] + [("events", events)]


@pytest.fixture
def site(cloud: Cloud, tmp_path: Path) -> Site:
    s = Site(cloud, tmp_path, hosts=1)
    s.vo("atlas", OWN)
    s.vo("cms")
    s.pools.create(s.admin, "atlas", "atlas-wn", cores=1, memory=512, max=4)
    return s


def test_bad_input_changes_nothing(site: Site) -> None:
    a = site.admin
    before = _snapshot(site.cloud)
    with pytest.raises(NotFound, match="VO 'lhcb' is not a group"):
        site.pools.create(a, "lhcb", "std-worker", cores=1, memory=512)
    with pytest.raises(InvalidInput, match="max_vms must be >= min_vms"):
        site.pools.create(a, "cms", "std-worker", cores=1, memory=512, min=5, max=2)
    with pytest.raises(InvalidInput, match="cores_per_vm"):
        site.pools.create(a, "cms", "std-worker", cores=0, memory=512)
    with pytest.raises(NotFound, match="template nope"):
        site.pools.create(a, "cms", "nope", cores=1, memory=512)
    with pytest.raises(Forbidden, match="not visible to VO cms"):
        site.pools.create(a, "cms", "atlas-wn", cores=1, memory=512)  # atlas' private template
    with pytest.raises(InvalidInput, match="unknown pool attribute"):
        site.pools.create(a, "cms", "std-worker", cores=1, memory=512, colour="red")
    with pytest.raises(Conflict, match="already has a pool"):
        site.pools.create(a, "atlas", "atlas-wn", cores=1, memory=512)
    with pytest.raises(InvalidInput, match="max_vms must be >= min_vms"):
        site.pools.update(a, "atlas", min=9)
    with pytest.raises(InvalidInput, match="bad value"):
        site.pools.update(a, "atlas", max="many")
    with pytest.raises(InvalidInput, match="weight must be > 0"):
        site.pools.update(a, "atlas", weight=0)
    with pytest.raises(NotFound, match="VO cms has no pool"):
        site.pools.update(a, "cms", max=3)
    assert _snapshot(site.cloud) == before


def test_rights_follow_the_vo_group(site: Site) -> None:
    atlas, cms = site.users["atlas"], site.users["cms"]
    before = _snapshot(site.cloud)
    # another VO's user: may neither edit, delete nor even see atlas' pool
    with pytest.raises(Forbidden, match="may not update the pool of VO atlas"):
        site.pools.update(cms, "atlas", max=1)
    with pytest.raises(Forbidden):
        site.pools.delete(cms, "atlas")
    with pytest.raises(Forbidden):
        site.pools.show(cms, "atlas")
    with pytest.raises(Forbidden):
        site.pools.events(cms, "atlas")
    assert site.pools.list(cms) == []
    # a plain VO member sees its pool but may not change it without MANAGE on its group
    assert [p["vo"] for p in site.pools.list(atlas)] == ["atlas"]
    with pytest.raises(Forbidden):
        site.pools.update(atlas, "atlas", max=1)
    assert _snapshot(site.cloud) == before
    # granting the VO's group MANAGE on itself makes its members the pool's managers
    gid = site.pools.show(atlas, "atlas")["group_id"]
    site.cloud.accounts.create_acl(site.admin, f"@{gid}", "GROUP", f"@{gid}", "MANAGE")
    assert site.pools.update(atlas, "atlas", max=1)["max"] == 1
    with pytest.raises(Forbidden):  # ... of its own pool only
        site.pools.create(atlas, "cms", "std-worker", cores=1, memory=512)


def test_template_change_and_lifetime_clear(site: Site) -> None:
    a = site.admin
    out = site.pools.update(a, "atlas", template="std-worker", max_lifetime=3600)
    assert out["template"] == "std-worker" and out["image"] == "std-worker"
    assert out["max_lifetime"] == 3600
    assert site.pools.update(a, "atlas", max_lifetime=0)["max_lifetime"] is None
    assert [e["action"] for e in site.pools.events(a, "atlas")] == ["create", "update", "update"]


def test_rest_routes(site: Site) -> None:
    app = create_app(site.cloud)
    app.include_router(router())
    token = site.cloud.accounts.new_token(site.admin, "admin")["token"]
    c = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    r = c.post("/api/v1/pools", json={"vo": "cms", "template": "std-worker", "cores": 1,
                                      "memory": 512, "min": 1, "max": 3, "weight": 2})
    assert r.status_code == 201, r.text
    assert r.json()["weight"] == 2
    bad = c.post("/api/v1/pools", json={"vo": "cms", "template": "std-worker", "cores": 1,
                                        "memory": 512, "bogus": 1})
    assert bad.status_code == 400 and bad.json()["error"] == "InvalidInput"
    bad = c.post("/api/v1/pools", json={"vo": "nope", "template": "std-worker", "cores": 1,
                                        "memory": 512})
    assert bad.status_code == 404 and "not a group" in bad.json()["message"]
    site.sim.submit("cms", runtime=100)
    site.step(2)
    rows = {p["vo"]: p for p in c.get("/api/v1/pools").json()}
    assert set(rows) == {"atlas", "cms"}
    cms = rows["cms"]
    for column in ("image", "pending_jobs", "pending_cores", "desired", "booting", "running",
                   "draining", "idle", "min", "max"):
        assert column in cms
    assert (cms["desired"], cms["running"], cms["min"], cms["max"]) == (1, 1, 1, 3)
    r = c.patch("/api/v1/pools/cms", json={"max": 2})
    assert r.status_code == 200 and r.json()["max"] == 2
    assert c.patch("/api/v1/pools/cms", json={"min": 5}).status_code == 400
    show = c.get("/api/v1/pools/cms").json()
    assert len(show["vms"]) == 1 and show["vms"][0]["state"] == "JOINED_BUSY"
    events = c.get("/api/v1/pools/cms/events").json()
    assert any(e["action"] == "boot" and e["reason"].startswith("boot 1") for e in events)
    assert c.delete("/api/v1/pools/cms").status_code == 409
    assert c.delete("/api/v1/pools/cms?force=true").status_code == 202
    assert c.delete("/api/v1/pools/atlas").status_code == 200
    assert c.get("/api/v1/pools/atlas").status_code == 404
    anon = TestClient(app)
    assert anon.get("/api/v1/pools").status_code == 401


def test_worker_shape_sizes_the_workers_the_controller_boots(site: Site) -> None:
    """``worker_shape``: ``job`` boots workers as wide as the widest waiting job, ``host``
    whole-host workers (hosts here: 8 cores, 16 GiB); a bad shape is refused, nothing changed."""
    a = site.admin
    before = _snapshot(site.cloud)
    with pytest.raises(InvalidInput, match="worker_shape: 'huge' is not one of fixed, job, host"):
        site.pools.update(a, "atlas", worker_shape="huge")
    with pytest.raises(InvalidInput, match="is not one of"):
        site.pools.create(a, "cms", "std-worker", cores=1, memory=512, worker_shape=3)
    assert _snapshot(site.cloud) == before
    assert site.pools.show(a, "atlas")["worker_shape"] == "fixed"
    site.pools.update(a, "atlas", worker_shape="job")
    site.sim.submit("atlas", cores=3)
    site.step()
    with site.cloud.db.read() as s:
        sizes = [(r.cores, r.memory) for r in s.scalars(select(PoolVMRow))]
        vms = [(v.cpu_m, v.memory) for v in s.scalars(select(VM).where(VM.name.like("atlas-wn%")))]
    assert sizes == [(3, 1536)]  # 512 MiB per core, as the pool's 1-core shape
    assert vms == [(3000, 1536)]
    # a whole-host worker: the one host has 5 cores left, so the boot waits and says why
    site.pools.create(a, "cms", "std-worker", cores=1, memory=512, worker_shape="host")
    site.sim.submit("cms", cores=1)
    site.step()
    notes = site.pools.show(a, "cms")["notes"]
    assert "holding 1 of 1 boots: site has 5 free cores / 14848 MiB free" in notes


def test_headroom_keeps_spare_workers_booted_ahead(site: Site) -> None:
    """``headroom``: spare workers per busy one, booted with no job waiting for them; bad values
    (negative, above 10, NaN, a flag) are refused and nothing changes."""
    a = site.admin
    before = _snapshot(site.cloud)
    for bad in (-0.5, 11, float("nan"), True, "x"):
        with pytest.raises(InvalidInput):
            site.pools.update(a, "atlas", headroom=bad)
    with pytest.raises(InvalidInput, match="headroom"):
        site.pools.create(a, "cms", "std-worker", cores=1, memory=512, headroom=-1)
    assert _snapshot(site.cloud) == before
    assert site.pools.show(a, "atlas")["headroom"] == 0.0
    site.pools.update(a, "atlas", headroom=1)
    assert site.pools.show(a, "atlas")["headroom"] == 1.0
    site.sim.submit("atlas", runtime=10_000)
    site.step(3)
    show = site.pools.show(a, "atlas")
    states = sorted(v["state"] for v in show["vms"])
    # one busy worker for the job and one spare beside it, though no job waits
    assert states == ["JOINED_BUSY", "JOINED_IDLE"], show
