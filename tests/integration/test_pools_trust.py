"""Issue 9, finding 4: a pool acts with its VO's rights, plus only what the administrator declared.

Before: the controller created workers as the site's administrator from a template the VO wrote,
so a worker got the munge secret, ``VIRTFS="/"``, another VO's private image and an address on
another VO's private network, each refused when the VO asked for it directly. Now the workers
are created as the pool identity ``pool.<vo>`` (a plain member of the VO), restricted
attributes and secrets in a pool template are refused at ``pool create``/``update`` and again at
boot, and the administrator's *site template* is the only addition. Run on both databases.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from tests.support.helpers import admin, converge, user_in
from tests.support.pools import OWN, Site
from tests.support.recording import RecordingSimDriver
from vocloud.engine.secrets import SecretDir
from vocloud.errors import Conflict, Forbidden, InvalidInput, NotFound
from vocloud.model.attributes import internal_attributes, restricted_violations
from vocloud.model.template import parse_template
from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.service.vms import merge_site
from vocloud.store import migrate
from vocloud.store.db import Database
from vocloud.store.pools import PoolEventRow, PoolRow, PoolVMRow
from vocloud.store.schema import VM, Group, Image, Network, Quota, User, VMTemplateRow

KEY = bytes(range(256))
#: The administrator's site template: the batch secret and the site's worker network.
SITE = ('NAME="site-wn"\nCONTEXT=[MUNGE_KEY="$SECRET[munge]", SITE="yes"]\n'
        'NIC=[NETWORK="workers"]\n')

#: One example of each restricted attribute, as a line of a pool template.
EXAMPLES: dict[str, str] = {
    "KERNEL": 'KERNEL="/boot/vmlinuz"', "INITRD": 'INITRD="/boot/initrd.img"',
    "KERNEL_CMD": 'KERNEL_CMD="init=/bin/sh"', "MACHINE": 'MACHINE="pc"', "ACCEL": 'ACCEL="kvm"',
    "VIRTFS": 'VIRTFS="/"',
    "DISK/SOURCE": 'DISK=[IMAGE="std-img", SOURCE="/etc/shadow"]',
    "DISK/PERSISTENT": 'DISK=[IMAGE="std-img", PERSISTENT="YES"]',
    "NIC/BRIDGE": 'NIC=[NETWORK="workers", BRIDGE="br0"]',
    "NIC/MAC": 'NIC=[NETWORK="workers", MAC="02:00:00:00:00:01"]',
    "NIC/VLAN_ID": 'NIC=[NETWORK="workers", VLAN_ID="7"]',
    "NIC/PHYDEV": 'NIC=[NETWORK="workers", PHYDEV="eth0"]',
}


@pytest.fixture
def site(cloud: Cloud, tmp_path: Path) -> Site:
    """atlas (own template ``atlas-wn``) and cms, whose members may manage their VO's pool; the
    site's worker network and site template (both private to the administrators); the munge
    secret; no pool yet."""
    s = Site(cloud, tmp_path, hosts=1)
    s.vo("atlas", OWN)
    s.vo("cms")
    for vo in ("atlas", "cms"):
        gid = _gid(cloud, vo)
        cloud.accounts.create_acl(s.admin, f"@{gid}", "GROUP", f"@{gid}", "MANAGE")
    cloud.networks.create(s.admin, 'NAME="workers"\nAR=[IP="10.9.0.10", SIZE="20"]\n')
    cloud.templates.create(s.admin, SITE)
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "munge").write_bytes(KEY)
    (secrets / "munge").chmod(0o600)
    s.rec.drivers = {"sim": RecordingSimDriver(tmp_path / "rec")}
    s.rec.secrets = SecretDir(secrets)
    return s


def _contexts(site: Site) -> dict[int, dict[str, str]]:
    drv = site.rec.drivers["sim"]
    assert isinstance(drv, RecordingSimDriver)
    return drv.contexts


def _gid(cloud: Cloud, group: str) -> int:
    with cloud.db.read() as s:
        return int(s.scalars(select(Group.id).where(Group.name == group)).one())


def _vo_template(cloud: Cloud, owner: Actor, name: str, body: str) -> None:
    """A template stored for ``owner``'s VO as it is, as before any check on templates existed
    (the pool's own checks are under test, not the template service's)."""
    with cloud.db.write() as s:
        s.add(VMTemplateRow(name=name, owner_id=owner.user_id, group_id=owner.group_id,
                            body=parse_template(body, fmt="one").to_one(), public=False))


def _set_body(cloud: Cloud, name: str, body: str) -> None:
    with cloud.db.write() as s:
        s.execute(update(VMTemplateRow).where(VMTemplateRow.name == name)
                  .values(body=parse_template(body, fmt="one").to_one()))


def _pool_rows(cloud: Cloud) -> list[tuple[object, ...]]:
    with cloud.db.read() as s:
        rows: list[tuple[object, ...]] = [
            (r.vo, r.template_id, r.site_template_id, r.owner_id, r.max_vms)
            for r in s.scalars(select(PoolRow).order_by(PoolRow.id))]
        return [*rows, ("events", s.scalar(select(func.count()).select_from(PoolEventRow))),
                ("users", s.scalar(select(func.count()).select_from(User)))]


def _vm_count(cloud: Cloud) -> int:
    with cloud.db.read() as s:
        return int(s.scalar(select(func.count()).select_from(VM)) or 0)


def _events(site: Site, vo: str, action: str) -> list[str]:
    return [e["reason"] for e in site.pools.events(site.admin, vo) if e["action"] == action]


# ------------------------------------------------------------------------ create / update
def test_every_restricted_attribute_is_refused_at_create_and_update(site: Site) -> None:
    cloud, atlas, cms = site.cloud, site.users["atlas"], site.users["cms"]
    for attr, line in EXAMPLES.items():  # each example is that attribute and no other
        t = parse_template(line, fmt="one")
        assert [*restricted_violations(t), *internal_attributes(t)] == [attr], attr
    site.pools.create(atlas, "atlas", "atlas-wn", cores=1, memory=512, max=2)
    for attr, line in EXAMPLES.items():
        slug = attr.lower().replace("/", "-").replace("_", "-")
        for who in (atlas, cms):
            _vo_template(cloud, who, f"{who.name}-{slug}", f"CPU=1\nMEMORY=512\n{line}\n")
        before = _pool_rows(cloud)
        with pytest.raises(InvalidInput, match=f"restricted attribute.*{attr}") as exc:
            site.pools.create(cms, "cms", f"cms-user-{slug}", cores=1, memory=512)
        assert exc.value.details["attribute"] == attr
        with pytest.raises(InvalidInput, match=f"restricted attribute.*{attr}") as exc:
            site.pools.update(atlas, "atlas", template=f"atlas-user-{slug}")
        assert exc.value.details["attribute"] == attr
        assert _pool_rows(cloud) == before, attr  # nothing changed, no identity made
    # an administrator's own public template is refused as well: a pool template is the VO's
    # text whoever wrote it; what only an administrator may set goes into the site template
    cloud.templates.create(site.admin, 'CPU=1\nMEMORY=512\nVIRTFS="/"\n', name="pub-virtfs",
                           public=True)
    before = _pool_rows(cloud)
    with pytest.raises(InvalidInput, match=r"restricted attribute.*VIRTFS"):
        site.pools.create(site.admin, "cms", "pub-virtfs", cores=1, memory=512)
    with pytest.raises(InvalidInput, match=r"restricted attribute.*VIRTFS"):
        site.pools.update(site.admin, "atlas", template="pub-virtfs")
    assert _pool_rows(cloud) == before


def test_a_pool_template_naming_a_secret_is_refused(site: Site) -> None:
    cloud, atlas = site.cloud, site.users["atlas"]
    _vo_template(cloud, atlas, "atlas-munge",
                 'CPU=1\nMEMORY=512\nCONTEXT=[K="$SECRET[munge]"]\n')
    before = _pool_rows(cloud)
    with pytest.raises(InvalidInput, match=r"names the site secret.*munge.*site template"):
        site.pools.create(site.admin, "atlas", "atlas-munge", cores=1, memory=512)
    assert _pool_rows(cloud) == before


def test_only_an_administrator_sets_the_site_template(site: Site) -> None:
    cloud, atlas = site.cloud, site.users["atlas"]
    before = _pool_rows(cloud)
    with pytest.raises(Forbidden, match="only an administrator"):
        site.pools.create(atlas, "atlas", "atlas-wn", cores=1, memory=512,
                          site_template="site-wn")
    assert _pool_rows(cloud) == before
    site.pools.create(atlas, "atlas", "atlas-wn", cores=1, memory=512)  # no site template: fine
    before = _pool_rows(cloud)
    with pytest.raises(Forbidden, match="only an administrator"):
        site.pools.update(atlas, "atlas", site_template="site-wn")
    with pytest.raises(Forbidden, match="only an administrator"):
        site.pools.update(atlas, "atlas", site_template="")
    # an administrator may, but only with an administrator's template
    cloud.templates.create(site.users["cms"], "CPU=1\nMEMORY=64\n", name="cms-made", public=True)
    with pytest.raises(InvalidInput, match="site template cms-made is not owned by an admin"):
        site.pools.update(site.admin, "atlas", site_template="cms-made")
    assert _pool_rows(cloud) == before
    out = site.pools.update(site.admin, "atlas", site_template="site-wn")
    assert out["site_template"] == "site-wn"
    assert site.pools.update(atlas, "atlas", max=3)["site_template"] == "site-wn"  # kept
    assert site.pools.update(site.admin, "atlas", site_template="")["site_template"] == ""


# ------------------------------------------------------------------------ boot
def test_workers_are_created_as_the_vo(site: Site) -> None:
    cloud = site.cloud
    site.pools.create(site.admin, "atlas", "atlas-wn", cores=1, memory=512, max=3,
                      site_template="site-wn")
    assert site.pools.show(site.users["atlas"], "atlas")["owner"] == "pool.atlas"
    for _ in range(2):
        site.sim.submit("atlas", runtime=100)
    site.step(2)
    with cloud.db.read() as s:
        rows = s.execute(select(VM.id, User.name, User.is_admin, User.group_id, VM.group_id)
                         .join(User, User.id == VM.owner_id)).all()
        quota = s.scalars(select(Quota).where(Quota.scope == "group")
                          .where(Quota.scope_id == _gid(cloud, "atlas"))).one()
    assert len(rows) == 2
    names = [v["name"] for v in cloud.vms.list(site.admin)]
    assert all(n.startswith("atlas-wn") for n in names), names  # not the site template's NAME
    for _vm, owner, is_admin, user_group, vm_group in rows:
        assert (owner, is_admin) == ("pool.atlas", False)
        assert user_group == vm_group == _gid(cloud, "atlas")
    assert quota.vms_used == 2  # the workers count against the VO's quota
    # VO members see them as their own, other VOs do not
    assert {v["id"] for v in cloud.vms.list(site.users["atlas"])} == {r[0] for r in rows}
    assert cloud.vms.list(site.users["cms"]) == []
    # the VO's quota binds them: a worker more than it allows is refused, not created
    cloud.accounts.set_quota(site.admin, "group", "atlas", vms=2)
    site.sim.submit("atlas", runtime=100)
    site.step(2)
    assert _vm_count(cloud) == 2
    assert any("quota" in r for r in _events(site, "atlas", "boot-failed"))
    # the pool identity cannot be deleted from under its pool
    with pytest.raises(Conflict, match=r"pool\.atlas still owns"):
        cloud.accounts.delete_user(site.admin, "pool.atlas")


def test_a_template_changed_after_create_is_refused_at_boot(site: Site) -> None:
    cloud = site.cloud
    site.pools.create(site.admin, "atlas", "atlas-wn", cores=1, memory=512, max=3,
                      site_template="site-wn")
    _set_body(cloud, "atlas-wn", OWN + 'VIRTFS="/"\n')  # e.g. a pool from before the checks
    site.sim.submit("atlas", runtime=100)
    site.step(3)
    assert _vm_count(cloud) == 0
    refused = _events(site, "atlas", "boot-refused")
    assert refused and "restricted attribute(s) VIRTFS" in refused[0], refused
    # mended, the pool boots again once its backoff is over
    _set_body(cloud, "atlas-wn", OWN)
    site.advance(3600)
    site.step(3)
    assert _vm_count(cloud) == 1


@pytest.mark.parametrize("line, why", [
    ('DISK=[IMAGE="cms-img"]', "may not USE IMAGE"),
    ('NIC=[NETWORK="cms-net"]', "may not USE VNET"),
])
def test_a_worker_cannot_use_another_vos_private_objects(site: Site, line: str,
                                                         why: str) -> None:
    cloud, atlas, cms = site.cloud, site.users["atlas"], site.users["cms"]
    cloud.networks.create(site.admin, 'NAME="cms-net"\nAR=[IP="10.8.0.10", SIZE="4"]\n')
    with cloud.db.write() as s:  # cms' own private image and network
        s.add(Image(name="cms-img", owner_id=cms.user_id, group_id=cms.group_id,
                    path="/var/lib/cms.qcow2", state="READY"))
        s.execute(update(Network).where(Network.name == "cms-net")
                  .values(owner_id=cms.user_id, group_id=cms.group_id, public=False))
    body = f"CPU=1\nMEMORY=512\n{line}\n"
    _vo_template(cloud, atlas, "atlas-steal", body)
    with pytest.raises(Forbidden):  # asked for directly: refused
        cloud.vms.create(atlas, body)
    # through the pool: refused too, with no site template and with one that brings its own NIC
    site.pools.create(site.admin, "atlas", "atlas-steal", cores=1, memory=512, max=2)
    for site_template in ("", "site-wn"):
        site.pools.update(site.admin, "atlas", site_template=site_template)
        site.sim.submit("atlas", runtime=100)
        site.advance(3600)
        site.step(3)
        assert _vm_count(cloud) == 0, site_template
        refused = _events(site, "atlas", "boot-refused")
        assert len(refused) >= (2 if site_template else 1), refused
        assert all(f"user pool.atlas {why}" in r for r in refused), refused


def test_the_secret_reaches_workers_only_through_the_site_template(site: Site) -> None:
    cloud = site.cloud
    site.pools.create(site.admin, "atlas", "atlas-wn", cores=1, memory=512, max=2,
                      site_template="site-wn")
    site.pools.create(site.admin, "cms", "std-worker", cores=1, memory=512, max=2)  # no site
    site.sim.submit("atlas", runtime=100)
    site.sim.submit("cms", runtime=100)
    site.step(2)
    with cloud.db.read() as s:
        vms = {g: (i, sec, t) for i, g, sec, t in s.execute(
            select(VM.id, Group.name, VM.site_secrets, VM.template)
            .join(Group, Group.id == VM.group_id))}
    atlas_vm, atlas_secrets, atlas_tmpl = vms["atlas"]
    cms_vm, cms_secrets, _ = vms["cms"]
    contexts = _contexts(site)
    assert base64.b64decode(contexts[atlas_vm]["MUNGE_KEY"]) == KEY
    assert contexts[atlas_vm]["SITE"] == "yes" and atlas_secrets == "munge"
    assert 'NETWORK="workers"' in atlas_tmpl  # the site's NIC
    assert "MUNGE_KEY" not in contexts.get(cms_vm, {}) and cms_secrets == ""
    # a VO-owned VM whose stored template names a secret nobody admitted gets nothing: the
    # engine refuses it (defence in depth behind the refusal at creation)
    [vm] = cloud.vms.create(site.users["cms"], 'CPU=1\nMEMORY=64\nCONTEXT=[A="1"]\n', hold=True)
    with cloud.db.write() as s:
        row = s.get(VM, vm)
        assert row is not None
        row.template = row.template.replace('A="1"', 'A="$SECRET[munge]"')
    cloud.vms.action(site.users["cms"], vm, "release")
    converge(site.rec, 6)
    info = cloud.vms.show(site.admin, vm)
    assert info["state"] == "PROLOG_FAILURE", info
    assert "no administrator's template" in info["error"], info["error"]
    assert vm not in contexts


@pytest.mark.parametrize("how", ["disabled", "admin", "none"])
def test_an_unusable_identity_is_a_pool_event_not_a_crash(site: Site, how: str) -> None:
    cloud = site.cloud
    site.pools.create(site.admin, "atlas", "atlas-wn", cores=1, memory=512, max=2)
    if how == "disabled":
        cloud.accounts.set_enabled(site.admin, "pool.atlas", False)
    with cloud.db.write() as s:
        if how == "admin":
            s.execute(update(User).where(User.name == "pool.atlas").values(is_admin=True))
        elif how == "none":  # a pool from before identities (migration 0007: owner_id NULL)
            s.execute(update(PoolRow).values(owner_id=None))
    site.sim.submit("atlas", runtime=100)
    site.step(2)
    assert _vm_count(cloud) == 0
    refused = _events(site, "atlas", "boot-refused")
    want = {"disabled": "pool identity pool.atlas is disabled",
            "admin": "no longer a plain member", "none": "has no identity"}[how]
    assert refused and want in refused[0], refused
    # the way out that the event names works
    if how == "disabled":
        cloud.accounts.set_enabled(site.admin, "pool.atlas", True)
    elif how == "admin":
        with cloud.db.write() as s:
            s.execute(update(User).where(User.name == "pool.atlas").values(is_admin=False))
    else:
        assert site.pools.update(site.admin, "atlas", enabled=True)["owner"] == "pool.atlas"
    site.advance(3600)
    site.step(3)
    assert _vm_count(cloud) == 1


def test_the_identity_name_cannot_be_squatted(site: Site) -> None:
    cloud = site.cloud
    cloud.accounts.create_user(site.admin, "pool.atlas", "cms")  # in another group
    before = _pool_rows(cloud)
    with pytest.raises(Conflict, match="cannot be VO atlas's pool identity"):
        site.pools.create(site.admin, "atlas", "atlas-wn", cores=1, memory=512)
    assert _pool_rows(cloud) == before


def test_the_daemon_default_site_template(site: Site) -> None:
    """Pools naming no site template get the daemon's ``pool_site_template``; a missing one, or
    one no administrator owns, is a boot-refused event, not a worker without it."""
    cloud = site.cloud
    site.pools.create(site.admin, "atlas", "atlas-wn", cores=1, memory=512, max=2)
    site.ctl = site.controller()
    site.ctl.site_template = "no-such-site"
    site.sim.submit("atlas", runtime=100)
    site.step(2)
    assert _vm_count(cloud) == 0
    assert "template no-such-site does not exist" in _events(site, "atlas", "boot-refused")[0]
    site.ctl.site_template = "site-wn"
    site.advance(3600)
    site.step(2)
    with cloud.db.read() as s:
        [(secrets, tmpl)] = s.execute(select(VM.site_secrets, VM.template)).all()
    assert secrets == "munge" and 'NETWORK="workers"' in tmpl


def test_a_members_vm_named_like_a_worker_is_not_adopted(site: Site) -> None:
    """Adopting a VM by name repairs a crash between creating and recording a worker; a VO
    member's own VM that happens to bear the next worker's name is not the pool's."""
    cloud, atlas = site.cloud, site.users["atlas"]
    site.pools.create(site.admin, "atlas", "atlas-wn", cores=1, memory=512, max=2)
    with cloud.db.read() as s:
        next_row = int(s.scalar(select(func.coalesce(func.max(PoolVMRow.id), 0))) or 0) + 1
    [mine] = cloud.vms.create(atlas, "CPU=1\nMEMORY=64\n", name=f"atlas-wn{next_row}")
    site.sim.submit("atlas", runtime=100)
    site.step(2)
    worker = site.pools.show(site.admin, "atlas")["vms"][0]
    assert worker["name"] == f"atlas-wn{next_row}" and worker["vm_id"] != mine
    assert cloud.vms.show(site.admin, worker["vm_id"])["user"] == "pool.atlas"


