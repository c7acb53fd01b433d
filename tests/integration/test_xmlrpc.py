"""OpenNebula's XML-RPC API at /RPC2, driven by pyone (OpenNebula's own Python bindings) against
a real daemon on sim hosts, on SQLite and on PostgreSQL.

Every body pyone receives is bound by its generated bindings; a binding that meets an element it
cannot type prints a "Warnings" block on stderr, which the ``strict`` fixture refuses. A VO
member's session sees exactly what REST shows that member; hostile bodies get OpenNebula's
errors (XML-RPC faults or ``[false, message, code]``), never a 500, and change nothing.
"""

from __future__ import annotations

import os
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyone
import pytest

from tests.support.daemon import Daemon
from tests.support.ports import free_port

RPC = "/RPC2"


@dataclass
class Site:
    daemon: Daemon
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.daemon.port}{RPC}"

    def one(self, who: str = "admin") -> Any:
        token = self.daemon.token if who == "admin" else self.tokens[who]
        return pyone.OneServer(self.endpoint, session=f"{who}:{token}")

    def rest(self, who: str = "admin") -> httpx.Client:
        return self.daemon.client(None if who == "admin" else self.tokens[who])

    def raw(self, body: bytes) -> httpx.Response:
        return httpx.post(self.endpoint, content=body, headers={"Content-Type": "text/xml"}, timeout=30)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("xmlrpc")
    if request.param == "sqlite":
        url = f"sqlite:///{data / 'vocloud.db'}"
    else:
        url = request.getfixturevalue("pg_server").create_db(f"xmlrpc{os.getpid()}")
    daemon = Daemon(data, url, free_port(), {})
    daemon.start()
    s = Site(daemon)
    try:
        with s.rest() as c:
            host = {"name": "h1", "vmm": "sim", "cpu": 64, "memory": 262144}
            assert c.post("/hosts", json=host).status_code == 201
            for vo in ("atlas", "cms"):
                assert c.post("/groups", json={"name": vo}).status_code == 201
                r = c.post("/users", json={"name": f"{vo}-member", "group": vo})
                s.tokens[f"{vo}-member"] = r.json()["token"]
            lan = 'NAME="lan"\nPUBLIC="YES"\nAR=[IP="10.77.0.10", SIZE="32"]\n'
            assert c.post("/vnets", json={"template": lan}).status_code == 201
        yield s
    finally:
        if daemon.proc is not None and daemon.proc.poll() is None:
            daemon.stop()


@pytest.fixture
def strict(capfd: pytest.CaptureFixture[str]) -> Iterator[None]:
    """pyone's bindings warn on stderr when a body does not fit OpenNebula's schema."""
    yield
    err = capfd.readouterr().err
    assert "Warnings" not in err, err


