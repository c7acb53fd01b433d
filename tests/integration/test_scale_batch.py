"""The set-based paths of issue 15 keep every rule of the per-VM ones, on SQLite and PostgreSQL.

``HostService.create_many`` (POST /hosts/batch), the one-INSERT VM create, the scheduler's
``vm_batch.schedule`` and the lifecycle's ``vm_batch.apply_reports``, and the monitor's one
transaction for many probes: all or nothing, compare-and-set on the state a loop saw, host
capacity never exceeded even when two writers race, quotas and events exact.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.support.helpers import admin, converge, reconciler, user_in
from tests.support.race import race
from vocloud.errors import Conflict, Forbidden, InvalidInput, NoCapacity, QuotaExceeded
from vocloud.model.lifecycle import VMState
from vocloud.model.template import parse_template
from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.service.hosts import HostSpec
from vocloud.service.vm_batch import Report
from vocloud.store.schema import VM, Event, Host, Lease, Quota

S = VMState


def _host_count(cloud: Cloud) -> int:
    with cloud.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(Host)) or 0)


def _vm_states(cloud: Cloud, ids: list[int]) -> dict[int, str]:
    with cloud.db.read() as s:
        return dict(s.execute(select(VM.id, VM.state).where(VM.id.in_(ids))).all())


def _host(cloud: Cloud, name: str) -> Host:
    with cloud.db.read() as s:
        return s.scalars(select(Host).where(Host.name == name)).one()


def test_create_many_registers_all_or_nothing(cloud: Cloud) -> None:
    a = admin(cloud)
    made = cloud.hosts.create_many(a, [HostSpec(f"b{i}", cpu=4, memory=8192) for i in range(30)])
    assert [h["name"] for h in made] == [f"b{i}" for i in range(30)]
    assert all(h["state"] == "INIT" and h["total_cpu"] == 4 for h in made)
    with cloud.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Event).where(Event.kind == "host")
                        .where(Event.action == "create")) == 30
    before = _host_count(cloud)
    bad_lists: list[tuple[list[HostSpec], type[Exception], str]] = [
        ([HostSpec("n1", cpu=1, memory=64), HostSpec("b3", cpu=1, memory=64)], Conflict, "b3"),
        ([HostSpec("n1", cpu=1, memory=64), HostSpec("n1", cpu=1, memory=64)], Conflict, "n1"),
        ([HostSpec("n1", cpu=1, memory=64), HostSpec("n2", cpu=-1, memory=64)], InvalidInput, "CPU"),
        ([HostSpec("n1", cpu=1, memory=64), HostSpec("../x", cpu=1, memory=64)], InvalidInput, "name"),
        ([HostSpec("n1", cpu=1, memory=64), HostSpec("n2")], InvalidInput, r"hosts\[1\] .*--cpu"),
        ([HostSpec("n1", vmm="nope", cpu=1, memory=64)], InvalidInput, "nope"),
        ([HostSpec("n1", cpu=1, memory=64, attrs={"RESERVED_CPU": "x"})], InvalidInput, "RESERVED_CPU"),
        ([], InvalidInput, "between 1"),
    ]
    for hosts, exc, word in bad_lists:
        with pytest.raises(exc, match=word):
            cloud.hosts.create_many(a, hosts)
        assert _host_count(cloud) == before  # nothing of the request was written
    alice = user_in(cloud, "alice", "atlas")
    with pytest.raises(Forbidden):
        cloud.hosts.create_many(alice, [HostSpec("n9", cpu=1, memory=64)])
    assert _host_count(cloud) == before


def test_bulk_create_ids_templates_quota_and_events(cloud: Cloud) -> None:
    alice = user_in(cloud, "alice", "atlas")
    ids = cloud.vms.create(alice, "CPU=0.5\nMEMORY=256\n", count=40, name="w")
    assert ids == sorted(ids) and len(set(ids)) == 40
    with cloud.db.read() as s:
        rows = s.execute(select(VM.id, VM.name, VM.deploy_id, VM.template).where(VM.id.in_(ids))
                         .order_by(VM.id)).all()
        q = s.scalars(select(Quota).where(Quota.scope == "user")
                      .where(Quota.scope_id == alice.user_id)).one()
        events = s.scalar(select(func.count()).select_from(Event).where(Event.kind == "vm")
                          .where(Event.action == "create").where(Event.obj_id.in_(ids)))
    for i, (vm_id, name, deploy_id, template) in enumerate(rows):
        assert name == f"w-{i}" and deploy_id.endswith(f"-{vm_id}")
        assert f'VMID="{vm_id}"' in template and f'NAME="w-{i}"' in template
    assert (q.vms_used, q.cpu_m_used, q.mem_used) == (40, 40 * 500, 40 * 256)
    assert events == 40


def test_schedule_commit_is_exact_and_skips_what_changed(cloud: Cloud, tmp_path: Path) -> None:
    a = admin(cloud)
    cloud.hosts.create_many(a, [HostSpec("s1", cpu=4, memory=4096), HostSpec("s2", cpu=4, memory=4096)])
    rec, _ = reconciler(cloud, tmp_path / "sim")
    rec.monitor_once(force=True)
    ids = cloud.vms.create(a, "CPU=1\nMEMORY=512\n", count=10)
    h1, h2 = _host(cloud, "s1"), _host(cloud, "s2")
    # another front-end takes 3 cores of s1 after the snapshot; one VM is terminated meanwhile
    cloud.vms.action(a, ids[0], "terminate")
    with cloud.db.write() as s:
        s.get(Host, h1.id).alloc_cpu_m = 3000  # type: ignore[union-attr]
    lost = cloud.vms.schedule_many([(i, h1.id) for i in ids[:6]] + [(i, h2.id) for i in ids[6:]])
    st = _vm_states(cloud, ids)
    assert st[ids[0]] == "DONE"  # not PENDING any more: skipped, charged nowhere
    on_h1 = [i for i in ids[1:6] if st[i] == "PROLOG"]
    assert len(on_h1) == 1 and set(lost) == set(ids[1:6]) - set(on_h1)
    assert all(st[i] == "PROLOG" for i in ids[6:])
    h1, h2 = _host(cloud, "s1"), _host(cloud, "s2")
    assert (h1.alloc_cpu_m, h1.running_vms) == (4000, 1)  # 3 cores of the other writer + 1
    assert (h2.alloc_cpu_m, h2.alloc_mem, h2.running_vms) == (4000, 2048, 4)
    with cloud.db.read() as s:
        msgs = dict(s.execute(select(VM.id, VM.sched_message).where(VM.id.in_(list(lost)))).all())
        sched = s.scalar(select(func.count()).select_from(Event).where(Event.action == "scheduled"))
    assert all("lost a race" in m for m in msgs.values()) and sched == 5


def test_reports_are_compare_and_set_and_keep_side_effects(cloud: Cloud, tmp_path: Path) -> None:
    a = admin(cloud)
    cloud.hosts.create(a, "r1", cpu=8, memory=8192)
    rec, _ = reconciler(cloud, tmp_path / "sim")
    ids = cloud.vms.create(a, "CPU=1\nMEMORY=512\n", count=4)
    converge(rec)
    assert set(_vm_states(cloud, ids).values()) == {"RUNNING"}
    cloud.vms.action(a, ids[0], "terminate")  # -> SHUTDOWN
    cloud.vms.action(a, ids[1], "terminate")
    # a stale result (ids[2] is RUNNING, not BOOT) and an illegal one change nothing
    moved = cloud.vms.report_many([
        Report(ids[0], S.SHUTDOWN, "shutdown_ok", "off"), Report(ids[1], S.SHUTDOWN, "shutdown_ok"),
        Report(ids[2], S.BOOT, "boot_ok"), Report(ids[3], S.RUNNING, "no_such_event")])
    assert moved == {ids[0], ids[1]}
    moved = cloud.vms.report_many([Report(i, S.EPILOG, "epilog_ok") for i in ids[:2]])
    assert moved == {ids[0], ids[1]}
    st = _vm_states(cloud, ids)
    assert [st[i] for i in ids] == ["DONE", "DONE", "RUNNING", "RUNNING"]
    h = _host(cloud, "r1")
    assert (h.alloc_cpu_m, h.alloc_mem, h.running_vms) == (2000, 1024, 2)  # DONE freed its share
    with cloud.db.read() as s:
        q = s.scalars(select(Quota).where(Quota.scope == "user").where(Quota.scope_id == a.user_id)).one()
    assert (q.vms_used, q.cpu_m_used) == (2, 2000)


@pytest.mark.parametrize("rounds", [3])
def test_racing_schedulers_never_overcommit(cloud: Cloud, tmp_path: Path, rounds: int) -> None:
    """Two front-ends commit clashing placements at once: every host stays within capacity, every
    VM is placed at most once, and the host rows equal the sum of their VMs."""
    a = admin(cloud)
    cloud.hosts.create_many(a, [HostSpec(f"c{i}", cpu=5, memory=65536) for i in range(3)])
    rec, _ = reconciler(cloud, tmp_path / "sim")
    rec.monitor_once(force=True)
    hosts = [_host(cloud, f"c{i}").id for i in range(3)]
    for _ in range(rounds):
        ids = cloud.vms.create(a, "CPU=1\nMEMORY=64\n", count=24)
        plans = [[(v, hosts[(k + j) % 3]) for k, v in enumerate(ids)] for j in range(2)]
        errors: list[BaseException] = []

        def commit(plan: list[tuple[int, int]], errors: list[BaseException] = errors) -> None:
            try:
                cloud.vms.schedule_many(plan)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=commit, args=(p,)) for p in plans]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        with cloud.db.read() as s:
            for h in s.scalars(select(Host)):
                n, cpu = s.execute(select(func.count(), func.coalesce(func.sum(VM.cpu_m), 0))
                                   .where(VM.host_id == h.id)
                                   .where(VM.state == "PROLOG")).one()
                assert h.alloc_cpu_m <= h.total_cpu_m
                assert (h.running_vms, h.alloc_cpu_m) == (n, cpu)
            sched = s.execute(select(Event.obj_id, func.count()).where(Event.action == "scheduled")
                              .group_by(Event.obj_id)).all()
        assert all(k == 1 for _, k in sched)  # no VM placed twice
    assert sum(_host(cloud, f"c{i}").running_vms for i in range(3)) == 15  # every core used


def test_monitor_pass_over_many_hosts_with_one_failing(cloud: Cloud, tmp_path: Path) -> None:
    a = admin(cloud)
    cloud.hosts.create_many(a, [HostSpec(f"m{i}", cpu=2, memory=2048) for i in range(6)])
    rec, drv = reconciler(cloud, tmp_path / "sim")
    ids = cloud.vms.create(a, "CPU=1\nMEMORY=256\n", count=6)
    converge(rec)
    assert set(_vm_states(cloud, ids).values()) == {"RUNNING"}
    with cloud.db.read() as s:
        on_m0 = list(s.scalars(select(VM.id).where(VM.host_id == _host(cloud, "m0").id)))
    from vocloud.drivers.base import HostRef

    drv.set_reachable(HostRef(_host(cloud, "m0").id, "m0", "sim"), False)
    rec.monitor_once(force=True)
    rows = {h.name: h for h in (_host(cloud, f"m{i}") for i in range(6))}
    assert rows["m0"].monitor_failures == 1 and rows["m0"].error
    assert all(rows[f"m{i}"].state == "MONITORED" and not rows[f"m{i}"].error for i in range(1, 6))
    assert all(rows[f"m{i}"].used_cpu_m == 1000 * rows[f"m{i}"].running_vms for i in range(1, 6))
    # a guest that vanished from a healthy host is found off, in the same pass
    victim = next(i for i in ids if i not in on_m0)
    with cloud.db.read() as s:
        vm = s.get(VM, victim)
        assert vm is not None
        host = s.get(Host, vm.host_id)
        assert host is not None
        deploy_id, hname = vm.deploy_id, host.name
    (tmp_path / "sim" / hname / f"{deploy_id}.json").unlink()
    rec.monitor_once(force=True)
    assert _vm_states(cloud, [victim])[victim] == "POWEROFF"


def test_boots_go_host_by_host_and_an_unreachable_host_only_delays_its_own(
        cloud: Cloud, tmp_path: Path) -> None:
    """The lifecycle starts a host's BOOTs in one driver call (``boot_many``): each guest is
    judged on its own (a crash fails only that VM), a host that does not answer leaves exactly
    its VMs in BOOT (owed, not failed), and a later pass starts them, each guest once."""
    from vocloud.drivers.base import HostRef

    a = admin(cloud)
    cloud.hosts.create_many(a, [HostSpec(f"b{i}", cpu=4, memory=4096) for i in range(3)])
    rec, drv = reconciler(cloud, tmp_path / "sim")
    rec.monitor_once(force=True)
    ids = cloud.vms.create(a, "CPU=1\nMEMORY=256\n", count=9)
    [bad] = cloud.vms.create(a, "CPU=1\nMEMORY=256\nSIM_BOOT=fail\n")
    rec.schedule_once()
    rec.lifecycle_once()  # PROLOG -> BOOT
    assert set(_vm_states(cloud, [*ids, bad]).values()) == {"BOOT"}
    with cloud.db.read() as s:
        where = dict(s.execute(select(VM.id, VM.host_id).where(VM.id.in_([*ids, bad]))).all())
    down = next(h for h in (_host(cloud, f"b{i}") for i in range(3))
                if h.id != where[bad] and h.id in where.values())
    drv.set_reachable(HostRef(down.id, down.name, "sim"), False)
    rec.lifecycle_once()
    st = _vm_states(cloud, [*ids, bad])
    assert st[bad] == "BOOT_FAILURE"
    for i in ids:
        assert st[i] == ("BOOT" if where[i] == down.id else "RUNNING"), (i, st[i])
    assert any(where[i] == down.id for i in ids)
    drv.set_reachable(HostRef(down.id, down.name, "sim"), True)
    rec.lifecycle_once()
    assert set(_vm_states(cloud, ids).values()) == {"RUNNING"}
    guests = list((tmp_path / "sim").glob("*/*.json"))
    # nine guests, each started once (the crashed one was removed when it failed)
    assert len(guests) == 9 and all('"boots": 1' in g.read_text() for g in guests)
    with cloud.db.read() as s:
        booted = s.scalar(select(func.count()).select_from(Event).where(Event.action == "boot_ok"))
    assert booted == 9


def test_racing_bulk_creates_keep_quota_leases_and_rows_exact(cloud: Cloud) -> None:
    """Batch creates of one VO racing on its quota, then on a network's last addresses: each
    batch is all or nothing (rows, events, quota charge, leases), nothing is over its limit, and
    each VM's stored template names exactly the address it holds."""
    a = admin(cloud)
    alice = user_in(cloud, "alice", "atlas")
    cloud.accounts.set_quota(a, "group", "atlas", vms=20)
    ok, errors = race(8, lambda i: cloud.vms.create(alice, "CPU=1\nMEMORY=256\n", count=6))
    assert len(ok) == 3 and len(errors) == 5, errors
    assert all(isinstance(e, QuotaExceeded) for e in errors), errors
    made = sorted(i for ids in ok for i in ids)
    assert len(set(made)) == 18
    cloud.accounts.set_quota(a, "group", "atlas", vms=-1)
    cloud.networks.create(a, 'NAME="bulk"\nBRIDGE="br0"\nPUBLIC="YES"\nAR=[IP="10.9.0.1", SIZE="10"]\n')
    nic = "CPU=1\nMEMORY=256\nNIC=[NETWORK=\"bulk\"]\n"
    ok2, errors2 = race(6, lambda i: cloud.vms.create(alice, nic, count=3))
    assert len(ok2) == 3 and len(errors2) == 3, errors2
    assert all(isinstance(e, NoCapacity) for e in errors2), errors2
    with_nic = sorted(i for ids in ok2 for i in ids)
    with cloud.db.read() as s:
        vms = s.execute(select(VM.id, VM.template).where(VM.owner_id == alice.user_id)).all()
        leases = {int(v or 0): ip for v, ip in s.execute(select(Lease.vm_id, Lease.ip)).all()}
        n_leases = s.scalar(select(func.count()).select_from(Lease))
        events = s.scalar(select(func.count()).select_from(Event).where(Event.kind == "vm")
                          .where(Event.action == "create"))
        q = {sc: s.scalars(select(Quota).where(Quota.scope == sc).where(
            Quota.scope_id == (alice.user_id if sc == "user" else alice.group_id))).one()
            for sc in ("user", "group")}
    assert sorted(v for v, _ in vms) == sorted(made + with_nic)  # no row of a refused batch
    assert events == 27
    for qq in q.values():  # the refused batches' charges rolled back with them
        assert (qq.vms_used, qq.cpu_m_used, qq.mem_used) == (27, 27_000, 27 * 256)
    assert n_leases == 9 and sorted(leases) == with_nic and len(set(leases.values())) == 9
    for vm_id, template in vms:
        assert f'VMID="{vm_id}"' in template
        if vm_id in leases:
            ip = ".".join(str(leases[vm_id] >> s & 255) for s in (24, 16, 8, 0))
            assert f'IP="{ip}"' in template
        else:
            assert "NIC=" not in template