def test_rest_refuses_a_site_template_from_a_vo_manager(site: Site) -> None:
    from fastapi.testclient import TestClient

    from vocloud.api.pools import router
    from vocloud.api.rest import create_app

    app = create_app(site.cloud)
    app.include_router(router())
    token = site.cloud.accounts.new_token(site.admin, site.users["atlas"].name)["token"]
    c = TestClient(app, headers={"Authorization": f"Bearer {token}"})
    r = c.post("/api/v1/pools", json={"vo": "atlas", "template": "atlas-wn", "cores": 1,
                                      "memory": 512, "site_template": "site-wn"})
    assert r.status_code == 403 and "only an administrator" in r.json()["message"], r.text
    assert c.post("/api/v1/pools", json={"vo": "atlas", "template": "atlas-wn", "cores": 1,
                                         "memory": 512}).status_code == 201
    r = c.patch("/api/v1/pools/atlas", json={"site_template": "site-wn"})
    assert r.status_code == 403, r.text
    assert c.get("/api/v1/pools/atlas").json()["site_template"] == ""
    r = c.post("/api/v1/pools/atlas/workers", json={"name": "c1"})
    assert r.status_code == 403 and "only the site" in r.json()["message"], r.text
    assert _vm_count(site.cloud) == 0
    root = TestClient(app, headers={"Authorization": "Bearer " + site.cloud.accounts.new_token(
        site.admin, site.admin.name)["token"]})
    for bad in ({"name": "c1", "cores": 0}, {"name": "c 1"}, {"name": "c1", "vm": 3}, {}):
        assert root.post("/api/v1/pools/atlas/workers", json=bad).status_code == 400, bad
    r = root.post("/api/v1/pools/atlas/workers", json={"name": "c1", "memory": 256})
    assert r.status_code == 201 and r.json()["owner"] == "pool.atlas", r.text
    assert r.json()["memory"] == 256 and _vm_count(site.cloud) == 1


