"""``vocloud image distribute`` on real SSH hosts: namespace hosts on one bridge, each its own sshd.

What must hold: every host ends with the verified file while the front-end sends the image once;
a holder whose copy is damaged (in place, its stamp still matching, so only the bytes tell) is
caught at the hop and both it and its child are redone; a host that cannot be reached is reported
and the others still get the image; a ``.part`` left by a cut transfer is continued, not resent;
no hop's key stays in ``authorized_keys``, no receiver script and no ``.part`` stay on a host;
only administrators may distribute.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon
from tests.support.dstlab import DstLab
from tests.support.helpers import admin
from tests.support.netns import LabUnavailable
from tests.support.ports import free_port
from vocloud.drivers.storage.distribute import Distribution
from vocloud.drivers.transport.ssh import SshTransport
from vocloud.errors import Forbidden
from vocloud.service.cloud import Cloud
from vocloud.service.distribution import DistributionService, Job

SIZE = 3 * 1024 * 1024 + 12345  # not a whole number of chunks


class Lab:
    def __init__(self, lab: DstLab, ssh: SshTransport, image: Path, sha: str) -> None:
        self.lab, self.ssh, self.image, self.sha = lab, ssh, image, sha

    def ds(self, i: int) -> Path:
        return self.lab.root / f"ds{i}"

    def cached(self, i: int) -> Path:
        return self.ds(i) / "cache" / f"{self.sha}.raw"

    def register(self, cloud: Cloud) -> None:
        root = admin(cloud)
        for h in self.lab.hosts:
            if h.netns not in {x["name"] for x in cloud.hosts.list(root)}:
                cloud.hosts.create(root, h.netns, "qemu", h.transport, attrs={
                    "DATASTORE_DIR": str(self.ds(h.index)),
                    "AUTHORIZED_KEYS": str(self.lab.root / "authorized_keys")})

    def service(self, cloud: Cloud) -> DistributionService:
        def runner(job: Job, progress: Any) -> dict[str, Any]:
            return Distribution(job.path, job.sha256, job.fmt, job.hosts, lambda h: self.ssh,
                                "/nonexistent", fanout=job.fanout,
                                on_event=lambda r: progress(asdict(r))).run().as_dict()
        return DistributionService(cloud.db, runner)

    def image_id(self, cloud: Cloud) -> int:
        root = admin(cloud)
        for img in cloud.images.list(root):
            if img["name"] == "base":
                return int(img["id"])
        if not any(d["name"] == "repo" for d in cloud.datastores.list(root)):
            cloud.datastores.create(root, "repo", str(self.image.parent))
        return int(cloud.images.create(root, "base", str(self.image), "raw")["id"])

    def leftovers(self) -> list[str]:
        """Anything a distribution must not leave: hop keys, receiver scripts, parts."""
        out = [ln for ln in (self.lab.root / "authorized_keys").read_text().splitlines()
               if "vocloud-distribute" in ln]
        for h in self.lab.hosts:
            cache = self.ds(h.index) / "cache"
            out += [str(p) for p in cache.glob("*.part")] if cache.exists() else []
            out += [str(p) for p in (cache / ".distribute").glob("*")] if cache.exists() else []
        return out


@pytest.fixture(params=["sqlite"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite only: the store holds no distribution state (it is in the daemon's memory); what
    is under test is SSH, the hosts' files and the tree."""
    return f"sqlite:///{tmp_path / 'vocloud.db'}"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def dst(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    lab = DstLab(tmp_path_factory.mktemp("dst"))
    try:
        lab.start()
        for _ in range(4):
            lab.add_host()
    except LabUnavailable as exc:
        lab.close()
        if os.environ.get("VOCLOUD_REQUIRE_NETNS"):
            pytest.fail(str(exc))
        pytest.skip(str(exc))
    ssh = lab.ssh_transport(command_timeout=120)
    image = lab.root / "repo" / "base.raw"
    image.parent.mkdir()
    image.write_bytes(os.urandom(SIZE))
    try:
        yield Lab(lab, ssh, image, _sha(image))
    finally:
        ssh.close()
        lab.close()


def _run(svc: DistributionService, cloud: Cloud, image: int, hosts: list[str] | None,
         fanout: int = 1) -> dict[str, Any]:
    out = svc.start(admin(cloud), image, hosts, fanout, wait=True)
    assert out["state"] in ("done", "failed"), out
    return out


def test_every_host_gets_it_and_the_front_end_sends_it_once(dst: Lab, cloud: Cloud) -> None:
    dst.register(cloud)
    svc, image = dst.service(cloud), dst.image_id(cloud)
    out = _run(svc, cloud, image, None, fanout=1)  # default: every enabled qemu host
    res = out["result"]
    assert out["state"] == "done" and res["ok"], out
    assert res["front_end_bytes"] == SIZE, res  # once, not once per host
    assert res["host_bytes"] == 3 * SIZE
    assert {h["state"] for h in res["hosts"]} == {"verified"}
    sources = [h["source"] for h in res["hosts"]]
    assert sources.count("front-end") == 1 and res["depth"] >= 2, res
    for h in dst.lab.hosts:
        assert _sha(dst.cached(h.index)) == dst.sha
    assert dst.leftovers() == []
    # again: every host holds it, nothing crosses the network
    res = _run(svc, cloud, image, None)["result"]
    assert res["ok"] and res["front_end_bytes"] == 0 and res["host_bytes"] == 0
    assert {h["state"] for h in res["hosts"]} == {"held"}


def test_a_damaged_holder_is_caught_at_the_hop_and_redone(dst: Lab, cloud: Cloud) -> None:
    dst.register(cloud)
    svc, image = dst.service(cloud), dst.image_id(cloud)
    h1, h4 = dst.lab.hosts[0], dst.lab.hosts[3]
    dst.cached(h4.index).unlink()
    bad = dst.cached(h1.index)
    st = bad.stat()
    with bad.open("r+b") as fh:  # bit rot: same size, inode and mtime, so its stamp still matches
        fh.seek(SIZE // 2)
        byte = fh.read(1)
        fh.seek(SIZE // 2)
        fh.write(bytes([byte[0] ^ 0xFF]))
    os.utime(bad, ns=(st.st_atime_ns, st.st_mtime_ns))
    out = _run(svc, cloud, image, [h1.netns, h4.netns])
    res = out["result"]
    assert res["ok"], out
    assert _sha(dst.cached(h1.index)) == dst.sha and _sha(dst.cached(h4.index)) == dst.sha
    by = {h["host"]: h for h in res["hosts"]}
    # h1 served h4 first, its hash said no: h4 came from the front-end, then h1 from h4
    assert by[h4.netns]["source"] == "front-end" and by[h1.netns]["source"] == h4.netns, res
    assert res["front_end_bytes"] == SIZE
    assert dst.leftovers() == []


def test_a_cut_transfer_is_continued_not_resent(dst: Lab, cloud: Cloud) -> None:
    dst.register(cloud)
    svc, image = dst.service(cloud), dst.image_id(cloud)
    h2, h3 = dst.lab.hosts[1], dst.lab.hosts[2]
    dst.cached(h3.index).unlink()
    part = Path(f"{dst.cached(h3.index)}.part")
    part.write_bytes(dst.image.read_bytes()[: SIZE // 3])  # what a cut hop left behind
    res = _run(svc, cloud, image, [h2.netns, h3.netns])["result"]
    by = {h["host"]: h for h in res["hosts"]}
    assert res["ok"] and by[h3.netns]["source"] == h2.netns, res
    assert by[h3.netns]["resumed_from"] == SIZE // 3
    assert by[h3.netns]["bytes"] == SIZE - SIZE // 3
    assert _sha(dst.cached(h3.index)) == dst.sha and not part.exists()


def test_an_unreachable_host_is_reported_and_the_others_get_it(dst: Lab, cloud: Cloud) -> None:
    dst.register(cloud)
    svc, image = dst.service(cloud), dst.image_id(cloud)
    down = dst.lab.hosts[1]
    for h in dst.lab.hosts:
        dst.cached(h.index).unlink(missing_ok=True)
    dst.lab.stop_sshd(down)
    dst.ssh.forget(dst.lab.hosts[1].ref())
    try:
        out = _run(svc, cloud, image, None, fanout=2)
    finally:
        dst.lab.start_sshd(down)
    res = out["result"]
    assert out["state"] == "failed" and not res["ok"]
    by = {h["host"]: h for h in res["hosts"]}
    assert by[down.netns]["state"] == "failed"
    assert "refused" in by[down.netns]["error"] or "connect" in by[down.netns]["error"], by
    others = [h for h in dst.lab.hosts if h is not down]
    assert all(by[h.netns]["state"] == "verified" for h in others), res
    assert all(_sha(dst.cached(h.index)) == dst.sha for h in others)
    assert res["front_end_bytes"] == SIZE and not dst.cached(down.index).exists()
    assert dst.leftovers() == []


def test_only_administrators_distribute(dst: Lab, cloud: Cloud) -> None:
    dst.register(cloud)
    svc, image = dst.service(cloud), dst.image_id(cloud)
    root = admin(cloud)
    cloud.accounts.create_group(root, "atlas")
    token = cloud.accounts.create_user(root, "alice", "atlas")["token"]
    alice = cloud.authenticate(token)
    with pytest.raises(Forbidden):
        svc.start(alice, image, None, 2)
    with pytest.raises(Forbidden):
        svc.list(alice)
    assert svc.list(root) == []


def test_the_cli_through_a_real_daemon(dst: Lab, tmp_path: Path) -> None:
    """``vocloud image distribute`` end to end: CLI -> REST -> the daemon's wiring -> SSH."""
    lab = dst.lab
    d = Daemon(tmp_path, f"sqlite:///{tmp_path / 'v.db'}", free_port(), {
        "VOCLOUD_SSH_KEY": str(lab.client_key), "VOCLOUD_SSH_KNOWN_HOSTS": str(lab.known_hosts),
        "VOCLOUD_MONITOR_INTERVAL": "60"})
    d.start()
    try:
        api = d.rest()
        h1, h3 = lab.hosts[0], lab.hosts[2]
        for h in (h1, h3):
            dst.cached(h.index).unlink(missing_ok=True)
            api.post("/hosts", {"name": h.netns, "vmm": "qemu", "transport": h.transport, "attrs": {
                "DATASTORE_DIR": str(dst.ds(h.index)),
                "AUTHORIZED_KEYS": str(lab.root / "authorized_keys")}})
        api.post("/datastores", {"name": "repo", "path": str(dst.image.parent)})
        api.post("/images", {"name": "base", "path": str(dst.image), "format": "raw"})
        r = d.ok("image", "distribute", "base", "--hosts", f"{h1.netns},{h3.netns}", "--fanout", "1",
                 "--poll", "0.2", "--json")
        doc = json.loads(r.out)
        assert doc["state"] == "done" and doc["result"]["front_end_bytes"] == SIZE, doc
        assert _sha(dst.cached(h1.index)) == dst.sha == _sha(dst.cached(h3.index))
        r = d.ok("image", "distribute", "base", "--hosts", h1.netns)  # the table, held already
        assert "held" in r.out and "front-end sent 0.0 MiB" in r.out, r.out
        d.fails("image", "distribute", "base", "--hosts", "nosuchhost")
        d.fails("image", "distribute", "base", "--fanout", "0")
        api.post("/groups", {"name": "atlas"})
        user = api.post("/users", {"name": "bob", "group": "atlas"})
        r = d.fails("image", "distribute", "base", token=user["token"])
        assert "administrator" in r.err, r.err
        assert dst.leftovers() == []
    finally:
        d.stop()