def test_bulk_create_stores_the_template_the_one_by_one_way_would(cloud: Cloud) -> None:
    """The templates of a batch are rendered once for what they share: each must equal the
    template built for that VM alone (a copy with its NICs, VMID and NAME set)."""
    a = admin(cloud)
    cloud.networks.create(a, 'NAME="tn"\nBRIDGE="br0"\nAR=[IP="10.8.0.1", SIZE="20"]\n')
    text = ('CPU=1\nMEMORY=256\nNAME="x"\nCONTEXT=[VO="atlas", IP="$IP"]\n'
            'NIC=[NETWORK="tn", MODEL="virtio"]\nNIC=[NETWORK="tn"]\nSCHED_RANK="FREE_CPU"\n')
    ids = cloud.vms.create(a, text, count=3, name="t")
    for i, vm_id in enumerate(ids):
        shown = cloud.vms.show(a, vm_id)
        t = parse_template(text, fmt="one")
        t.set("NIC", [parse_template(shown["template"], fmt="one").vectors("NIC")[k]
                      for k in range(2)])
        t.set("VMID", str(vm_id))
        t.set("NAME", f"t-{i}")
        assert shown["template"] == t.to_one()
        nics = parse_template(shown["template"], fmt="one").vectors("NIC")
        assert [n["IP"] for n in nics] == [f"10.8.0.{2 * i + 1}", f"10.8.0.{2 * i + 2}"]
        assert sorted(lease["ip"] for lease in shown["leases"]) == [n["IP"] for n in nics]


