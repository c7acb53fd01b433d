"""The rest of the command tree against a live daemon: templates, networks, images, accounts,
ACLs, ``--json`` on read commands, and the endpoint/token lookup order."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from tests.support.daemon import Daemon
from vocloud.app.daemon import TOKEN_FILE
from vocloud.cli.credentials import ADMIN_TOKEN_FILE

NETWORK = """NAME = "lan"
BRIDGE = "br0"
AR = [ TYPE = "IP4", IP = "10.1.0.10", SIZE = "4" ]
"""


def test_templates_json_toml_and_instantiate(daemon: Daemon, tmp_path: Path) -> None:
    daemon.ok("host", "create", "objhost", "--cpu", "4", "--memory", "4G")
    (tmp_path / "w.json").write_text(json.dumps({"NAME": "worker", "CPU": 1, "MEMORY": 256}))
    (tmp_path / "s.toml").write_text('NAME = "small"\nCPU = 0.5\nMEMORY = 128\n[CONTEXT]\nROLE = "wn"\n')
    tid = int(daemon.ok("template", "create", str(tmp_path / "w.json")).out.split()[-1])
    daemon.ok("template", "create", str(tmp_path / "s.toml"), "--public")
    rows = daemon.ok("template", "list", "--json").json()
    assert {r["name"] for r in rows} == {"worker", "small"}
    assert 'ROLE="wn"' in daemon.ok("template", "show", "small").out.replace(" ", "")
    assert daemon.ok("--json", "template", "show", str(tid)).json()["name"] == "worker"

    ids = daemon.ok("template", "instantiate", "worker", "-m", "2", "--attr", "memory=512", "--hold",
                    "--json").json()
    assert len(ids) == 2
    vm = daemon.ok("vm", "show", str(ids[0]), "--json").json()
    assert (vm["memory"], vm["name"], vm["state"]) == (512, "worker-0", "HOLD")
    daemon.ok("vm", "terminate", "--hard", f"{ids[0]}..{ids[1]}")
    daemon.ok("template", "delete", "small")
    daemon.fails("template", "show", "small")


def test_vnet_leases_table_hold_and_release(daemon: Daemon, tmp_path: Path) -> None:
    (tmp_path / "lan.net").write_text(NETWORK)
    daemon.ok("vnet", "create", str(tmp_path / "lan.net"))
    daemon.ok("vnet", "hold", "lan", "10.1.0.11")
    (tmp_path / "vm.tmpl").write_text('CPU = 1\nMEMORY = 128\nNIC = [ NETWORK = "lan" ]\n')
    vm_id = daemon.ok("vm", "create", str(tmp_path / "vm.tmpl"), "--hold", "--json").json()[0]

    shown = daemon.ok("vnet", "show", "lan").out
    leases = shown.split("\nLEASES\n", 1)[1].splitlines()
    assert leases[0].split() == ["IP", "MAC", "VM", "HELD"]
    assert leases[1].split() == ["10.1.0.10", "02:00:0a:01:00:0a", str(vm_id), "no"]
    assert leases[2].split() == ["10.1.0.11", "02:00:0a:01:00:0b", "-", "yes"]
    assert daemon.ok("vnet", "list", "--json").json()[0]["used_leases"] == 2
    assert "10.1.0.10" in daemon.ok("vm", "show", str(vm_id)).out

    daemon.fails("vnet", "hold", "lan", "10.1.0.10")  # leased to the VM
    daemon.ok("vnet", "release", "lan", "10.1.0.11")
    daemon.ok("vm", "terminate", str(vm_id))
    daemon.ok("vm", "delete", str(vm_id))
    assert daemon.ok("vnet", "show", "lan", "--json").json()["leases"] == []
    daemon.ok("vnet", "delete", "lan")


def test_vnets_belong_to_groups_and_reservations(daemon: Daemon, tmp_path: Path) -> None:
    """Issue 9 finding 5 through the CLI and REST: a VO user cannot wire a network, reserves a
    block of one shared with it, and an administrator cannot overlap ranges on one bridge."""
    daemon.ok("group", "create", "netvo")
    daemon.ok("group", "create", "othervo")
    tokens = {}
    for user, vo in (("nina", "netvo"), ("otto", "othervo")):
        out = daemon.ok("user", "create", user, "--group", vo).out
        tokens[user] = re.search(r"^TOKEN: (\S+)$", out, re.MULTILINE).group(1)  # type: ignore[union-attr]
    nina, otto = tokens["nina"], tokens["otto"]
    (tmp_path / "shared.net").write_text('NAME="shared"\nBRIDGE="vcbrnets"\nAR=[IP="10.77.0.1", SIZE="8"]\n')
    r = daemon.fails("vnet", "create", str(tmp_path / "shared.net"), token=nina)
    assert "only an administrator may create a network" in r.err and "BRIDGE" in r.err
    err = daemon.refused("POST", "/vnets", nina, json={"template": (tmp_path / "shared.net").read_text()})
    assert err.status == 403 and err.code == "Forbidden"
    assert "shared" not in [n["name"] for n in daemon.api("GET", "/vnets")]

    net = daemon.ok("vnet", "create", str(tmp_path / "shared.net"), "--group", "netvo", "--json").json()
    assert net["bridge"] == "vcbrnets" and net["group_id"] == daemon.api("GET", "/groups/netvo")["id"]
    (tmp_path / "copy.net").write_text('NAME="copy"\nBRIDGE="vcbrnets"\nAR=[IP="10.77.0.8", SIZE="4"]\n')
    r = daemon.fails("vnet", "create", str(tmp_path / "copy.net"))
    assert "address 10.77.0.8 is already in network shared on bridge vcbrnets" in r.err

    res = daemon.ok("vnet", "reserve", "shared", "--size", "3", "--name", "nina-r", "--ip", "10.77.0.4",
                    "--json", token=nina).json()
    assert (res["name"], res["parent"], res["bridge"], res["ranges"][0]["ip"], res["size"]) == (
        "nina-r", "shared", "vcbrnets", "10.77.0.4", 3)
    text = daemon.ok("vnet", "reserve", "shared", "--size", "2", token=nina).out
    assert "reserved 2 addresses from 10.77.0.1 of shared as shared-netvo-10-77-0-1" in text
    r = daemon.fails("vnet", "reserve", "shared", "--size", "4", token=nina)
    assert "no free block of 4" in r.err
    r = daemon.fails("vnet", "reserve", "shared", "--size", "1", token=otto)
    assert "may not USE" in r.err
    for body, status in (({"size": 0}, 400), ({"size": 10**40}, 400), ({"size": 1, "bogus": 1}, 400),
                         ({"size": 300}, 400), ({"size": 1, "ip": "10.77.0.5"}, 409)):
        # raw HTTP: 10**40 is beyond what the REST client's JSON encoder (64-bit) may send
        resp = httpx.post(f"{daemon.url}/vnets/shared/reserve", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {nina}"})
        assert resp.status_code == status, (body, resp.text)
    shown = daemon.ok("vnet", "show", "shared").out
    rows = shown.split("\nRESERVATIONS\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [row.split()[1:] for row in rows[1:]] == [
        ["nina-r", str(net["group_id"]), "10.77.0.4", "3"],
        ["shared-netvo-10-77-0-1", str(net["group_id"]), "10.77.0.1", "2"]]
    child = daemon.ok("vnet", "show", "nina-r", token=nina).out
    assert re.search(r"^PARENT\s+: shared$", child, re.MULTILINE)
    assert daemon.ok("vnet", "show", "shared", "--json", token=nina).json()["reserved"] == 5

    (tmp_path / "vm.tmpl").write_text('CPU = 0.1\nMEMORY = 64\nNIC = [ NETWORK = "nina-r" ]\n')
    vm_id = daemon.ok("vm", "create", str(tmp_path / "vm.tmpl"), "--hold", "--json", token=nina).json()[0]
    assert daemon.ok("vm", "show", str(vm_id), "--json", token=nina).json()["leases"][0]["ip"] == "10.77.0.4"
    (tmp_path / "bridge.tmpl").write_text('CPU = 0.1\nMEMORY = 64\n'
                                          'NIC = [ NETWORK = "nina-r", BRIDGE = "br0" ]\n')
    assert "BRIDGE" in daemon.fails("vm", "create", str(tmp_path / "bridge.tmpl"), token=nina).err
    assert "in use" in daemon.fails("vnet", "delete", "nina-r", token=nina).err
    assert "only an administrator" in daemon.fails("vnet", "delete", "shared", token=nina).err
    daemon.ok("vm", "terminate", str(vm_id), token=nina)
    daemon.ok("vm", "delete", str(vm_id), token=nina)
    daemon.ok("vnet", "delete", "nina-r", "shared-netvo-10-77-0-1", token=nina)
    daemon.ok("vnet", "delete", "shared")
    for user in tokens:
        daemon.ok("user", "delete", user)
    daemon.ok("group", "delete", "netvo")
    daemon.ok("group", "delete", "othervo")


def test_images(daemon: Daemon, tmp_path: Path) -> None:
    disk = daemon.data_dir / "datastores" / "default" / "base.img"  # by path: inside a datastore
    disk.write_bytes(b"\0" * (3 << 20))
    daemon.fails("image", "create", "outside", "--path", str(tmp_path))
    daemon.ok("image", "create", "base", "--path", str(disk))
    row = daemon.ok("image", "list").out.splitlines()[1].split()
    assert row[1:5] == ["base", "READY", "raw", "3M"]
    daemon.ok("image", "persistent", "base")
    daemon.ok("image", "disable", "base")
    img = daemon.ok("image", "show", "base", "--json").json()
    assert (img["state"], img["persistent"]) == ("DISABLED", True)
    r = daemon.fails("image", "disable", "base")
    assert "DISABLED" in r.err
    daemon.ok("image", "delete", "base")


def test_users_groups_acls(daemon: Daemon) -> None:
    daemon.ok("group", "create", "lhcb", "--description", "LHCb VO")
    created = daemon.ok("user", "create", "lena", "--group", "lhcb").out
    token = re.search(r"^TOKEN: (\S+)$", created, re.MULTILINE).group(1)  # type: ignore[union-attr]
    me = daemon.ok("user", "me", "--json", token=token).json()
    assert (me["name"], me["group"], me["is_admin"]) == ("lena", "lhcb", False)
    assert [u["name"] for u in daemon.ok("user", "list", "--json", token=token).json()] == ["lena"]
    assert "lena" in daemon.ok("group", "show", "lhcb").out

    new = daemon.ok("user", "token", "lena", "--json").json()["token"]
    daemon.fails("user", "me", token=token)  # the old token is gone
    daemon.ok("user", "disable", "lena")
    daemon.fails("user", "me", token=new)
    daemon.ok("user", "enable", "lena")
    daemon.ok("user", "me", token=new)

    acl = daemon.ok("acl", "create", "@1", "VM", "*", "USE", "--json").json()
    assert acl["id"] in [a["id"] for a in daemon.ok("acl", "list", "--json").json()]
    daemon.ok("acl", "delete", str(acl["id"]))
    daemon.fails("acl", "create", "someone", "VM", "*", "USE")
    daemon.ok("user", "delete", "lena")
    daemon.ok("group", "delete", "lhcb")


def test_every_read_command_has_json(daemon: Daemon) -> None:
    """The read commands the other tests do not already parse as JSON, and the global flag."""
    results = daemon.cli_many([
        ("image", "list", "--json"), ("group", "list", "--json"), ("group", "show", "admin", "--json"),
        ("user", "show", "admin", "--json"), ("--json", "host", "list"),
        ("--json", "quota", "show", "group", "admin"), ("quota", "show", "group", "admin", "--json"),
    ])
    for r in results:
        assert r.code == 0, r
        assert isinstance(r.json(), list | dict), r.args
    assert [h["name"] for h in results[4].json()] == [h["name"] for h in daemon.api("GET", "/hosts")]
    assert results[5].json() == results[6].json()


def test_token_and_endpoint_lookup_order(daemon: Daemon) -> None:
    assert ADMIN_TOKEN_FILE == TOKEN_FILE
    # no VOCLOUD_TOKEN: the daemon's admin.token in VOCLOUD_HOME is used (front-end admin)
    env = daemon.cli_env()
    del env["VOCLOUD_TOKEN"]
    env["VOCLOUD_HOME"] = str(daemon.data_dir)
    assert daemon.ok("user", "me", "--json", env=env).json()["name"] == "admin"
    # ~/.config/vocloud/token wins over admin.token ...
    cfg = daemon.home / ".config" / "vocloud"
    cfg.mkdir(parents=True, exist_ok=True)
    (cfg / "token").write_text("vc_wrong\n")
    r = daemon.fails("user", "me", env=env)
    assert str(cfg / "token") in r.err
    # ... VOCLOUD_TOKEN wins over the file, --token over everything
    assert daemon.ok("user", "me", env={**env, "VOCLOUD_TOKEN": daemon.token}).code == 0
    assert daemon.ok("--token", daemon.token, "user", "me", env=env).code == 0
    (cfg / "token").unlink()
    # --url wins over VOCLOUD_URL
    assert daemon.ok("--url", daemon.base_url, "vm", "list", env={**env, "VOCLOUD_URL": "http://127.0.0.1:1"})


def test_host_update_reserves_and_overcommits(daemon: Daemon) -> None:
    daemon.ok("host", "create", "rhost", "--cpu", "2", "--memory", "4G", "--attr", "RESERVED_MEM=1024")
    assert daemon.ok("host", "show", "rhost", "--json").json()["total_mem"] == 3072
    out = daemon.ok("host", "update", "rhost", "--attr", "RESERVED_CPU=-2").out
    assert "4 CPU" in out, out
    h = daemon.ok("host", "update", "rhost", "--attr", "reserved_mem=", "--json").json()
    assert (h["total_cpu"], h["total_mem"], h["attrs"].get("RESERVED_CPU")) == (4.0, 4096, "-2"), h
    bad = daemon.fails("host", "update", "rhost", "--attr", "RESERVED_CPU=many")
    assert "RESERVED_CPU must be a number" in bad.err, bad.err
    daemon.fails("host", "update", "rhost", "--attr", "no-equals-sign")
    daemon.fails("host", "update", "nosuchhost", "--attr", "A=1")
    assert daemon.ok("host", "show", "rhost", "--json").json()["total_cpu"] == 4.0


def test_vm_log_and_json_on_action_commands(daemon: Daemon) -> None:
    """``vm log`` prints the console (sim guests report their life), ``--json`` on action
    commands gives one result per VM with the failures in it, and the exit code still says 2."""
    daemon.ok("host", "create", "logsim", "--vmm", "sim", "--cpu", "4", "--memory", "4G")
    created = daemon.ok("vm", "create", "--cpu", "0.5", "--memory", "128", "--name", "logvm",
                        "--json")
    [vm_id] = created.json()
    daemon.wait_for("logvm RUNNING", lambda: daemon.api("GET", f"/vms/{vm_id}")["state"] == "RUNNING")
    log = daemon.ok("vm", "log", str(vm_id))
    assert re.search(r"sim guest \S+ \(logvm\): state \w+ since [\d.]+, boots 1", log.out), log.out
    as_json = daemon.ok("vm", "log", str(vm_id), "--json").json()
    assert as_json["id"] == vm_id and as_json["state"] == "RUNNING"
    assert as_json["log"].startswith(log.out.split(": state")[0])
    daemon.fails("vm", "log", str(vm_id), "--json", "--follow")

    r = daemon.cli("vm", "poweroff", str(vm_id), "999999", "--json")
    assert r.code == 2, r
    rows = r.json()
    assert rows == [{"ref": vm_id, "ok": True, "action": "poweroff", "state": "SHUTDOWN_POWEROFF"},
                    {"ref": 999999, "ok": False, "error": "VM 999999 does not exist"}]
    assert rows[1]["ref"] == 999999 and rows[1]["ok"] is False and "999999" in rows[1]["error"]
    daemon.wait_for("logvm POWEROFF", lambda: daemon.api("GET", f"/vms/{vm_id}")["state"] == "POWEROFF")
    plain = daemon.ok("vm", "terminate", "--hard", str(vm_id))
    assert plain.out == f"VM {vm_id}: terminate-hard: now EPILOG\n"
    r = daemon.cli("--json", "vm", "resume", str(vm_id))  # the global flag works too
    assert r.code == 2 and r.json()[0]["ok"] is False
