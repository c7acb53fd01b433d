"""Bad input through the CLI: exit code 2, one clear line on stderr, and nothing changed.

Covers the issue's list -- broken template, unknown host, action in the wrong state, over quota,
wrong token, another VO's VM -- plus the client-side failures (unreachable daemon, unreadable
file, malformed size or option) that never reach the daemon.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemon import Daemon
from tests.support.ports import free_port


def _one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got: {text!r}"
    return lines[0]


def _all_vms(daemon: Daemon) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = daemon.api("GET", "/vms", params={"all": "true"})
    return rows


@pytest.fixture(scope="module")
def host(daemon: Daemon) -> str:
    daemon.api("POST", "/hosts", json={"name": "errhost", "cpu": 4, "memory": 8192})
    return "errhost"


@pytest.fixture(scope="module")
def vos(daemon: Daemon) -> dict[str, str]:
    """Two VOs with one user each; returns the users' tokens."""
    tokens = {}
    for vo, user in (("atlas", "alice"), ("cms", "carol")):  # set-up only: the CLI's own test is elsewhere
        daemon.api("POST", "/groups", json={"name": vo})
        tokens[user] = daemon.api("POST", "/users", json={"name": user, "group": vo})["token"]
    return tokens


@pytest.mark.parametrize(("name", "text", "line", "column"), [
    ("broken.tmpl", 'CPU = 1\nMEMORY = 512\nDISK = [ IMAGE = "base",\n  TARGET = ]\n', 4, 12),
    ("broken.json", '{"CPU": 1,\n  "MEMORY": }\n', 2, 13),
    ("broken.toml", 'CPU = 1\n[disk\n', 2, 6),
])
def test_broken_template_names_file_line_and_column(daemon: Daemon, tmp_path: Path, name: str, text: str,
                                                    line: int, column: int) -> None:
    before = len(_all_vms(daemon))
    path = tmp_path / name
    path.write_text(text)
    r = daemon.fails("vm", "create", str(path))
    msg = _one_line(r.err)
    assert f"{path}:{line}:{column}:" in msg, msg
    assert len(_all_vms(daemon)) == before


def test_broken_template_from_stdin(daemon: Daemon) -> None:
    r = daemon.fails("vm", "create", "-", stdin="CPU = 1\nMEMORY = [\n")
    assert re.search(r"<stdin>:\d+:\d+:", _one_line(r.err))


BAD_LOCAL_INPUT = [
    ("vm", "create", "/nonexistent/vm.tmpl"),
    ("vm", "create", "--cpu", "1", "--memory", "12X"),
    ("host", "create", "h", "--cpu", "2", "--memory", "-5G"),
    ("vm", "create"),
    ("vm", "show", "seven"),
    ("vm", "terminate", "9..3"),
    ("vm", "list", "--no-such-option"),
    ("quota", "set", "user", "admin"),
    ("vm", "recover", "1"),
    ("host", "create", "h", "--attr", "novalue"),
]


def test_bad_local_input_is_one_line_exit_2(daemon: Daemon) -> None:
    for r in daemon.cli_many(BAD_LOCAL_INPUT):
        assert r.code == 2, r
        assert "Traceback" not in r.err
        _one_line(r.err)


def test_unknown_host(daemon: Daemon) -> None:
    r = daemon.fails("host", "show", "nope")
    assert "nope" in _one_line(r.err) and "does not exist" in r.err
    daemon.fails("host", "show", "nope", "--json")
    daemon.fails("host", "disable", "nope")


