"""One daemon per store: a heartbeat lease kept in ``site_settings`` (key ``daemon``).

Why: the data directory's flock keeps a second daemon off one directory, but two daemons on
different directories (or machines) pointed at one PostgreSQL database would both deploy every
PENDING VM and both boot workers for the same queue. The pool controller's crash repair relies
on the same fact: boot requests older than its start were made by a daemon that is now dead
(``engine/pools.py``).

The record names its holder (host and data directory), its pid and its last heartbeat. A daemon
may take the store when there is no record, when the record's heartbeat is older than the TTL
(the holder died without letting go), or when the holder is itself: the same host and data
directory, whose flock proves the earlier process dead, so a restart after ``kill -9`` need not
wait. Heartbeats are compared across machines: their clocks must agree to well under the TTL.
:func:`refusal` is the pure decision; :class:`StoreLease` reads and writes the record.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vocloud.errors import Conflict
from vocloud.store.db import Database
from vocloud.store.schema import SiteSetting

log = logging.getLogger("vocloud.lease")

KEY = "daemon"
TTL_S = 30.0  # a holder silent this long is taken to be dead; it beats every TTL_S / 3


@dataclass(frozen=True)
class Holder:
    host: str
    data_dir: str
    pid: int
    beat: float

    def same_place(self, other: Holder) -> bool:
        return (self.host, self.data_dir) == (other.host, other.data_dir)

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}, data dir {self.data_dir}"


def refusal(current: Holder | None, me: Holder, now: float, ttl: float = TTL_S) -> str | None:
    """Why ``me`` may not take the store from ``current``, or None when it may."""
    if current is None or current.same_place(me):
        return None
    age = now - current.beat
    if age > ttl:
        return None
    return (f"another vocloud daemon ({current.describe()}) uses this store: its last heartbeat "
            f"was {max(age, 0.0):.0f} s ago. Stop it first; if it is gone, this store is free "
            f"{max(ttl - age, 0.0):.0f} s from now. A SQLite store serves one daemon; several "
            "front-ends need PostgreSQL (docs/ha.md).")


def parse(value: str | None) -> Holder | None:
    """The stored record, or None when there is none (or it is unreadable: it is then replaced,
    as a record no daemon could have written cannot be a live holder's)."""
    if not value:
        return None
    try:
        doc = json.loads(value)
        return Holder(str(doc["host"]), str(doc["data_dir"]), int(doc["pid"]), float(doc["beat"]))
    except (ValueError, KeyError, TypeError):
        log.warning("replacing an unreadable daemon lease record: %r", value[:200])
        return None


class StoreLease:
    """This daemon's hold on the store: :meth:`acquire` at start, :meth:`renew` every
    ``ttl / 3`` s, :meth:`release` at a clean stop (a restarted peer then need not wait)."""

    def __init__(self, db: Database, data_dir: Path, ttl: float = TTL_S,
                 clock: Callable[[], float] = time.time, host: str | None = None,
                 pid: int | None = None) -> None:
        self.db = db
        self.ttl = ttl
        self.clock = clock
        self.host = host or socket.gethostname()
        self.data_dir = str(data_dir.resolve())
        self.pid = os.getpid() if pid is None else pid

    def _me(self, now: float) -> Holder:
        return Holder(self.host, self.data_dir, self.pid, now)

    def current(self) -> Holder | None:
        with self.db.read() as s:
            return parse(s.scalar(select(SiteSetting.value).where(SiteSetting.key == KEY)))

    def acquire(self) -> None:
        """Take the store, or raise :class:`Conflict` naming the daemon that holds it."""
        for _ in range(3):  # two daemons starting at once: one insert wins, the other re-reads
            try:
                self._take()
                return
            except IntegrityError:
                continue
        raise Conflict("could not take the store's daemon lease: another daemon keeps taking it")

    def _take(self) -> None:
        now = self.clock()
        with self.db.write() as s:
            row = self._row(s)
            why = refusal(parse(row.value) if row else None, self._me(now), now, self.ttl)
            if why is not None:
                raise Conflict(why)
            self._write(s, row, now)

    def renew(self) -> bool:
        """Beat; False when another daemon holds the store now (this one was silent too long)."""
        now = self.clock()
        with self.db.write() as s:
            row = self._row(s)
            held = parse(row.value) if row else None
            if held is not None and not self._mine(held):
                log.error("the store was taken over by another daemon (%s)", held.describe())
                return False
            self._write(s, row, now)
        return True

    def release(self) -> None:
        """Let go of the store if this daemon still holds it."""
        with self.db.write() as s:
            row = self._row(s)
            held = parse(row.value) if row else None
            if held is not None and self._mine(held):
                s.delete(row)

    def _mine(self, held: Holder) -> bool:
        return held.same_place(self._me(0.0)) and held.pid == self.pid

    @staticmethod
    def _row(s: Session) -> SiteSetting | None:
        """The lease record, locked for this transaction (PostgreSQL; SQLite writers are serial)."""
        return s.scalars(select(SiteSetting).where(SiteSetting.key == KEY).with_for_update()).first()

    def _write(self, s: Session, row: SiteSetting | None, now: float) -> None:
        value = json.dumps(asdict(self._me(now)))
        if row is None:
            s.add(SiteSetting(key=KEY, value=value))
        else:
            row.value = value
