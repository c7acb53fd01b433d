"""The store lease on both databases: take, refuse, expire, restart in place, lose, release."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from vocloud.engine.store_lease import KEY, StoreLease
from vocloud.errors import Conflict
from vocloud.store.db import Database
from vocloud.store.schema import SiteSetting


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def lease(db: Database, clock: Clock, where: Path, host: str = "node1", pid: int = 1) -> StoreLease:
    return StoreLease(db, where, ttl=30, clock=clock, host=host, pid=pid)


def test_one_daemon_per_store(db: Database, tmp_path: Path) -> None:
    clock = Clock()
    a = lease(db, clock, tmp_path / "a", pid=11)
    b = lease(db, clock, tmp_path / "b", host="node2", pid=22)
    a.acquire()
    with pytest.raises(Conflict, match=r"pid 11 on node1, data dir .*/a\) uses this store"):
        b.acquire()
    clock.now += 20
    assert a.renew()  # a beats: b stays out past a's first TTL
    clock.now += 20
    with pytest.raises(Conflict, match="20 s ago"):
        b.acquire()
    held = a.current()
    assert held is not None and held.pid == 11 and held.beat == clock.now - 20


def test_a_silent_holder_is_replaced_and_learns_it_lost(db: Database, tmp_path: Path) -> None:
    clock = Clock()
    a = lease(db, clock, tmp_path / "a", pid=11)
    b = lease(db, clock, tmp_path / "b", host="node2", pid=22)
    a.acquire()
    clock.now += 31  # a hung (or its host lost the network) past the TTL
    b.acquire()
    assert not a.renew()  # a must stop: b holds the store now
    held = b.current()
    assert held is not None and held.pid == 22
    a.release()  # a stopping does not free b's store
    assert b.current() == held and b.renew()


def test_a_restart_in_place_takes_over_at_once_and_release_frees(db: Database, tmp_path: Path) -> None:
    clock = Clock()
    old = lease(db, clock, tmp_path / "a", pid=11)
    old.acquire()
    clock.now += 1
    new = lease(db, clock, tmp_path / "a", pid=12)  # kill -9, restarted on the same data dir
    new.acquire()
    assert not old.renew()
    new.release()
    assert new.current() is None
    lease(db, clock, tmp_path / "b", host="node2", pid=22).acquire()  # free at once, no TTL wait


def test_an_unreadable_record_is_replaced(db: Database, tmp_path: Path) -> None:
    with db.write() as s:
        s.add(SiteSetting(key=KEY, value="{garbage"))
    a = lease(db, Clock(), tmp_path / "a", pid=11)
    a.acquire()
    with db.read() as s:
        value = s.scalar(select(SiteSetting.value).where(SiteSetting.key == KEY))
    assert json.loads(value or "")["pid"] == 11


def test_daemons_starting_together_one_wins(db: Database, tmp_path: Path) -> None:
    clock = Clock()
    rivals = [lease(db, clock, tmp_path / f"d{i}", host=f"node{i}", pid=i) for i in range(4)]
    won: list[int] = []
    lost: list[str] = []
    barrier = threading.Barrier(len(rivals))

    def start(le: StoreLease) -> None:
        barrier.wait()
        try:
            le.acquire()
            won.append(le.pid)
        except Conflict as exc:
            lost.append(exc.message)

    threads = [threading.Thread(target=start, args=(le,)) for le in rivals]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(won) == 1 and len(lost) == 3, (won, lost)
    held = rivals[0].current()
    assert held is not None and held.pid == won[0]
    assert all(f"pid {won[0]} on node{won[0]}" in why for why in lost), lost
