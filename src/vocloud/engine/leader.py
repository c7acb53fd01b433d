"""Several front-ends on one PostgreSQL store: who runs the loops, and a fence for the rest.

Why PostgreSQL decides (no home-made consensus): every ``vocloud serve`` process sharing one
database serves the whole API, but the loops (scheduler, lifecycle, monitor, VO pools) must run
in exactly one of them. Two mechanisms, both PostgreSQL's own:

* **Election: a session advisory lock** (``pg_try_advisory_lock``) held on a dedicated
  connection. PostgreSQL drops it the moment that session ends: when the leader is killed, its
  kernel closes the socket and the lock is free at once; a follower polling every
  ``poll`` seconds takes it on its next try. TCP keepalives on that connection bound how long a
  leader cut off by the network keeps believing it leads.
* **Fence: an epoch in the ``leader`` record** (``site_settings``). A new leader, once it holds
  the lock, bumps the epoch under ``SELECT ... FOR UPDATE``. Every write transaction of the loops
  starts by reading the record ``FOR KEY SHARE`` and checks that the epoch is still its own
  (:class:`FencedDatabase`). The two row locks conflict, so the bump waits for the old leader's
  in-flight loop transactions to end, and every loop transaction that starts after it sees the
  new epoch and rolls back (:class:`FencedOut`). A leader that was paused, or lost its lock
  connection but not the others, therefore cannot write one loop decision after its successor
  took over, even before it notices that it lost.

Writes made on behalf of API users (a VM created over REST on any front-end) are not loop
decisions and are not fenced: they are ordinary transactions, correct on any number of
front-ends (the service layer's conditional updates and row locks).

:func:`parse` and :class:`LeaderRecord` are pure; :class:`Election` owns the lock connection;
:class:`Leadership` is the thread that contends, runs a term, watches it and demotes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, create_engine, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from vocloud.errors import Conflict, InvalidInput
from vocloud.store.db import Database
from vocloud.store.schema import SiteSetting

log = logging.getLogger("vocloud.leader")

KEY = "leader"  # the site_settings row holding the current term
#: the advisory lock's key ("vocl"); advisory locks are per database, so one PostgreSQL server
#: can hold several vocloud stores
LOCK_ID = 0x766F636C
#: libpq options of the lock connection: a leader whose network died learns it within ~10 s
KEEPALIVE: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 3, "keepalives_interval": 1,
                             "keepalives_count": 3, "tcp_user_timeout": 6000, "connect_timeout": 5}


class FencedOut(Conflict):
    """A loop transaction of a leader whose term is over: rolled back, nothing written."""


@dataclass(frozen=True)
class LeaderRecord:
    """Who leads (for ``vocloud status``) and the term's fencing epoch."""

    epoch: int
    host: str
    pid: int
    data_dir: str
    since: float
    backend_pid: int = 0  # the PostgreSQL session holding the lock

    def dumps(self) -> str:
        return json.dumps(asdict(self))


def parse(value: str | None) -> LeaderRecord | None:
    """The stored record, or None when there is none or it is unreadable."""
    if not value:
        return None
    try:
        doc = json.loads(value)
        return LeaderRecord(int(doc["epoch"]), str(doc["host"]), int(doc["pid"]),
                            str(doc["data_dir"]), float(doc["since"]), int(doc.get("backend_pid", 0)))
    except (ValueError, KeyError, TypeError):
        return None


def read_record(s: Session) -> LeaderRecord | None:
    return parse(s.scalar(select(SiteSetting.value).where(SiteSetting.key == KEY)))


