"""Database connections: SQLite (WAL) by default, PostgreSQL by URL, one code path.

Why two kinds of transaction: on SQLite a deferred transaction that reads and then writes can
fail with "database is locked" when another writer got in between, so every *write* transaction
starts with ``BEGIN IMMEDIATE`` and queues on the busy timeout instead. Readers use plain
``BEGIN`` and never block writers (WAL). On PostgreSQL both are ordinary transactions; the service
layer uses conditional updates and row locks, which are correct on both databases.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import greenlet
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.orm import Session

from vocloud.errors import InvalidInput
from vocloud.store.deferred import DEFERRED, Deferred, RetryAlone, deferred_in, is_lock_conflict

_WRITE = "vocloud_write"


def default_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'vocloud.db'}"


def _create_private(path: Path) -> None:
    """Create a new SQLite file 0600 before SQLite does (it would use 0644 minus the umask): the
    store holds templates and token hashes, and SQLite gives the -wal/-shm files its mode."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _rec: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


#: Execution option of a group-commit batch's connection on PostgreSQL: its calls' savepoints
#: stay open to the batch's end instead of being released (:func:`_keep_batch_savepoints`).
KEEP_SAVEPOINTS = "vocloud_keep_savepoints"


def _keep_batch_savepoints(engine: Engine) -> None:
    """Leave a batch call's savepoint open when the call succeeds (no RELEASE SAVEPOINT).

    Why: the RELEASE is one round trip of the group-commit thread per call, and it frees
    nothing the batch needs — a subtransaction's row locks and XID belong to the transaction
    until it ends either way. Savepoints nest, so a later call's ROLLBACK TO its own savepoint
    still undoes that call's work only, and the batch's COMMIT commits every open level.
    SQLAlchemy's bookkeeping is unchanged: it believes the savepoint released, as it would be
    at the commit. At most ``MAX_BATCH`` levels deep (store/group_commit.py)."""
    release = engine.dialect.do_release_savepoint

    def do_release_savepoint(connection: Connection, name: str) -> None:
        if not connection.get_execution_options().get(KEEP_SAVEPOINTS, False):
            release(connection, name)

    engine.dialect.do_release_savepoint = do_release_savepoint  # type: ignore[method-assign]


class Enclosing:
    """An :meth:`Database.enclosing_write` block: the store it belongs to, and the write
    transaction its first ``write`` opened (``session``; None until then), held open on
    ``stack`` until the block ends."""

    __slots__ = ("db", "session", "stack")

    def __init__(self, db: Database) -> None:
        self.db = db
        self.session: Session | None = None
        self.stack = contextlib.ExitStack()


#: The current :meth:`Database.enclosing_write` block, which the store's ``write`` joins in the
#: same thread or task.
_ENCLOSING: contextvars.ContextVar[Enclosing | None] = contextvars.ContextVar(
    "vocloud_enclosing_write", default=None)


#: what a group-commit call's greenlet hands back when it stops at its first write
PARK = object()


class Batch:
    """The group commit's batch (``store/group_commit.py``) its writer thread is running:
    consulted by :class:`Database` on that thread only. ``session`` is None until every call
    is parked and the transaction is open; ``solo``: the batch gave up (it could not open, or
    its commit failed), writes go alone."""

    __slots__ = ("memo", "session", "solo", "thread")

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.session: Session | None = None
        self.solo = False
        #: what the batch's calls would each read alike, read once for the batch
        #: (:meth:`Database.batch_memo`)
        self.memo: dict[Hashable, Any] = {}

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[Session]:
        """A call's write: parked until the batch's transaction is open, then a SAVEPOINT."""
        if self.session is None:
            current = greenlet.getcurrent()
            if current.parent is None:  # not one of the batch's calls: nothing to park
                raise RuntimeError("a write on the group-commit thread outside a batch call")
            current.parent.switch(PARK)
        session = self.session
        if session is None:
            raise RuntimeError("the batch's transaction did not open")
        point = session.begin_nested()
        deferred = deferred_in(session)
        before = deferred.snapshot() if deferred is not None else None
        try:
            yield session
            session.flush()
        except BaseException as exc:
            # also when a failed flush left it inactive: that rollback expunges the call's
            # pending objects, which the next call's flush would otherwise try again
            point.rollback()
            if deferred is not None and before is not None:
                deferred.restore(before)  # the call's quota sums go with its rows
            if is_lock_conflict(exc):
                raise RetryAlone from exc
            raise
        point.commit()