def _two_users_a_network_and_an_image(cloud: Cloud, root: Path, hosts: list[str],
                                      network: str) -> tuple[Actor, Actor, Actor, int]:
    """The admin, alice (atlas) and bob (cms); ``hosts`` (16 CPU each); a public network of 20
    addresses; a public raw image. Returns the three actors and the image's id."""
    a = admin(cloud)
    alice = user_in(cloud, "alice", "atlas")
    bob = user_in(cloud, "bob", "cms")
    for name in hosts:
        cloud.hosts.create(a, name, cpu=16, memory=16384)
    cloud.networks.create(a, f'NAME="{network}"\nBRIDGE="br0"\nPUBLIC="YES"\n'
                             'AR=[IP="10.7.0.1", SIZE="20"]\n')
    (root / "img").mkdir(parents=True)
    (root / "img" / "disk.raw").write_bytes(b"\0" * 4096)
    cloud.datastores.create(a, "repo", str(root / "img"))
    image = int(cloud.images.create(a, "base", str(root / "img" / "disk.raw"), "raw", public=True)["id"])
    return a, alice, bob, image


def _ending_scenario(cloud: Cloud, root: Path) -> tuple[list[int], int]:
    """VMs of two users on two hosts, some with leases, one with an image disk, brought to
    EPILOG (the lifecycle's last step before DONE); returns their ids and the image's id."""
    a, alice, bob, image = _two_users_a_network_and_an_image(cloud, root, ["e1", "e2"], "en")
    ids = cloud.vms.create(alice, "CPU=1\nMEMORY=512\n", count=5)
    ids += cloud.vms.create(bob, "CPU=0.5\nMEMORY=256\nNIC=[NETWORK=\"en\"]\n", count=3)
    ids += cloud.vms.create(alice, f'CPU=2\nMEMORY=1024\nDISK=[IMAGE_ID="{image}"]\n')
    ids += cloud.vms.create(a, "CPU=1\nMEMORY=128\nNIC=[NETWORK=\"en\"]\n", count=2)
    rec, _ = reconciler(cloud, root / "sim")
    converge(rec)
    assert set(_vm_states(cloud, ids).values()) == {"RUNNING"}
    for vm_id in ids:
        cloud.vms.action(a, vm_id, "terminate")
    cloud.vms.report_many([Report(i, S.SHUTDOWN, "shutdown_ok") for i in ids])
    assert set(_vm_states(cloud, ids).values()) == {"EPILOG"}
    return ids, image


