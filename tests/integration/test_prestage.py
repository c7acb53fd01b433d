"""A pool's first boots pre-stage its image (issue 18): namespace SSH hosts, the real controller.

What must hold: when a VO pool first boots workers onto qemu hosts that lack its image, the pool
controller starts **one** distribution of that image to the hosts that could take the workers
(the front-end sends the image once, the hosts the rest), the boots wait for it (the pool's
events say why, with the progress), and once every host holds the image the workers are created;
later boots start no second distribution. A VO cannot use it to copy an image it may not USE,
and only an administrator sets a pool's ``prestage``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.integration.test_distribute import SIZE, Lab, _sha
from tests.support.dstlab import DstLab
from tests.support.helpers import admin, user_in
from tests.support.netns import LabUnavailable
from vocloud.batch.sim import SimBatch
from vocloud.core.prestage import Mode
from vocloud.engine.pools import PoolController
from vocloud.engine.prestage import Prestager, PrestageSettings
from vocloud.errors import Forbidden
from vocloud.model.lifecycle import HostState
from vocloud.service.cloud import Cloud
from vocloud.service.distribution import DistributionService, Job
from vocloud.service.pools import PoolService
from vocloud.store.pools import PoolEventRow, PoolRow, PoolVMRow
from vocloud.store.schema import Host

HOSTS = 4


@pytest.fixture(scope="module")
def dst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = DstLab(tmp_path_factory.mktemp("prestage"))
    try:
        lab.start()
        for _ in range(HOSTS):
            lab.add_host()
    except LabUnavailable as exc:
        lab.close()
        if os.environ.get("VOCLOUD_REQUIRE_NETNS"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    ssh = lab.ssh_transport(command_timeout=120)
    image = lab.root / "repo" / "base.raw"
    image.parent.mkdir()
    image.write_bytes(os.urandom(SIZE))
    try:
        yield Lab(lab, ssh, image, _sha(image))
    finally:
        ssh.close()
        lab.close()


def _site(cloud: Cloud, hosts: list[str], image_path: Path) -> None:
    """qemu hosts (monitored, 4 cores / 4 GiB free each), a public image ``base``."""
    with cloud.db.write() as s:
        s.execute(update(Host).where(Host.name.in_(hosts)).values(
            state=HostState.MONITORED.value, total_cpu_m=4000, total_mem=4096))
    root = admin(cloud)
    cloud.datastores.create(root, "repo", str(image_path.parent))
    cloud.images.create(root, "base", str(image_path), "raw", public=True)


def _pool(cloud: Cloud, vo: str, body: str, **options: Any) -> PoolService:
    member = user_in(cloud, f"{vo}-user", vo)
    cloud.templates.create(member, body, name=f"{vo}-wn")
    pools = PoolService(cloud.db, cloud.vms)
    pools.create(admin(cloud), vo, f"{vo}-wn", 1, 512, **options)
    return pools


def _events(cloud: Cloud, vo: str) -> list[tuple[str, str]]:
    with cloud.db.read() as s:
        return [(e.action, e.reason) for e in s.scalars(
            select(PoolEventRow).join(PoolRow, PoolRow.id == PoolEventRow.pool_id)
            .where(PoolRow.vo == vo).order_by(PoolEventRow.id))]


def _rows(cloud: Cloud, vo: str) -> list[PoolVMRow]:
    with cloud.db.read() as s:
        return list(s.scalars(select(PoolVMRow).join(PoolRow, PoolRow.id == PoolVMRow.pool_id)
                              .where(PoolRow.vo == vo)))


def test_a_pools_first_boots_distribute_its_image_once(dst: Lab, cloud: Cloud) -> None:
    for h in dst.lab.hosts:  # each database's run starts with empty caches
        dst.cached(h.index).unlink(missing_ok=True)
    dst.register(cloud)
    names = [h.netns for h in dst.lab.hosts]
    _site(cloud, names, dst.image)
    _pool(cloud, "atlas", 'CPU=1\nMEMORY=512\nDISK=[IMAGE="base"]\n', max=6)
    svc = dst.service(cloud)
    sim = SimBatch()
    for _ in range(4):
        sim.submit("atlas", runtime=600)
    ctl = PoolController(cloud, sim, prestager=Prestager(svc, PrestageSettings(Mode.WAIT, fanout=1)))
    root = admin(cloud)

    ctl.reconcile_once()
    rows = _rows(cloud, "atlas")
    assert len(rows) == 4 and all(r.vm_id is None for r in rows)  # the boots wait
    [dist] = svc.list(root)
    assert dist["by"] == "for the pool of VO atlas" and dist["image"] == "base"
    assert sorted(h["host"] for h in dist["hosts"]) == sorted(names)
    events = _events(cloud, "atlas")
    assert ("prestage", f"pre-staging image base to {HOSTS} hosts for VO atlas "
                        f"(distribution {dist['id']})") in events, events
    assert any(a == "prestage-wait" and r.startswith(f"pre-staging image base to {HOSTS} hosts: ")
               and "boots wait" in r for a, r in events), events

    deadline = time.monotonic() + 60
    early: dict[int, tuple[set[str], set[str]]] = {}
    while svc.show(root, dist["id"])["state"] == "running":
        assert time.monotonic() < deadline, svc.show(root, dist["id"])
        ctl.reconcile_once()  # boots on holders may go meanwhile, pinned there; the rest wait
        view = svc.show(root, dist["id"])
        if view["state"] == "running":  # so it was running when this pass decided
            holders = {h["host"] for h in view["hosts"] if h["state"] in ("verified", "held")}
            for r in _rows(cloud, "atlas"):
                if r.vm_id is not None and r.vm_id not in early:
                    text = str(cloud.vms.show(root, r.vm_id)["template"])
                    early[r.vm_id] = (set(re.findall(r'NAME = \\?"([^"\\]+)', text)), holders)
        time.sleep(0.2)
    for pinned, holders in early.values():  # pinned to hosts that held it when created
        assert pinned and pinned <= holders, early
    ctl.reconcile_once()
    res = svc.show(root, dist["id"])["result"]
    assert res["ok"] and res["front_end_bytes"] == SIZE, res  # once, not once per host
    assert res["host_bytes"] == (HOSTS - 1) * SIZE
    assert all(_sha(dst.cached(h.index)) == dst.sha for h in dst.lab.hosts)
    assert all(r.vm_id is not None for r in _rows(cloud, "atlas"))  # every boot went
    assert dst.leftovers() == []

    # more boots later: the hosts hold it, no second distribution, nobody waits
    for _ in range(2):
        sim.submit("atlas", runtime=600)
    ctl.reconcile_once()
    rows = _rows(cloud, "atlas")
    assert len(rows) == 6 and all(r.vm_id is not None for r in rows)
    assert len(svc.list(root)) == 1


def _refusing_runner(job: Job, progress: Any) -> dict[str, Any]:
    raise AssertionError(f"no distribution may run here: {job}")


def test_a_vo_cannot_get_an_image_it_may_not_use_copied(cloud: Cloud, tmp_path: Path) -> None:
    """The VO's template names the site's private image: no distribution; the boot is refused
    as without pre-staging. And a VO member may not set a pool's prestage."""
    root = admin(cloud)
    cloud.hosts.create(root, "q1", "qemu", "ssh://root@192.0.2.1")
    img = tmp_path / "repo" / "secret.raw"
    img.parent.mkdir()
    img.write_bytes(b"\0" * 4096)
    with cloud.db.write() as s:
        s.execute(update(Host).where(Host.name == "q1").values(
            state=HostState.MONITORED.value, total_cpu_m=4000, total_mem=4096))
    cloud.datastores.create(root, "repo", str(img.parent))
    cloud.images.create(root, "secret", str(img), "raw")  # not public: the VO may not USE it
    pools = _pool(cloud, "cms", 'CPU=1\nMEMORY=512\nDISK=[IMAGE="secret"]\n', max=2)
    svc = DistributionService(cloud.db, _refusing_runner)
    sim = SimBatch()
    sim.submit("cms", runtime=600)
    ctl = PoolController(cloud, sim, prestager=Prestager(svc))
    ctl.reconcile_once()
    assert svc.list(root) == []
    events = _events(cloud, "cms")
    assert not [e for e in events if e[0].startswith("prestage")], events
    assert any(a in ("boot-refused", "boot-failed") and "may not USE IMAGE" in r for a, r in events), events
    member = cloud.authenticate(cloud.accounts.create_user(root, "cms-boss", "cms")["token"])
    for value in ("wait", "off"):
        with pytest.raises(Forbidden):
            pools.update(member, "cms", prestage=value)
    assert pools.update(root, "cms", prestage="off")["prestage"] == "off"
    assert pools.update(root, "cms", prestage="site")["prestage"] == "site"
