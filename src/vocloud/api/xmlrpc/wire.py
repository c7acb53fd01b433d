"""XML-RPC on the wire: a hostile request body in, typed values out; values in, response bytes out.

Why not ``xmlrpc.server``/``xmlrpc.client.loads``: they parse with a plain expat that accepts
DOCTYPEs and entity declarations (the "billion laughs"), and they have no limit on nesting. Here
the parser is expat with a handler that refuses any DOCTYPE at once (so no entity can ever be
declared; an undeclared ``&name;`` is an expat error), and the tree is bounded in depth and in
element count. The body's size is bounded before it gets here (the route's ``max_request_bytes``).

Everything the caller gets is one of ``int``, ``bool``, ``str``, ``float``, ``bytes``, ``None``,
``list`` or ``dict``; everything wrong is a :class:`WireError` carrying the XML-RPC fault code
xmlrpc-c (OpenNebula's server library) uses for it.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any
from xml.parsers import expat

#: xmlrpc-c's fault codes (OpenNebula answers these for requests that never reach a method).
PARSE_ERROR = -503
TYPE_ERROR = -501
LIMIT_EXCEEDED = -509

#: Deepest element nesting accepted (a method call needs 8 for a struct in an array).
MAX_DEPTH = 40
#: Most elements in one request.
MAX_ELEMENTS = 100_000
#: Most parameters of one call.
MAX_PARAMS = 32

Value = int | bool | str | float | bytes | None | list[Any] | dict[str, Any]


class WireError(Exception):
    """A request that is not a well-formed, bounded XML-RPC method call."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(slots=True)
class _Node:
    tag: str
    children: list[_Node] = field(default_factory=list)
    text: list[str] = field(default_factory=list)

    @property
    def content(self) -> str:
        return "".join(self.text)


class _Refused(Exception):
    pass


def parse_xml(body: bytes) -> _Node:
    """A hardened parse: no DOCTYPE (hence no entity declarations), bounded depth and size."""
    parser = expat.ParserCreate()
    root: list[_Node] = []
    stack: list[_Node] = []
    count = [0]

    def start(tag: str, _attrs: dict[str, str]) -> None:
        count[0] += 1
        if count[0] > MAX_ELEMENTS:
            raise _Refused(f"more than {MAX_ELEMENTS} elements")
        if len(stack) >= MAX_DEPTH:
            raise _Refused(f"elements nested deeper than {MAX_DEPTH}")
        node = _Node(tag)
        if stack:
            stack[-1].children.append(node)
        else:
            root.append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    def chars(data: str) -> None:
        if stack:
            stack[-1].text.append(data)

    def doctype(*_args: object) -> None:
        raise _Refused("a DOCTYPE (and any entity declaration) is refused")

    def entity(*_args: object) -> None:
        raise _Refused("entity declarations are refused")

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = chars
    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = entity
    parser.UnparsedEntityDeclHandler = entity
    parser.ExternalEntityRefHandler = lambda *_a: 0  # never fetch anything
    try:
        parser.Parse(body, True)
    except _Refused as exc:
        raise WireError(LIMIT_EXCEEDED if "more than" in str(exc) or "deeper" in str(exc)
                        else PARSE_ERROR, f"XML-RPC request refused: {exc}") from None
    except expat.ExpatError as exc:
        raise WireError(PARSE_ERROR, f"XML-RPC request is not well-formed XML: "
                                     f"{expat.ErrorString(exc.code)} at line {exc.lineno}") from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise WireError(PARSE_ERROR, f"XML-RPC request could not be parsed: {exc}") from None
    if not root:
        raise WireError(PARSE_ERROR, "XML-RPC request is empty")
    return root[0]


@dataclass(frozen=True, slots=True)
class MethodCall:
    name: str
    params: list[Value]


_INT_RE = re.compile(r"[+-]?[0-9]{1,20}")
_NAME_RE = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")


def _only(node: _Node, what: str) -> _Node:
    if len(node.children) != 1:
        raise WireError(PARSE_ERROR, f"<{node.tag}> must hold exactly one {what}")
    return node.children[0]


def _int(text: str, lo: int, hi: int, tag: str) -> int:
    text = text.strip()
    if not _INT_RE.fullmatch(text):
        raise WireError(TYPE_ERROR, f"<{tag}> holds {text[:40]!r}, not an integer")
    value = int(text)
    if not lo <= value <= hi:
        raise WireError(TYPE_ERROR, f"<{tag}> value {text[:40]} is out of range")
    return value


