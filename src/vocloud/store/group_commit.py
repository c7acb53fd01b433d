"""Group commit: many callers' write calls, one transaction.

Why: under 50 concurrent API clients every create and terminate took the SQLite store's one
writer on its own — the writer lock (a file lock across a daemon's ``api_workers``), a
connection, a transaction and a commit per call — and the holder, giving up the GIL at every
SQLite call, got it back only when its process's other threads let it. Here one writer thread
per process runs the calls that queued meanwhile as one batch, in one transaction, each call in
a SAVEPOINT of its own: the lock is taken, and the transaction committed, once per batch. Two
API processes on two cores, same runs of ``bench_scale --rest``: 311-312 req/s and 4.6 ms of
CPU per request with it, 228-236 req/s and 5.9 ms without (docs/performance.md, session 12).
On PostgreSQL too since session 14: there a batch's quota changes are written at its end, and
a call that would wait on a row lock for more than a few ms is run again alone after the batch
(``store/deferred.py``); before that, a batch's longer-held row locks deadlocked with the
scheduler's and the lifecycle's.

What each call keeps, as if it ran alone:

* **All or nothing per call.** A call that raises is rolled back to its savepoint and its error
  goes to its caller; the batch's other calls go on. If the batch's commit fails, every call of
  it is run again alone, in its own transaction, and gets that run's outcome.
* **Its checks outside the lock.** Each call runs in a greenlet of the writer thread until its
  first write (a template parsed and checked, reads); there it is parked. Only when every call
  of the batch is parked (or done) is the transaction opened, and the calls resumed one by one.
  A large hostile template is parsed before the lock is taken, as before.
* **Its context.** The call runs in a copy of its caller's ``contextvars`` (the front-end tag
  and the audit state go with it), and sees the batch's earlier calls' writes: its reads after
  its first write use the batch's session.

Only calls that do one write transaction (or an enclosing block) and no I/O after it belong here
— the same rule as ``audit.IN_CALL_TRANSACTION``: from its first write a call holds everyone's
transaction open.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import greenlet

from vocloud.store.db import KEEP_SAVEPOINTS, Batch, Database
from vocloud.store.db import PARK as _PARK
from vocloud.store.deferred import LOCK_TIMEOUT_MS, RetryAlone, deferred_in

log = logging.getLogger("vocloud.store")

T = TypeVar("T")

#: the most calls one batch takes: bounds how long the first of them waits for the commit
MAX_BATCH = 64


class _Call:
    __slots__ = ("ctx", "fn", "future", "gr", "outcome")

    def __init__(self, fn: Callable[[], Any], ctx: contextvars.Context) -> None:
        self.fn = fn
        self.ctx = ctx
        self.future: Future[Any] = Future()
        self.gr: greenlet.greenlet | None = None
        self.outcome: tuple[bool, Any] | None = None  # (ok, result or exception)

    def run(self) -> object:
        try:
            self.outcome = (True, self.fn())
        except BaseException as exc:  # delivered to the caller, whatever it is
            self.outcome = (False, exc)
        return None


class GroupCommit:
    """One writer thread per store that runs :meth:`run`'s calls in batches (started at the
    first call, stopped by :meth:`close`)."""

    def __init__(self, db: Database, max_batch: int = MAX_BATCH) -> None:
        self.db = db
        self.max_batch = max_batch
        #: False: each call runs alone (:meth:`submit` says None). On PostgreSQL a batch once
        #: held its calls' row locks (quotas, VMs) until its commit, in the calls' order, while
        #: the scheduler locks VMs in its own: with two API processes that deadlocked every few
        #: seconds (session 12). Now quota changes wait for the batch's end and a lock wait
        #: longer than a few ms sends its call to run alone (``store/deferred.py``).
        self.enabled = True
        self._queue: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._closed = False
        #: since start: batches committed, calls they carried (``/metrics``, performance.md)
        self.batches = 0
        self.calls = 0
        #: calls run again alone after their batch because they gave up a lock wait in it
        self.retried = 0

    def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in the next batch; its result or its exception, once the batch committed.
        Alone, in this thread, where there is no group commit (PostgreSQL, or closed)."""
        if self._thread is not None and threading.get_ident() == self._thread.ident:
            return fn()  # a batch's own call's call: it is in the batch already
        future = self.submit(fn)
        return fn() if future is None else future.result()

    def submit(self, fn: Callable[[], Any]) -> Future[Any] | None:
        """Queue ``fn`` for the next batch: its future (an async caller awaits it without a
        thread of its own; cancelled before the call began, the call is not done; once begun,
        it runs to its end and commits). None where there is no group commit: the caller
        runs ``fn`` alone."""
        with self._start_lock:
            if not self.enabled or self._closed:
                return None
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="vocloud-group-commit",
                                                daemon=True)
                self._thread.start()
            call = _Call(fn, contextvars.copy_context())
            self._queue.put(call)  # before close()'s stop mark: it is run
            return call.future

    def close(self) -> None:
        with self._start_lock:
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join(30)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            calls = [first]
            while len(calls) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                calls.append(nxt)
            # a call whose caller was cancelled before it began is dropped, done nothing
            calls = [c for c in calls if c.future.set_running_or_notify_cancel()]
            if not calls:
                continue
            try:
                self._batch(calls)
            except BaseException as exc:  # never leave a caller waiting
                log.exception("group commit: a batch of %d call(s) failed", len(calls))
                for call in calls:
                    if not call.future.done():
                        call.future.set_exception(exc)

    def _batch(self, calls: list[_Call]) -> None:
        batch = Batch()
        self.db.batch = batch
        try:
            parked = []
            for call in calls:  # each to its first write: the checks, outside the lock
                call.gr = greenlet.greenlet(call.run)
                call.gr.gr_context = call.ctx.copy()
                if call.gr.switch() is _PARK:
                    parked.append(call)
            if parked:
                self._write(batch, parked)
        finally:
            self.db.batch = None
        for call in calls:
            if call.outcome is None:  # cannot happen: a call ends or is re-run alone
                call.future.set_exception(RuntimeError("group commit: the call did not end"))
            elif call.outcome[0]:
                call.future.set_result(call.outcome[1])
            else:
                call.future.set_exception(call.outcome[1])

    def _write(self, batch: Batch, parked: list[_Call]) -> None:
        try:
            with self.db.locked_write() as session:
                batch.session = session
                deferred = deferred_in(session)
                if deferred is not None:  # PostgreSQL: row locks (store/deferred.py)
                    deferred.in_batch = True
                    conn = session.connection()
                    conn.execution_options(**{KEEP_SAVEPOINTS: True})  # ends with the connection
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_MS}ms'")
                for call in parked:
                    assert call.gr is not None
                    if call.gr.switch() is _PARK:  # cannot happen while the batch is open
                        raise RuntimeError("a call parked in an open batch")
                if deferred is not None:
                    # the quota rows at the commit, last and in one order: however long it takes
                    session.connection().exec_driver_sql("SET LOCAL lock_timeout = 0")
        except Exception as exc:
            # The batch's work is rolled back; each call runs again alone (its own transaction,
            # its own outcome). A call's own error was caught in the call: this is the batch's.
            log.warning("group commit: a batch of %d call(s) failed (%s); running them alone",
                        len(parked), exc)
            batch.session, batch.solo = None, True
            for call in parked:
                if call.gr is not None and not call.gr.dead:
                    call.gr.throw()  # GreenletExit: it ends where it was parked
                call.outcome = None
                call.ctx.copy().run(call.run)
            self.calls += len(parked)
            return
        self.batches += 1
        self.calls += len(parked)
        retry = [call for call in parked
                 if call.outcome is not None and isinstance(call.outcome[1], RetryAlone)]
        if retry:  # gave up a lock wait in the batch (PostgreSQL): alone, after its commit
            log.debug("group commit: %d call(s) of a batch run alone after a lock wait", len(retry))
            self.retried += len(retry)
            batch.session, batch.solo = None, True
            for call in retry:
                call.outcome = None
                call.ctx.copy().run(call.run)


_STORES: weakref.WeakKeyDictionary[Database, GroupCommit] = weakref.WeakKeyDictionary()
_STORES_LOCK = threading.Lock()


def for_store(db: Database) -> GroupCommit:
    """The store's group commit in this process (one writer thread, started at its first call,
    stopped when the store is disposed): every front-end's calls share it."""
    with _STORES_LOCK:
        group = _STORES.get(db)
        if group is None:
            group = _STORES[db] = GroupCommit(db)
            db.at_dispose(group.close)
        return group
