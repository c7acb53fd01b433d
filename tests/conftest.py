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


# ---------------------------------------------------------------- parallel runs (pytest-xdist)
# scripts/test.sh runs the suite on several workers (`-n 2 --dist loadfile`); the scheduler below
# decides which tests go together. A module's tests stay on one worker (its module fixtures start
# one daemon, not one per worker). Modules that use machine-wide things — network namespaces and
# sshd, bridges and nft tables, Slurm and Grid Engine, qemu guests — form one unit, "machine",
# and run one after another on one worker, as they always did; everything else (pure code,
# daemons on free loopback ports with sim hosts, PostgreSQL databases of the session's own
# server, Prometheus and Chromium on free ports) runs beside them. A new integration or
# end-to-end module is "machine" until it is listed below.
# (Not xdist's own `xdist_group` marks: with pytest 9.2 xdist 3.8 can no longer tag node ids,
# and every test became a unit of its own.)
PARALLEL_SAFE = frozenset({
    "integration/test_accounting.py", "integration/test_api_fuzz.py", "integration/test_api_workers.py",
    "integration/test_burst_ec2.py", "integration/test_burst_engine.py", "integration/test_concurrency.py",
    "integration/test_daemon.py", "integration/test_ec2.py", "integration/test_ec2_client_token.py",
    "integration/test_ec2_clients.py", "integration/test_ha.py", "integration/test_host_backoff.py",
    "integration/test_host_leases.py", "integration/test_migrations.py",
    "integration/test_monitor_set_based.py", "integration/test_networks.py",
    "integration/test_occi.py", "integration/test_operations.py", "integration/test_os_vector.py",
    "integration/test_owed_actions.py", "integration/test_pools_service.py",
    "integration/test_pg_batches.py", "integration/test_pg_connections.py",
    "integration/test_pools_trust.py", "integration/test_recover.py",
    "integration/test_scale_batch.py",
    "integration/test_secrets.py", "integration/test_service_guards.py", "integration/test_store_lease.py",
    "integration/test_tenancy.py", "integration/test_trust_boundary.py", "integration/test_vm_ids.py",
    "integration/test_vm_list_index.py",
    "integration/test_xmlrpc.py", "integration/test_xmlrpc_fuzz.py",
    "e2e/test_cli_acceptance.py", "e2e/test_cli_access_keys.py", "e2e/test_cli_daemon.py",
    "e2e/test_cli_errors.py", "e2e/test_cli_faults.py", "e2e/test_cli_host_backoff.py",
    "e2e/test_cli_objects.py", "e2e/test_cli_pools.py", "e2e/test_cli_security.py",
    "e2e/test_compare_policies.py", "e2e/test_simulate_burst_lpc.py", "e2e/test_simulate_cli.py",
    "e2e/test_simulate_val_cli.py",
})
# Not e2e/test_web_ui.py: Chromium abandons a page's loads with net::ERR_NETWORK_CHANGED when a
# network interface comes or goes on the machine (the "machine" modules' bridges, taps and
# namespace veths), which failed it once in session 13's CI; so it runs among them, serially.


def xdist_group_of(nodeid: str) -> str:
    """The unit of a test (by its node id, relative to the repository): ``machine`` for the
    serial modules, else its module."""
    rel = nodeid.split("::", 1)[0].removeprefix("tests/")
    if rel.startswith("unit/") or rel in PARALLEL_SAFE:
        return rel
    return "machine"


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class ByModuleAndMachine(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return xdist_group_of(nodeid)

    return ByModuleAndMachine(config, log)