class WriterLock:
    """SQLite's writers queue: the threads of this process on a reentrant lock, and the
    processes on one file (a daemon's ``api_workers``, the CLI) on an flock of ``<db>-wlock``,
    where SQLite's busy handler sleeps up to 100 ms between tries. Two Database objects on one
    file in one process are two writers too: a thread must not nest their write transactions
    (SQLite itself would refuse the inner one after its busy timeout)."""

    def __init__(self, path: Path | None) -> None:
        self._threads = threading.RLock()
        self._path = path
        self._fd = -1
        self._depth = 0  # nested holds by the owning thread: the flock is taken once
        self._flocked = False
        #: since start: write transactions begun, seconds writers waited for the lock (this
        #: process's threads and the flock), seconds it was held. A hold rate near 1 s/s says
        #: the store's one writer is what requests queue for (``/metrics``, performance.md).
        self.acquisitions = 0
        self.wait_s = 0.0
        self.hold_s = 0.0
        self._held_at = 0.0

    def acquire(self, timeout: float) -> bool:
        asked = time.perf_counter()
        if not self._threads.acquire(timeout=timeout):
            return False
        if self._depth == 0:
            self._flocked = self._flock(timeout)
            self._held_at = time.perf_counter()
            self.acquisitions += 1
            self.wait_s += self._held_at - asked
        self._depth += 1
        return True

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self.hold_s += time.perf_counter() - self._held_at
            if self._flocked:
                self._flocked = False
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def close(self) -> None:
        with self._threads:
            if self._fd >= 0 and self._depth == 0:
                os.close(self._fd)
                self._fd = -1

    def _flock(self, timeout: float) -> bool:
        """False if there is no lock file (SQLite's busy timeout decides alone). Waits in the
        kernel (which wakes a waiter at each unlock: polling let the threads of the process
        holding it take it again and again before another process's next try)."""
        if self._path is None:
            return False
        if self._fd < 0:
            try:
                self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            except OSError:  # a read-only directory
                self._path = None
                return False
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return True


