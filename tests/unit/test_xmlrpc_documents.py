"""vocloud objects as OpenNebula XML: every document is bound by pyone's own generated bindings
(built from OpenNebula's XSD schemas) with no warning, and the state numbers are pyone's."""

from __future__ import annotations

import functools
import inspect
import re
from typing import Any

import pytest
from lxml import etree
from pyone import HOST_STATES, IMAGE_STATES, LCM_STATE, VM_STATE
from pyone.bindings import supbind

from vocloud.api.xmlrpc import documents as d
from vocloud.model.lifecycle import HostState, ImageState, VMState
from vocloud.model.template import parse_template

NAMES = {"users": {0: "admin", 1: "alice"}, "groups": {0: "admin", 1: "vo"}}
VM = {"id": 3, "name": "v", "state": "RUNNING", "owner_id": 1, "group_id": 1, "user": "alice",
      "group": "vo", "host": "h1", "host_id": 0, "cpu": 0.5, "memory": 128, "deploy_id": "vc-3",
      "error": "boom \x01", "created_at": 1.0e9, "started_at": 1.0e9 + 5, "ended_at": None,
      "template": 'NAME="v"\nCPU="0.5"\nMEMORY="128"\nVCPU="1"\nDISK=[IMAGE_ID="1", SOURCE="/x"]\n'
                  'NIC=[IP="10.0.0.2", NETWORK="n"]\nNIC=[IP="10.0.1.2", NETWORK="m"]\n'
                  'CONTEXT=[A="b<&>]]>"]\nSCHED_REQUIREMENTS="ID>0"\nFOO="bar"\nVMID="3"'}
HOST = {"id": 0, "name": "h1", "state": "MONITORED", "vmm": "sim", "cluster": "default",
        "running_vms": 1, "total_cpu": 4.0, "alloc_cpu": 0.5, "free_cpu": 3.5, "total_mem": 4096,
        "alloc_mem": 128, "free_mem": 3968, "used_cpu": 0.1, "used_mem": 10, "attrs": {"A": "b"},
        "error": "", "monitored_at": 1.0e9, "vms": [3]}
TEMPLATE = {"id": 1, "name": "t", "owner_id": 1, "group_id": 1, "public": False,
            "body": 'NAME="t"\nCPU="1"\nMEMORY="64"\nDISK=[IMAGE="i"]', "created_at": 1e9}
IMAGE = {"id": 1, "name": "i", "state": "READY", "path": "/p", "format": "qcow2", "size_mib": 10,
         "persistent": False, "public": True, "running_vms": 0, "owner_id": 0, "group_id": 0,
         "description": "d", "datastore_id": 0}
NET = {"id": 1, "name": "n", "bridge": "br0", "vlan_id": 7, "phydev": None, "public": False,
       "owner_id": 0, "group_id": 0, "parent_id": None, "size": 4, "used_leases": 1,
       "leases": [{"ip": "10.0.0.2", "mac": "02:00:0a:00:00:02", "vm_id": 3, "held": False},
                  {"ip": "10.0.0.3", "mac": "02:00:0a:00:00:03", "vm_id": None, "held": True}],
       "ranges": [{"ip": "10.0.0.1", "size": 4, "mac": "02:00:0a:00:00:01"}],
       "template": 'NAME="n"\nAR=[IP="10.0.0.1",SIZE="4"]'}
QUOTA = {"vms": {"used": 1, "limit": -1}, "cpu": {"used": 0.5, "limit": 2.0},
         "memory": {"used": 128, "limit": -1}, "images": {"used": 0, "limit": -1}}
USER = {"id": 1, "name": "alice", "group_id": 1, "group": "vo", "is_admin": False, "enabled": True,
        "quota": QUOTA}
GROUP = {"id": 1, "name": "vo", "description": "x", "quota": QUOTA}

