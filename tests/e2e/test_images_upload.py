"""Datastores and image upload through the real daemon: REST, OpenAPI and the CLI (issue 9).

Finding 3 as it was: ``POST /images`` with ``path=/etc/shadow`` by a plain user answered 201
with the file's size and sha256. Now it is 403 naming ``path``; users upload bytes instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.daemon import Daemon

MIB = 1 << 20


def req(d: Daemon, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
    """Raw HTTP, for the upload's own edges (Content-Type, Content-Length, chunked bodies)."""
    return httpx.request(method, f"{d.url}{path}", timeout=60,
                         headers={"Authorization": f"Bearer {token or d.token}", **kw.pop("headers", {})},
                         **kw)


def upload(d: Daemon, token: str, name: str, data: bytes | Iterator[bytes], length: int | None = None,
           content_type: str = "application/octet-stream", **params: Any) -> httpx.Response:
    headers = {"Content-Type": content_type}
    if length is not None:
        headers["Content-Length"] = str(length)
    return req(d, "POST", "/images/upload", token=token, params={"name": name, **params},
               content=data, headers=headers)


def user(d: Daemon, name: str, group: str) -> str:
    if group not in {g["name"] for g in d.api("GET", "/groups")}:
        d.api("POST", "/groups", json={"name": group})
    return str(d.api("POST", "/users", json={"name": name, "group": group})["token"])


def partials(d: Daemon) -> list[str]:
    return sorted(p.name for p in (d.data_dir / "datastores" / "default").iterdir()
                  if p.name.startswith(".upload-"))


@pytest.fixture(scope="module")
def qcow2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("img")
    raw = tmp / "src.raw"
    raw.write_bytes(os.urandom(2 * MIB))
    out = tmp / "src.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)], check=True)
    return out


def test_default_datastore_and_path_registration(fresh_daemon: Daemon, tmp_path: Path, qcow2: Path) -> None:
    d = fresh_daemon
    default = d.data_dir / "datastores" / "default"
    assert default.is_dir() and default.stat().st_mode & 0o777 == 0o700
    tok = user(d, "eve", "atlas")
    [ds] = d.api("GET", "/datastores", token=tok)  # everyone may list
    assert (ds["name"], ds["path"]) == ("default", str(default))
    # finding 3: a plain user registering host files by path
    for path in ("/etc/shadow", str(d.data_dir / "admin.token"), str(d.data_dir / "vocloud.db"),
                 "/proc/self/environ"):
        err = d.refused("POST", "/images", tok, json={"name": "loot", "path": path})
        assert err.status == 403, err
        assert err.code == "Forbidden" and err.message.startswith("path: ")
        assert "sha256" not in err.message + str(err.details)
    # the administrator: only inside a datastore
    err = d.refused("POST", "/images", json={"name": "tok", "path": str(d.data_dir / "admin.token")})
    assert err.status == 403 and "is not inside a datastore; datastores: default" in err.message
    (default / "base.qcow2").write_bytes(qcow2.read_bytes())
    assert d.api("POST", "/images", json={"name": "base", "path": str(default / "base.qcow2")}
                 )["format"] == "qcow2"
    # datastores: admin-only changes
    assert d.refused("POST", "/datastores", tok, json={"name": "x", "path": str(tmp_path)}).status == 403
    d.api("POST", "/datastores", json={"name": "scratch", "path": str(tmp_path)})
    err = d.refused("POST", "/datastores", json={"name": "all", "path": "/"})
    assert err.status == 400
    assert err.message == "datastore path must not be / (it would hold every file)"
    assert d.refused("DELETE", "/datastores/scratch", tok).status == 403
    assert d.api("DELETE", "/datastores/scratch") is None  # 204


def test_upload_over_http(fresh_daemon: Daemon, qcow2: Path) -> None:
    d = fresh_daemon
    tok = user(d, "max", "cms")
    data = qcow2.read_bytes()
    r = upload(d, tok, "cms-img", data)  # httpx sends the Content-Length
    assert r.status_code == 201, r.text
    img = r.json()
    assert img["format"] == "qcow2" and img["uploaded"] and Path(img["path"]).read_bytes() == data
    assert req(d, "GET", f"/images/{img['id']}", token=tok).json() == img
    # streamed without a length (chunked), declared format checked
    r = upload(d, tok, "cms-raw", iter([os.urandom(MIB)] * 3), format="raw")
    assert r.status_code == 201 and r.json()["size_mib"] == 3, r.text
    raw_file = Path(r.json()["path"])
    used = img["size_mib"] + 3
    r = upload(d, tok, "liar", data, format="raw")
    assert r.status_code == 400 and "declared raw but qemu-img reads it as qcow2" in r.json()["message"]
    r = upload(d, tok, "bad-ct", data, content_type="application/json")
    assert r.status_code == 400 and r.json()["message"].startswith("Content-Type")
    r = upload(d, tok, "bad-fmt", data, format="vmdk")
    assert r.status_code == 400 and "format" in r.json()["message"]
    assert upload(d, tok, "", data).status_code == 400
    # quota: refused before the body when Content-Length does not fit, and during it otherwise
    r = req(d, "PUT", "/quotas/user/max", json={"images": used})
    assert r.status_code == 200 and r.json()["images"] == {"used": used, "limit": used}, r.text
    r = upload(d, tok, "over", os.urandom(2 * MIB))
    assert r.status_code == 409 and r.json()["error"] == "QuotaExceeded", r.text
    assert "exceeds the remaining user image quota of 0 MiB" in r.json()["message"]
    req(d, "PUT", "/quotas/user/max", json={"images": used + 1})
    r = upload(d, tok, "over", iter([os.urandom(MIB)] * 2))  # chunked: caught mid-stream
    assert r.status_code == 409 and "passed the remaining image quota of 1 MiB" in r.json()["message"]
    names = [i["name"] for i in req(d, "GET", "/images", token=tok).json()]
    assert names == ["cms-img", "cms-raw"] and partials(d) == []
    assert req(d, "GET", "/quotas/user/max").json()["images"] == {"used": used, "limit": used + 1}
    # delete refunds the quota and removes the file
    assert raw_file.exists()
    assert req(d, "DELETE", "/images/cms-raw", token=tok).status_code == 204
    assert req(d, "GET", "/quotas/user/max").json()["images"]["used"] == used - 3
    assert not raw_file.exists()


