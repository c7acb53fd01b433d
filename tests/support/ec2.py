"""An EC2 test site: a real daemon on sim hosts with two VOs, a user in each, and EC2 access
keys for both (made through REST, as ``vocloud user keys create`` does)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.daemon import Daemon
from tests.support.pgserver import PgServer
from tests.support.ports import free_port


@dataclass
class Ec2User:
    name: str
    token: str
    access_key: str
    secret: str
    user_id: int


@dataclass
class Ec2Site:
    daemon: Daemon
    alice: Ec2User  # VO vo1
    bob: Ec2User  # VO vo2
    carol: Ec2User  # VO vo1 too

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.daemon.port}/ec2/"

    def rest(self, user: Ec2User | None = None) -> httpx.Client:
        return self.daemon.client(user.token if user else None)


def _ok(r: httpx.Response) -> dict[str, object]:
    assert r.status_code < 300, r.text
    return r.json() if r.content else {}


@contextmanager
def ec2_site(tmp: Path, db: str, pg: PgServer | None, env: dict[str, str] | None = None,
             host_cpu: int = 64) -> Iterator[Ec2Site]:
    url = f"sqlite:///{tmp / 'vocloud.db'}" if pg is None else pg.create_db(f"ec2_{os.getpid()}_{db}")
    d = Daemon(tmp, url, free_port(), env or {})
    d.start()
    try:
        with d.client() as admin:
            _ok(admin.post("/hosts", json={"name": "h1", "cpu": host_cpu, "memory": 1 << 20}))
            users = {}
            for name, group in (("alice", "vo1"), ("bob", "vo2"), ("carol", "vo1")):
                if admin.get(f"/groups/{group}").status_code == 404:
                    _ok(admin.post("/groups", json={"name": group}))
                u = _ok(admin.post("/users", json={"name": name, "group": group}))
                with d.client(str(u["token"])) as c:
                    k = _ok(c.post("/access-keys", json={}))
                users[name] = Ec2User(name, str(u["token"]), str(k["access_key_id"]),
                                      str(k["secret_access_key"]), int(str(u["id"])))
        yield Ec2Site(d, users["alice"], users["bob"], users["carol"])
    finally:
        d.stop()


def site_params() -> list[str]:
    return ["sqlite", "postgres"]


def pg_for(request: pytest.FixtureRequest) -> PgServer | None:
    if request.param == "sqlite":
        return None
    server: PgServer = request.getfixturevalue("pg_server")
    return server
