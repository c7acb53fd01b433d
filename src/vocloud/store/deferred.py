"""What a write transaction on PostgreSQL hands to its end: hot-row sums, and calls to run alone.

Why: every create and every end of one user's VMs updates the same two quota rows. On
PostgreSQL a row's lock is held from its UPDATE until commit, so a transaction that refunded a
quota early (the lifecycle loop, ending VMs group by group) or a group-commit batch that
charged one in its first call held that row while it went on to lock VM rows — in another
order than a transaction that locks VMs first and the quota last: deadlocks, broken by
PostgreSQL after a second (why group commit was SQLite-only until session 14). So quota
changes are summed here and written as the transaction's last statements, in one order
(users, then groups): the rows are locked for the commit only, and every writer takes them
last. Refunds always wait (they cannot fail); charges wait only in a batch (:attr:`Deferred.
in_batch`), each call checked against the row as it reads plus the batch's sum so far. A sum
that no longer fits when written (another process charged the row meanwhile) fails the batch,
whose calls are then run again alone, each charging at once.

A call that would wait on a row lock longer than :data:`LOCK_TIMEOUT_MS` inside a batch (a VM
the scheduler holds, say) is rolled back to its savepoint and run again alone once the batch
committed (:class:`RetryAlone`): a lock wait inside a batch stalls every call of it, and two
batches waiting on each other would be a deadlock that PostgreSQL breaks only after a second.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

from sqlalchemy.orm import Session

#: ``Session.info`` key of a write transaction's :class:`Deferred` (PostgreSQL only: SQLite's
#: writer holds the whole database, so there is no row to take last)
DEFERRED = "vocloud.deferred"

#: how long a batch's statement waits for a row lock before its call is run alone (ms)
LOCK_TIMEOUT_MS = 50

#: PostgreSQL's SQLSTATEs of a lock wait given up: lock_timeout, and a deadlock it detected
_LOCK_CONFLICT = frozenset({"55P03", "40P01"})

Sums = dict[Hashable, list[int]]
Apply = Callable[[Session, Sums], None]
ApplyRows = Callable[[Session, list[Any]], None]
Snapshot = tuple[dict[str, Sums], dict[str, int]]


class RetryAlone(BaseException):
    """A batch call gave up a lock wait: it was rolled back to its savepoint and is run again,
    alone, after the batch. A ``BaseException`` so that no layer between the store and the
    group commit (the audit hook records every ``Exception``) takes it for the call's outcome."""


def is_lock_conflict(exc: BaseException) -> bool:
    """True for a PostgreSQL error that says a lock wait was given up (timeout or deadlock)."""
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in _LOCK_CONFLICT


class Deferred:
    """A write transaction's hot-row changes: integer sums per (kind, key), written by the
    kind's ``apply`` just before its commit (:meth:`run`); in a batch, a call's own additions
    are dropped when it fails (:meth:`snapshot` before it, :meth:`restore` after)."""

    __slots__ = ("_apply", "_apply_rows", "_rows", "_sums", "in_batch", "read")

    def __init__(self) -> None:
        self._sums: dict[str, Sums] = {}
        self._apply: dict[str, Apply] = {}
        self._rows: dict[str, list[Any]] = {}
        self._apply_rows: dict[str, ApplyRows] = {}
        #: rows a kind read once for the whole batch (a quota's usage and limits): its checks
        #: may be stale, never its writes, which :meth:`run` makes conditional
        self.read: dict[tuple[str, Hashable], tuple[int, ...]] = {}
        #: True in a batch, whose calls' charges wait for its end too (a sum that no longer
        #: fits reruns them alone), and their audit records (one multi-row insert: a round
        #: trip less per call); in a transaction of its own a charge is made at once, so that
        #: a failed one is the caller's QuotaExceeded, and only refunds wait
        self.in_batch = False

    def add(self, kind: str, key: Hashable, deltas: Sequence[int], apply: Apply) -> None:
        acc = self._sums.setdefault(kind, {}).setdefault(key, [0] * len(deltas))
        for i, delta in enumerate(deltas):
            acc[i] += delta
        self._apply[kind] = apply

    def append(self, kind: str, row: Any, apply: ApplyRows) -> None:
        """A row to insert at the end (with the kind's others, by ``apply``)."""
        self._rows.setdefault(kind, []).append(row)
        self._apply_rows[kind] = apply

    def pending(self, kind: str, key: Hashable, width: int) -> list[int]:
        """The sum so far for ``key`` (zeros if none)."""
        return list(self._sums.get(kind, {}).get(key, [0] * width))

    def snapshot(self) -> Snapshot:
        return ({kind: {key: list(acc) for key, acc in sums.items()}
                 for kind, sums in self._sums.items()},
                {kind: len(rows) for kind, rows in self._rows.items()})

    def restore(self, snapshot: Snapshot) -> None:
        sums, lengths = snapshot
        self._sums = sums
        for kind, rows in self._rows.items():
            del rows[lengths.get(kind, 0):]

    def run(self, session: Session) -> None:
        """Insert every kind's rows, then write every kind's sums (in the kind's order, by its
        ``apply``: the hot rows last), then forget them."""
        rows, self._rows = self._rows, {}
        for kind, items in rows.items():
            if items:
                self._apply_rows[kind](session, items)
        sums, self._sums = self._sums, {}
        for kind, per_key in sums.items():
            if per_key:
                self._apply[kind](session, per_key)


def deferred_in(session: Session) -> Deferred | None:
    """The transaction's :class:`Deferred` on PostgreSQL (every write transaction has one,
    ``Database._write``), else None."""
    found = session.info.get(DEFERRED)
    return found if isinstance(found, Deferred) else None
