"""The trust boundary from the outside: ``vocloud vm attributes``, refusals through the CLI and
REST, and the ``restricted_attrs`` setting reaching a real daemon (docs/security.md)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx

from tests.support.daemon import Daemon, start_daemon, stop_daemon
from vocloud.model.attributes import CATALOGUE


def _user(daemon: Daemon, name: str, group: str) -> str:
    daemon.ok("group", "create", group)
    created = daemon.ok("user", "create", name, "--group", group).out
    return re.search(r"^TOKEN: (\S+)$", created, re.MULTILINE).group(1)  # type: ignore[union-attr]


def test_attributes_listed_for_users_and_refusals_name_them(daemon: Daemon, tmp_path: Path) -> None:
    token = _user(daemon, "sec-user", "sec-vo")
    shown = daemon.ok("vm", "attributes", token=token).out
    for a in CATALOGUE:
        assert a.name in shown
    assert re.search(r"^VIRTFS\s+ADMIN\s", shown, re.MULTILINE)
    doc = daemon.ok("vm", "attributes", "--json", token=token).json()
    assert {r["name"] for r in doc["attributes"]} == {a.name for a in CATALOGUE}
    assert daemon.refused("GET", "/attributes", token="").status == 401

    tmpl = tmp_path / "evil.one"
    tmpl.write_text('CPU=0.5\nMEMORY=64\nVIRTFS="/"\nKERNEL_CMD="init=/bin/cat /etc/shadow"\n')
    r = daemon.fails("vm", "create", str(tmpl), token=token)
    assert "attribute VIRTFS is restricted to administrators" in r.err
    tmpl.write_text('CPU=0.0004\nMEMORY=64\n')
    assert "CPU must be at least 0.01" in daemon.fails("vm", "create", str(tmpl), token=token).err
    assert daemon.api("GET", "/vms", token=token) == []

    err = daemon.refused("POST", "/vms", token, json={"template": "", "cpu": 0.0004})
    assert err.status == 400 and "CPU must be at least 0.01" in err.message
    deep = '{"CPU": 1, "X": ' + "[" * 50_000 + "]" * 50_000 + "}"
    err = daemon.refused("POST", "/vms", token, json={"template": deep, "format": "json"})
    assert err.status == 400, err  # the size limit; depth is checked in the service tests
    err = daemon.refused("POST", "/vms", token, json={"template": "CPU=0.01\nMEMORY=1\n", "count": 101})
    assert err.status == 400 and "max_vms_per_request" in err.message
    # not JSON (NaN, Infinity) or out of range: raw HTTP, which the REST client cannot send
    for body in ('{"cpu": NaN}', '{"cpu": Infinity}', '{"cpu": -3}', '{"vms": 99999999999999999999}'):
        resp = httpx.put(f"{daemon.url}/quotas/group/sec-vo", content=body, timeout=10,
                         headers={"Authorization": f"Bearer {daemon.token}",
                                  "Content-Type": "application/json"})
        assert resp.status_code == 400, (body, resp.status_code, resp.text)
        assert "cpu" in resp.json()["message"] or "vms" in resp.json()["message"], resp.text


def test_site_restricted_attrs_setting_reaches_the_daemon(tmp_path: Path) -> None:
    d = start_daemon(tmp_path, {"VOCLOUD_RESTRICTED_ATTRS": "CONTEXT/SSH_PUBLIC_KEY",
                                "VOCLOUD_MAX_VMS_PER_REQUEST": "3"})
    try:
        token = _user(d, "alice", "atlas")
        doc = d.ok("vm", "attributes", "--json", token=token).json()
        assert doc["site_restricted"] == ["CONTEXT/SSH_PUBLIC_KEY"]
        assert "CONTEXT/SSH_PUBLIC_KEY" in d.ok("vm", "attributes", token=token).out
        tmpl = tmp_path / "key.one"
        tmpl.write_text('CPU=0.5\nMEMORY=64\nCONTEXT=[SSH_PUBLIC_KEY="ssh-ed25519 AAAA"]\n')
        err = d.fails("vm", "create", str(tmpl), token=token).err
        assert "attribute CONTEXT/SSH_PUBLIC_KEY is restricted to administrators" in err
        assert "between 1 and 3" in d.fails("vm", "create", "--cpu", "0.1", "--memory", "8", "-m", "4",
                                            token=token).err
    finally:
        stop_daemon(d)