# ------------------------------------------------------------------------ the merge
# ------------------------------------------------------------------ Slurm power saving
def _vm_owners(cloud: Cloud) -> list[tuple[str, str, int]]:
    with cloud.db.read() as s:
        return [(n, o, g) for n, o, g in s.execute(
            select(VM.name, User.name, VM.group_id).join(User, User.id == VM.owner_id)
            .order_by(VM.id))]


def test_power_saving_boots_a_worker_as_the_pool_identity(site: Site) -> None:
    """``vocloud slurm resume`` holds the administrator's token; before, it instantiated the
    VO's template with it, so a template the VO edits reached KERNEL, VIRTFS and the munge key.
    Now ``POST /pools/{vo}/workers`` creates the node's VM as the controller does."""
    cloud, atlas = site.cloud, site.users["atlas"]
    site.pools.create(site.admin, "atlas", "atlas-wn", cores=2, memory=700, max=0,
                      site_template="site-wn")
    out = site.pools.boot_worker(site.admin, "atlas", "c1")
    assert (out["owner"], out["template"], out["site_template"]) == ("pool.atlas", "atlas-wn",
                                                                       "site-wn")
    assert (out["cores"], out["memory"]) == (2, 700)  # the pool's shape
    with cloud.db.read() as s:
        [(secrets, tmpl, cpu, mem)] = s.execute(
            select(VM.site_secrets, VM.template, VM.cpu_m, VM.memory)).all()
    assert secrets == "munge" and 'NETWORK="workers"' in tmpl and (cpu, mem) == (2000, 700)
    assert _vm_owners(cloud) == [("c1", "pool.atlas", _gid(cloud, "atlas"))]
    assert site.pools.boot_worker(site.admin, "atlas", "c2", cores=1, memory=512)["cores"] == 1
    before = _vm_owners(cloud)

    # nobody but an administrator (not even the VO's manager), and nothing is created
    with pytest.raises(Forbidden, match="only the site"):
        site.pools.boot_worker(atlas, "atlas", "c3")
    # what the VO wrote is checked with the VO's rights, whoever asks
    _set_body(cloud, "atlas-wn", 'CPU=1\nMEMORY=512\nKERNEL="/etc/shadow"\n')
    with pytest.raises(Forbidden, match="KERNEL"):
        site.pools.boot_worker(site.admin, "atlas", "c3")
    _set_body(cloud, "atlas-wn", OWN)
    cloud.templates.create(site.users["cms"], "CPU=1\nMEMORY=64\n", name="cms-own")
    with pytest.raises(Forbidden, match="not visible to VO atlas"):  # another VO's template
        site.pools.boot_worker(site.admin, "atlas", "c3", template="cms-own")
    with pytest.raises(Forbidden, match="not owned by an administrator"):
        site.pools.boot_worker(site.admin, "atlas", "c3", site_template="atlas-wn")
    with pytest.raises(NotFound, match="VO cms has no pool"):
        site.pools.boot_worker(site.admin, "cms", "c3")
    with pytest.raises(InvalidInput):
        site.pools.boot_worker(site.admin, "atlas", "bad name;rm")
    assert _vm_owners(cloud) == before
    # a public template the VO may use, named by the rule instead of the pool's
    out = site.pools.boot_worker(site.admin, "atlas", "c3", template="std-worker")
    assert out["template"] == "std-worker" and _vm_owners(cloud)[-1][:2] == ("c3", "pool.atlas")