def _store_state(cloud: Cloud, at: float) -> dict[str, object]:
    """Everything a VM's end touches. Times other than ``at`` (the end's) say only "earlier":
    the runs compared were made at different times; event ids differ too, and are left out."""
    def when(t: float | None) -> str:
        return "none" if t is None else "at" if t == at else "earlier"

    with cloud.db.read() as s:
        return {
            "vms": [(*row[:3], when(row[3]), when(row[4]), *row[5:]) for row in s.execute(
                select(VM.id, VM.state, VM.host_id, VM.state_changed_at, VM.ended_at,
                       VM.step_attempts, VM.error, VM.hard).order_by(VM.id))],
            "hosts": s.execute(select(Host.name, Host.alloc_cpu_m, Host.alloc_mem, Host.running_vms)
                               .order_by(Host.name)).all(),
            "quotas": s.execute(select(Quota.scope, Quota.scope_id, Quota.vms_used, Quota.cpu_m_used,
                                       Quota.mem_used).order_by(Quota.scope, Quota.scope_id)).all(),
            "leases": s.execute(select(Lease.vm_id, Lease.ip).order_by(Lease.ip)).all(),
            "events": sorted((*row[:6], when(row[6])) for row in s.execute(
                select(Event.obj_id, Event.action, Event.from_state, Event.to_state,
                       Event.message, Event.host_id, Event.time).where(Event.kind == "vm"))),
            "images": [(i["id"], i["running_vms"], i["state"]) for i in cloud.images.list(admin(cloud))],
        }


