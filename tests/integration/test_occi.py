"""Issue 12, OCCI half: apache-libcloud's own ``OpenNebulaNodeDriver`` against a real daemon
(sim hosts; SQLite and PostgreSQL), tenancy between two VOs, and hostile OCCI XML.

One daemon per database for the whole module; every test leaves the VMs it made terminated.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from libcloud.common.exceptions import BaseHTTPError
from libcloud.common.types import InvalidCredsError
from libcloud.compute.base import Node, NodeState

from tests.support import hostile_xml
from tests.support.daemon import Daemon
from tests.support.libcloud_one import one_driver
from tests.support.pgserver import PgServer
from tests.support.ports import free_port


@dataclass
class Site:
    daemon: Daemon
    tokens: dict[str, str]  # user -> token
    image_id: int
    private_image_id: int  # vo2's own image
    network_id: int

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.daemon.port}"

    def driver(self, user: str, **kw: Any) -> Any:
        return one_driver(user, self.tokens[user], self.daemon.port, **kw)

    def raw(self, user: str) -> httpx.Client:
        basic = base64.b64encode(f"{user}:{self.tokens[user]}".encode()).decode()
        return httpx.Client(base_url=self.root, timeout=30, headers={"Authorization": f"Basic {basic}"})

    def vm_count(self) -> int:
        with self.daemon.client() as c:
            return len(c.get("/vms", params={"all": True}).json())


def _ok(r: httpx.Response) -> Any:
    assert r.status_code < 400, r.text
    return r.json() if r.content else None


def _wait(fn: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if fn():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp(f"occi-{request.param}")
    if request.param == "sqlite":
        url = f"sqlite:///{tmp / 'vocloud.db'}"
    else:
        server: PgServer = request.getfixturevalue("pg_server")
        url = server.create_db(f"occi_{free_port()}")
    d = Daemon(tmp, url, free_port(), {})
    d.start()
    try:
        with d.client() as c:
            _ok(c.post("/hosts", json={"name": "sim1", "vmm": "sim", "cpu": 64, "memory": 262144}))
            tokens = {}
            for user, group in (("alice", "vo1"), ("bob", "vo2")):
                _ok(c.post("/groups", json={"name": group}))
                tokens[user] = _ok(c.post("/users", json={"name": user, "group": group}))["token"]
            disk = Path(tmp / "datastores" / "default" / "base.img")
            disk.write_bytes(b"\0" * 65536)
            image = _ok(c.post("/images", json={"name": "base", "path": str(disk), "format": "raw",
                                                 "public": True, "description": "the base"}))
            net = _ok(c.post("/vnets", json={"template": 'NAME="lan"\nBRIDGE="vcbrocci"\nPUBLIC="YES"\n'
                                                         'AR=[IP="10.99.0.10", SIZE="16"]\n'}))
        with d.client(tokens["bob"]) as b:
            private = tmp / "datastores" / "default" / "bob.img"
            private.write_bytes(b"\0" * 65536)
            mine = _ok(b.post("/images/upload", params={"name": "bobs", "format": "raw"},
                              content=private.read_bytes(),
                              headers={"Content-Type": "application/octet-stream"}))
        yield Site(d, tokens, image["id"], mine["id"], net["id"])
    finally:
        d.stop()


def _state(site: Site, vm_id: str | int) -> str:
    with site.daemon.client() as c:
        return str(_ok(c.get(f"/vms/{vm_id}"))["state"])


def test_libcloud_lists_sizes_images_networks(site: Site) -> None:
    drv = site.driver("alice")
    sizes = {s.name: s for s in drv.list_sizes()}
    assert set(sizes) == {"small", "medium", "large"}
    assert (sizes["small"].ram, sizes["small"].cpu, sizes["medium"].ram) == (1024, 1.0, 4096)
    images = {i.name: i for i in drv.list_images()}
    assert "base" in images and images["base"].id == str(site.image_id)
    assert "bobs" not in images  # bob's private image is bob's VO's alone
    assert "bobs" in {i.name for i in site.driver("bob").list_images()}
    volumes = {v.name: v for v in drv.list_volumes()}
    assert volumes["base"].size == 1 and "bobs" not in volumes
    with pytest.raises(BaseHTTPError, match="not supported"):
        drv.create_volume(10, "vol")
    nets = {n.name: n for n in drv.ex_list_networks()}
    assert nets["lan"].id == str(site.network_id)
    assert (nets["lan"].address, nets["lan"].size) == ("10.99.0.10", "16")
    with site.raw("alice") as c:  # no host path, bridge or datastore in any document
        bodies = [c.get(p).text for p in (f"/network/{site.network_id}", f"/storage/{site.image_id}",
                                          "/storage", "/network", "/instance_type?verbose=1")]
    assert not any("vcbrocci" in b or "datastores" in b for b in bodies)
    assert "<ID>small</ID>" in bodies[-1]


def test_libcloud_node_lifecycle(site: Site) -> None:
    drv = site.driver("alice")
    small = next(s for s in drv.list_sizes() if s.name == "small")
    image = next(i for i in drv.list_images() if i.name == "base")
    lan = next(n for n in drv.ex_list_networks() if n.name == "lan")
    node = drv.create_node(name="web", size=small, image=image, networks=[lan])
    assert node.id and node.state == NodeState.PENDING
    assert node.image.id == str(site.image_id)
    assert node.public_ips[0].id == str(site.network_id) and node.public_ips[0].address.startswith("10.99.0.")
    assert node.size is not None and node.size.name == "small"
    _wait(lambda: _state(site, node.id) == "RUNNING", 30, "the node RUNNING")
    listed = {n.id: n for n in drv.list_nodes()}
    assert listed[node.id].state == NodeState.RUNNING
    with site.raw("alice") as c:  # OpenNebula's ?verbose=1: whole documents in the collection
        for path, tag in (("/compute", "LCM_STATE"), ("/storage", "PERSISTENT"), ("/network", "SIZE")):
            assert f"<{tag}>" in c.get(path, params={"verbose": 1}).text
            assert f"<{tag}>" not in c.get(path).text
    assert drv.reboot_node(node) is True
    _wait(lambda: _state(site, node.id) == "RUNNING", 30, "the node RUNNING after reboot")
    with site.daemon.client() as c:
        history = [h["action"] for h in _ok(c.get(f"/vms/{node.id}"))["history"]]
    assert "reboot" in history
    assert drv.destroy_node(node) is True  # OpenNebula's 204
    _wait(lambda: _state(site, node.id) == "DONE", 30, "the node DONE")
    assert node.id not in {n.id for n in drv.list_nodes()}


def test_a_second_vo_sees_and_destroys_none_of_the_first(site: Site) -> None:
    alice, bob = site.driver("alice"), site.driver("bob")
    small = next(s for s in alice.list_sizes() if s.name == "small")
    image = next(i for i in alice.list_images() if i.name == "base")
    node = alice.create_node(name="mine", size=small, image=image)
    try:
        assert node.id not in {n.id for n in bob.list_nodes()}
        with pytest.raises(BaseHTTPError, match="MANAGE"):
            bob.destroy_node(Node(node.id, "x", NodeState.RUNNING, [], [], bob))
        with site.raw("bob") as c:
            assert c.get(f"/compute/{node.id}").status_code == 403
            r = c.put(f"/compute/{node.id}", content=f"<COMPUTE><ID>{node.id}</ID><STATE>CANCEL</STATE>"
                                                      "</COMPUTE>")
            assert r.status_code == 403, r.text
        assert _state(site, node.id) in ("PENDING", "PROLOG", "BOOT", "RUNNING")
        # bob cannot boot alice's VO from his private image, nor alice from his
        with site.raw("alice") as c:
            r = c.post("/compute", content=f'<COMPUTE><INSTANCE_TYPE>small</INSTANCE_TYPE><DISK>'
                                            f'<STORAGE href="/storage/{site.private_image_id}"/></DISK>'
                                            "</COMPUTE>")
            assert r.status_code == 403 and "USE" in r.text, r.text
    finally:
        alice.destroy_node(node)


def test_credentials(site: Site) -> None:
    assert site.driver("alice").list_sizes()
    with pytest.raises(InvalidCredsError):  # bob's token with alice's name
        one_driver("alice", site.tokens["bob"], site.daemon.port).list_nodes()
    with pytest.raises(InvalidCredsError, match="SHA1"):  # libcloud's default: SHA1 of the token
        site.driver("alice", plain_auth=False).list_nodes()
    with pytest.raises(InvalidCredsError, match="SHA1"):  # api_version 3.2 sends SHA1 too
        site.driver("alice", api_version="3.2").list_nodes()
    sha1 = hashlib.sha1(site.tokens["alice"].encode()).hexdigest()
    for header in ("", "Basic", "Basic !!!", "Basic " + base64.b64encode(b"alice").decode(),
                   "Basic " + base64.b64encode(f"alice:{sha1}".encode()).decode()):
        r = httpx.get(f"{site.root}/compute", headers={"Authorization": header} if header else {})
        assert r.status_code == 401 and r.text, (header, r.text)
        assert r.headers["www-authenticate"].startswith("Basic")


PLAIN = b"<COMPUTE><INSTANCE_TYPE>small</INSTANCE_TYPE>%s</COMPUTE>"
BAD_POSTS: list[tuple[bytes, int, str]] = [
    (hostile_xml.billion_laughs(), 400, "DOCTYPE"),
    (hostile_xml.quadratic_blowup(), 400, "DOCTYPE"),
    (hostile_xml.external_entity(), 400, "DOCTYPE"),
    (b"<COMPUTE><NAME>x</NAME>", 400, "OCCI XML"),
    (b"", 400, "empty"),
    (b"\xff\xfe\x00garbage", 400, "XML"),
    (b'<?xml version="1.0" encoding="klingon"?><COMPUTE/>', 400, "XML"),
    (b"<NETWORK><NAME>x</NAME></NETWORK>", 400, "root element must be COMPUTE"),
    (b"<COMPUTE><NAME>x</NAME></COMPUTE>", 400, "INSTANCE_TYPE is required"),
    (b"<COMPUTE><INSTANCE_TYPE>huge</INSTANCE_TYPE></COMPUTE>", 400, "Bad instance type"),
    (PLAIN % b'<DISK><STORAGE href="/storage/abc"/></DISK>', 400, "is not /storage/ID"),
    (PLAIN % b'<DISK><STORAGE href="/etc/passwd"/></DISK>', 400, "is not /storage/ID"),
    (PLAIN % b"<DISK><SOURCE>/etc/shadow</SOURCE></DISK>", 400, "href"),
    (PLAIN % b'<DISK><STORAGE href="/storage/99999999999"/></DISK>', 400, "is not /storage/ID"),
    (PLAIN % b'<DISK><STORAGE href="/storage/424242"/></DISK>', 404, "424242"),
    (PLAIN % b'<NIC><NETWORK href="/network/424242"/></NIC>', 404, "424242"),
    (PLAIN % b'<NIC><NETWORK href="/network/1"/><IP>not-an-ip</IP></NIC>', 400, "IP"),
    (PLAIN % b"<NAME>../../etc</NAME>", 400, "NAME"),
    (PLAIN % (b"<NAME>" + b"a" * 500 + b"</NAME>"), 400, "NAME"),
    (PLAIN % b"<CONTEXT><A>1</A><a>2</a></CONTEXT>", 400, "twice"),
    (PLAIN % (b"<DISK/>" * 17), 400, "at most"),
    (hostile_xml.deep(), 0, ""),  # deep but small: the extra elements are ignored
]


@pytest.mark.parametrize("body,status,message", BAD_POSTS, ids=range(len(BAD_POSTS)))
def test_bad_compute_documents(site: Site, body: bytes, status: int, message: str) -> None:
    before = site.vm_count()
    with site.raw("alice") as c:
        r = c.post("/compute", content=body, headers={"Content-Type": "application/xml"})
    if status == 0:  # the deep document is a valid small COMPUTE: created, nothing else taken
        assert r.status_code == 201, r.text
        with site.raw("alice") as c:
            assert c.delete(f"/compute/{r.text.split('<ID>')[1].split('<')[0]}").status_code == 204
        return
    assert r.status_code == status, r.text
    assert message in r.text and r.headers["content-type"].startswith("text/plain"), r.text
    assert site.vm_count() == before


def test_huge_body_is_refused_before_parsing(site: Site) -> None:
    body = b"<COMPUTE><NAME>" + b"x" * (2 << 20) + b"</NAME></COMPUTE>"
    with site.raw("alice") as c:
        r = c.post("/compute", content=body)
    assert r.status_code == 413


def test_bad_paths_and_state_changes(site: Site) -> None:
    drv = site.driver("alice")
    small = next(s for s in drv.list_sizes() if s.name == "small")
    image = next(i for i in drv.list_images() if i.name == "base")
    node = drv.create_node(name="x", size=small, image=image)
    try:
        with site.raw("alice") as c:
            for path, status in (("/compute/abc", 404), ("/compute/99999999", 404),
                                 ("/compute/-1", 404), ("/storage/424242", 404), ("/network/x", 404),
                                 ("/instance_type/nope", 404), ("/compute/1%00", 400)):
                r = c.get(path)
                assert r.status_code == status, (path, r.text)
            assert c.patch("/compute").status_code == 405
            assert c.post("/network", content=b"<NETWORK/>").status_code == 501
            cases = [(b"<COMPUTE><STATE>FLY</STATE></COMPUTE>", 400, "Invalid state"),
                     (b"<COMPUTE><STATE>RESET</STATE></COMPUTE>", 400, "REBOOT"),
                     (b"<COMPUTE><STATE>RESUME</STATE></COMPUTE>", 403, "cannot be changed"),
                     (b"<COMPUTE><STATE>STOPPED</STATE>", 400, "OCCI XML"),
                     (b'<COMPUTE><DISK id="0"><SAVE_AS name="x"/></DISK></COMPUTE>', 400, "SAVE_AS")]
            for body, status, message in cases:
                r = c.put(f"/compute/{node.id}", content=body)
                assert r.status_code == status and message in r.text, (body, r.text)
            r = c.put(f"/compute/{node.id}", content=b"<COMPUTE><ID>1</ID></COMPUTE>")
            assert r.status_code == 200 and "<COMPUTE" in r.text
        # the OCCI paths shadow nothing
        assert httpx.get(f"{site.root}/api/v1/health").status_code == 200
    finally:
        drv.destroy_node(node)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_entity_bombs_do_not_grow_the_daemon(site: Site) -> None:
    assert site.daemon.proc is not None
    bombs = [hostile_xml.billion_laughs(), hostile_xml.quadratic_blowup(), hostile_xml.external_entity()]
    with site.raw("alice") as c:
        c.post("/compute", content=bombs[0])  # warm-up: first-use allocations are not growth
        before = _rss_kib(site.daemon.proc.pid)
        for _ in range(5):
            for bomb in bombs:
                assert c.post("/compute", content=bomb).status_code == 400
                assert c.put("/compute/1", content=bomb).status_code in (400, 404)
    grown = _rss_kib(site.daemon.proc.pid) - before
    assert grown < 32 * 1024, f"daemon RSS grew by {grown} KiB"


def test_storage_updates(site: Site) -> None:
    path = f"/storage/{site.private_image_id}"
    with site.raw("bob") as b, site.raw("alice") as a:
        assert a.get(path).status_code == 403
        r = b.put(path, content=b"<STORAGE><PUBLIC>YES</PUBLIC></STORAGE>")
        assert r.status_code == 202 and "<PUBLIC>YES</PUBLIC>" in r.text, r.text
        assert a.get(path).status_code == 200  # now every VO may USE it ...
        r = a.put(path, content=b"<STORAGE><PUBLIC>NO</PUBLIC></STORAGE>")
        assert r.status_code == 403 and "MANAGE" in r.text  # ... but not change it
        for body, message in ((b"<STORAGE><PUBLIC>NO</PUBLIC><PERSISTENT>NO</PERSISTENT></STORAGE>",
                               "more than one change"),
                              (b"<STORAGE><PUBLIC>maybe</PUBLIC></STORAGE>", "YES or NO"),
                              (b"<COMPUTE/>", "root element")):
            r = b.put(path, content=body)
            assert r.status_code == 400 and message in r.text, r.text
        assert b.put(path, content=b"<STORAGE><PUBLIC>NO</PUBLIC></STORAGE>").status_code == 202
        assert a.get(path).status_code == 403


def test_quotas_apply_as_for_rest(site: Site) -> None:
    drv = site.driver("bob")
    sizes = {s.name: s for s in drv.list_sizes()}
    image = next(i for i in drv.list_images() if i.name == "bobs")
    with site.daemon.client() as c:
        _ok(c.put("/quotas/user/bob", json={"memory": 2048}))
        try:
            before = site.vm_count()
            with pytest.raises(BaseHTTPError, match="quota"):
                drv.create_node(name="big", size=sizes["medium"], image=image)
            assert site.vm_count() == before
            node = drv.create_node(name="fits", size=sizes["small"], image=image)
            assert drv.destroy_node(node) is True
        finally:
            _ok(c.put("/quotas/user/bob", json={"memory": -1}))
