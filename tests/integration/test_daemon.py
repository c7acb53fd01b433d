"""The real daemon over real HTTP: auth and errors, concurrent clients, SIGTERM, kill -9."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.daemon import Daemon
from tests.support.ports import free_port
from tests.support.procs import poll_until
from vocloud.client import ApiError, Client
from vocloud.store.db import Database
from vocloud.store.schema import SiteSetting


@pytest.fixture
def daemon(tmp_path: Path, db_url: str) -> Iterator[Daemon]:
    d = Daemon(tmp_path, db_url, free_port(), {})
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait(10)


def _state_in(c: Client, vm_id: int, states: tuple[str, ...]) -> bool:
    return bool(c.get(f"/vms/{vm_id}")["state"] in states)


def _wait(fn: Callable[[], bool], what: str) -> None:
    poll_until(fn, 60, what, interval=0.2)


def _states(c: Client) -> Counter[str]:
    return Counter(v["state"] for v in c.get("/vms", all=True))


def test_auth_errors_and_openapi(daemon: Daemon) -> None:
    doc = httpx.get(daemon.url.removesuffix("/api/v1") + "/openapi.json").json()
    assert "/api/v1/vms" in doc["paths"] and "/api/v1/hosts/{ref}/action" in doc["paths"]
    r = httpx.get(f"{daemon.url}/vms")
    assert r.status_code == 401 and r.json()["error"] == "Unauthorized"
    r = httpx.get(f"{daemon.url}/vms", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and r.json()["message"] == "invalid token"
    with daemon.client() as c:
        r = c.post("/vms", json={"template": "CPU=1\nNAME=\"x\n"})
        assert r.status_code == 400 and r.json()["error"] == "ParseError"
        assert r.json()["details"]["line"] == 2
        r = c.post("/vms", json={"template": "CPU=1", "colour": "red"})
        assert r.status_code == 400 and "colour" in r.json()["message"]
        r = c.post("/vms", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400
        r = c.get("/hosts/nope")
        assert r.status_code == 404 and r.json()["message"] == "host nope does not exist"
        r = c.post("/vms/12345/action", json={"action": "terminate"})
        assert r.status_code == 404
        r = c.get("/vms", params={"state": "SLEEPING"})
        assert r.status_code == 400
        assert c.get("/vms").json() == []


def test_bad_requests_are_json_4xx_on_one_kept_alive_connection(daemon: Daemon) -> None:
    """Inputs that once gave 500s (and a reset connection): each a JSON 4xx, and the client's one
    connection serves them all and the good request after them."""
    with daemon.client() as c:
        responses = [
            c.get("/vms/99999999999"), c.get("/hosts/\u00b2"), c.get("/vms?limit=99999999999999"),
            c.post("/groups", json={"name": "\u00b2"}),
            c.put("/quotas/user/admin", content=b'{"cpu": NaN}',
                  headers={"content-type": "application/json"}),
            c.post("/vms", json={"template": '{"a":' * 5000 + "1" + "}" * 5000, "format": "json"}),
            c.get("/no/such/route"), c.put("/vms/1"),
        ]
        for r in responses:
            assert 400 <= r.status_code < 500, (r.request.url, r.text)
            assert set(r.json()) >= {"error", "message"}, r.text
        good = c.get("/users/me")
        assert good.status_code == 200
        ports = {r.extensions["network_stream"].get_extra_info("client_addr")
                 for r in [*responses, good]}
        assert len(ports) == 1, ports


def test_concurrent_http_clients_respect_quota(daemon: Daemon) -> None:
    with daemon.rest() as c:
        c.post("/groups", {"name": "atlas"})
        token = c.post("/users", {"name": "alice", "group": "atlas"})["token"]
        c.put("/quotas/group/atlas", {"vms": 25})
    codes: list[int] = []
    lock = threading.Lock()

    def worker() -> None:
        with daemon.rest(token) as uc:
            for _ in range(5):
                try:
                    uc.post("/vms", {"template": "CPU=1\nMEMORY=128", "count": 1})
                    code = 201
                except ApiError as exc:
                    code = exc.status
                with lock:
                    codes.append(code)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert Counter(codes) == Counter({201: 25, 409: 15})
    with daemon.rest(token) as uc:
        assert len(uc.get("/vms")) == 25
        q = uc.get("/quotas/group/atlas")
        assert q["vms"] == {"used": 25, "limit": 25}


def test_sigterm_is_clean(daemon: Daemon) -> None:
    t = time.time()
    assert daemon.stop() == 0
    assert time.time() - t < 15
    daemon.start()  # the lock was released: a new daemon starts on the same data dir
    assert daemon.stop() == 0


def _serve_once(d: Daemon) -> subprocess.CompletedProcess[bytes]:
    """Start a daemon in the foreground and wait for it to exit (a refused start)."""
    return subprocess.run([sys.executable, "-m", "vocloud.app.serve_main"], env=d.env(),
                          capture_output=True, timeout=60)


def test_second_daemon_on_same_data_dir_is_refused(daemon: Daemon) -> None:
    assert daemon.proc is not None
    r = _serve_once(Daemon(daemon.data_dir, daemon.db_url, free_port(), {}))
    assert r.returncode == 2
    assert f"another vocloud daemon (pid {daemon.proc.pid}) is using {daemon.data_dir}" in r.stderr.decode()


def _holder(d: Daemon) -> str:
    assert d.proc is not None
    return f"pid {d.proc.pid} on {socket.gethostname()}, data dir {d.data_dir.resolve()}"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # PostgreSQL: test_ha.py
def test_a_second_daemon_on_the_same_store_is_refused(
        daemon: Daemon, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Two data dirs, one SQLite store: only one daemon may use it (store_lease.py). Several
    daemons on one PostgreSQL store are front-ends with one elected leader (test_ha.py)."""
    other = Daemon(tmp_path_factory.mktemp("other"), daemon.db_url, free_port(), {})
    with daemon.rest() as c:
        c.post("/hosts", {"name": "h1", "cpu": 8, "memory": 16384})
        c.post("/vms", {"template": "CPU=1\nMEMORY=64\n", "count": 2})
        _wait(lambda: _states(c)["RUNNING"] == 2, what="2 RUNNING")
        r = _serve_once(other)
        assert r.returncode == 2, r
        assert f"another vocloud daemon ({_holder(daemon)}) uses this store" in r.stderr.decode()
        assert "A SQLite store serves one daemon; several front-ends need PostgreSQL" in r.stderr.decode()
        assert _states(c) == Counter({"RUNNING": 2})  # the refused daemon touched nothing
    assert daemon.stop() == 0  # a clean stop lets go of the store: the other starts at once
    other.start()
    try:
        other.kill9()  # a killed daemon keeps the store until its lease runs out ...
        r = _serve_once(daemon)
        assert r.returncode == 2 and _holder(other) in r.stderr.decode(), r
        other.start()  # ... except for a restart in its own data dir (its flock proves it dead)
        with other.rest(daemon.token) as c:  # the same store, served by the other daemon
            assert len(c.get("/vms", all=True)) == 2
    finally:
        other.stop()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_daemon_that_loses_its_store_stops(tmp_path: Path, db_url: str) -> None:
    d = Daemon(tmp_path, db_url, free_port(), {"VOCLOUD_STORE_LEASE_TTL": "3"})
    d.start()
    assert d.proc is not None
    db = Database(db_url)
    try:
        with db.write() as s:  # what a daemon elsewhere does once this one was silent too long
            row = s.get(SiteSetting, "daemon")
            assert row is not None and json.loads(row.value)["pid"] == d.proc.pid
            row.value = json.dumps({"host": "node9", "data_dir": "/srv/vocloud", "pid": 9,
                                    "beat": time.time()})
        assert d.proc.wait(20) == 0
        log = (d.data_dir / "daemon.log").read_text()
        assert "another daemon took this store" in log, log
        with db.read() as s:  # and it did not release the new holder's lease on its way out
            assert json.loads(s.get(SiteSetting, "daemon").value)["pid"] == 9  # type: ignore[union-attr]
    finally:
        db.dispose()
        if d.proc.poll() is None:
            d.proc.kill()


