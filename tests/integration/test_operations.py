"""Operations against the real daemon over HTTP (both databases, one daemon per database):
a real Prometheus scrapes ``/metrics`` and answers PromQL with the RUNNING VMs per VO the REST
API reports; the ``vocloud acct`` / ``vocloud audit`` commands; the audit log names the REST
front-end."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cli import clean_env, vocloud_command
from tests.support.daemon import Daemon
from tests.support.pgserver import PgServer
from tests.support.ports import free_port
from tests.support.procs import wait_until
from tests.support.prometheus import Prometheus


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One daemon with two VOs: atlas runs 3 VMs, cms 2 (one more held)."""
    root = tmp_path_factory.mktemp(f"ops-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'vocloud.db'}"
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        url = server.create_db(f"ops{os.getpid()}_{int(time.time() * 1000) % 100000}")
    d = Daemon(root, url, free_port(), {"VOCLOUD_SHOWBACK_CPU_HOUR": "0.5",
                                        "VOCLOUD_APEL_SITE_NAME": "TEST-SITE"})
    d.start()
    tokens: dict[str, str] = {}
    with d.client() as c:
        for vo in ("atlas", "cms"):
            assert c.post("/groups", json={"name": vo}).status_code == 201
            tokens[vo] = c.post("/users", json={"name": f"{vo}-u", "group": vo}).json()["token"]
        host = {"name": "h1", "vmm": "sim", "cpu": 16, "memory": 65536}
        assert c.post("/hosts", json=host).status_code == 201
    with d.client(tokens["atlas"]) as c:
        assert c.post("/vms", json={"template": "CPU=1\nMEMORY=256\n", "count": 3}).status_code == 201
    with d.client(tokens["cms"]) as c:
        assert c.post("/vms", json={"template": "CPU=2\nMEMORY=512\n", "count": 2}).status_code == 201
        assert c.post("/vms", json={"template": "CPU=1\nMEMORY=64\n", "hold": True}).status_code == 201
    with d.client() as c:
        wait_until(lambda: Counter(v["state"] for v in c.get("/vms").json())["RUNNING"] == 5,
                   time.monotonic() + 60, "5 VMs RUNNING")
    yield {"daemon": d, "tokens": tokens, "root": root, "url": url}
    d.stop()


def _running_per_vo(d: Daemon) -> dict[str, int]:
    """What the REST API reports: RUNNING VMs per VO (group name)."""
    with d.client() as c:
        groups = {g["id"]: g["name"] for g in c.get("/groups").json()}
        out: Counter[str] = Counter()
        for v in c.get("/vms").json():
            if v["state"] == "RUNNING":
                out[groups[c.get(f"/vms/{v['id']}").json()["group_id"]]] += 1
    return dict(out)


def test_prometheus_scrapes_running_vms_per_vo(site: dict[str, Any]) -> None:
    d: Daemon = site["daemon"]
    want = _running_per_vo(d)
    assert want == {"atlas": 3, "cms": 2}
    prom = Prometheus(site["root"] / "prometheus", f"127.0.0.1:{d.port}", token=d.token)
    prom.start()
    try:
        def answer() -> dict[str, int] | None:
            rows = prom.query('sum by (vo) (vocloud_vms{state="RUNNING"})')
            got = {r["metric"]["vo"]: int(float(r["value"][1])) for r in rows}
            return got if got == want else None

        wait_until(answer, time.monotonic() + 30, "Prometheus to report the RUNNING VMs per VO",
                   lambda: str(prom.query("vocloud_vms")))
        up = prom.query('up{job="vocloud"}')
        assert up and up[0]["value"][1] == "1"
        held = prom.query('vocloud_vms{state="HOLD"}')
        assert [(r["metric"]["vo"], r["value"][1]) for r in held] == [("cms", "1")]
        # capacity: 3*1 + 2*2 cores allocated on h1, out of 16
        alloc = prom.query('vocloud_host_cpu_allocated_cores{host="h1"}')
        assert float(alloc[0]["value"][1]) == 7.0
        assert float(prom.query('vocloud_host_cpu_total_cores{host="h1"}')[0]["value"][1]) == 16.0
        assert prom.query('vocloud_hosts{state="MONITORED"}')[0]["value"][1] == "1"
        # histograms and counters, labelled by route template (never the raw path)
        boots = prom.query("vocloud_vm_boot_duration_seconds_count")
        assert float(boots[0]["value"][1]) >= 5
        loops = {r["metric"]["loop"] for r in prom.query("vocloud_loop_duration_seconds_count")}
        assert {"scheduler", "lifecycle", "monitor"} <= loops
        routes = {(r["metric"]["route"], r["metric"]["status"])
                  for r in prom.query("vocloud_api_requests_total")}
        assert ("/api/v1/vms/{vm_id}", "200") in routes and ("/api/v1/vms", "201") in routes
        assert not any(route.startswith("/api/v1/vms/1") for route, _ in routes)
        # the SQLite store's writer lock: write transactions and seconds held (PostgreSQL has
        # row locks, no process-wide writer: no such series)
        writes = prom.query("vocloud_store_write_transactions_total")
        held = prom.query("vocloud_store_writer_hold_seconds_total")
        if site["url"].startswith("sqlite"):
            assert float(writes[0]["value"][1]) >= 5 and float(held[0]["value"][1]) > 0
            assert prom.query("vocloud_store_writer_wait_seconds_total")
        else:
            assert writes == [] and held == []
        # the REST creates went through the group commit (both databases; on PostgreSQL a
        # call that gave up a row-lock wait in its batch is counted as retried)
        batches = float(prom.query("vocloud_store_group_commit_batches_total")[0]["value"][1])
        calls = float(prom.query("vocloud_store_group_commit_calls_total")[0]["value"][1])
        retried = float(prom.query("vocloud_store_group_commit_retried_total")[0]["value"][1])
        assert batches >= 1 and calls >= batches and 0 <= retried <= calls
    finally:
        prom.stop()
    metrics = f"http://127.0.0.1:{d.port}/metrics"
    # the metrics name VOs and hosts: an administrator's token, not a VO user's, not none
    assert httpx.get(metrics, timeout=10).status_code == 401
    user = {"Authorization": f"Bearer {site['tokens']['atlas']}"}
    assert httpx.get(metrics, headers=user, timeout=10).status_code == 403
    text = httpx.get(metrics, headers={"Authorization": f"Bearer {d.token}"}, timeout=10).text
    for name in ("vocloud_pool_pending_jobs", "vocloud_vm_driver_failures_total",
                 "vocloud_loop_failures_total", "vocloud_api_request_duration_seconds_bucket"):
        assert name in text, name


def _cli(d: Daemon, token: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**clean_env(d.data_dir), "VOCLOUD_URL": f"http://127.0.0.1:{d.port}", "VOCLOUD_TOKEN": token}
    return subprocess.run([*vocloud_command(), *args], capture_output=True, text=True, env=env, timeout=60)


def test_acct_and_audit_commands(site: dict[str, Any], tmp_path: Path) -> None:
    d: Daemon = site["daemon"]
    admin, atlas = d.token, site["tokens"]["atlas"]
    r = _cli(d, admin, "acct", "--by", "vo", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["key"]: row for row in json.loads(r.stdout)["rows"]}
    assert set(rows) == {"atlas", "cms"} and rows["atlas"]["vms"] == 3 and rows["cms"]["vms"] == 2
    # the daemon's showback price: 0.5 per core-hour, nothing for memory
    assert rows["cms"]["cost"] == pytest.approx(rows["cms"]["cpu_hours"] * 0.5, abs=1e-5)
    assert rows["cms"]["cpu_hours"] == pytest.approx(2 * rows["cms"]["vm_hours"], abs=3e-6)
    r = _cli(d, admin, "acct", "--by", "user", "--csv")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "user,id,vms,vm_hours,cpu_hours,gib_hours,cost" and len(lines) == 3
    apel = tmp_path / "records.apel"
    r = _cli(d, admin, "acct", "--apel", str(apel))
    assert r.returncode == 0, r.stderr
    text = apel.read_text()
    assert text.startswith("APEL-cloud-message: v0.4\n") and text.count("VMUUID: ") == 5
    assert text.count("SiteName: TEST-SITE") == 5 and "Status: started" in text
    # a VO user: another VO is refused with exit code 2
    r = _cli(d, atlas, "acct", "--vo", "cms")
    assert r.returncode == 2 and "own" in r.stderr
    # audit: the VM creations above, through the REST front-end; a VO user sees their own
    r = _cli(d, admin, "audit", "--json", "--limit", "500")
    assert r.returncode == 0, r.stderr
    records = json.loads(r.stdout)
    creates = [x for x in records if x["action"] == "vms.create" and x["result"] == "ok"]
    assert {x["user"] for x in creates} == {"atlas-u", "cms-u"}
    assert {x["frontend"] for x in records} == {"rest"}
    r = _cli(d, atlas, "audit")
    assert r.returncode == 0 and "atlas-u" in r.stdout and "cms-u" not in r.stdout, r.stderr


def test_bad_queries_are_clear_400s(site: dict[str, Any]) -> None:
    d: Daemon = site["daemon"]
    with d.client() as c:
        for path, params in (("/accounting", {"from": "last tuesday"}), ("/accounting", {"by": "planet"}),
                             ("/accounting", {"from": "2026-12-02", "to": "2026-12-01"}),
                             ("/accounting", {"to": "1e400"}), ("/accounting/apel", {"from": "-1"}),
                             ("/audit", {"limit": "0"}), ("/audit", {"since": "soon"})):
            r = c.get(path, params=params)
            assert r.status_code == 400, (path, params, r.text)
            assert r.json()["error"] == "InvalidInput", r.text
        r = c.get("/accounting", params={"vo": "nosuch"})
        assert r.status_code == 404 and r.json()["error"] == "NotFound"
        r = c.get("/accounting", params={"from": "2026-01-01T00:00:00Z", "by": "month"})
        assert r.status_code == 200 and r.json()["from"] == 1767225600.0
    assert httpx.get(f"{d.url}/accounting").status_code == 401