def test_action_in_wrong_state_names_state_and_action(daemon: Daemon, host: str) -> None:
    vm_id = int(daemon.ok("vm", "create", "--cpu", "1", "--memory", "128", "--hold", "--json").json()[0])
    r = daemon.fails("vm", "suspend", str(vm_id))
    msg = _one_line(r.err)
    assert "suspend" in msg and "HOLD" in msg and str(vm_id) in msg, msg
    assert daemon.api("GET", f"/vms/{vm_id}")["state"] == "HOLD"
    # several IDs: each reported, the good one done, exit 2 for the bad one
    r = daemon.fails("vm", "release", str(vm_id), str(vm_id + 1000))
    assert r.out.strip() == f"VM {vm_id}: release: now PENDING"
    assert f"VM {vm_id + 1000}" in _one_line(r.err) and "does not exist" in r.err
    # a VM still on HOLD goes straight to DONE, where resume is refused and says so
    done_id = int(daemon.ok("vm", "create", "--cpu", "1", "--memory", "128", "--hold", "--json").json()[0])
    daemon.ok("vm", "terminate", str(done_id))
    r = daemon.fails("vm", "resume", str(done_id))
    assert "resume" in _one_line(r.err) and "DONE" in r.err


def test_over_quota_creates_nothing(daemon: Daemon, vos: dict[str, str]) -> None:
    daemon.ok("quota", "set", "user", "alice", "--vms", "1")
    shown = daemon.ok("quota", "show", "user", "alice", "--json").json()
    assert shown["vms"]["limit"] == 1
    r = daemon.fails("vm", "create", "--cpu", "1", "--memory", "128", "-m", "2", token=vos["alice"])
    assert "quota" in _one_line(r.err).lower()
    assert daemon.ok("vm", "list", "--all", "--json", token=vos["alice"]).json() == []
    assert daemon.ok("quota", "show", "user", "alice", "--json").json()["vms"]["used"] == 0
    daemon.api("PUT", "/quotas/user/alice", json={"vms": -1})


@pytest.mark.parametrize("token", ["vc_not-a-real-token", ""])
def test_wrong_or_missing_token(daemon: Daemon, token: str) -> None:
    env = daemon.cli_env(token)
    if not token:
        del env["VOCLOUD_TOKEN"]
    r = daemon.fails("vm", "list", env=env)
    msg = _one_line(r.err)
    assert "VOCLOUD_TOKEN" in msg and "--token" in msg, msg


def test_unreachable_daemon(daemon: Daemon) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    r = daemon.fails("vm", "list", env=daemon.cli_env(VOCLOUD_URL=url))
    assert _one_line(r.err) == f"error: cannot reach vocloud at {url}: is `vocloud serve` running?"


def test_another_vos_vm_is_invisible_and_untouchable(daemon: Daemon, host: str, vos: dict[str, str]) -> None:
    vm_id = daemon.ok("vm", "create", "--cpu", "1", "--memory", "128", "--hold", "--json",
                      token=vos["alice"]).json()[0]
    before = daemon.api("GET", f"/vms/{vm_id}")
    assert before["group"] == "atlas" and before["state"] == "HOLD"

    assert vm_id not in [v["id"] for v in daemon.ok("vm", "list", "--json", token=vos["carol"]).json()]
    refused = daemon.cli_many([("vm", "show", str(vm_id)), ("vm", "terminate", str(vm_id)),
                               ("vm", "terminate", "--hard", str(vm_id)), ("vm", "release", str(vm_id)),
                               ("vm", "delete", str(vm_id))], token=vos["carol"])
    for r in refused:
        assert r.code == 2, r
        assert "carol" in _one_line(r.err) and str(vm_id) in r.err

    after = daemon.api("GET", f"/vms/{vm_id}")
    assert (after["state"], after["history"]) == (before["state"], before["history"])
    # its own VO still sees and controls it
    assert daemon.ok("vm", "show", str(vm_id), "--json", token=vos["alice"]).json()["state"] == "HOLD"
    daemon.ok("vm", "terminate", str(vm_id), token=vos["alice"])
    # and a VO member is no administrator
    r = daemon.fails("host", "create", "rogue", "--cpu", "1", "--memory", "1G", token=vos["carol"])
    assert "administrator" in _one_line(r.err)