def _value(node: _Node) -> Value:
    if node.tag != "value":
        raise WireError(PARSE_ERROR, f"expected <value>, found <{node.tag[:40]}>")
    if not node.children:
        return node.content  # a bare value is a string
    t = _only(node, "typed value")
    tag = t.tag
    if tag in ("int", "i4"):
        return _int(t.content, -(2**31), 2**31 - 1, tag)
    if tag == "i8":
        return _int(t.content, -(2**63), 2**63 - 1, tag)
    if tag == "boolean":
        text = t.content.strip()
        if text not in ("0", "1"):
            raise WireError(TYPE_ERROR, f"<boolean> must be 0 or 1, got {text[:40]!r}")
        return text == "1"
    if tag == "string":
        if t.children:
            raise WireError(PARSE_ERROR, "<string> must hold text only")
        return t.content
    if tag == "double":
        try:
            number = float(t.content.strip())
        except ValueError:
            raise WireError(TYPE_ERROR, f"<double> holds {t.content[:40]!r}, not a number") from None
        if number != number or number in (float("inf"), float("-inf")):
            raise WireError(TYPE_ERROR, "<double> must be finite")
        return number
    if tag == "base64":
        try:
            return base64.b64decode(t.content.encode("ascii", "strict"), validate=False)
        except (binascii.Error, UnicodeEncodeError):
            raise WireError(TYPE_ERROR, "<base64> is not valid base64") from None
    if tag == "nil":
        return None
    if tag == "dateTime.iso8601":
        return t.content.strip()
    if tag == "array":
        data = _only(t, "<data>")
        if data.tag != "data":
            raise WireError(PARSE_ERROR, "<array> must hold <data>")
        return [_value(v) for v in data.children]
    if tag == "struct":
        out: dict[str, Any] = {}
        for member in t.children:
            if member.tag != "member":
                raise WireError(PARSE_ERROR, f"<struct> holds <{member.tag[:40]}>, not <member>")
            names = [c for c in member.children if c.tag == "name"]
            values = [c for c in member.children if c.tag == "value"]
            if len(names) != 1 or len(values) != 1 or len(member.children) != 2:
                raise WireError(PARSE_ERROR, "<member> must hold one <name> and one <value>")
            out[names[0].content] = _value(values[0])
        return out
    raise WireError(TYPE_ERROR, f"unknown XML-RPC type <{tag[:40]}>")


def parse_call(body: bytes) -> MethodCall:
    """A request body -> the method name and its parameters, or :class:`WireError`."""
    root = parse_xml(body)
    if root.tag != "methodCall":
        raise WireError(PARSE_ERROR, f"expected <methodCall>, found <{root.tag[:40]}>")
    names = [c for c in root.children if c.tag == "methodName"]
    params_nodes = [c for c in root.children if c.tag == "params"]
    if len(names) != 1 or len(params_nodes) > 1 or len(root.children) != len(names) + len(params_nodes):
        raise WireError(PARSE_ERROR, "<methodCall> must hold one <methodName> and at most one <params>")
    name = names[0].content.strip()
    if not _NAME_RE.fullmatch(name):
        raise WireError(PARSE_ERROR, "<methodName> must be 1 to 128 letters, digits and '._:/-'")
    params: list[Value] = []
    if params_nodes:
        plist = params_nodes[0].children
        if len(plist) > MAX_PARAMS:
            raise WireError(LIMIT_EXCEEDED, f"more than {MAX_PARAMS} parameters")
        for p in plist:
            if p.tag != "param":
                raise WireError(PARSE_ERROR, f"<params> holds <{p.tag[:40]}>, not <param>")
            params.append(_value(_only(p, "<value>")))
    return MethodCall(name, params)


# ------------------------------------------------------------------------------ responses
#: Characters XML 1.0 cannot carry at all (even escaped); they are replaced by U+FFFD.
_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(text: str) -> str:
    """Text escaped for an XML element, with characters XML cannot hold replaced."""
    if _INVALID.search(text):
        text = _INVALID.sub("\ufffd", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _encode(value: Value, out: list[str]) -> None:
    if isinstance(value, bool):
        out.append(f"<value><boolean>{int(value)}</boolean></value>")
    elif isinstance(value, int):
        if -(2**31) <= value < 2**31:
            out.append(f"<value><i4>{value}</i4></value>")
        else:
            out.append(f"<value><i8>{value}</i8></value>")
    elif isinstance(value, str):
        out.append(f"<value><string>{xml_text(value)}</string></value>")
    elif isinstance(value, float):
        out.append(f"<value><double>{value!r}</double></value>")
    elif isinstance(value, list):
        out.append("<value><array><data>")
        for item in value:
            _encode(item, out)
        out.append("</data></array></value>")
    elif isinstance(value, dict):
        out.append("<value><struct>")
        for key, item in value.items():
            out.append(f"<member><name>{xml_text(str(key))}</name>")
            _encode(item, out)
            out.append("</member>")
        out.append("</struct></value>")
    elif value is None:
        out.append("<value><nil/></value>")
    else:  # bytes
        out.append(f"<value><base64>{base64.b64encode(value).decode()}</base64></value>")


def response(value: Value) -> bytes:
    out = ['<?xml version="1.0" encoding="UTF-8"?>\r\n<methodResponse><params><param>']
    _encode(value, out)
    out.append("</param></params></methodResponse>\r\n")
    return "".join(out).encode("utf-8")


def fault(code: int, message: str) -> bytes:
    out = ['<?xml version="1.0" encoding="UTF-8"?>\r\n<methodResponse><fault>']
    _encode({"faultCode": code, "faultString": message}, out)
    out.append("</fault></methodResponse>\r\n")
    return "".join(out).encode("utf-8")
