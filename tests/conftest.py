"""Shared fixtures: a store on SQLite or on a real PostgreSQL (both, for store-level tests)."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.pgserver import PgServer, find_bindir
from vocloud.service.cloud import Cloud
from vocloud.store import migrate
from vocloud.store.db import Database

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("VOCLOUD_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL server binaries not found (apt-get install postgresql)")
        pytest.skip("PostgreSQL server binaries not found (apt-get install postgresql)")
    server = PgServer(bindir)
    server.start()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'vocloud.db'}"
    server: PgServer = request.getfixturevalue("pg_server")
    return server.create_db(f"t{os.getpid()}_{next(_counter)}")


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = Database(db_url)
    migrate.upgrade(database)
    yield database
    database.dispose()


@pytest.fixture
def cloud(db: Database) -> Cloud:
    c = Cloud(db)
    c.accounts.bootstrap()
    return c



# Session teardown is charged to the last test in --durations (278 s once, cause unknown then):
# slow session or module fixture teardowns are named in the terminal summary.
_finalized_at = [0.0]
_slow_teardowns: list[str] = []


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    _finalized_at[0] = time.monotonic()


def pytest_fixture_post_finalizer(fixturedef: pytest.FixtureDef[Any], request: pytest.FixtureRequest) -> None:
    now = time.monotonic()
    if fixturedef.scope in ("session", "package", "module") and now - _finalized_at[0] > 5.0:
        _slow_teardowns.append(f"{fixturedef.argname} ({fixturedef.scope}, "
                               f"{request.node.nodeid}): {now - _finalized_at[0]:.1f} s")
    _finalized_at[0] = now


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for line in _slow_teardowns:
        terminalreporter.write_line(f"slow teardown: {line}")