def test_vms_ending_together_leave_what_one_by_one_ends_leave(
        db_url: str, request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The lifecycle's set-based path into DONE (``vm_batch._end_many``) leaves the store exactly
    as ``transition`` VM by VM does: host shares, quotas, leases, images, rows, events. One
    report is stale (its VM ended before) and one VM is left running."""
    from vocloud.service import vm_batch
    from vocloud.service.vms import transition
    from vocloud.store import migrate
    from vocloud.store.db import Database

    urls = {True: db_url}
    if db_url.startswith("sqlite"):
        urls[False] = f"sqlite:///{tmp_path / 'one_by_one.db'}"
    else:
        urls[False] = request.getfixturevalue("pg_server").create_db(f"t{os.getpid()}_end")
    results = {}
    for set_based, url in urls.items():
        db = Database(url)
        migrate.upgrade(db)
        cloud = Cloud(db)
        cloud.accounts.bootstrap()
        ids, image = _ending_scenario(cloud, tmp_path / f"run-{set_based}")
        cloud.vms.report_many([Report(ids[0], S.EPILOG, "epilog_ok")])  # ends before the rest
        if not set_based:
            monkeypatch.setattr(vm_batch, "ends_plainly", lambda old, new, event: False)
        with db.write() as s:
            moved = vm_batch.apply_reports(s, [Report(i, S.EPILOG, "epilog_ok", f"m{i % 3}")
                                               for i in ids[:-1]], 1234.5, transition)
        monkeypatch.undo()
        assert moved == set(ids[1:-1])
        state = results[set_based] = _store_state(cloud, 1234.5)
        last = cloud.vms.show(admin(cloud), ids[-1])
        assert last["state"] == "EPILOG"
        assert [h[1:] for h in state["hosts"]] == [  # type: ignore[attr-defined]
            (1000, 128, 1) if h[0] == last["host"] else (0, 0, 0) for h in state["hosts"]]  # type: ignore[attr-defined]
        assert [(q[0], q[2], q[3], q[4]) for q in state["quotas"] if q[2]] == [  # type: ignore[attr-defined]
            ("group", 1, 1000, 128), ("user", 1, 1000, 128)]
        assert [lease[0] for lease in state["leases"]] == [ids[-1]]  # type: ignore[attr-defined]
        assert [i[1] for i in state["images"] if i[0] == image] == [0]  # type: ignore[attr-defined]
        db.dispose()
    assert results[True] == results[False]


def _action_script(cloud: Cloud, root: Path) -> list[object]:
    """Users' actions on VMs in many states (running, pending, held, with a lease, with an
    image), some refused; returns each answer or error."""
    a, alice, bob, image = _two_users_a_network_and_an_image(cloud, root, ["a1"], "an")
    run = cloud.vms.create(alice, "CPU=1\nMEMORY=512\n", count=6)
    run += cloud.vms.create(alice, f'CPU=1\nMEMORY=256\nDISK=[IMAGE_ID="{image}"]\n')
    run += cloud.vms.create(bob, 'CPU=1\nMEMORY=256\nNIC=[NETWORK="an"]\n')
    rec, _ = reconciler(cloud, root / "sim")
    converge(rec)
    pending = cloud.vms.create(alice, "CPU=1\nMEMORY=512\n", count=2)
    pending += cloud.vms.create(bob, 'CPU=1\nMEMORY=256\nNIC=[NETWORK="an"]\n')
    pending += cloud.vms.create(alice, f'CPU=1\nMEMORY=256\nDISK=[IMAGE_ID="{image}"]\n')
    script = [
        (alice, run[0], "poweroff"), (alice, run[1], "terminate"), (alice, run[2], "terminate-hard"),
        (bob, run[3], "terminate"), (alice, run[3], "reboot"), (alice, run[4], "resume"),
        (alice, run[4], "suspend"), (alice, run[5], "undeploy"), (alice, run[6], "terminate"),
        (bob, run[7], "terminate"), (alice, run[1], "terminate"), (alice, run[0], "resume"),
        (alice, pending[0], "hold"), (alice, pending[0], "release"), (alice, pending[0], "hold"),
        (alice, pending[0], "terminate"), (alice, pending[1], "terminate"),
        (bob, pending[2], "terminate"), (alice, pending[3], "terminate"), (bob, pending[1], "hold"),
        (alice, 2**31 - 1, "terminate"), (alice, run[5], "nonsense"), (a, run[3], "terminate"),
    ]
    out: list[object] = []
    for actor, vm_id, action in script:
        try:
            out.append(cloud.vms.action(actor, vm_id, action))
        except Exception as exc:  # the error each way must be the same
            out.append((type(exc).__name__, str(exc)))
    return out


def test_user_actions_in_core_statements_match_the_orm_path(
        db_url: str, request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``VMService.action``'s Core path (a columns-only move, a plain end) answers, refuses and
    leaves the store exactly as the ORM path (``transition``) does."""
    from vocloud.service.vms import VMService
    from vocloud.store import migrate
    from vocloud.store.db import Database

    urls = {True: db_url}
    if db_url.startswith("sqlite"):
        urls[False] = f"sqlite:///{tmp_path / 'orm.db'}"
    else:
        urls[False] = request.getfixturevalue("pg_server").create_db(f"t{os.getpid()}_act")
    answers, stores, taken = {}, {}, []
    real = VMService._move_columns

    def counted(self: VMService, *args: object) -> object:
        done = real(self, *args)  # type: ignore[arg-type]
        taken.append(done is not None)
        return done

    for core, url in urls.items():
        db = Database(url)
        migrate.upgrade(db)
        cloud = Cloud(db)
        cloud.accounts.bootstrap()
        monkeypatch.setattr(VMService, "_move_columns", counted if core else
                            lambda self, *args: None)
        answers[core] = _action_script(cloud, tmp_path / f"run-{core}")
        monkeypatch.undo()
        stores[core] = _store_state(cloud, -1.0)
        db.dispose()
    assert taken.count(True) >= 12  # most moves took the Core path
    assert answers[True] == answers[False]
    assert stores[True] == stores[False]
    errors = [a for a in answers[True] if isinstance(a, tuple)]
    assert [e[0] for e in errors] == ["Forbidden", "IllegalAction", "IllegalAction",
                                      "IllegalAction", "Forbidden", "NotFound", "InvalidInput",
                                      "IllegalAction"], errors
    first = answers[True][0]
    assert isinstance(first, dict) and (first["state"], first["host"]) == ("SHUTDOWN_POWEROFF", "a1")
    assert errors[3][1] == f"cannot resume VM {first['id']}: it is SHUTDOWN_POWEROFF"