def lock_holder(s: Session) -> int | None:
    """The PostgreSQL backend pid holding the election lock now, or None (nobody leads)."""
    row = s.execute(text(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND classid = :hi AND objid = :lo AND objsubid = 1"),
        {"hi": LOCK_ID >> 32, "lo": LOCK_ID & 0xFFFFFFFF}).first()
    return int(row[0]) if row is not None else None


def check_fence(s: Session, epoch: int) -> None:
    """Raise :class:`FencedOut` unless ``epoch`` is still the current term's. Holds the record
    ``FOR KEY SHARE`` until the transaction ends, so a successor's bump waits for it."""
    value = s.scalar(select(SiteSetting.value).where(SiteSetting.key == KEY)
                     .with_for_update(read=True, key_share=True))
    rec = parse(value)
    if rec is None or rec.epoch != epoch:
        raise FencedOut(f"this daemon's leadership (epoch {epoch}) is over; the current term is "
                        f"{rec.epoch if rec else 'unknown'}: loop write refused")


class FencedDatabase(Database):
    """The store as one leadership term's loops see it: the same engine and pool as the
    daemon's, every write transaction fenced by the term's epoch."""

    def __init__(self, base: Database, epoch: int, on_fenced: Callable[[], None]) -> None:
        # no super().__init__: this shares ``base``'s engine rather than opening another
        self.url = base.url
        self.is_sqlite = base.is_sqlite
        self.engine = base.engine
        self._write_lock = base._write_lock  # one writer queue per process (store/db.py)
        self.batch = None  # the loops write on their own threads, never in a group commit
        self._at_dispose = []
        self.epoch = epoch
        self.on_fenced = on_fenced

    @contextmanager
    def write(self) -> Iterator[Session]:
        with super().write() as s:
            try:
                check_fence(s, self.epoch)
            except FencedOut:
                self.on_fenced()
                raise
            yield s

    def dispose(self) -> None:
        """The daemon owns the engine: a term ending does not close it."""


@dataclass(frozen=True)
class Identity:
    host: str
    pid: int
    data_dir: str

    @staticmethod
    def here(data_dir: str) -> Identity:
        return Identity(socket.gethostname(), os.getpid(), data_dir)


class Election:
    """The advisory lock, on a connection of its own (no pool: its life *is* the lock)."""

    def __init__(self, url: str, lock_id: int = LOCK_ID) -> None:
        self.lock_id = lock_id
        self.engine: Engine = create_engine(url, poolclass=NullPool, connect_args=dict(KEEPALIVE),
                                            isolation_level="AUTOCOMMIT")
        self.conn: Connection | None = None

    def try_acquire(self) -> int | None:
        """Take the lock if free: the holding session's backend pid, or None."""
        try:
            if self.conn is None:
                self.conn = self.engine.connect()
            got = self.conn.execute(text("SELECT pg_try_advisory_lock(:k), pg_backend_pid()"),
                                    {"k": self.lock_id}).one()
        except SQLAlchemyError as exc:
            log.warning("election: the store does not answer (%s); retrying", _first_line(exc))
            self.release()
            return None
        return int(got[1]) if got[0] else None

    def alive(self) -> bool:
        """Whether the session holding the lock still exists (a query on it succeeds)."""
        if self.conn is None:
            return False
        try:
            self.conn.execute(text("SELECT 1")).one()
            return True
        except SQLAlchemyError as exc:
            log.error("election: the lock connection failed (%s)", _first_line(exc))
            return False

    def release(self) -> None:
        """Close the session: PostgreSQL drops the lock with it."""
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.close()
            except SQLAlchemyError:
                conn.invalidate()

    def dispose(self) -> None:
        self.release()
        self.engine.dispose()


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [exc.__class__.__name__])[0][:200]


class Term(Protocol):
    """What one leadership term runs: the loops (``app/daemon.py::Loops``)."""

    def start(self) -> None: ...

    def join(self, timeout: float = 30.0) -> None: ...


