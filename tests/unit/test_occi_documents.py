"""OCCI documents without a daemon: what libcloud sends parses, hostile XML is refused cheaply,
and what vocloud renders is XML libcloud's own parser reads, without host paths."""

from __future__ import annotations

import tracemalloc
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from tests.support import hostile_xml
from vocloud.api.occi import documents as doc
from vocloud.errors import InvalidInput
from vocloud.model.instance_types import parse_instance_types

TYPES = parse_instance_types("")

#: Exactly what libcloud 3.x's OpenNebula 3.8 driver POSTs for create_node(name=..., size=small,
#: image=3, networks=[net 5 with address]) (its NAME is always empty: a libcloud bug).
LIBCLOUD_CREATE = (b'<COMPUTE><NAME /><INSTANCE_TYPE>small</INSTANCE_TYPE><DISK><STORAGE href="/storage/3" />'
                   b'</DISK><NIC><NETWORK href="/network/5" /><IP>10.0.0.7</IP></NIC></COMPUTE>')


def test_libcloud_create_body() -> None:
    req = doc.parse_compute(LIBCLOUD_CREATE)
    assert req == doc.ComputeRequest(name=None, instance_type="small", image_ids=(3,),
                                      nics=(doc.NicRequest(5, "10.0.0.7"),), context={})
    assert doc.compute_template(req, TYPES["small"]) == {
        "CPU": "1", "VCPU": "1", "MEMORY": "1024", "DISK": [{"IMAGE_ID": "3"}],
        "NIC": [{"NETWORK_ID": "5", "IP": "10.0.0.7"}]}


def test_names_context_and_absolute_hrefs() -> None:
    body = (b'<COMPUTE><NAME>web</NAME><INSTANCE_TYPE href="http://h:4567/instance_type/large"/>'
            b'<DISK><STORAGE href="http://h:4567/storage/12"/></DISK>'
            b"<CONTEXT><hostname>a</hostname><EMPTY/><FILES_DS>x</FILES_DS></CONTEXT>"
            b"<SOURCE>/etc/shadow</SOURCE><BRIDGE>br0</BRIDGE><KERNEL>/boot/x</KERNEL></COMPUTE>")
    req = doc.parse_compute(body)
    assert (req.name, req.instance_type, req.image_ids) == ("web", "large", (12,))
    assert req.context == {"HOSTNAME": "a", "FILES_DS": "x"}  # the service checks the keys
    tmpl = doc.compute_template(req, TYPES["large"])
    assert not {"SOURCE", "BRIDGE", "KERNEL"} & set(tmpl)  # never taken from the body


@pytest.mark.parametrize("href", ["/network/3", "/storage/", "/storage/x", "storage/1/2", "/etc/passwd",
                                  "/storage/-1", "/storage/1e3", "/storage/99999999999", "/storage/٣"])
def test_bad_storage_hrefs(href: str) -> None:
    with pytest.raises(InvalidInput, match="is not /storage/ID"):
        doc.href_id(href, "storage", "DISK 0")


@pytest.mark.parametrize("body", [hostile_xml.billion_laughs(), hostile_xml.quadratic_blowup(),
                                  hostile_xml.external_entity(),
                                  b'<!DOCTYPE COMPUTE SYSTEM "http://127.0.0.1:1/x.dtd"><COMPUTE/>'])