DOCUMENTS: dict[str, tuple[str, str]] = {
    "vm": ("VM", d.vm_xml(VM)),
    "vmpool": ("VM_POOL", d.vm_pool_xml([VM, dict(VM, id=4, host_id=None, state="PENDING")])),
    "accounting": ("HISTORY_RECORDS", d.accounting_xml([VM])),
    "host": ("HOST", d.host_xml(HOST)),
    "hostpool": ("HOST_POOL", d.host_pool_xml([HOST, dict(HOST, id=1, name="h2", state="ERROR")])),
    "template": ("VMTEMPLATE", d.vmtemplate_xml(TEMPLATE, NAMES)),
    "templatepool": ("VMTEMPLATE_POOL", d.vmtemplate_pool_xml([TEMPLATE], NAMES)),
    "image": ("IMAGE", d.image_xml(IMAGE, NAMES)),
    "imagepool": ("IMAGE_POOL", d.image_pool_xml([IMAGE], NAMES)),
    "vnet": ("VNET", d.vnet_xml(NET, NAMES)),
    "vnetpool": ("VNET_POOL", d.vnet_pool_xml([NET], NAMES)),
    "user": ("USER", d.user_xml(USER)),
    "userpool": ("USER_POOL", d.user_pool_xml([USER])),
    "group": ("GROUP", d.group_xml(GROUP, [1, 2])),
    "grouppool": ("GROUP_POOL", d.group_pool_xml([(GROUP, [1])])),
    "acl": ("ACL_POOL", d.acl_pool_xml([{"id": 0, "subject": "@1", "resource": "VM", "target": "*",
                                          "rights": "USE"}])),
    "config": ("OPENNEBULA_CONFIGURATION", d.config_xml("7.0.0")),
}


def _bind(xml: str) -> tuple[Any, list[str]]:
    """What pyone's ``bindings.parseString`` does, with its warnings collected, not printed."""
    node = etree.fromstring(xml.encode())
    tag, cls = supbind.get_root_tag(node)
    assert cls is not None, f"pyone has no binding for <{tag}>"
    collector = supbind.GdsCollector_()
    obj = cls.factory()
    obj.build(node, gds_collector_=collector)
    return obj, collector.get_messages()


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_pyones_bindings_read_every_document_without_a_warning(name: str) -> None:
    root, xml = DOCUMENTS[name]
    assert xml.startswith(f"<{root}>")
    obj, warnings = _bind(xml)
    assert warnings == []
    assert type(obj).__name__.removesuffix("Sub") == root


def test_the_vm_document_carries_what_a_client_reads() -> None:
    vm, _ = _bind(d.vm_xml(VM))
    assert (vm.ID, vm.UID, vm.GID, vm.UNAME, vm.NAME) == (3, 1, 1, "alice", "v")
    assert (vm.STATE, vm.LCM_STATE) == (VM_STATE.ACTIVE, LCM_STATE.RUNNING)
    assert vm.STIME == 1_000_000_000 and vm.ETIME == 0
    assert vm.HISTORY_RECORDS.HISTORY[0].HOSTNAME == "h1"
    assert vm.TEMPLATE["CPU"] == "0.5" and vm.TEMPLATE["CONTEXT"]["A"] == "b<&>]]>"
    assert [n["IP"] for n in vm.TEMPLATE["NIC"]] == ["10.0.0.2", "10.0.1.2"]
    assert vm.USER_TEMPLATE["SCHED_REQUIREMENTS"] == "ID>0"  # not in vm.xsd's TEMPLATE
    assert vm.USER_TEMPLATE["ERROR"] == "boom \ufffd"  # a control character XML cannot hold
    host, _ = _bind(d.host_xml(HOST))
    assert (host.STATE, host.HOST_SHARE.TOTAL_CPU, host.HOST_SHARE.TOTAL_MEM) == (2, 400, 4096 * 1024)
    assert host.VMS.ID == [3]


#: vocloud states whose OpenNebula name differs from vocloud's (the rest share the name).
RENAMED = {VMState.REBOOT: "RUNNING", VMState.SHUTDOWN_HARD: "SHUTDOWN"}