def test_interrupted_upload_leaves_nothing(fresh_daemon: Daemon) -> None:
    d = fresh_daemon
    tok = user(d, "cut", "lhcb")
    before = sorted(p.name for p in (d.data_dir / "datastores" / "default").iterdir())
    host, port = "127.0.0.1", d.port
    with socket.create_connection((host, port)) as s:
        s.sendall((f"POST /api/v1/images/upload?name=cut HTTP/1.1\r\nHost: {host}\r\n"
                   f"Authorization: Bearer {tok}\r\nContent-Type: application/octet-stream\r\n"
                   f"Content-Length: {20 * MIB}\r\n\r\n").encode())
        s.sendall(os.urandom(3 * MIB))
        d.wait_for("a temp file while the upload is in flight", lambda: bool(partials(d)), 10)
    d.wait_for("temp file removed", lambda: partials(d) == [])
    after = sorted(p.name for p in (d.data_dir / "datastores" / "default").iterdir())
    assert after == before
    assert req(d, "GET", "/images/cut").status_code == 404
    assert req(d, "GET", "/quotas/user/cut").json()["images"]["used"] == 0


def test_openapi_describes_upload(fresh_daemon: Daemon) -> None:
    doc = httpx.get(f"{fresh_daemon.base_url}/openapi.json", timeout=10).json()
    op = doc["paths"]["/api/v1/images/upload"]["post"]
    assert list(op["requestBody"]["content"]) == ["application/octet-stream"]
    assert op["requestBody"]["content"]["application/octet-stream"]["schema"]["format"] == "binary"
    params = {p["name"]: p for p in op["parameters"] if p["in"] == "query"}
    assert {"name", "format", "persistent", "public", "datastore", "description"} <= set(params)
    assert params["name"]["required"] is True
    ok = op["responses"]["201"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/ImageOut")
    for code in ("400", "401", "403", "404", "409"):
        ref = op["responses"][code]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/Error"), code  # the one error schema of the whole API
    err = doc["components"]["schemas"]["Error"]
    assert set(err["required"]) == {"error", "message"}


def test_cli_upload_datastore_quota(daemon: Daemon, tmp_path: Path, qcow2: Path) -> None:
    d = daemon
    tok = user(d, "cli-up", "cli-up-vo")
    img = d.ok("image", "upload", "cli-img", str(qcow2), "--format", "qcow2", "--json", token=tok).json()
    assert img["name"] == "cli-img" and img["uploaded"] and img["owner_id"] != 0
    r = d.fails("image", "upload", "cli-img3", str(qcow2), "--format", "raw", token=tok)
    assert "declared raw but qemu-img reads it as qcow2" in r.err
    r = d.fails("image", "create", "cli-path", "--path", "/etc/shadow", token=tok)
    assert "only an administrator may register an image by path" in r.err
    d.ok("quota", "set", "user", "cli-up", "--images", "10G")
    q = d.ok("quota", "show", "user", "cli-up", "--json").json()["images"]
    assert q["limit"] == 10240 and q["used"] == img["size_mib"]
    assert "IMAGES" in d.ok("quota", "show", "user", "cli-up").out
    d.ok("quota", "set", "user", "cli-up", "--images", "1")
    r = d.fails("image", "upload", "cli-img4", str(qcow2), token=tok)
    assert "QuotaExceeded" in r.err or "quota" in r.err
    store = tmp_path / "store"
    store.mkdir()
    assert d.ok("datastore", "create", "cli-ds", str(store)).out.startswith("ID: ")
    assert "cli-ds" in d.ok("datastore", "list", token=tok).out
    assert d.ok("datastore", "show", "cli-ds", "--json").json()["path"] == str(store)
    d.fails("datastore", "create", "cli-ds2", str(store / "nope"))
    d.fails("datastore", "delete", "cli-ds", token=tok)
    d.ok("image", "delete", "cli-img", token=tok)
    d.ok("datastore", "delete", "cli-ds")