def _domains(data_dir: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for p in (data_dir / "sim").glob("*/*.json"):
        out.setdefault(p.stem, []).append(json.loads(p.read_text()))
    return out


def test_acceptance_pack_terminate_and_kill9_restart(daemon: Daemon) -> None:
    with daemon.rest() as c:
        for i in (1, 2, 3):
            c.post("/hosts", {"name": f"h{i}", "cpu": 8, "memory": 16384})
        ids = c.post("/vms", {"template": "CPU=1\nMEMORY=512", "count": 30})["ids"]
        _wait(lambda: _states(c)["RUNNING"] == 24, what="24 RUNNING")
        hosts = {h["name"]: h for h in c.get("/hosts")}
        assert all(h["alloc_cpu"] <= 8 and h["running_vms"] == 8 for h in hosts.values())
        rows = {v["id"]: v for v in c.get("/vms")}
        assert [rows[i]["host"] for i in ids[:24]] == ["h1"] * 8 + ["h2"] * 8 + ["h3"] * 8
        for i in ids:
            c.post(f"/vms/{i}/action", {"action": "terminate"})
        _wait(lambda: _states(c) == Counter({"DONE": 30}), what="30 DONE")

        # second batch; kill -9 in the middle of booting and terminating
        batch = c.post("/vms", {"template": "CPU=1\nMEMORY=512", "count": 20})["ids"]
        _wait(lambda: _states(c)["BOOT"] + _states(c)["RUNNING"] >= 10, what="boots started")
        doomed = batch[:5]
        for i in doomed:
            try:
                c.post(f"/vms/{i}/action", {"action": "terminate-hard"})
            except ApiError as exc:  # 409: still PENDING/PROLOG, terminate after it moves on
                assert exc.status == 409, exc
                _wait(functools.partial(_state_in, c, i, ("RUNNING", "BOOT", "PENDING")),
                      f"VM {i} RUNNING, BOOT or PENDING")
                c.post(f"/vms/{i}/action", {"action": "terminate-hard"})
    daemon.kill9()
    daemon.start()
    with daemon.rest() as c:
        keep = [i for i in batch if i not in doomed]

        def settled() -> bool:
            rows = {v["id"]: v["state"] for v in c.get("/vms", all=True)}
            return all(rows[i] == "RUNNING" for i in keep) and all(rows[i] == "DONE" for i in doomed)

        _wait(settled, what="second batch RUNNING/DONE after restart")
        assert _states(c) == Counter({"DONE": 35, "RUNNING": 15})
        hosts = c.get("/hosts")
        assert sum(h["running_vms"] for h in hosts) == 15
        assert all(h["alloc_cpu"] <= h["total_cpu"] for h in hosts)
        # none lost, none twice: exactly one guest per RUNNING VM, each started once
        doms = _domains(daemon.data_dir)
        rows = {v["id"]: v for v in c.get("/vms")}
        deploy = {i: c.get(f"/vms/{i}")["deploy_id"] for i in keep}
        assert sorted(doms) == sorted(deploy.values())
        assert all(len(v) == 1 and v[0]["boots"] == 1 for v in doms.values())
        for i in keep:
            assert (daemon.data_dir / "sim" / rows[i]["host"] / f"{deploy[i]}.json").exists()
    assert daemon.stop() == 0


def _mode(p: Path) -> int:
    return p.stat().st_mode & 0o7777


def test_files_are_private_and_looser_modes_are_fixed_or_refused(daemon: Daemon) -> None:
    """Issue 9, finding 7: the data dir, the store and the token are the daemon's user's alone."""
    data, token = daemon.data_dir, daemon.data_dir / "admin.token"
    db = [data / f"vocloud.db{s}" for s in ("", "-wal", "-shm")] if daemon.db_url.startswith("sqlite") else []
    assert all(p.exists() for p in db)
    assert _mode(data) == 0o700 and {_mode(p) for p in [token, *db]} == {0o600}
    assert daemon.stop() == 0
    db = db[:1]  # a clean stop checkpoints and removes -wal and -shm
    for p in [token, *db]:
        p.chmod(0o644)
    data.chmod(0o755)
    daemon.start()
    assert _mode(data) == 0o700 and {_mode(p) for p in [token, *db]} == {0o600}
    log = (data / "daemon.log").read_text()
    for p, old, new in [(data, "0755", "0700"), (token, "0644", "0600"), *((p, "0644", "0600") for p in db)]:
        assert f"file mode fixed, it was open to other users: {'data directory' if p == data else ''}" in log
        assert f" {p}: mode {old} -> {new}\n" in log
    # a file of another user cannot be fixed: the daemon refuses to start and says what to do
    assert daemon.stop() == 0
    token.chmod(0o644)
    os.chown(token, 65534, 65534)
    r = _serve_once(daemon)
    assert r.returncode == 2
    assert (f"vocloud: refusing to start, files would be open to other users: admin token {token} has "
            f"mode 0644, open to other users, and belongs to uid 65534, not to the daemon's user "
            f"(uid {os.geteuid()}), so the daemon will not change it: run 'chown {os.geteuid()} {token}'"
            ) in r.stderr.decode()
    assert _mode(token) == 0o644  # nothing was changed
