"""The leadership thread's state machine (engine/leader.py) with a scripted election: a term
starts on a fenced store with the next epoch, and ends when the lock connection dies or a write
is fenced out; then the front-end contends again. PostgreSQL itself: tests/integration/test_ha.py."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from vocloud.config import load_settings
from vocloud.engine.leader import (
    KEY,
    FencedDatabase,
    FencedOut,
    Identity,
    LeaderRecord,
    Leadership,
    parse,
)
from vocloud.errors import InvalidInput
from vocloud.store import migrate
from vocloud.store.db import Database
from vocloud.store.schema import SiteSetting


class ScriptedElection:
    """Wins when ``free`` is set; its session 'dies' when ``alive_flag`` is cleared."""

    def __init__(self) -> None:
        self.free = threading.Event()
        self.alive_flag = threading.Event()
        self.released = 0

    def try_acquire(self) -> int | None:
        if not self.free.is_set():
            return None
        self.free.clear()
        self.alive_flag.set()
        return 4242

    def alive(self) -> bool:
        return self.alive_flag.is_set()

    def release(self) -> None:
        self.released += 1

    def dispose(self) -> None:
        pass


class Term:
    def __init__(self, store: Database) -> None:
        self.store = store
        self.started = threading.Event()
        self.joined = threading.Event()

    def start(self) -> None:
        self.started.set()

    def join(self, timeout: float = 30.0) -> None:
        self.joined.set()


@pytest.fixture
def db(tmp_path: Path) -> Database:
    d = Database(f"sqlite:///{tmp_path / 'v.db'}")
    migrate.upgrade(d)
    return d


def test_the_record_round_trips_and_garbage_is_no_record() -> None:
    rec = LeaderRecord(3, "fe1", 10, "/srv/a", 1000.0, 77)
    assert parse(rec.dumps()) == rec
    assert parse("{garbage") is None and parse("") is None and parse('{"epoch": 1}') is None


def test_a_term_runs_on_the_next_epoch_and_ends_with_its_lock(db: Database) -> None:
    election = ScriptedElection()
    terms: list[Term] = []

    def make(store: Database) -> Term:
        terms.append(Term(store))
        return terms[-1]

    lead = Leadership(db, election, Identity("fe1", 10, "/srv/a"), make, poll=0.02)  # type: ignore[arg-type]
    lead.start()
    try:
        election.free.set()
        for want in (1, 2):  # two terms: the second after the first one's lock connection died
            while len(terms) < want or not terms[-1].started.is_set():
                threading.Event().wait(0.01)
            term = terms[-1]
            assert isinstance(term.store, FencedDatabase) and term.store.epoch == want
            assert lead.leading is not None and lead.leading.epoch == want
            election.alive_flag.clear()  # the session holding the lock is gone
            assert term.joined.wait(5)
            while lead.leading is not None:
                threading.Event().wait(0.01)
            election.free.set()
    finally:
        lead.join(5)
    assert election.released >= 2


def test_a_fenced_write_ends_the_term(db: Database) -> None:
    election = ScriptedElection()
    terms: list[Term] = []

    def make(store: Database) -> Term:
        terms.append(Term(store))
        return terms[-1]

    lead = Leadership(db, election, Identity("fe1", 10, "/srv/a"), make, poll=0.02)  # type: ignore[arg-type]
    lead.start()
    try:
        election.free.set()
        while not terms or not terms[0].started.is_set():
            threading.Event().wait(0.01)
        store = terms[0].store
        assert isinstance(store, FencedDatabase)
        other = LeaderRecord(store.epoch + 1, "fe2", 20, "/srv/b", 0.0)
        with db.write() as s:  # another front-end took over (what its _claim writes)
            row = s.get(SiteSetting, KEY)
            assert row is not None
            row.value = other.dumps()
        with pytest.raises(FencedOut, match=r"leadership \(epoch 1\) is over"), store.write():
            pass
        assert terms[0].joined.wait(5)  # the term ends though the lock connection looks alive
    finally:
        lead.join(5)


def test_leader_poll_is_bounded(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="leader_poll"):
        load_settings(tmp_path, leader_poll=0)
    assert load_settings(tmp_path, shared_dir=str(tmp_path / "s")).secrets_path == tmp_path / "s" / "secrets"
