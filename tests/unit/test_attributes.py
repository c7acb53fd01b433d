"""The attribute catalogue (model/attributes.py): default-deny, restricted, internal, documented."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from vocloud.errors import Forbidden, InvalidInput
from vocloud.model.attributes import (
    CATALOGUE,
    catalogue_rows,
    check_template,
    internal_attributes,
    parse_restricted_setting,
    restricted_violations,
    unknown_attributes,
)
from vocloud.model.template import Template, nesting_depth, parse_template
from vocloud.service.policy import VMPolicy

DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"

#: What the issue says must be administrators-only: host paths, devices, bridges, VLANs, MACs,
#: machine types, accelerators, kernel/initrd/command line, 9p exports.
MUST_BE_RESTRICTED = {"KERNEL", "INITRD", "KERNEL_CMD", "MACHINE", "ACCEL", "VIRTFS",
                      "OS/KERNEL", "OS/INITRD", "OS/KERNEL_CMD", "OS/ROOT",
                      "NIC/BRIDGE", "NIC/MAC", "NIC/VLAN_ID", "NIC/PHYDEV"}


def test_catalogue_is_unique_and_well_formed() -> None:
    names = [a.name for a in CATALOGUE]
    assert len(names) == len(set(names))
    for a in CATALOGUE:
        assert a.name == a.name.upper() and a.description and a.consumer
        assert a.scope == (a.name.split("/")[0] if "/" in a.name else "VM")
        assert not (a.internal and not a.restricted)


def test_everything_that_reaches_the_host_is_restricted() -> None:
    restricted = {a.name for a in CATALOGUE if a.restricted and not a.internal}
    assert restricted == MUST_BE_RESTRICTED
    internal = {a.name for a in CATALOGUE if a.internal}
    assert {"DISK/SOURCE", "DISK/PERSISTENT", "DISK/FORMAT", "DISK/SHA256"} <= internal


def test_every_catalogue_entry_is_documented_as_the_code_says() -> None:
    """docs/security.md holds the table; each row must match the catalogue exactly."""
    rows = {}
    for line in DOCS.read_text().splitlines():
        m = re.match(r"\| `([A-Z0-9_/]+)` \| (user|admin|internal) \| (.*) \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3), m.group(4))
    for a in CATALOGUE:
        assert rows.get(a.name) == (a.access, a.description, a.consumer), a.name
    assert set(rows) == {a.name for a in CATALOGUE}
    for setting in ("restricted_attrs", "max_vms_per_request", "max_template_bytes", "max_template_depth"):
        assert f"`{setting}`" in DOCS.read_text()


def test_restricted_violations_lists_paths_in_template_order() -> None:
    t = parse_template('CPU=1\nVIRTFS="/"\nNIC=[NETWORK="a", BRIDGE="br0"]\nNIC=[NETWORK="b", MAC="x"]\n'
                       'KERNEL="/k"\nCONTEXT=[SSH_PUBLIC_KEY="k"]\n')
    assert restricted_violations(t) == ["VIRTFS", "NIC/BRIDGE", "NIC/MAC", "KERNEL"]
    assert restricted_violations(t, frozenset({"CONTEXT/SSH_PUBLIC_KEY", "CPU"})) == [
        "CPU", "VIRTFS", "NIC/BRIDGE", "NIC/MAC", "KERNEL", "CONTEXT/SSH_PUBLIC_KEY"]
    assert restricted_violations(parse_template('CPU=1\nDISK=[IMAGE="x"]\nKERNEL_IMAGE="k"\n')) == []


def test_internal_attributes_are_not_restricted_violations_but_refused() -> None:
    t = parse_template('DISK=[IMAGE="x", PERSISTENT="YES", SOURCE="/etc/shadow"]\nVMID=3\n')
    assert restricted_violations(t) == []
    assert internal_attributes(t) == ["DISK/PERSISTENT", "DISK/SOURCE", "VMID"]
    for admin in (False, True):
        with pytest.raises(InvalidInput, match="attribute DISK/PERSISTENT cannot be given"):
            check_template(t, admin)


def test_unknown_attributes() -> None:
    t = parse_template('CPU=1\nFOO=1\nRAW=[DATA="x"]\nDISK=[IMAGE="x", CACHE="none"]\n'
                       'CONTEXT=[ANY_NAME="1"]\n')
    assert unknown_attributes(t) == ["FOO", "RAW", "DISK/CACHE"]
    with pytest.raises(InvalidInput) as info:
        check_template(parse_template('MEMORY=1\nVIRTFSS="/"\n'), is_admin=True)
    assert info.value.message.startswith("unknown attribute VIRTFSS (did you mean VIRTFS?)")
    assert info.value.details == {"attribute": "VIRTFSS"}


def test_check_template_forbids_restricted_for_users_only() -> None:
    t = parse_template('CPU=1\nNIC=[NETWORK="a", BRIDGE="br0"]\n')
    with pytest.raises(Forbidden) as info:
        check_template(t, is_admin=False)
    assert info.value.message == "attribute NIC/BRIDGE is restricted to administrators"
    assert info.value.details == {"attribute": "NIC/BRIDGE"}
    check_template(t, is_admin=True)
    check_template(Template({"CPU": "1", "CONTEXT": {"A": "1"}}), is_admin=False)


def test_restricted_setting_is_parsed_and_checked() -> None:
    assert parse_restricted_setting("") == frozenset()
    assert parse_restricted_setting(" context/ssh_public_key , NIC/IP,") == frozenset(
        {"CONTEXT/SSH_PUBLIC_KEY", "NIC/IP"})
    for bad in ("NIC/BRIDGEE", "FOO", "CONTEXT/1A", "CONTEXT/A-B", "DISK/X"):
        with pytest.raises(InvalidInput, match="setting restricted_attrs: unknown attribute"):
            parse_restricted_setting(bad)


def test_policy_defaults_and_bounds() -> None:
    p = VMPolicy()
    assert (p.max_count(False), p.max_count(True)) == (100, 10_000)
    assert (p.max_template_bytes, p.max_template_depth) == (64 * 1024, 8)
    for kw in ({"max_vms_per_request": 0}, {"max_vms_per_request": 10_001},
               {"max_template_bytes": 10}, {"max_template_depth": 2}):
        with pytest.raises(InvalidInput, match="setting max_"):
            VMPolicy(**kw)  # type: ignore[arg-type]


def test_rows_for_the_api() -> None:
    rows = {r["name"]: r for r in catalogue_rows()}
    assert rows["VIRTFS"]["access"] == "admin" and rows["DISK/PERSISTENT"]["access"] == "internal"
    assert rows["CPU"]["access"] == "user"


@pytest.mark.parametrize(("text", "depth"), [
    ("{}", 1), ('{"a": [1, {"b": 2}]}', 3), ('{"a": "[[[[[[[[[[[["}', 1),
    ('{"a": "\\"[[[[[[[[[[[["}', 1), ("a = '[[[[[[[[[[['", 0), ("# [[[[[[[[[[\na = [[1]]", 2),
])
def test_nesting_depth(text: str, depth: int) -> None:
    assert nesting_depth(text, 8) == depth


def test_nesting_depth_is_linear_and_stops_at_the_limit() -> None:
    deep = "[" * 1_000_000
    started = time.monotonic()
    assert nesting_depth(deep, 8) == 9
    assert nesting_depth('"' + "x" * 1_000_000 + '"', 8) == 0
    assert time.monotonic() - started < 1.0


def test_parse_template_limits() -> None:
    with pytest.raises(InvalidInput, match="larger than 100 bytes"):
        parse_template("A=" + "x" * 200, max_bytes=100)
    with pytest.raises(InvalidInput, match="larger than 100 bytes"):
        parse_template("A=" + "é" * 60, max_bytes=100)  # 120 UTF-8 bytes
    assert parse_template("A=" + "x" * 200, max_bytes=None).get("A") == "x" * 200
    with pytest.raises(InvalidInput, match="nests deeper than 3 levels"):
        parse_template('{"A": [[[[1]]]]}', max_depth=3)