def test_site_attributes_override_and_context_merges_key_by_key() -> None:
    user = parse_template('CPU="1"\nKERNEL="/mine"\nNIC=[NETWORK="a"]\n'
                          'CONTEXT=[A="user", B="user"]\n', fmt="one")
    site = parse_template('KERNEL="/site"\nNIC=[NETWORK="w"]\nCONTEXT=[B="site", C="site"]\n',
                          fmt="one")
    site.set("NAME", "site-wn")
    user.set("NAME", "atlas-wn1")
    out = merge_site(user, site)
    assert out.get("NAME") == "atlas-wn1"  # a site template's own name is not merged
    assert out.get("CPU") == "1" and out.get("KERNEL") == "/site"
    assert out.vectors("NIC") == [{"NETWORK": "w"}]
    assert out.vector("CONTEXT") == {"A": "user", "B": "site", "C": "site"}
    assert user.get("KERNEL") == "/mine"  # the inputs are untouched


def test_the_site_network_needs_no_right_of_the_vo(cloud: Cloud) -> None:
    a = admin(cloud)
    cloud.networks.create(a, 'NAME="workers"\nAR=[IP="10.9.0.10", SIZE="4"]\n')
    alice = user_in(cloud, "alice", "atlas")
    with pytest.raises(Forbidden):
        cloud.vms.create(alice, 'CPU=1\nMEMORY=64\nNIC=[NETWORK="workers"]\n')
    site = parse_template('NIC=[NETWORK="workers"]\nCONTEXT=[K="$SECRET[munge]"]\n', fmt="one")
    [vm] = cloud.vms.create(alice, "CPU=1\nMEMORY=64\n", site=site)
    shown = cloud.vms.show(a, vm)
    assert shown["user"] == "alice" and [le["network"] for le in shown["leases"]] == ["workers"]
    with cloud.db.read() as s:
        row = s.get(VM, vm)
        assert row is not None and row.site_secrets == "munge"
    # the user's own secret reference is still refused, site template or not
    with pytest.raises(InvalidInput, match="site secret"):
        cloud.vms.create(alice, 'CPU=1\nMEMORY=64\nCONTEXT=[X="$SECRET[munge]"]\n', site=site)