class Leadership:
    """Contend for the lock; while held, run a term built on a fenced store; demote when the
    lock connection dies or the record names another epoch; contend again."""

    def __init__(self, db: Database, election: Election, me: Identity,
                 make_term: Callable[[Database], Term], poll: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.election = election
        self.me = me
        self.make_term = make_term
        self.poll = poll
        self.clock = clock
        self.stop = threading.Event()
        self.leading: LeaderRecord | None = None
        self.thread: threading.Thread | None = None

    # -- the thread ------------------------------------------------------------------------------
    def start(self) -> None:
        self.thread = threading.Thread(target=self.run, name="vocloud-leadership", daemon=True)
        self.thread.start()

    def join(self, timeout: float = 30.0) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout)
        self.election.dispose()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._contend_once()
            except Exception:  # never let the election thread die: log, wait, contend again
                log.exception("leadership: unexpected error")
                self.election.release()
            self.stop.wait(self.poll)

    def _contend_once(self) -> None:
        backend = self.election.try_acquire()
        if backend is None:
            return
        try:
            record = self._claim(backend)
        except SQLAlchemyError as exc:
            log.warning("leadership: could not record the new term (%s)", _first_line(exc))
            self.election.release()
            return
        self._lead(record)

    def _claim(self, backend: int) -> LeaderRecord:
        """Bump the epoch; waits for the previous term's in-flight loop transactions."""
        with self.db.write() as s:
            row = s.scalars(select(SiteSetting).where(SiteSetting.key == KEY).with_for_update()).first()
            old = parse(row.value) if row is not None else None
            record = LeaderRecord((old.epoch if old else 0) + 1, self.me.host, self.me.pid,
                                  self.me.data_dir, self.clock(), backend)
            if row is None:
                s.add(SiteSetting(key=KEY, value=record.dumps()))
            else:
                row.value = record.dumps()
        log.warning("this daemon leads now (epoch %d; previous: %s)", record.epoch,
                    f"pid {old.pid} on {old.host}, epoch {old.epoch}" if old else "none")
        return record

    def _lead(self, record: LeaderRecord) -> None:
        lost = threading.Event()
        term = self.make_term(FencedDatabase(self.db, record.epoch, lost.set))
        self.leading = record
        term.start()
        try:
            while not self.stop.wait(self.poll):
                if lost.is_set():
                    log.error("leadership: a loop write was fenced out: a newer term exists")
                    break
                if not self.election.alive():
                    break
                if not self._still_mine(record):
                    log.error("leadership: the store names another leader: stepping down")
                    break
        finally:
            self.leading = None
            term.join()
            self.election.release()
        if not self.stop.is_set():
            log.error("this daemon no longer leads (epoch %d); it serves the API and contends again",
                      record.epoch)

    def _still_mine(self, record: LeaderRecord) -> bool:
        try:
            with self.db.read() as s:
                now = read_record(s)
        except SQLAlchemyError:
            return True  # the store is unreachable: the lock connection's check decides
        return now is not None and now.epoch == record.epoch


#: serialises the start of front-ends (migrations, the first admin, the default datastore)
STARTUP_LOCK_ID = LOCK_ID + 1


@contextmanager
def startup_lock(db: Database) -> Iterator[None]:
    """Hold a session advisory lock while this front-end migrates and bootstraps the store, so
    front-ends started together do not race each other's ``CREATE TABLE`` or first admin.
    SQLite: nothing (one daemon per store, ``store_lease.py``)."""
    if db.is_sqlite:
        yield
        return
    with db.engine.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": STARTUP_LOCK_ID})
        conn.commit()
        try:
            yield
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": STARTUP_LOCK_ID})
            conn.commit()


def agree_on(db: Database, name: str, value: str, hint: str) -> None:
    """The first front-end records ``value`` under ``name``; a later one whose value differs is
    refused (:class:`InvalidInput` with ``hint``): front-ends of one store must share it."""
    key = f"frontends.{name}"
    with db.write() as s:
        row = s.scalars(select(SiteSetting).where(SiteSetting.key == key).with_for_update()).first()
        if row is None:
            s.add(SiteSetting(key=key, value=value))
        elif row.value != value:
            raise InvalidInput(hint)


def describe(db: Database, me: Identity, role: str, started: float) -> dict[str, Any]:
    """The status the administrators see: this front-end, and who leads (only while the lock
    is really held: a record without a live holder means an election is under way)."""
    this = {**asdict(me), "role": role}
    if db.is_sqlite:
        leader: dict[str, Any] | None = {**asdict(me), "since": started, "epoch": 0}
        return {"store": "sqlite", "this": this, "leader": leader}
    with db.read() as s:
        rec = read_record(s)
        holder = lock_holder(s)
    leader = None
    if rec is not None and holder is not None and holder == rec.backend_pid:
        leader = {"host": rec.host, "pid": rec.pid, "data_dir": rec.data_dir, "since": rec.since,
                  "epoch": rec.epoch}
    return {"store": "postgresql", "this": this, "leader": leader}