class Database:
    """An engine plus the two transaction kinds the service layer uses."""

    def __init__(self, url: str, echo: bool = False, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                parent = Path(path).parent
                if not parent.exists():
                    raise InvalidInput(f"database directory {parent} does not exist")
                _create_private(Path(path))
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 60}
            kwargs["pool_size"] = 16
            kwargs["max_overflow"] = 32
        else:
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = 20
            kwargs["pool_pre_ping"] = True
        self.engine = create_engine(url, **kwargs)
        if not self.is_sqlite:
            _keep_batch_savepoints(self.engine)
        lock_path: Path | None = None
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:" and not path.startswith("file:"):
                lock_path = Path(path + "-wlock")
        self._write_lock = WriterLock(lock_path) if self.is_sqlite else None
        if self.is_sqlite:
            _sqlite_setup(self.engine)
        #: the group-commit batch being run (``store/group_commit.py``): on its writer thread,
        #: writes are savepoints of the batch's transaction and reads after it opened see it
        self.batch: Batch | None = None
        self._at_dispose: list[Callable[[], None]] = []

    def at_dispose(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` when the store is disposed (the group commit's writer thread stops)."""
        self._at_dispose.append(fn)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on any exception. Inside
        :meth:`enclosing_write` of this store (same thread or task), the enclosing transaction's
        session instead: its work commits, or not, with the enclosing one.

        On SQLite this process's writers queue on one lock before ``BEGIN IMMEDIATE``: SQLite
        admits one writer at a time anyway, and a writer that finds the database locked polls
        with sleeps of up to 100 ms (its busy handler), which under 50 concurrent API clients
        made the slowest requests wait seconds. Other processes queue on a file lock
        (:class:`WriterLock`).
        """
        outer = _ENCLOSING.get()
        if outer is not None and outer.db is self:
            if outer.session is None:  # the block's first write opens its transaction
                outer.session = outer.stack.enter_context(self._locked_write())
            yield outer.session
            outer.session.flush()
            return
        with self._locked_write() as session:
            yield session

    def _batch_here(self) -> Batch | None:
        batch = self.batch
        if batch is None or batch.solo or batch.thread != threading.get_ident():
            return None
        return batch

    def batch_memo(self) -> dict[Hashable, Any] | None:
        """In a group-commit batch's call: a dict that lives as long as the batch, for a value
        its calls would each read alike before their writes (the API's authentication of one
        credential: ``api/common.py``); None elsewhere. Its calls' checks run one after
        another before the batch's transaction opens, so a value shared among them is as
        fresh as each call reading it again."""
        batch = self._batch_here()
        return None if batch is None else batch.memo

    def in_batch(self) -> bool:
        """True in a group-commit batch's call: a write here joins the batch."""
        return self._batch_here() is not None

    @contextmanager
    def _locked_write(self) -> Iterator[Session]:
        batch = self._batch_here()
        if batch is not None:
            with batch.savepoint() as session:
                yield session
            return
        with self.locked_write() as session:
            yield session

    @contextmanager
    def locked_write(self) -> Iterator[Session]:
        """A write transaction of its own (the group commit's batch is one)."""
        if self._write_lock is None:
            with self._write() as session:
                yield session
            return
        # bounded like the busy timeout: past it, SQLite's own locking decides (and may fail)
        held = self._write_lock.acquire(timeout=60)
        try:
            with self._write() as session:
                yield session
        finally:
            if held:
                self._write_lock.release()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self.engine.connect().execution_options(**{_WRITE: True}) as conn:
            with Session(bind=conn, expire_on_commit=False, autoflush=True) as session:
                with conn.begin():
                    deferred = None
                    if not self.is_sqlite:  # quota rows last (store/deferred.py)
                        deferred = session.info[DEFERRED] = Deferred()
                    yield session
                    session.flush()
                    if deferred is not None:
                        del session.info[DEFERRED]
                        deferred.run(session)

    @contextmanager
    def enclosing_write(self) -> Iterator[Enclosing]:
        """A block whose writes on this store are one transaction, committed (or rolled back)
        when the block ends. Why: the audit record of a call that does one write transaction is
        written in that transaction (``service/audit.py``) — one writer-lock round and one
        commit per call instead of two. The transaction opens at the block's first ``write``,
        not at its start, so what the call does before (a template parsed and checked) runs
        outside the writer lock as it did alone; from then on the lock (SQLite) or the row
        locks (PostgreSQL) are held to the block's end, so only calls that do no other I/O
        after their write belong in one. Not reentrant across stores: a ``write`` of another
        Database object inside the block opens its own transaction."""
        block = Enclosing(self)
        token = _ENCLOSING.set(block)
        try:
            with block.stack:
                yield block
        finally:
            _ENCLOSING.reset(token)

    @contextmanager
    def read(self) -> Iterator[Session]:
        batch = self._batch_here()
        if batch is not None and batch.session is not None:  # a batch call's: see the batch
            yield batch.session
            return
        with self.read_connection() as conn, Session(bind=conn, expire_on_commit=False) as session:
            with conn.begin():
                yield session

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """A connection for reads outside any batch. On PostgreSQL in autocommit: no BEGIN and
        no ROLLBACK round trips around a read; under READ COMMITTED each statement saw its own
        snapshot inside a transaction too, so a read loses nothing (reads take no locks)."""
        conn = self.engine.connect()
        if not self.is_sqlite:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        with conn:
            yield conn

    def writer_stats(self) -> tuple[int, float, float] | None:
        """SQLite: (write transactions, seconds waited for the writer lock, seconds it was
        held) since this object was made; PostgreSQL has no such lock: None."""
        lock = self._write_lock
        return None if lock is None else (lock.acquisitions, lock.wait_s, lock.hold_s)

    def dispose(self) -> None:
        for fn in self._at_dispose:
            fn()
        self.engine.dispose()
        if self._write_lock is not None:
            self._write_lock.close()
