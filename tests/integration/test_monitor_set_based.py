"""The monitor's set-based write (issue 15): ``report_probes`` makes the changes
``report_monitor`` makes host by host - capacity net of reservations, state and its event, the
backoff cleared - writes only the values that changed, and skips OFFLINE hosts; on SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event, func, select

from tests.support.helpers import admin
from vocloud.service.cloud import Cloud
from vocloud.service.hosts import HostSpec, Probe
from vocloud.store.schema import Event, Host


@contextmanager
def statements(cloud: Cloud) -> Iterator[list[str]]:
    seen: list[str] = []

    def note(conn: Any, cursor: Any, stmt: str, *args: Any) -> None:
        seen.append(" ".join(stmt.split()[:3]).upper())

    event.listen(cloud.db.engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(cloud.db.engine, "before_cursor_execute", note)


def writes(seen: list[str]) -> list[str]:
    return [s for s in seen if s.split()[0] in ("UPDATE", "INSERT", "DELETE")]


def rows(cloud: Cloud) -> dict[str, Host]:
    with cloud.db.read() as s:
        return {h.name: h for h in s.scalars(select(Host))}


def probe(h: Host, used_cpu_m: int = 0, used_mem: int = 0) -> Probe:
    return Probe(h.id, 8000, 16384, used_cpu_m, used_mem, {"HYPERVISOR": "sim"})


def host_events(cloud: Cloud) -> list[tuple[int, str, str, str]]:
    with cloud.db.read() as s:
        return [tuple(r) for r in s.execute(  # type: ignore[misc]
            select(Event.obj_id, Event.action, Event.from_state, Event.to_state)
            .where(Event.kind == "host").where(Event.action != "create").order_by(Event.id))]


def test_report_probes_writes_what_changed_only(cloud: Cloud) -> None:
    a = admin(cloud)
    cloud.hosts.create_many(a, [HostSpec(f"p{i}", cpu=8, memory=16384) for i in range(5)]
                            + [HostSpec("res", cpu=8, memory=16384,
                                        attrs={"RESERVED_CPU": "2", "RESERVED_MEM": "1024"})])
    h = rows(cloud)
    cloud.hosts.report_probes([probe(x) for x in h.values()], at=1000.0)
    h = rows(cloud)
    assert {x.state for x in h.values()} == {"MONITORED"}
    assert {x.monitored_at for x in h.values()} == {1000.0}
    assert (h["res"].total_cpu_m, h["res"].total_mem) == (6000, 15360)  # net of reservations
    assert h["p0"].attrs["HYPERVISOR"] == "sim" and h["p0"].attrs["TOTAL_CPU"] == "8"
    assert sorted(e[0] for e in host_events(cloud)) == sorted(x.id for x in h.values())
    assert all(e[1:] == ("monitor_ok", "INIT", "MONITORED") for e in host_events(cloud))

    # the same figures again: one UPDATE (monitored_at), no event, nothing else written
    with statements(cloud) as seen:
        cloud.hosts.report_probes([probe(x) for x in h.values()], at=1001.0)
    assert writes(seen) == ["UPDATE HOSTS SET"], seen
    assert {x.monitored_at for x in rows(cloud).values()} == {1001.0}
    assert len(host_events(cloud)) == 6

    # a failing host comes back; one host's load changed; an OFFLINE host is left alone
    cloud.hosts.report_monitor(h["p1"].id, ok=False, error="boom", at=1002.0,
                               retry_in=lambda n: 30.0)
    cloud.hosts.action(a, "p2", "offline")
    assert rows(cloud)["p1"].state == "ERROR"
    with statements(cloud) as seen:
        cloud.hosts.report_probes([probe(h["p1"]), probe(h["p2"]), probe(h["p3"], 3000, 768),
                                   probe(h["p4"])], at=1003.0)
    # monitored_at for all three, p3's load, p1's state and backoff; p1's event
    assert writes(seen) == ["UPDATE HOSTS SET"] * 3 + ["INSERT INTO EVENTS"], seen
    got = rows(cloud)
    p1 = got["p1"]
    assert (p1.state, p1.error, p1.monitor_failures, p1.monitor_failing_since,
            p1.monitor_next_at, p1.monitored_at) == ("MONITORED", "", 0, None, None, 1003.0)
    assert (got["p2"].state, got["p2"].monitored_at) == ("OFFLINE", 1001.0)
    assert (got["p3"].used_cpu_m, got["p3"].used_mem, got["p3"].monitored_at) == (3000, 768, 1003.0)
    assert (got["p4"].used_cpu_m, got["p0"].monitored_at) == (0, 1001.0)
    assert host_events(cloud)[-1] == (p1.id, "monitor_ok", "ERROR", "MONITORED")

    # a reservation set meanwhile is applied to the next probe's figures
    cloud.hosts.update_attrs(a, "p4", {"RESERVED_CPU": "1"})
    cloud.hosts.report_probes([probe(h["p4"])], at=1004.0)
    assert rows(cloud)["p4"].total_cpu_m == 7000
    with cloud.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Host)
                        .where(Host.monitored_at == 1004.0)) == 1