@pytest.mark.parametrize("state", list(VMState))
def test_vm_states_are_opennebulas_numbers(state: VMState) -> None:
    top, lcm = d.VM_STATES[state]
    if top == VM_STATE.ACTIVE:
        assert LCM_STATE(lcm).name == RENAMED.get(state, state.value)
    else:
        assert lcm == 0
        assert VM_STATE(top).name == state.value


def test_host_and_image_states_are_opennebulas_numbers() -> None:
    for hs in HostState:
        assert HOST_STATES(d.HOST_STATES[hs]).name == hs.value
    for st in ImageState:
        assert IMAGE_STATES(d.IMAGE_STATES[st]).name == st.value


def test_template_xml_from_pyone_is_read_with_the_hardened_parser() -> None:
    from vocloud.api.xmlrpc.methods import API, OneError, template_text

    text = template_text("<TEMPLATE><NAME><![CDATA[a]]></NAME><CONTEXT><A><![CDATA[1<2]]></A></CONTEXT>"
                         "<NIC><NETWORK>x</NETWORK></NIC><NIC><NETWORK>y</NETWORK></NIC></TEMPLATE>", "m")
    assert parse_template(text, fmt="one").to_dict() == {
        "NAME": "a", "CONTEXT": {"A": "1<2"}, "NIC": [{"NETWORK": "x"}, {"NETWORK": "y"}]}
    assert template_text('NAME="plain"', "m") == 'NAME="plain"'
    for hostile in ('<!DOCTYPE t [<!ENTITY e "x">]><TEMPLATE><A>&e;</A></TEMPLATE>', "<TEMPLATE><A>",
                    "<TEMPLATE><bad-key!>1</bad-key!></TEMPLATE>"):
        with pytest.raises(OneError) as info:
            template_text(hostile, "one.vm.allocate")
        assert info.value.code == API and info.value.message.startswith("[one.vm.allocate] template XML")


def _check_order(node: Any, obj: Any, path: str) -> list[str]:
    """Children in the order of the schema's sequence, none unknown: pyone's generated classes
    list their elements in that order (their ``__init__`` parameters follow the XSD)."""
    params = [p for p in inspect.signature(type(obj).__init__).parameters
              if p not in ("self", "gds_collector_", "kwargs_")]
    if "anytypeobjs_" in params:  # xs:any: the schema leaves the children free
        return []
    problems: list[str] = []
    last, seen = -1, dict[str, int]()
    for child in node:
        tag = child.tag
        if tag not in params:
            problems.append(f"{path}/{tag}: not in the schema")
            continue
        index = params.index(tag)
        if index < last:
            problems.append(f"{path}/{tag}: out of the schema's order")
        last = index
        value = getattr(obj, tag, None)
        if isinstance(value, list):
            value = value[seen.get(tag, 0)] if seen.get(tag, 0) < len(value) else None
        seen[tag] = seen.get(tag, 0) + 1
        if not isinstance(value, supbind.GeneratedsSuper):  # TEMPLATE: pyone binds it as a dict
            cls = _child_class(obj, tag)
            if cls is None:
                continue
            value = cls.factory()
            value.build(child)
        problems += _check_order(child, value, f"{path}/{tag}")
    return problems


@functools.cache
def _source(klass: type) -> str:
    return inspect.getsource(vars(klass)["_buildChildren"])


def _child_class(obj: Any, tag: str) -> Any:
    """The generated class of element ``tag`` under ``obj``, read off its generated builder."""
    for klass in type(obj).__mro__:
        if klass.__module__ == supbind.__name__ and "_buildChildren" in vars(klass):
            source = _source(klass)
            m = re.search(rf"nodeName_ == '{tag}'[^\n]*\n\s+obj_ = (\w+)\.factory", source)
            return getattr(supbind, m.group(1)) if m else None
    return None


@pytest.mark.parametrize("name", sorted(DOCUMENTS))
def test_elements_follow_the_schemas_order(name: str) -> None:
    _, xml = DOCUMENTS[name]
    obj, _ = _bind(xml)
    assert _check_order(etree.fromstring(xml.encode()), obj, name) == []
