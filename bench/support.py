"""What the listing benchmarks share: a store filled with N VMs, and a daemon serving it.

Filling goes through the service layer in batches (no daemon, no scheduler: the VMs stay
PENDING), so every benchmark lists the same kind of rows; the daemon is a real process on a free
loopback port with the scheduler parked, so nothing changes the rows while they are timed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from tests.support.pgserver import PgServer, find_bindir
from tests.support.ports import free_port

from vocloud.client import wait_healthy
from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.store import migrate
from vocloud.store.db import Database
from vocloud.store.schema import User


@contextmanager
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server of the benchmark's own (Debian's binaries), stopped when the block
    ends."""
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("PostgreSQL server binaries not found (apt-get install postgresql)")
    server = PgServer(bindir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def store_url(kind: str, data_dir: Path, name: str = "bench") -> Iterator[str]:
    """A store URL: SQLite in ``data_dir``, or a database on a PostgreSQL server of its own,
    stopped when the block ends."""
    if kind == "sqlite":
        yield f"sqlite:///{data_dir / 'vocloud.db'}"
        return
    with pg_server() as server:
        yield server.create_db(name)


def fill_store(data_dir: Path, n: int, template: str = "CPU=1\nMEMORY=512\n",
               url: str | None = None) -> None:
    """A fresh store in ``data_dir`` (SQLite, or the database at ``url``) with ``n`` admin-owned
    VMs and the admin token."""
    db = Database(url or f"sqlite:///{data_dir / 'vocloud.db'}")
    migrate.upgrade(db)
    cloud = Cloud(db)
    token = cloud.accounts.bootstrap()
    assert token is not None
    (data_dir / "admin.token").write_text(token + "\n")
    with db.read() as s:
        u = s.scalars(select(User)).one()
    admin = Actor(u.id, u.name, u.group_id, True)
    left = n
    while left:
        batch = min(left, 10_000)
        cloud.vms.create(admin, template, count=batch, name="bench")
        left -= batch
    db.dispose()


@dataclass(frozen=True)
class BenchDaemon:
    base_url: str  # http://127.0.0.1:PORT
    token: str  # the administrator's
    pid: int = 0  # the daemon process (for CPU-time figures)

    @property
    def api(self) -> str:
        return f"{self.base_url}/api/v1"


@contextmanager
def bench_daemon(data_dir: Path, start_timeout: float = 60.0,
                 env_extra: dict[str, str] | None = None) -> Iterator[BenchDaemon]:
    """``vocloud serve`` on ``data_dir`` (scheduler parked unless ``env_extra`` says otherwise),
    stopped on exit."""
    port = free_port()
    env = {**os.environ, "VOCLOUD_HOME": str(data_dir), "VOCLOUD_PORT": str(port),
           "VOCLOUD_LOG_LEVEL": "warning", "VOCLOUD_SCHEDULER_INTERVAL": "3600", **(env_extra or {})}
    proc = subprocess.Popen([sys.executable, "-m", "vocloud.app.serve_main"], env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        if not wait_healthy(url, lambda: proc.poll() is None, start_timeout):
            raise SystemExit(f"the daemon did not answer on {url}")
        yield BenchDaemon(url, (data_dir / "admin.token").read_text().strip(), proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
