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
from tests.support.pgserver import PgServer, find_bindir
from tests.support.pgstandby import PgStandby, multi_host_url
from tests.support.procs import poll_until
from vocloud.client import ClientError
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


def test_the_front_ends_follow_a_promoted_standby(tmp_path_factory: pytest.TempPathFactory) -> None:
    """PostgreSQL's own HA: the primary dies, its streaming standby is promoted; the daemons,
    given both servers in one URL, reconnect to it, elect a leader and go on (docs/ha.md)."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    primary = PgServer(bindir)
    primary.start()
    standby: PgStandby | None = None
    fe: Frontends | None = None
    primary_up = True
    try:
        primary.create_db("ha_promote")
        standby = PgStandby(primary)
        standby.start()
        fe = Frontends(tmp_path_factory.mktemp("promote"), multi_host_url(primary, standby, "ha_promote"),
                       n=2, extra_env={"VOCLOUD_BATCH_SYSTEM": ""})
        fe.start()
        with fe.client(fe.daemons[1]) as c:
            c.post("/hosts", {"name": "pro-h", "cpu": 8, "memory": 8192})
            before = c.post("/vms", {"template": "CPU=1\nMEMORY=64\n", "count": 2})["ids"]
            poll_until(lambda: all(c.get(f"/vms/{v}")["state"] == "RUNNING" for v in before), 60,
                       "2 RUNNING before the failover")
        poll_until(standby.caught_up, 30, "the standby caught up")
        primary.stop()  # the primary's machine is gone
        primary_up = False
        t0 = time.monotonic()
        standby.promote()
        fe.wait_leader(60)
        took = time.monotonic() - t0

        def created() -> list[int] | None:
            try:
                with fe.client(fe.daemons[0]) as c:
                    ids: list[int] = c.post("/vms", {"template": "CPU=1\nMEMORY=64\n"})["ids"]
                    return ids
            except ClientError:
                return None  # a pooled connection to the dead primary, dropped on this error

        [after] = poll_until(created, 60, "a VM created after the promotion", interval=0.5)
        with fe.client(fe.daemons[1]) as c:
            poll_until(lambda: c.get(f"/vms/{after}")["state"] == "RUNNING", 60, "booted by the new leader")
            assert [c.get(f"/vms/{v}")["state"] for v in before] == ["RUNNING", "RUNNING"]
        print(f"a leader on the promoted standby {took:.2f} s after `pg_ctl promote`")
    finally:
        if fe is not None:
            fe.stop()
        if standby is not None:
            standby.stop()
        if primary_up:
            primary.stop()
