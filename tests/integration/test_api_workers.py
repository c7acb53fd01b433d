"""``api_workers``: several processes serving the API on one port, the loops in the first only.

A real daemon over real HTTP on both stores: fresh connections reach both processes, a quota
raced from both stays exact, every call is audited once, the VMs created through either process
are run by the one that runs the loops, and the workers never outlive the daemon (SIGTERM or
kill -9).
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import Daemon
from tests.support.ports import free_port
from tests.support.procs import poll_until
from vocloud.client import ApiError, Client
from vocloud.config import load_settings
from vocloud.errors import InvalidInput


@pytest.fixture
def daemon(tmp_path: Path, db_url: str) -> Iterator[Daemon]:
    d = Daemon(tmp_path, db_url, free_port(), {"VOCLOUD_API_WORKERS": "2"})
    d.start()
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait(10)


def _serving(d: Daemon, attempts: int = 60) -> dict[int, str]:
    """pid -> role of the processes that answered, one fresh connection each."""
    seen: dict[int, str] = {}
    for _ in range(attempts):
        with httpx.Client(base_url=d.url, headers={"Authorization": f"Bearer {d.token}"}) as c:
            this = c.get("/status").raise_for_status().json()["this"]
        seen[this["pid"]] = this["role"]
        if len(seen) == 2:
            break
    return seen


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_two_processes_share_the_store_and_the_checks(daemon: Daemon) -> None:
    assert daemon.proc is not None
    poll_until(lambda: len(_serving(daemon, 10)) == 2, 30, "both API processes answering")
    seen = _serving(daemon)
    assert seen[daemon.proc.pid] in ("leader", "follower")  # the first: its loops or election
    (worker,) = [p for p in seen if p != daemon.proc.pid]
    assert seen[worker] == "api-worker"

    with daemon.rest() as c:
        c.post("/groups", {"name": "atlas"})
        token = c.post("/users", {"name": "alice", "group": "atlas"})["token"]
        c.put("/quotas/group/atlas", {"vms": 25})
        c.post("/hosts", {"name": "h1", "vmm": "sim", "cpu": 64, "memory": 65536})
    codes: list[int] = []
    lock = threading.Lock()

    def client() -> None:
        for _ in range(5):  # a fresh connection each: both processes take creates
            with Client(daemon.base_url, token) as uc:
                try:
                    uc.post("/vms", {"template": "CPU=1\nMEMORY=128", "count": 1})
                    code = 201
                except ApiError as exc:
                    code = exc.status
            with lock:
                codes.append(code)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert Counter(codes) == Counter({201: 25, 409: 15})  # exact across processes
    with daemon.rest() as c:
        assert c.get("/quotas/group/atlas")["vms"] == {"used": 25, "limit": 25}
        audit = [r for r in c.get("/audit", user="alice") if r["action"] == "vms.create"]
        assert Counter(r["result"] for r in audit) == Counter({"ok": 25, "QuotaExceeded": 15})
        # the loops of the first process run what either process created
        poll_until(lambda: Counter(v["state"] for v in c.get("/vms"))["RUNNING"] == 25, 60,
                   "25 VMs RUNNING")
    with Client(daemon.base_url, "vc_not-a-token") as nc, pytest.raises(ApiError) as exc:
        nc.get("/vms")
    assert exc.value.status == 401

    assert daemon.stop() == 0  # SIGTERM: the daemon stops its workers, then itself
    poll_until(lambda: not _alive(worker), 15, "the API worker gone after SIGTERM")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_workers_die_with_a_killed_daemon_and_it_restarts(daemon: Daemon) -> None:
    assert daemon.proc is not None
    poll_until(lambda: len(_serving(daemon, 10)) == 2, 30, "both API processes answering")
    (worker,) = [p for p in _serving(daemon) if p != daemon.proc.pid]
    daemon.proc.send_signal(signal.SIGKILL)
    daemon.proc.wait(10)
    poll_until(lambda: not _alive(worker), 15, "the API worker gone after kill -9")
    daemon.start()  # port, data-dir lock and store lease are free again
    with daemon.rest() as c:
        assert c.get("/status")["this"]["pid"] in _serving(daemon)
    assert daemon.stop() == 0


def test_api_workers_out_of_range_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for bad in ("0", "65", "two"):
        monkeypatch.setenv("VOCLOUD_API_WORKERS", bad)
        with pytest.raises(InvalidInput, match="api_workers"):
            load_settings(tmp_path)
    monkeypatch.setenv("VOCLOUD_API_WORKERS", "3")
    assert load_settings(tmp_path).api_workers == 3