def test_entity_documents_are_refused_without_expanding(body: bytes) -> None:
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput, match="DOCTYPE"):
            doc.parse_compute(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(body) + (1 << 20), peak  # nothing was expanded


def test_a_deep_document_within_the_size_limit_is_harmless() -> None:
    body = hostile_xml.deep(100_000)  # ~700 kB, under the daemon's 1 MiB body limit
    tracemalloc.start()
    try:
        req = doc.parse_compute(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert req.instance_type == "small" and peak < 64 << 20, peak


@pytest.mark.parametrize("body,message", [
    (b"", "empty"), (b"<COMPUTE>", "OCCI XML"), (b"<compute/>", "root element"),
    (b'<COMPUTE xmlns="urn:x"/>', "root element"), (b"<COMPUTE/><COMPUTE/>", "OCCI XML"),
    (b"\x00\x01", "OCCI XML"), (b'<?xml version="1.0" encoding="nope"?><COMPUTE/>', "XML"),
    (b"<COMPUTE>" + b"<DISK/>" * 17 + b"</COMPUTE>", "at most"),
    (b"<COMPUTE><DISK><STORAGE/></DISK></COMPUTE>", "needs an href"),
    (b"<COMPUTE><CONTEXT>" + b"".join(b"<V%d>x</V%d>" % (i, i) for i in range(129))
     + b"</CONTEXT></COMPUTE>", "at most 128"),
])
def test_malformed_documents(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        doc.parse_compute(body)


def test_update_states() -> None:
    assert doc.parse_compute_update(b"<COMPUTE><ID>1</ID><STATE>reboot</STATE></COMPUTE>") == "REBOOT"
    assert doc.parse_compute_update(b"<COMPUTE><ID>1</ID></COMPUTE>") is None
    with pytest.raises(InvalidInput, match="SAVE_AS"):
        doc.parse_compute_update(b'<COMPUTE><DISK id="0"><SAVE_AS name="n"/></DISK></COMPUTE>')


def _vm(**kw: Any) -> dict[str, Any]:
    vm = {"id": 7, "name": "web", "state": "RUNNING", "owner_id": 3, "user": "alice", "group": "vo1",
          "cpu": 1.0, "vcpu": 1, "memory": 1024,
          "template": 'NAME="web"\nDISK=[IMAGE_ID="3", IMAGE="base", SOURCE="/srv/ds/base.qcow2", '
                      'TARGET="vda"]\nNIC=[NETWORK_ID="5", NETWORK="lan", BRIDGE="br7", IP="10.0.0.7", '
                      'MAC="02:00:0a:00:00:07"]\nCONTEXT=[HOSTNAME="web\x01x"]\n'}
    vm.update(kw)
    return vm


def test_compute_rendering_is_what_libcloud_reads() -> None:
    body = doc.compute(_vm(), "http://127.0.0.1:2633", TYPES)
    assert b"/srv/ds" not in body and b"br7" not in body  # no host path, no bridge
    root = ET.fromstring(body)  # control characters were replaced: the document parses
    assert root.findtext("STATE") == "ACTIVE" and root.findtext("INSTANCE_TYPE") == "small"
    disk = root.find("DISK/STORAGE")
    assert disk is not None and disk.get("href", "").partition("/storage/")[2] == "3"
    nic = root.find("NIC")
    assert nic is not None and nic.findtext("IP") == "10.0.0.7"
    net = nic.find("NETWORK")
    assert net is not None and net.get("href", "").endswith("/network/5")
    assert root.findtext("CONTEXT/HOSTNAME") == "web\ufffdx"


@pytest.mark.parametrize("state,occi", [("PENDING", "PENDING"), ("HOLD", "HOLD"), ("BOOT", "ACTIVE"),
                                        ("RUNNING", "ACTIVE"), ("BOOT_FAILURE", "ACTIVE"),
                                        ("POWEROFF", "POWEROFF"), ("DONE", "DONE")])
def test_states(state: str, occi: str) -> None:
    assert doc.occi_state(state) == occi


def test_instance_types_and_collections() -> None:
    listing = ET.fromstring(doc.instance_types(TYPES, "http://h", verbose=False))
    assert [e.get("name") for e in listing] == ["large", "medium", "small"]
    small = ET.fromstring(doc.instance_type(TYPES["small"], "http://h"))
    assert (small.findtext("MEMORY"), small.findtext("CPU"), small.findtext("VCPU")) == ("1024", "1", "1")
    assert doc.instance_type_for(_vm(cpu=4.0, vcpu=4, memory=4096), TYPES) == "medium"
    assert doc.instance_type_for(_vm(cpu=0.5, memory=64), TYPES) is None
    coll = ET.fromstring(doc.collection("compute", [{"id": 1, "name": "a<&>"}], "http://h"))
    assert coll.tag == "COMPUTE_COLLECTION" and coll[0].get("name") == "a<&>"
