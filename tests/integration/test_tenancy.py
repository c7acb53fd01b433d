"""The tenancy suite (issue 9): two VOs, each with a member and a VO manager, plus an administrator.

For **every operation of the REST API** (read from its OpenAPI document, so a new route without a
case here fails :func:`test_every_operation_has_a_tenancy_case`) and every object kind of the
other VO, a member and a manager of VO ``atlas`` aim at VO ``cms``'s objects: each request is
refused (403 or 404) and the store is byte-for-byte unchanged (every table, events included).
Lists never show the other VO's objects. Both databases.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.support.helpers import admin
from vocloud.api.distributions import router as distributions_router
from vocloud.api.host_leases import router as host_leases_router
from vocloud.api.ops import router as ops_router
from vocloud.api.rest import create_app
from vocloud.api.status import router as status_router
from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.service.frontends import FrontendService
from vocloud.service.pools import PoolService
from vocloud.store.schema import Base, HostLease, Image

API = "/api/v1"


@dataclass
class Tenants:
    client: TestClient
    tokens: dict[str, str]  # who -> token
    ids: dict[str, Any]  # cms's objects by kind


def _user(cloud: Cloud, root: Actor, name: str, group: str) -> tuple[int, str]:
    info = cloud.accounts.create_user(root, name, group)
    return int(info["id"]), str(info["token"])


@pytest.fixture
def tenants(cloud: Cloud) -> Iterator[Tenants]:
    root = admin(cloud)
    tokens: dict[str, str] = {"admin": cloud.accounts.new_token(root, "admin")["token"]}
    gids: dict[str, int] = {}
    for vo in ("atlas", "cms"):
        gids[vo] = int(cloud.accounts.create_group(root, vo)["id"])
        _, tokens[f"{vo}-member"] = _user(cloud, root, f"{vo}-member", vo)
        mgr, tokens[f"{vo}-manager"] = _user(cloud, root, f"{vo}-manager", vo)
        cloud.accounts.create_acl(root, f"#{mgr}", "GROUP", f"#{gids[vo]}", "MANAGE")
    cms = cloud.authenticate(tokens["cms-member"])
    cloud.hosts.create(root, "h1", "sim", cpu=8, memory=16384)
    cloud.networks.create(root, 'NAME="lan"\nPUBLIC="YES"\nAR=[IP="10.77.0.10", SIZE="16"]\n')
    net = cloud.networks.reserve(cms, "lan", 4, name="cms-net")
    with cloud.db.write() as s:  # an image of cms's own (how it got there is not under test)
        img = Image(name="cms-img", owner_id=cms.user_id, group_id=cms.group_id, path="/nonexistent",
                    format="qcow2", size_mib=1, sha256="", persistent=False, public=False,
                    description="", state="READY")
        s.add(img)
        s.flush()
        image_id = img.id
        lease = HostLease(batch="slurm", job_id="77", walltime=3600.0, token_hash="0" * 64,
                          created_at=0.0)  # a live host lease (docs/host-leases.md)
        s.add(lease)
        s.flush()
        lease_id = lease.id
    cloud.templates.create(cms, "CPU=1\nMEMORY=64\n", name="cms-wn")
    [vm] = cloud.vms.create(cms, 'CPU=1\nMEMORY=64\nNIC=[NETWORK="cms-net"]\nDISK=[IMAGE="cms-img"]\n')
    PoolService(cloud.db).create(root, "cms", "cms-wn", cores=1, memory=64)
    acl = next(a for a in cloud.accounts.list_acls(root) if a["target"] == f"#{gids['cms']}")
    key = cloud.access_keys.create(cms)["access_key_id"]  # an EC2 access key of cms's member
    ids = {"access_key": key, "vm": vm, "template": "cms-wn", "image": image_id, "vnet": net["id"],
           "user": "cms-member", "group": "cms", "vo": "cms", "acl": acl["id"],
           "ip": net["ranges"][0]["ip"], "host": "h1", "datastore": "default",
           "lease": lease_id}
    app = create_app(cloud)
    app.include_router(ops_router())  # as app/daemon.py::build mounts it
    app.include_router(status_router(FrontendService(lambda: {"store": "sqlite"})))
    app.include_router(host_leases_router())
    app.include_router(distributions_router())  # image distribution (admins only)
    with TestClient(app) as client:
        yield Tenants(client, tokens, ids)


def _snapshot(cloud: Cloud) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table: a refused request must change none of them."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with cloud.db.read() as s:
        for table in Base.metadata.sorted_tables:
            if table.name in ("site_settings", "audit"):
                # the daemon's store lease (no daemon here), never written by a request; the
                # audit log, whose job is to record the refused requests too
                continue
            rows = s.execute(select(table)).all()
            out[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return out


#: (method, path template) -> (path values, JSON body). Every operation that names an object
#: aims at cms's; site objects (hosts, datastores) only for what would change them.
CASES: dict[tuple[str, str], tuple[dict[str, str], dict[str, Any] | None]] = {
    ("GET", "/vms/{vm_id}"): ({"vm_id": "vm"}, None),
    ("DELETE", "/vms/{vm_id}"): ({"vm_id": "vm"}, None),
    ("GET", "/vms/{vm_id}/log"): ({"vm_id": "vm"}, None),
    ("POST", "/vms/{vm_id}/action"): ({"vm_id": "vm"}, {"action": "terminate"}),
    ("POST", "/vms/{vm_id}/recover"): ({"vm_id": "vm"}, {"op": "delete"}),
    ("PATCH", "/hosts/{ref}"): ({"ref": "host"}, {"attrs": {"RESERVED_CPU": "1"}}),
    ("POST", "/hosts/{ref}/action"): ({"ref": "host"}, {"action": "disable"}),
    ("DELETE", "/hosts/{ref}"): ({"ref": "host"}, None),
    ("GET", "/templates/{ref}"): ({"ref": "template"}, None),
    ("DELETE", "/templates/{ref}"): ({"ref": "template"}, None),
    ("POST", "/templates/{ref}/instantiate"): ({"ref": "template"}, {}),
    ("GET", "/images/{ref}"): ({"ref": "image"}, None),
    ("DELETE", "/images/{ref}"): ({"ref": "image"}, None),
    ("POST", "/images/{ref}/action"): ({"ref": "image"}, {"action": "public"}),
    ("GET", "/vnets/{ref}"): ({"ref": "vnet"}, None),
    ("DELETE", "/vnets/{ref}"): ({"ref": "vnet"}, None),
    ("POST", "/vnets/{ref}/reserve"): ({"ref": "vnet"}, {"size": 1}),
    ("POST", "/vnets/{ref}/hold"): ({"ref": "vnet"}, {"ip": "ip"}),
    ("POST", "/vnets/{ref}/release"): ({"ref": "vnet"}, {"ip": "ip"}),
    ("GET", "/users/{ref}"): ({"ref": "user"}, None),
    ("DELETE", "/users/{ref}"): ({"ref": "user"}, None),
    ("POST", "/users/{ref}/token"): ({"ref": "user"}, {}),
    ("POST", "/users/{ref}/enabled"): ({"ref": "user"}, {"enabled": False}),
    ("GET", "/groups/{ref}"): ({"ref": "group"}, None),
    ("DELETE", "/groups/{ref}"): ({"ref": "group"}, None),
    ("GET", "/quotas/{scope}/{ref}"): ({"scope": "=group", "ref": "group"}, None),
    ("PUT", "/quotas/{scope}/{ref}"): ({"scope": "=group", "ref": "group"}, {"vms": 1000}),
    ("DELETE", "/acls/{acl_id}"): ({"acl_id": "acl"}, None),
    ("GET", "/pools/{vo}"): ({"vo": "vo"}, None),
    ("PATCH", "/pools/{vo}"): ({"vo": "vo"}, {"max": 9}),
    ("DELETE", "/pools/{vo}"): ({"vo": "vo"}, None),
    ("GET", "/pools/{vo}/events"): ({"vo": "vo"}, None),
    ("POST", "/pools/{vo}/workers"): ({"vo": "vo"}, {"name": "c1"}),
    ("DELETE", "/datastores/{ref}"): ({"ref": "datastore"}, None),
    ("DELETE", "/access-keys/{key_id}"): ({"key_id": "access_key"}, None),
    ("GET", "/host-leases"): ({}, None),
    ("GET", "/host-leases/{lease_id}"): ({"lease_id": "lease"}, None),
    ("DELETE", "/host-leases/{lease_id}"): ({"lease_id": "lease"}, None),
    # the node agent's calls: a user's token is no lease token
    ("POST", "/host-leases/{lease_id}/register"): (
        {"lease_id": "lease"}, {"token": "0" * 64, "address": "10.1.2.3", "started": 0}),
    ("POST", "/host-leases/{lease_id}/ending"): ({"lease_id": "lease"}, {"token": "0" * 64}),
    # image distribution writes into hosts' caches: administrators only (docs/image-distribution.md)
    ("POST", "/images/{ref}/distribute"): ({"ref": "image"}, {"fanout": 2}),
    ("GET", "/distributions"): ({}, None),
    ("GET", "/distributions/{dist_id}"): ({"dist_id": "=1"}, None),
}

#: Collection operations that may reach cms's objects through their body.
BODY_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("POST", "/vms", {"template": 'CPU=1\nMEMORY=64\nDISK=[IMAGE="cms-img"]\n'}),
    ("POST", "/vms", {"template": 'CPU=1\nMEMORY=64\nNIC=[NETWORK="cms-net"]\n'}),
    ("POST", "/vms", {"template": 'CPU=1\nMEMORY=64\nKERNEL_IMAGE="cms-img"\n'}),
    ("POST", "/vms", {"template": "CPU=1\nMEMORY=64\n", "group": "cms"}),
    ("POST", "/pools", {"vo": "cms", "template": "cms-wn", "cores": 1, "memory": 64}),
    ("POST", "/pools", {"vo": "atlas", "template": "cms-wn", "cores": 1, "memory": 64}),
    ("POST", "/vnets", {"template": 'NAME="mine"\nAR=[IP="10.77.0.10", SIZE="4"]\n'}),
    ("POST", "/users", {"name": "mole", "group": "cms"}),
    ("POST", "/groups", {"name": "cms2"}),
    ("POST", "/acls", {"subject": "*", "resource": "ALL", "target": "*", "rights": "MANAGE"}),
    ("POST", "/hosts", {"name": "h2", "vmm": "sim", "cpu": 1, "memory": 64}),
    ("POST", "/hosts/batch", {"hosts": [{"name": "h3", "vmm": "sim", "cpu": 1, "memory": 64}]}),
    ("POST", "/datastores", {"name": "etc", "path": "/etc"}),
    ("POST", "/images", {"name": "shadow", "path": "/etc/shadow"}),
    ("POST", "/access-keys", {"user": "cms-member"}),
    ("POST", "/host-leases", {"batch": "slurm", "nodes": 1, "walltime": "1h"}),
]

#: Reads that reach the other VO's data through their query string (accounting, audit).
QUERY_CASES: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/accounting", {"vo": "cms"}),
    ("GET", "/accounting", {"user": "cms-member", "by": "vm"}),
    ("GET", "/accounting/apel", {"vo": "cms"}),
    ("GET", "/accounting/apel", {"user": "cms-member"}),
    ("GET", "/audit", {"user": "cms-member"}),
    ("GET", "/status", {}),  # which front-ends serve the store: administrators only
]

#: Operations that name no object (or only the caller): nothing of cms to aim at.
NO_TARGET = {("GET", "/health"), ("GET", "/lifecycle"), ("GET", "/attributes"), ("GET", "/users/me"),
             ("POST", "/images/upload"), ("POST", "/templates"),
             ("GET", "/access-keys")}  # the caller's own keys; ?user=: test_access_keys_stay_with_their_user
#: Lists: checked by :func:`test_lists_never_show_the_other_vo`.
LISTS = {"/vms": "vm", "/templates": "template", "/images": "image", "/vnets": "vnet",
         "/users": "user", "/groups": "group", "/pools": "vo", "/acls": "acl"}
#: Site objects every user may read (hosts its VMs run on, datastores it uploads into).
SITE_READS = {("GET", "/hosts"), ("GET", "/hosts/{ref}"), ("GET", "/datastores"),
              ("GET", "/datastores/{ref}")}


def _operations(t: Tenants) -> set[tuple[str, str]]:
    doc = t.client.get("/openapi.json").json()
    return {(m.upper(), p.removeprefix(API)) for p, ops in doc["paths"].items() for m in ops}


def test_every_operation_has_a_tenancy_case(tenants: Tenants) -> None:
    covered = set(CASES) | {(m, p) for m, p, _ in BODY_CASES} | NO_TARGET | SITE_READS
    covered |= {(m, p) for m, p, _ in QUERY_CASES}
    covered |= {("GET", p) for p in LISTS}
    missing = sorted(_operations(tenants) - covered)
    assert not missing, f"add a tenancy case for: {missing}"


def _fill(value: str, ids: dict[str, Any]) -> Any:
    return value[1:] if value.startswith("=") else ids[value]


@pytest.mark.parametrize("who", ["atlas-member", "atlas-manager"])
def test_the_other_vo_is_out_of_reach_and_nothing_changes(tenants: Tenants, cloud: Cloud, who: str) -> None:
    t = tenants
    headers = {"Authorization": f"Bearer {t.tokens[who]}"}
    before = _snapshot(cloud)
    answers = []
    for (method, template), (params, body) in CASES.items():
        path = template.format(**{k: _fill(v, t.ids) for k, v in params.items()})
        payload = None if body is None else {k: (t.ids[v] if k == "ip" else v) for k, v in body.items()}
        r = t.client.request(method, API + path, headers=headers, json=payload)
        answers.append((method, path, r.status_code))
        assert r.status_code in (403, 404), f"{who}: {method} {path} -> {r.status_code} {r.text}"
        assert r.json()["error"] in ("Forbidden", "NotFound"), r.text
        assert _snapshot(cloud) == before, f"{who}: {method} {path} changed the store"
    for method, path, body in BODY_CASES:
        r = t.client.request(method, API + path, headers=headers, json=body)
        assert r.status_code in (403, 404), f"{who}: {method} {path} {body} -> {r.status_code} {r.text}"
        assert _snapshot(cloud) == before, f"{who}: {method} {path} {body} changed the store"
    for method, path, query in QUERY_CASES:
        r = t.client.request(method, API + path, headers=headers, params=query)
        assert r.status_code == 403, f"{who}: {method} {path} {query} -> {r.status_code} {r.text}"
        assert r.json()["error"] == "Forbidden", r.text
    assert len(answers) == len(CASES)


def test_accounting_and_audit_show_only_the_callers_own(tenants: Tenants) -> None:
    """Unfiltered, a VO user's accounting, APEL records and audit log hold their own VMs and
    calls only; the administrator's hold everyone's."""
    t = tenants
    admin_h = {"Authorization": f"Bearer {t.tokens['admin']}"}
    cms_h = {"Authorization": f"Bearer {t.tokens['cms-member']}"}
    t.client.post(f"{API}/vms/{t.ids['vm']}/action", headers=cms_h, json={"action": "hold"})
    for who in ("atlas-member", "atlas-manager"):
        headers = {"Authorization": f"Bearer {t.tokens[who]}"}
        r = t.client.get(f"{API}/accounting", headers=headers, params={"by": "vm"})
        assert r.status_code == 200 and r.json()["rows"] == [], r.text
        r = t.client.get(f"{API}/accounting/apel", headers=headers)
        assert r.status_code == 200 and "VMUUID" not in r.text, r.text
        r = t.client.get(f"{API}/audit", headers=headers)
        assert r.status_code == 200 and {row["user"] for row in r.json()} <= {who}, r.text
    mine = t.client.get(f"{API}/audit", headers=cms_h).json()
    assert [(row["action"], row["object"]) for row in mine][:1] == [("vms.action", f"vms {t.ids['vm']}")]
    everyone = {row["user"] for row in t.client.get(f"{API}/audit", headers=admin_h).json()}
    assert {"admin", "cms-member"} <= everyone


def test_lists_never_show_the_other_vo(tenants: Tenants) -> None:
    t = tenants
    for who in ("atlas-member", "atlas-manager"):
        headers = {"Authorization": f"Bearer {t.tokens[who]}"}
        for path, kind in LISTS.items():
            r = t.client.get(API + path, headers=headers, params={"all": True} if path == "/vms" else None)
            if kind == "acl":  # the rules themselves are the administrators' to see
                assert r.status_code == 403, r.text
                continue
            assert r.status_code == 200, r.text
            rows = r.json()
            key = "vo" if kind == "vo" else ("id" if isinstance(t.ids[kind], int) else "name")
            seen = {row.get(key) for row in rows}
            assert t.ids[kind] not in seen, f"{who} sees cms's {kind} in {path}: {rows}"
            if kind not in ("vo", "acl"):
                assert all(row.get("group_id", 0) != _gid(t, "cms") for row in rows), (who, path, rows)


def _gid(t: Tenants, vo: str) -> int:
    r = t.client.get(f"{API}/groups/{vo}", headers={"Authorization": f"Bearer {t.tokens['admin']}"})
    return int(r.json()["id"])


def test_the_administrator_reaches_everything(tenants: Tenants) -> None:
    """The control: the same requests are not refused for lack of rights when the admin asks."""
    t = tenants
    headers = {"Authorization": f"Bearer {t.tokens['admin']}"}
    for method, template in [("GET", "/vms/{vm_id}"), ("GET", "/images/{ref}"), ("GET", "/vnets/{ref}"),
                             ("GET", "/templates/{ref}"), ("GET", "/pools/{vo}"), ("GET", "/users/{ref}")]:
        params, _ = CASES[(method, template)]
        path = template.format(**{k: _fill(v, t.ids) for k, v in params.items()})
        r = t.client.request(method, API + path, headers=headers)
        assert r.status_code == 200, f"{method} {path} -> {r.status_code} {r.text}"
    # and the cms member reaches its own
    own = {"Authorization": f"Bearer {t.tokens['cms-member']}"}
    assert t.client.get(f"{API}/vms/{t.ids['vm']}", headers=own).status_code == 200
    assert t.client.get(f"{API}/images/{t.ids['image']}", headers=own).status_code == 200


def test_access_keys_stay_with_their_user(tenants: Tenants) -> None:
    t = tenants
    for who in ("atlas-member", "atlas-manager"):
        headers = {"Authorization": f"Bearer {t.tokens[who]}"}
        r = t.client.get(API + "/access-keys", headers=headers, params={"user": "cms-member"})
        assert r.status_code == 403, r.text
        r = t.client.get(API + "/access-keys", headers=headers)
        assert r.status_code == 200 and t.ids["access_key"] not in r.text
