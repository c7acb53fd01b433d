"""The XML-RPC wire format: hostile bodies in, typed values or faults out; our responses read by
Python's own XML-RPC client (a parser no one here wrote)."""

from __future__ import annotations

import time
import xmlrpc.client

import pytest

from vocloud.api.xmlrpc import wire


def test_a_call_made_by_pythons_client_is_read_back_with_its_types() -> None:
    params = ("admin:tok", -2, True, 1.5, "<&>", [1, "a"], {"k": [False]}, b"\x00\xff", None)
    call = wire.parse_call(xmlrpc.client.dumps(params, "one.vmpool.info", allow_none=True).encode())
    assert call.name == "one.vmpool.info"
    assert call.params == list(params)


def test_a_bare_value_is_a_string() -> None:
    body = (b"<methodCall><methodName>m</methodName><params><param><value>x y</value></param>"
            b"</params></methodCall>")
    assert wire.parse_call(body).params == ["x y"]


def test_responses_and_faults_are_read_by_pythons_client() -> None:
    value = [True, "<VM_POOL/>\x01", 0, -1, 2**40, 1.25, {"a": None}, [b"\x00"]]
    (got,), method = xmlrpc.client.loads(wire.response(value), use_builtin_types=True)
    assert method is None
    assert got == [True, "<VM_POOL/>\ufffd", 0, -1, 2**40, 1.25, {"a": None}, [b"\x00"]]
    with pytest.raises(xmlrpc.client.Fault) as info:
        xmlrpc.client.loads(wire.fault(wire.PARSE_ERROR, "bad <xml>"))
    assert info.value.faultCode == wire.PARSE_ERROR
    assert info.value.faultString == "bad <xml>"


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol9 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">]>
<methodCall><methodName>one.vm.info</methodName><params><param><value>&lol9;</value></param>
</params></methodCall>"""

EXTERNAL = b"""<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>
<methodCall><methodName>m</methodName><params><param><value>&e;</value></param></params></methodCall>"""


@pytest.mark.parametrize("body, code", [
    (b"", wire.PARSE_ERROR),
    (b"<methodCall><methodName>m</methodName>", wire.PARSE_ERROR),
    (b"not xml at all", wire.PARSE_ERROR),
    (BILLION_LAUGHS, wire.PARSE_ERROR),
    (EXTERNAL, wire.PARSE_ERROR),
    (b"<methodCall><methodName>m</methodName><params><param><value>&undefined;</value></param>"
     b"</params></methodCall>", wire.PARSE_ERROR),
    (b"<methodResponse/>", wire.PARSE_ERROR),
    (b"<methodCall><methodName>bad name!</methodName></methodCall>", wire.PARSE_ERROR),
    (b"<methodCall><methodName>m</methodName><methodName>n</methodName></methodCall>", wire.PARSE_ERROR),
    (b"<methodCall><methodName>m</methodName><params><param><value><i4>x</i4></value></param>"
     b"</params></methodCall>", wire.TYPE_ERROR),
    (b"<methodCall><methodName>m</methodName><params><param><value><i4>99999999999</i4></value>"
     b"</param></params></methodCall>", wire.TYPE_ERROR),
    (b"<methodCall><methodName>m</methodName><params><param><value><boolean>2</boolean></value>"
     b"</param></params></methodCall>", wire.TYPE_ERROR),
    (b"<methodCall><methodName>m</methodName><params><param><value><double>nan</double></value>"
     b"</param></params></methodCall>", wire.TYPE_ERROR),
    (b"<methodCall><methodName>m</methodName><params><param><value><blob/></value></param>"
     b"</params></methodCall>", wire.TYPE_ERROR),
    (b"<methodCall><methodName>m</methodName><params><param><value><struct><member><name>a</name>"
     b"</member></struct></value></param></params></methodCall>", wire.PARSE_ERROR),
])
def test_bad_bodies_are_faults_with_xmlrpc_c_codes(body: bytes, code: int) -> None:
    with pytest.raises(wire.WireError) as info:
        wire.parse_call(body)
    assert info.value.code == code


def test_entity_expansion_is_refused_before_it_costs_anything() -> None:
    started = time.perf_counter()
    with pytest.raises(wire.WireError, match="DOCTYPE"):
        wire.parse_call(BILLION_LAUGHS)
    assert time.perf_counter() - started < 0.5


def test_nesting_and_size_are_bounded() -> None:
    deep = b"<value><array><data>" * 30 + b"<value>x</value>" + b"</data></array></value>" * 30
    body = b"<methodCall><methodName>m</methodName><params><param>" + deep + b"</param></params></methodCall>"
    with pytest.raises(wire.WireError) as info:
        wire.parse_call(body)
    assert info.value.code == wire.LIMIT_EXCEEDED
    many = b"<methodCall><methodName>m</methodName><params>" + b"<param><value>1</value></param>" * 40 \
        + b"</params></methodCall>"
    with pytest.raises(wire.WireError, match="parameters"):
        wire.parse_call(many)
    wide = (b"<methodCall><methodName>m</methodName><params><param><value><array><data>"
            + b"<value/>" * (wire.MAX_ELEMENTS + 1)
            + b"</data></array></value></param></params></methodCall>")
    with pytest.raises(wire.WireError, match="elements"):
        wire.parse_call(wide)