# ------------------------------------------------------------------------ migration 0007
def test_migration_0007_keeps_existing_pools_and_their_workers(db_url: str) -> None:
    """Upgrading a store with pools adds the columns and loses nothing: on SQLite a table copy
    of ``pools`` would cascade into ``pool_vms`` (foreign keys are on)."""
    db = Database(db_url)
    try:
        migrate.upgrade(db, "0003")
        with db.engine.begin() as conn:
            for sql in (
                "INSERT INTO groups (id, name, description, created_at) VALUES (5, 'atlas', '', 0)",
                "INSERT INTO users (id, name, group_id, is_admin, enabled, token_hash, created_at)"
                " VALUES (5, 'a', 5, false, true, 'h', 0)",
                "INSERT INTO templates (id, name, owner_id, group_id, body, public, created_at)"
                " VALUES (5, 'wn', 5, 5, 'CPU=\"1\"', false, 0)",
                "INSERT INTO pools (id, vo, group_id, template_id, image, cores, memory, min_vms,"
                " max_vms, weight, idle_timeout, boot_timeout, max_boots_per_minute,"
                " scale_down_delay, enabled, deleting, status, created_at) VALUES (5, 'atlas', 5,"
                " 5, 'wn', 1, 512, 0, 2, 1.0, 60, 60, 10, 0, true, false, '{}', 0)",
                "INSERT INTO pool_vms (id, pool_id, name, state, state_since, requested_at,"
                " running_jobs, free_cores, free_memory, reason) VALUES (7, 5, 'atlas-wn7',"
                " 'REQUESTED', 0, 0, 0, 0, 0, '')",
            ):
                conn.exec_driver_sql(sql)
        migrate.upgrade(db)
        with db.read() as s:
            pool = s.get(PoolRow, 5)
            assert pool is not None and pool.owner_id is None and pool.site_template_id is None
            assert s.scalar(select(func.count()).select_from(PoolVMRow)) == 1
    finally:
        db.dispose()