def test_a_core_move_expires_the_vm_the_session_holds(cloud: Cloud) -> None:
    """A group-commit batch is one session for many calls: after a Core move, an ORM read of the
    same VM in that session sees the new state, not the copy loaded before."""
    from vocloud.service import vm_batch
    a = admin(cloud)
    [vm_id] = cloud.vms.create(a, "CPU=1\nMEMORY=128\n")
    with cloud.db.write() as s:
        before = s.get(VM, vm_id)
        assert before is not None and before.state == "PENDING"
        row = vm_batch.one_vm(s, vm_id)
        vm_batch.move_columns_of_one(s, row, S.PENDING, S.HOLD, "hold", "by admin", 1.0)
        assert s.get(VM, vm_id).state == "HOLD"  # type: ignore[union-attr]
        vm_batch.end_rows(s, [vm_batch.one_vm(s, vm_id)], S.HOLD, S.DONE, "terminate",
                          {vm_id: "by admin"}, 2.0)
        assert s.get(VM, vm_id).ended_at == 2.0  # type: ignore[union-attr]


def test_creates_and_ends_racing_on_one_quota_never_deadlock(cloud: Cloud, tmp_path: Path) -> None:
    """Creates charge the user's quota row, then the group's; the set-based ends (a pending VM's
    terminate, the lifecycle's) refund them in that order too. The other order deadlocked on
    PostgreSQL within seconds under the REST mix (session 13)."""
    alice = user_in(cloud, "alice", "atlas")
    a = admin(cloud)
    cloud.accounts.set_quota(a, "user", "alice", vms=1000)
    cloud.accounts.set_quota(a, "group", "atlas", vms=1000)
    first = [i for _ in range(4) for i in cloud.vms.create(alice, "CPU=1\nMEMORY=64\n", count=80)]

    def churn(i: int) -> int:
        for k in range(40):
            cloud.vms.create(alice, "CPU=1\nMEMORY=64\n")
            cloud.vms.action(alice, first[i * 40 + k], "terminate")  # PENDING -> DONE: a refund
        return i

    done, errors = race(8, churn)
    assert errors == [] and sorted(done) == list(range(8))
    with cloud.db.read() as s:
        q = {sc: s.scalars(select(Quota).where(Quota.scope == sc).where(
            Quota.scope_id == (alice.user_id if sc == "user" else alice.group_id))).one()
            for sc in ("user", "group")}
    for qq in q.values():
        assert (qq.vms_used, qq.cpu_m_used, qq.mem_used) == (320, 320_000, 320 * 64)