def _until(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _state(one: Any, vm_id: int) -> tuple[int, int]:
    vm = one.vm.info(vm_id)
    return int(vm.STATE), int(vm.LCM_STATE)


def _wait_state(one: Any, vm_id: int, state: Any, lcm: Any = pyone.LCM_STATE.LCM_INIT) -> None:
    want = (int(state), int(lcm))
    _until(lambda: _state(one, vm_id) == want, f"VM {vm_id} in {state.name}/{lcm.name}")


#: No host matches: the scheduler leaves such a VM PENDING.
NOWHERE = 'SCHED_REQUIREMENTS="NAME = \\"nowhere\\""\n'

VM_TEXT = '''NAME = "one-vm"
CPU = "0.25"
VCPU = 1
MEMORY = 64
CONTEXT = [ NETWORK = "YES", SSH_PUBLIC_KEY = "ssh-ed25519 AAAA test" ]
NIC = [ NETWORK = "lan" ]
'''


# ------------------------------------------------------------------------------ hosts, system
def test_system_and_hosts(site: Site, strict: None) -> None:
    one = site.one()
    assert one.system.version() == "7.0.0"
    assert one.system.config() is not None
    host_id = one.host.allocate("xr-host", "dummy", "dummy", -1)
    pool = one.hostpool.info()
    assert {"h1", "xr-host"} <= {h.NAME for h in pool.HOST}
    host = one.host.info(host_id)
    assert (host.NAME, host.HOST_SHARE.TOTAL_CPU, host.HOST_SHARE.TOTAL_MEM) == ("xr-host", 800, 16384 * 1024)
    assert one.host.status(host_id, 1) == host_id  # disable
    assert one.host.info(host_id).STATE == pyone.HOST_STATES.DISABLED
    assert one.host.delete(host_id) == host_id
    with pytest.raises(pyone.OneNoExistsException):
        one.host.info(host_id)
    with pytest.raises(pyone.OneException, match="already exists"):
        one.host.allocate("h1", "dummy", "dummy", -1)


# ------------------------------------------------------------------------------ templates and VMs
def test_template_allocate_instantiate_and_vm_allocate(site: Site, strict: None) -> None:
    one = site.one("cms-member")
    tmpl_id = one.template.allocate('NAME = "cms-wn"\nCPU = 0.25\nMEMORY = 64\n')
    tmpl = one.template.info(tmpl_id)
    assert (tmpl.NAME, tmpl.UNAME, tmpl.TEMPLATE["MEMORY"]) == ("cms-wn", "cms-member", "64")
    assert tmpl_id in [t.ID for t in one.templatepool.info(-1, -1, -1).VMTEMPLATE]
    vm_id = one.template.instantiate(tmpl_id, "cms-wn-0", False, 'DESCRIPTION = "from pyone"', False)
    vm2 = one.vm.allocate(VM_TEXT, False)
    for v in (vm_id, vm2):
        _wait_state(one, v, pyone.VM_STATE.ACTIVE, pyone.LCM_STATE.RUNNING)
    vm = one.vm.info(vm2)
    assert (vm.NAME, vm.UNAME, vm.GNAME) == ("one-vm", "cms-member", "cms")
    assert vm.TEMPLATE["CONTEXT"]["SSH_PUBLIC_KEY"] == "ssh-ed25519 AAAA test"
    assert vm.TEMPLATE["NIC"]["IP"].startswith("10.77.0.")
    assert vm.HISTORY_RECORDS.HISTORY[0].HOSTNAME == "h1"
    assert one.vm.info(vm_id).NAME == "cms-wn-0"
    assert one.vm.rename(vm_id, "renamed") == vm_id and one.vm.info(vm_id).NAME == "renamed"
    with pytest.raises(pyone.OneApiException, match="may contain only"):
        one.vm.rename(vm_id, "bad name")
    assert one.template.update(tmpl_id, 'MEMORY = 96', 1) == tmpl_id  # merge
    after = one.template.info(tmpl_id).TEMPLATE
    assert (after["NAME"], after["CPU"], after["MEMORY"]) == ("cms-wn", "0.25", "96")
    assert one.template.update(tmpl_id, 'CPU = 0.5\nMEMORY = 32', 0) == tmpl_id  # replace
    assert one.template.info(tmpl_id).TEMPLATE["CPU"] == "0.5"
    with pytest.raises(pyone.OneException, match="KERNEL"):
        one.template.update(tmpl_id, 'KERNEL = "/etc/passwd"', 1)  # restricted, as in create
    clone = one.template.clone(tmpl_id, "cms-wn-copy", False)
    assert one.template.info(clone).TEMPLATE["CPU"] == "0.5"  # the updated original
    assert one.template.delete(clone, False) == clone
    # a template vocloud refuses (a restricted attribute) is OpenNebula's allocate error
    with pytest.raises(pyone.OneException) as info:
        one.vm.allocate('CPU=1\nMEMORY=64\nRAW=[TYPE="kvm", DATA="<x/>"]', False)
    assert "RAW" in str(info.value)


def test_every_action_the_state_allows_and_opennebulas_error_for_others(site: Site, strict: None) -> None:
    one = site.one("cms-member")
    A, L = pyone.VM_STATE, pyone.LCM_STATE
    # no host matches: the VM stays PENDING once released, so hold and release can both be shown
    held = one.vm.allocate('NAME="held"\nCPU=0.1\nMEMORY=32\n' + NOWHERE, True)
    assert _state(one, held) == (A.HOLD, 0)
    with pytest.raises(pyone.OneActionException, match="not available for state HOLD"):
        one.vm.action("poweroff", held)
    one.vm.action("release", held)
    assert _state(one, held) == (A.PENDING, 0)
    one.vm.action("hold", held)
    assert _state(one, held) == (A.HOLD, 0)
    one.vm.action("terminate", held)
    assert _state(one, held) == (A.DONE, 0)

    vm = one.vm.allocate('NAME="cycle"\nCPU=0.1\nMEMORY=32', False)
    _wait_state(one, vm, A.ACTIVE, L.RUNNING)
    steps = [
        ("reboot", A.ACTIVE, L.RUNNING), ("reboot-hard", A.ACTIVE, L.RUNNING),
        ("poweroff", A.POWEROFF, L.LCM_INIT), ("resume", A.ACTIVE, L.RUNNING),
        ("poweroff-hard", A.POWEROFF, L.LCM_INIT), ("undeploy", A.UNDEPLOYED, L.LCM_INIT),
        ("resume", A.ACTIVE, L.RUNNING), ("suspend", A.SUSPENDED, L.LCM_INIT),
        ("resume", A.ACTIVE, L.RUNNING), ("stop", A.STOPPED, L.LCM_INIT),
        ("resume", A.ACTIVE, L.RUNNING), ("undeploy-hard", A.UNDEPLOYED, L.LCM_INIT),
        ("resume", A.ACTIVE, L.RUNNING), ("terminate", A.DONE, L.LCM_INIT),
    ]
    with site.rest("cms-member") as rest:
        for action, state, lcm in steps:
            assert one.vm.action(action, vm) == vm
            # REBOOT is RUNNING to OpenNebula: wait on vocloud's own state, then compare numbers
            want = "RUNNING" if state == A.ACTIVE else state.name
            _until(lambda: rest.get(f"/vms/{vm}").json()["state"] == want, f"VM {vm} {want}")  # noqa: B023
            assert _state(one, vm) == (state, lcm)
            if state == A.ACTIVE:
                with pytest.raises(pyone.OneActionException, match="not available for state RUNNING"):
                    one.vm.action("resume", vm)
    # vm.deploy (administrators): past the scheduler, onto the host named
    admin = site.one()
    h1 = next(h.ID for h in admin.hostpool.info().HOST if h.NAME == "h1")
    pinned = one.vm.allocate('NAME="pinned"\nCPU=0.1\nMEMORY=32\n' + NOWHERE, True)
    with pytest.raises(pyone.OneAuthorizationException):
        one.vm.deploy(pinned, h1, False, -1)
    assert admin.vm.deploy(pinned, h1, False, -1) == pinned
    _wait_state(one, pinned, A.ACTIVE, L.RUNNING)
    with pytest.raises(pyone.OneActionException, match="deploy"):
        admin.vm.deploy(pinned, h1, False, -1)
    one.vm.action("terminate-hard", pinned)
    hard = one.vm.allocate('NAME="hard"\nCPU=0.1\nMEMORY=32', False)
    _wait_state(one, hard, A.ACTIVE, L.RUNNING)
    one.vm.action("terminate-hard", hard)
    _wait_state(one, hard, A.DONE)
    with pytest.raises(pyone.OneActionException, match="not supported"):
        one.vm.action("resched", hard)


def ids(pool: Any) -> list[int]:
    return [int(v.ID) for v in pool.VM]


def test_vmpool_filters_ranges_and_states(site: Site, strict: None) -> None:
    admin, cms = site.one(), site.one("cms-member")
    mine = admin.vm.allocate('NAME="admins"\nCPU=0.1\nMEMORY=32', True)
    cms_vm = cms.vm.allocate('NAME="cms-held"\nCPU=0.1\nMEMORY=32', True)
    every = ids(admin.vmpool.info(-2, -1, -1, -1))
    assert mine in every and cms_vm in every
    assert ids(admin.vmpool.info(-3, -1, -1, -1)) == [mine]  # the user's own
    assert mine in ids(admin.vmpool.info(-4, -1, -1, -1))  # the user's group's
    assert cms_vm not in ids(admin.vmpool.info(-4, -1, -1, -1))
    assert ids(admin.vmpool.info(-1, -1, -1, -1)) == [mine]  # own + own group's
    cms_id = cms.user.info(-1).ID
    assert cms_vm in ids(admin.vmpool.info(cms_id, -1, -1, -1))  # one user's
    assert ids(admin.vmpool.info(-2, mine, mine, -1)) == [mine]  # an id range
    assert ids(admin.vmpool.info(-2, 0, -2, -1)) == every[:2]  # a page: offset 0, size 2
    held = ids(admin.vmpool.info(-2, -1, -1, int(pyone.VM_STATE.HOLD)))
    assert {mine, cms_vm} <= set(held)
    assert all(admin.vm.info(i).STATE == pyone.VM_STATE.HOLD for i in held)
    done = ids(admin.vmpool.info(-2, -1, -1, int(pyone.VM_STATE.DONE)))
    assert done and not set(done) & set(every)  # -1 leaves DONE out, -2 and 6 keep it
    assert set(done) <= set(ids(admin.vmpool.info(-2, -1, -1, -2)))
    extended = admin.vmpool.infoextended(-2, -1, -1, -1)
    assert ids(extended) == every
    with pytest.raises(pyone.OneApiException, match="filter_flag"):
        admin.vmpool.info(-5, -1, -1, -1)
    for v in (mine, cms_vm):
        admin.vm.action("terminate", v)


def test_accounting(site: Site, strict: None) -> None:
    one = site.one()
    records = one.vmpool.accounting(-2, -1, -1).HISTORY
    assert records, "VMs that ran on a host are accounted"
    for h in records:
        assert h.HOSTNAME == "h1" and h.STIME > 0 and h.VM.ID == h.OID
    ended = [h for h in records if h.ETIME > 0]
    assert ended and all(h.VM.STATE == pyone.VM_STATE.DONE for h in ended)
    future = int(time.time()) + 3600
    later = one.vmpool.accounting(-2, future, -1).HISTORY
    assert [h.OID for h in later] == [h.OID for h in records if h.ETIME == 0]
    assert one.vmpool.accounting(-2, -1, 1000).HISTORY == []  # nothing ran in 1970


# ------------------------------------------------------------------------------ networks, images, accounts
def test_networks_images_users_and_acls(site: Site, strict: None) -> None:
    admin, cms = site.one(), site.one("cms-member")
    net = admin.vn.allocate('NAME = "xr-net"\nBRIDGE = "xrbr0"\nAR = [ IP = "10.88.0.1", SIZE = "8" ]\n', -1)
    assert admin.vn.hold(net, 'LEASES = [ IP = "10.88.0.3" ]') == net
    leases = admin.vn.info(net).AR_POOL.AR[0].LEASES.LEASE
    assert [(le.IP, le.VM) for le in leases] == [("10.88.0.3", -1)]
    assert admin.vn.release(net, 'LEASES = [ IP = "10.88.0.3" ]') == net
    assert admin.vn.info(net).AR_POOL.AR[0].LEASES.LEASE == []
    lan = next(v.ID for v in cms.vnpool.info(-2, -1, -1).VNET if v.NAME == "lan")
    mine = cms.vn.reserve(lan, 'SIZE = 4\nNAME = "cms-res"')
    assert str(lan) == cms.vn.info(mine).PARENT_NETWORK_ID
    assert cms.vn.delete(mine) == mine
    assert admin.vn.delete(net) == net

    store = site.daemon.data_dir / "datastores" / "default" / "xr.raw"
    store.write_bytes(b"\0" * 1024 * 1024)
    img = admin.image.allocate(f'NAME = "xr-img"\nPATH = "{store}"\nFORMAT = "raw"\n', 0)
    assert img in [i.ID for i in admin.imagepool.info(-2, -1, -1).IMAGE]
    assert admin.image.persistent(img, True) == img and admin.image.info(img).PERSISTENT == 1
    assert admin.image.enable(img, False) == img
    assert admin.image.info(img).STATE == pyone.IMAGE_STATES.DISABLED
    assert img not in [i.ID for i in cms.imagepool.info(-2, -1, -1).IMAGE]  # private
    with pytest.raises(pyone.OneAuthorizationException):
        cms.image.allocate(f'NAME = "x"\nPATH = "{store}"', 0)
    assert admin.image.delete(img) == img

    me = cms.user.info(-1)
    assert (me.NAME, me.GNAME) == ("cms-member", "cms")
    assert [u.NAME for u in cms.userpool.info().USER] == ["cms-member"]
    assert cms.group.info(-1).NAME == "cms" and [g.NAME for g in cms.grouppool.info().GROUP] == ["cms"]
    assert admin.user.quota(me.ID, 'VM = [ VMS = 50, CPU = 8, MEMORY = 4096 ]') == me.ID
    assert cms.user.info(-1).VM_QUOTA.VM[0].VMS == "50"
    assert admin.group.quota(me.GID, 'VM = [ VMS = -1 ]') == me.GID
    rule = admin.acl.addrule(f"@{me.GID}", "TEMPLATE/*", "USE")
    assert rule in [a.ID for a in admin.acl.info().ACL]
    assert admin.acl.delrule(rule) == rule
    with pytest.raises(pyone.OneApiException, match="hexadecimal"):
        admin.acl.addrule("0x100000001", "0x2000000000", "0x1")


# ------------------------------------------------------------------------------ tenancy
def _rest_ids(c: httpx.Client, path: str) -> list[int]:
    r = c.get(path)
    assert r.status_code == 200, r.text
    return sorted(int(o["id"]) for o in r.json())


def test_a_vo_session_sees_only_what_rest_shows_it(site: Site, strict: None) -> None:
    atlas = site.one("atlas-member")
    atlas_vm = atlas.vm.allocate('NAME="atlas-vm"\nCPU=0.1\nMEMORY=32', True)
    atlas_tmpl = atlas.template.allocate('NAME="atlas-wn"\nCPU=0.1\nMEMORY=32')
    for who in ("cms-member", "atlas-member"):
        one = site.one(who)
        with site.rest(who) as rest:
            assert sorted(ids(one.vmpool.info(-2, -1, -1, -1))) == _rest_ids(rest, "/vms")
            assert sorted(ids(one.vmpool.info(-2, -1, -1, -2))) == _rest_ids(rest, "/vms?all=true")
            templates = one.templatepool.info(-2, -1, -1).VMTEMPLATE
            assert sorted(t.ID for t in templates) == _rest_ids(rest, "/templates")
            assert sorted(i.ID for i in one.imagepool.info(-2, -1, -1).IMAGE) == _rest_ids(rest, "/images")
            assert sorted(n.ID for n in one.vnpool.info(-2, -1, -1).VNET) == _rest_ids(rest, "/vnets")
            assert sorted(h.ID for h in one.hostpool.info().HOST) == _rest_ids(rest, "/hosts")
    cms = site.one("cms-member")
    assert atlas_vm not in [v.ID for v in cms.vmpool.info(-2, -1, -1, -2).VM]
    with pytest.raises(pyone.OneAuthorizationException):
        cms.vm.info(atlas_vm)
    with pytest.raises(pyone.OneAuthorizationException):
        cms.vm.action("terminate", atlas_vm)
    with pytest.raises(pyone.OneAuthorizationException):
        cms.template.instantiate(atlas_tmpl, "", False, "", False)
    with pytest.raises(pyone.OneAuthorizationException):
        cms.vm.rename(atlas_vm, "mine-now")
    with pytest.raises(pyone.OneAuthorizationException):
        cms.template.update(atlas_tmpl, "MEMORY = 1", 1)
    with pytest.raises(pyone.OneAuthorizationException):
        cms.host.allocate("stolen", "dummy", "dummy", -1)
    with pytest.raises(pyone.OneAuthorizationException):
        cms.acl.info()
    with pytest.raises(pyone.OneAuthorizationException):
        cms.user.quota(cms.user.info(-1).ID, "VM = [ VMS = 1000 ]")
    assert atlas.vm.info(atlas_vm).STATE == pyone.VM_STATE.HOLD  # untouched
    assert atlas.vm.info(atlas_vm).NAME == "atlas-vm"
    assert atlas.template.info(atlas_tmpl).TEMPLATE["MEMORY"] == "32"
    atlas.vm.action("terminate", atlas_vm)


# ------------------------------------------------------------------------------ hostile input
def _fault(r: httpx.Response) -> int:
    assert r.status_code == 200, r.text
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(r.content)
    return int(info.value.faultCode)


def _answer(r: httpx.Response) -> list[Any]:
    assert r.status_code == 200, r.text
    (value,), _ = xmlrpc.client.loads(r.content)
    assert isinstance(value, list)
    return value


BOMB = (b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
        + b"".join(b'<!ENTITY a%d "%s">' % (i, (b"&a%d;" % (i - 1) if i > 1 else b"&a;") * 10)
                   for i in range(1, 10))
        + b']><methodCall><methodName>one.vmpool.info</methodName><params><param><value>&a9;</value>'
          b"</param></params></methodCall>")


def test_hostile_requests_get_opennebulas_errors_and_change_nothing(site: Site) -> None:
    with site.rest() as rest:
        before = rest.get("/vms?all=true").json()
    session = f"admin:{site.daemon.token}"
    assert _fault(site.raw(b"<methodCall><methodName>one.vm.info</methodName>")) == -503
    assert _fault(site.raw(b"\xff\xfe garbage")) == -503
    assert _fault(site.raw(BOMB)) == -503
    ext = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><methodCall>'
           b"<methodName>one.vm.allocate</methodName><params><param><value>&e;</value></param></params>"
           b"</methodCall>")
    assert _fault(site.raw(ext)) == -503
    huge = xmlrpc.client.dumps((session, "X" * (2 << 20), False), "one.vm.allocate").encode()
    assert _fault(site.raw(huge)) == -509
    nested: list[Any] = [1]
    for _ in range(20):
        nested = [nested]
    deep = xmlrpc.client.dumps((session, nested), "one.vm.info").encode()
    assert _fault(site.raw(deep)) == -509
    assert _fault(site.raw(xmlrpc.client.dumps((session, "7"), "one.vm.info").encode())) == -501
    assert _fault(site.raw(xmlrpc.client.dumps((session, True), "one.vm.info").encode())) == -501
    assert _fault(site.raw(xmlrpc.client.dumps((session,), "one.vm.info").encode())) == -502

    unknown = _answer(site.raw(xmlrpc.client.dumps((session, 1), "one.vm.frobnicate").encode()))
    assert unknown[:3] == [False, "[one.vm.frobnicate] method one.vm.frobnicate is not supported by vocloud "
                                  "(see docs/opennebula.md)", 0x1000]
    update = _answer(site.raw(xmlrpc.client.dumps((session, 1, "A=1", 0), "one.vm.update").encode()))
    assert update[:3] == [False, "[one.vm.update] method one.vm.update is not supported by vocloud: "
                                 "a VM's template is fixed at creation in vocloud (the drivers trust it)",
                          0x1000]
    for bad_session in ("admin:nope", "admin", "", f"cms-member:{site.daemon.token}", "x" * 5000):
        call = xmlrpc.client.dumps((bad_session, -2, -1, -1, -1), "one.vmpool.info")
        out = _answer(site.raw(call.encode()))
        assert out[:3] == [False, "[one.vmpool.info] User couldn't be authenticated, aborting call.", 0x100]
    assert _answer(site.raw(xmlrpc.client.dumps((), "one.vmpool.info").encode()))[2] == 0x100
    assert _answer(site.raw(xmlrpc.client.dumps((42,), "one.vmpool.info").encode()))[2] == 0x100
    ctl = xmlrpc.client.dumps((session, "NAME=\"a\x01\"\nCPU=1\nMEMORY=1", False), "one.vm.allocate")
    assert _fault(site.raw(ctl.encode())) == -503  # a control character XML 1.0 cannot carry
    cms = f"cms-member:{site.tokens['cms-member']}"
    kernel = _answer(site.raw(xmlrpc.client.dumps((cms, 'CPU=1\nMEMORY=1\nKERNEL="/etc/passwd"', False),
                                                  "one.vm.allocate").encode()))
    assert kernel[0] is False and kernel[2] == 0x200 and "KERNEL" in kernel[1]
    bad_tmpl = _answer(site.raw(xmlrpc.client.dumps((session, 'CPU=[[[', False), "one.vm.allocate").encode()))
    assert bad_tmpl[0] is False and bad_tmpl[2] == 0x4000
    with pytest.raises(pyone.OneNoExistsException):
        site.one().vm.info(2**31 - 1)
    with pytest.raises(pyone.OneNoExistsException):
        site.one().vm.info(-7)
    assert httpx.get(site.endpoint).status_code == 405
    with site.rest() as rest:
        assert rest.get("/vms?all=true").json() == before  # nothing changed
        assert rest.get("/health").status_code == 200


def test_pyone_sends_templates_as_xml_too(site: Site, strict: None) -> None:
    """pyone turns a nested dict into ``<TEMPLATE>`` XML with CDATA values."""
    one = site.one("cms-member")
    vm = one.vm.allocate({"TEMPLATE": {"NAME": "dict-vm", "CPU": "0.1", "MEMORY": "32",
                                       "CONTEXT": {"A": "1<2"}}}, True)
    info = one.vm.info(vm)
    assert (info.NAME, info.TEMPLATE["CONTEXT"]["A"]) == ("dict-vm", "1<2")
    one.vm.action("terminate", vm)


def test_the_daemon_log_holds_no_traceback(site: Site) -> None:
    log = Path(site.daemon.data_dir / "daemon.log").read_text()
    assert "Traceback" not in log, log[-4000:]
