"""Accounting, showback, APEL export and the audit log on a real store (SQLite and PostgreSQL).

VMs live through the real lifecycle (service + reconciler + sim driver) on a controlled clock, so
their charged lifetimes are known exactly: the numbers must be exact. The store query (a window
function over the event history) is also checked against the pure reference on random histories.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, update

from tests.support.helpers import admin, converge, reconciler, user_in
from vocloud.core.accounting import Prices, Stretch, aggregate, stretches_from_events
from vocloud.errors import Forbidden, InvalidInput, NotFound
from vocloud.model.lifecycle import VMState
from vocloud.service import accounting as accounting_mod
from vocloud.service import vms as vms_mod
from vocloud.service.cloud import Cloud
from vocloud.store.schema import AuditRow, Event

H = 3600.0


class Clock:
    """The service's clock, moved by the test; in the future so no loop timeout fires."""

    def __init__(self, start: float) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    import time

    c = Clock(float(int(time.time() // 86400 + 2) * 86400))  # midnight UTC, the day after tomorrow
    monkeypatch.setattr(vms_mod, "now", c)
    monkeypatch.setattr(accounting_mod, "now", c)
    return c


def test_known_lifetimes_give_exact_hours_both_databases(cloud: Cloud, clock: Clock, tmp_path: Path) -> None:
    a = admin(cloud)
    cloud.accounts.create_group(a, "atlas")
    cloud.accounts.create_group(a, "cms")
    alice = user_in(cloud, "alice", "atlas")
    bob = user_in(cloud, "bob", "cms")
    cloud.hosts.create(a, "h1", cpu=16, memory=65536)
    rec, _ = reconciler(cloud, tmp_path / "sim")
    t0 = clock.t
    [v1] = cloud.vms.create(alice, "CPU=2\nMEMORY=2048\n")
    [v2] = cloud.vms.create(bob, "CPU=1\nMEMORY=1024\n")
    converge(rec)
    assert {cloud.vms.show(a, v)["state"] for v in (v1, v2)} == {"RUNNING"}
    # v1: 1 h running, 1 h in UNKNOWN (host lost), found again, stopped at 3 h ...
    clock.t = t0 + H
    assert cloud.vms.report(v1, VMState.RUNNING, "lost")
    clock.t = t0 + 2 * H
    assert cloud.vms.report(v1, VMState.UNKNOWN, "found_running")
    clock.t = t0 + 3 * H
    cloud.vms.action(alice, v1, "stop")
    converge(rec)
    assert cloud.vms.show(a, v1)["state"] == "STOPPED"
    # ... resumed (a restart) at 5 h and terminated at 6 h: 4 charged hours in all
    clock.t = t0 + 5 * H
    cloud.vms.action(alice, v1, "resume")
    converge(rec)
    clock.t = t0 + 6 * H
    cloud.vms.action(alice, v1, "terminate")
    converge(rec)
    assert cloud.vms.show(a, v1)["state"] == "DONE"
    # v2 still runs at 10 h: 10 charged hours
    clock.t = t0 + 10 * H
    cloud.accounting.prices = Prices(cpu_hour=0.5, gib_hour=0.25)

    by_vo = {r["key"]: r for r in cloud.accounting.get_usage(a, by="vo")["rows"]}
    assert by_vo["atlas"]["vm_hours"] == pytest.approx(4.0)
    assert by_vo["atlas"]["cpu_hours"] == pytest.approx(8.0)
    assert by_vo["atlas"]["gib_hours"] == pytest.approx(8.0)
    assert by_vo["atlas"]["cost"] == pytest.approx(8 * 0.5 + 8 * 0.25)
    assert by_vo["cms"]["vm_hours"] == pytest.approx(10.0)
    assert by_vo["cms"]["cpu_hours"] == pytest.approx(10.0)
    report = cloud.accounting.get_usage(a, by="host")
    assert [r["key"] for r in report["rows"]] == ["h1"]
    assert report["total"]["vm_hours"] == pytest.approx(14.0)
    # a period: [2 h, 5.5 h) holds v1's 2.0 - 3.0 h and 5.0 - 5.5 h, and v2's 3.5 h
    part = cloud.accounting.get_usage(a, since=t0 + 2 * H, until=t0 + 5.5 * H, by="user")
    assert {r["key"]: r["vm_hours"] for r in part["rows"]} == {"alice": pytest.approx(1.5),
                                                               "bob": pytest.approx(3.5)}
    days = cloud.accounting.get_usage(a, by="day")
    assert sum(r["vm_hours"] for r in days["rows"]) == pytest.approx(14.0)
    # a VO user sees their own only; asking for others is refused
    mine = cloud.accounting.get_usage(alice, by="vm")
    assert [r["id"] for r in mine["rows"]] == [v1]
    with pytest.raises(Forbidden):
        cloud.accounting.get_usage(alice, vo="cms")
    with pytest.raises(Forbidden):
        cloud.accounting.get_usage(alice, user="bob")
    with pytest.raises(NotFound):
        cloud.accounting.get_usage(a, vo="nosuchvo")
    for bad in ({"since": "yesterday"}, {"since": "-5"}, {"until": "nan"}, {"by": "planet"},
                {"since": t0 + 2 * H, "until": t0 + H}):
        with pytest.raises(InvalidInput):
            cloud.accounting.get_usage(a, **bad)
    # ISO 8601 periods mean the same as UNIX seconds
    iso = cloud.accounting.get_usage(a, since=part["from_iso"], until=part["to_iso"], by="user")
    assert iso["rows"] == part["rows"]
    # APEL: one record per VM, cumulative, completed or started
    apel = cloud.accounting.get_apel(a)
    blocks = [b for b in apel.split("%%\n") if "VMUUID" in b]
    assert apel.startswith("APEL-cloud-message: v0.4\n") and len(blocks) == 2
    rec1 = dict(line.split(": ", 1) for line in blocks[0].strip().splitlines() if ": " in line)
    assert rec1["MachineName"] and rec1["Status"] == "completed" and rec1["WallDuration"] == "14400"
    assert rec1["CpuDuration"] == "28800" and rec1["LocalGroupId"] == "atlas" and rec1["Memory"] == "2048"
    assert "Status: started" in blocks[1] and "WallDuration: 36000" in blocks[1]
    assert cloud.accounting.get_apel(bob).count("VMUUID") == 1


EVENT = st.tuples(st.integers(1, 4), st.floats(0, 50 * H).map(round),
                  st.sampled_from(["PENDING", "PROLOG", "RUNNING", "UNKNOWN", "STOPPED", "POWEROFF",
                                   "EPILOG", "DONE"]))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(EVENT, max_size=30), st.floats(0, 60 * H), st.floats(0, 60 * H))
def test_store_query_matches_the_pure_reference(cloud: Cloud, events: list[tuple[int, float, str]],
                                                lo: float, length: float) -> None:
    """Random event histories (ties, any order): the window-function query cuts them exactly as
    the pure reference does, on either database."""
    a = admin(cloud)
    ids = [v["id"] for v in cloud.vms.list(a, include_done=True)]
    while len(ids) < 4:
        ids += cloud.vms.create(a, "CPU=1\nMEMORY=512\n", hold=True)
    with cloud.db.write() as s:
        s.execute(delete(Event).where(Event.kind == "vm"))
        for vm, at, state in events:
            s.add(Event(time=1000.0 + at, kind="vm", obj_id=ids[vm - 1], action="x", to_state=state))
    got = cloud.accounting.get_usage(a, since=1000 + lo, until=1000 + lo + length, by="vm")
    numbered = [(ids[vm - 1], 1000.0 + at, i, state) for i, (vm, at, state) in enumerate(events)]
    ref = aggregate([Stretch(v, st_, b, e, 0, 0, None, None, 1000, 512)
                     for v, st_, b, e in stretches_from_events(numbered)],
                    1000 + lo, 1000 + lo + length, now=float("inf"), by="vm")
    assert {r["id"]: r["vm_hours"] for r in got["rows"]} == {
        k: pytest.approx(round(u.vm_hours, 6), abs=1e-6) for k, u in ref.items()}


def test_audit_records_every_change_through_the_service(cloud: Cloud) -> None:
    a = admin(cloud)
    cloud.accounts.create_group(a, "atlas")
    alice = user_in(cloud, "alice", "atlas")
    [vm] = cloud.vms.create(alice, "CPU=1\nMEMORY=512\n", hold=True)
    with pytest.raises(Forbidden):
        cloud.hosts.create(alice, "evil", cpu=1, memory=1)
    cloud.vms.action(alice, vm, "release")
    cloud.vms.list(alice)  # reads are not audited
    cloud.accounting.get_usage(alice)
    rows = cloud.audit.list(a)
    mine = [(r["user"], r["action"], r["object"], r["result"]) for r in rows if r["user"] == "alice"]
    assert mine == [("alice", "vms.action", f"vms {vm}", "ok"),
                    ("alice", "hosts.create", "hosts", "Forbidden"),
                    ("alice", "vms.create", f"vms {vm}", "ok")]
    assert any(r["action"] == "accounts.create_group" and r["user"] == "admin" for r in rows)
    # a VO user sees their own records only
    assert {r["user"] for r in cloud.audit.list(alice)} == {"alice"}
    with pytest.raises(Forbidden):
        cloud.audit.list(alice, user="admin")
    with pytest.raises(InvalidInput):
        cloud.audit.list(a, limit=0)
    # Cloud.instantiate -> vms.create is one record (the outermost call)
    before = len(cloud.audit.list(a))
    tmpl = cloud.templates.create(alice, "CPU=1\nMEMORY=256\n", name="t1")
    cloud.instantiate(alice, tmpl["id"], hold=True)
    assert len(cloud.audit.list(a)) == before + 1 + 1
    # retention prunes old records; ids are never reused
    with cloud.db.write() as s:
        s.execute(update(AuditRow).values(time=1.0))
    top = max(r["id"] for r in cloud.audit.list(a))
    cloud.audit.retention_days = 1
    cloud.audit._pruned_at = 0.0
    cloud.accounts.create_group(a, "cms")
    left = cloud.audit.list(a)
    assert [r["action"] for r in left] == ["accounts.create_group"] and left[0]["id"] > top


def test_every_state_changing_service_method_is_audited(cloud: Cloud) -> None:
    """A front-end cannot forget the audit: the services' writes are wrapped at construction."""
    wrapped = {k: set(v) for k, v in cloud.audit.instrument_all(cloud).items()}
    assert wrapped == {}  # already done by Cloud itself: instrumenting again changes nothing
    for service, names in {"vms": {"create", "action", "recover", "delete"},
                           "hosts": {"create", "action", "delete", "update_attrs"},
                           "accounts": {"create_user", "delete_user", "new_token", "set_quota"},
                           "pools": {"create", "update", "delete"}}.items():
        for name in names:
            assert getattr(getattr(getattr(cloud, service), name), "__vocloud_audited__", False), name
    for service, name in (("vms", "list"), ("vms", "show"), ("accounting", "get_usage"),
                          ("audit", "list"), ("vms", "report")):
        assert not getattr(getattr(getattr(cloud, service), name), "__vocloud_audited__", False)


def test_the_frontend_tag_names_each_front_end() -> None:
    """One ASGI middleware tells the audit log which front-end a request came through."""
    import asyncio

    from vocloud.api.ops import FrontendTag
    from vocloud.service.audit import FRONTEND

    seen: list[str] = []

    async def app(_scope: object, _receive: object, _send: object) -> None:
        seen.append(FRONTEND.get())

    tag = FrontendTag(app)
    for path in ("/api/v1/vms", "/ec2/", "/RPC2", "/compute/7", "/ui/", "/brandnew/x"):
        asyncio.run(tag({"type": "http", "path": path}, None, None))  # type: ignore[arg-type]
    assert seen == ["rest", "ec2", "xmlrpc", "occi", "ui", "brandnew"]
