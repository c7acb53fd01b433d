"""End-to-end fixtures: a real ``vocloud serve`` subprocess (tests/support/daemon.py, entry="cli")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.daemon import Daemon, start_daemon, stop_daemon


def _serve(tmp: Path) -> Iterator[Daemon]:
    d = start_daemon(tmp)
    try:
        yield d
    finally:
        stop_daemon(d)


@pytest.fixture(scope="session")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon shared by the tests that only need *a* cloud (start-up costs seconds); they
    use names of their own so they cannot see each other's objects."""
    yield from _serve(tmp_path_factory.mktemp("vocloud"))


@pytest.fixture(scope="module")
def fresh_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A daemon with nothing in it, for tests whose assertions cover every host and VM."""
    yield from _serve(tmp_path_factory.mktemp("vocloud-fresh"))
