"""Several front-ends on one PostgreSQL store (docs/ha.md): every one serves the whole API, one
leads the loops, kill -9 of the leader during churn hands the lead over within 10 s with no VM
lost or duplicated, no double boot, no double lease and exact quotas. One module-scoped set of
three front-ends; the 20-kill series is ``bench/bench_failover.py``."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import delete, select

from tests.support.frontends import Churn, Frontends, invariants, settled, state_counts
from tests.support.pgserver import PgServer
from tests.support.procs import poll_until
from vocloud.engine.leader import KEY, parse
from vocloud.store.db import Database
from vocloud.store.schema import SiteSetting


@pytest.fixture(scope="module")
def fe(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Frontends]:
    url = pg_server.create_db("ha_frontends")
    f = Frontends(tmp_path_factory.mktemp("ha"), url, n=3)
    f.start()
    yield f
    f.stop()


def test_every_front_end_serves_the_whole_api_and_one_leads(fe: Frontends) -> None:
    lead = fe.wait_leader()
    followers = [d for d in fe.daemons if d is not lead]
    roles = {fe.status(d)["this"]["role"] for d in followers}
    assert roles == {"follower"} and fe.status(lead)["this"]["role"] == "leader"
    doc = fe.status(followers[0])
    assert lead.proc is not None and doc["leader"]["pid"] == lead.proc.pid
    assert doc["leader"]["data_dir"] == str(lead.data_dir.resolve()) and doc["store"] == "postgresql"
    f = followers[0]
    with fe.client(f) as c:  # a VM created on a follower is booted by the leader
        c.post("/hosts", {"name": "api-h", "cpu": 4, "memory": 8192})
        [vm] = c.post("/vms", {"template": "CPU=1\nMEMORY=64\n"})["ids"]
        poll_until(lambda: c.get(f"/vms/{vm}")["state"] == "RUNNING", 30, "RUNNING via a follower")
        assert "sim guest" in c.get_text(f"/vms/{vm}/log")  # the console, through the driver
        c.post(f"/vms/{vm}/action", {"action": "terminate"})
    auth = {"Authorization": f"Bearer {fe.token}"}
    for d in followers:  # the other front-ends of the same process: EC2, XML-RPC, OCCI, dashboard
        assert httpx.get(f"{d.base_url}/ui/", timeout=10).status_code == 200
        r = httpx.post(f"{d.base_url}/RPC2", timeout=10, content=(
            "<?xml version='1.0'?><methodCall><methodName>one.system.version</methodName><params>"
            f"<param><value><string>admin:{fe.token}</string></value></param></params></methodCall>"))
        assert r.status_code == 200 and "<boolean>1</boolean>" in r.text, r.text
        assert httpx.get(f"{d.base_url}/compute", headers=auth, timeout=10).status_code in (200, 401)
        r = httpx.get(f"{d.base_url}/ec2/", params={"Action": "DescribeRegions"}, timeout=10)
        assert r.status_code in (400, 401, 403) and "<Code>" in r.text, r.text


def test_status_is_for_administrators_only(fe: Frontends) -> None:
    d = fe.daemons[1]
    with fe.client(d) as c:
        c.post("/groups", {"name": "statvo"})
        token = c.post("/users", {"name": "stat-user", "group": "statvo"})["token"]
    r = httpx.get(f"{d.url}/status", headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert r.status_code == 403 and r.json()["error"] == "Forbidden", r.text
    assert httpx.get(f"{d.url}/status", timeout=10).status_code == 401
    out = d.cli("status", token=fe.token)
    assert out.code == 0 and "leading since" in out.out, out
    assert f"pid {d.proc.pid if d.proc else 0} on" in out.out, out
    assert d.cli("status", token=token).code == 2


def test_followers_never_write_loop_decisions(fe: Frontends) -> None:
    """A loop transaction of a past term is refused by the fence, whoever runs it."""
    from vocloud.engine.leader import FencedDatabase, FencedOut

    db = Database(fe.db_url)
    try:
        with db.read() as s:
            rec = parse(s.scalar(select(SiteSetting.value).where(SiteSetting.key == KEY)))
        assert rec is not None
        fenced: list[bool] = []
        stale = FencedDatabase(db, rec.epoch - 1, lambda: fenced.append(True))
        with pytest.raises(FencedOut), stale.write() as s:
            s.add(SiteSetting(key="ha-test", value="written by a past term"))
        assert fenced == [True]
        with db.read() as s:
            assert s.get(SiteSetting, "ha-test") is None
        with FencedDatabase(db, rec.epoch, lambda: None).write() as s:  # the current term writes
            s.add(SiteSetting(key="ha-test", value="ok"))
        with db.write() as s:
            s.execute(delete(SiteSetting).where(SiteSetting.key == "ha-test"))
    finally:
        db.dispose()


def test_kill_the_leader_during_churn(fe: Frontends) -> None:
    churn = Churn(fe)
    churn.setup(hosts=3)
    churn.start(clients=2)
    takeovers = []
    try:
        time.sleep(2)
        for _ in range(3):
            takeovers.append(fe.kill_leader())
            time.sleep(1.5)
    finally:
        churn.finish()
        fe.settle_restarts()
    assert max(takeovers) < 10, f"{takeovers}\n{fe.elections()}"
    db = Database(fe.db_url)
    try:
        poll_until(lambda: settled(db), 60, "every VM settled after the failovers",
                   lambda: state_counts(db), interval=0.5)
        time.sleep(1.5)  # the leader's last monitor pass
        figures = invariants(db, fe.shared, churn.created)
    finally:
        db.dispose()
    assert figures["live"] > 0 and figures["workers"] > 0, figures
    assert not churn.errors, churn.errors[:5]
    print(f"takeovers {[round(t, 2) for t in takeovers]} s; {figures}")