def test_a_pass_notes_its_shutdown_requests_in_one_transaction(cloud: Cloud, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A lifecycle pass that sends many shutdown requests notes them (``step_attempts``) in one
    write transaction at its end, not one each; the next pass sees them and does not ask again;
    a VM whose state changed meanwhile is not noted (compare-and-set)."""
    a = admin(cloud)
    cloud.hosts.create(a, "s1", cpu=16, memory=16384)
    rec, drv = reconciler(cloud, tmp_path / "sim")
    drv.shutdown_delay = 3600.0  # the guests take their time: each pass finds them still up
    ids = cloud.vms.create(a, "CPU=1\nMEMORY=128\n", count=6)
    converge(rec)
    for vm_id in ids:
        cloud.vms.action(a, vm_id, "terminate")
    asked: list[str] = []
    notes: list[int] = []
    real_shutdown, real_bumps = drv.shutdown, cloud.vms.bump_attempts

    def shutdown(ref: object, dep: str, hard: bool) -> None:
        asked.append(dep)
        real_shutdown(ref, dep, hard)  # type: ignore[arg-type]

    def bump_attempts(chunk: list[Report]) -> None:
        notes.append(len(chunk))
        real_bumps(chunk)

    monkeypatch.setattr(drv, "shutdown", shutdown)
    monkeypatch.setattr(cloud.vms, "bump_attempts", bump_attempts)
    writes_before = cloud.db.writer_stats()
    rec.lifecycle_once()
    assert len(asked) == 6 and notes == [6]
    if writes_before is not None:  # SQLite: the six notes were one write transaction
        assert cloud.db.writer_stats()[0] - writes_before[0] == 1  # type: ignore[index]
    with cloud.db.read() as s:
        assert set(s.scalars(select(VM.step_attempts).where(VM.id.in_(ids)))) == {1}
    rec.lifecycle_once()
    assert len(asked) == 6  # asked once: the notes were seen
    # a stale note (the VM is no longer in the state the pass saw) changes nothing
    cloud.vms.bump_attempts([Report(ids[0], S.RUNNING, "", "stale"), Report(ids[1], S.SHUTDOWN, "", "x")])
    with cloud.db.read() as s:
        got = dict(s.execute(select(VM.id, VM.step_attempts).where(VM.id.in_(ids[:2]))).all())
        err = s.scalar(select(VM.error).where(VM.id == ids[1]))
    assert got == {ids[0]: 1, ids[1]: 2} and err == "x"
