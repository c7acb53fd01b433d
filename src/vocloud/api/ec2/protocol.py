"""EC2's Query protocol: flat ``Name.N.Sub`` parameters in, namespaced XML out.

Pure functions: the parameters of one request (query string and form body, already decoded)
become typed values (lists, filters, tag lists) with bounds, and response values (dicts, lists,
scalars) become XML as botocore's EC2 parser reads it (lists as ``<item>`` elements, booleans as
``true``/``false``, times in ISO 8601 UTC). Errors are EC2's ``<Response><Errors>`` document.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape

from vocloud.service.ec2 import Filters

XMLNS = "http://ec2.amazonaws.com/doc/2016-11-15/"
MAX_PARAMS = 5000
MAX_LIST = 1000
_INDEX = re.compile(r"^(0|[1-9][0-9]{0,3})$")  # libcloud counts from 0


class ProtocolError(Exception):
    """A request EC2 would refuse before any action ran: the code and message to answer."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


class Params:
    """One request's parameters, with the EC2 list conventions."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        if len(pairs) > MAX_PARAMS:
            raise ProtocolError("InvalidParameterValue", f"more than {MAX_PARAMS} parameters")
        self.raw: dict[str, str] = {}
        for k, v in pairs:
            if "\x00" in k or "\x00" in v:
                raise ProtocolError("InvalidParameterValue", "NUL characters are not allowed")
            self.raw[k] = v

    def get(self, name: str) -> str | None:
        return self.raw.get(name)

    def text(self, name: str, required: bool = False, max_len: int = 4096) -> str | None:
        value = self.raw.get(name)
        if value is None:
            if required:
                raise ProtocolError("MissingParameter",
                                    f"The request must contain the parameter {name}")
            return None
        if len(value) > max_len:
            raise ProtocolError("InvalidParameterValue", f"{name} is longer than {max_len} characters")
        return value

    def integer(self, name: str, default: int | None = None, low: int = 0,
                high: int = 1_000_000) -> int | None:
        value = self.raw.get(name)
        if value is None:
            return default
        if not value.isascii() or not value.strip().lstrip("-").isdigit() or len(value) > 12:
            raise ProtocolError("InvalidParameterValue", f"{name} must be a whole number, not {value[:32]!r}")
        n = int(value)
        if not low <= n <= high:
            raise ProtocolError("InvalidParameterValue", f"{name} must be between {low} and {high}")
        return n

    def boolean(self, name: str) -> bool:
        value = (self.raw.get(name) or "false").lower()
        if value not in ("true", "false"):
            raise ProtocolError("InvalidParameterValue", f"{name} must be true or false")
        return value == "true"

    def _indexes(self, prefix: str) -> list[int]:
        """The N of every ``prefix.N[...]`` parameter, sorted."""
        found: set[int] = set()
        plen = len(prefix) + 1
        for key in self.raw:
            if key.startswith(prefix + "."):
                n = key[plen:].split(".", 1)[0]
                if not _INDEX.match(n):
                    raise ProtocolError("InvalidParameterValue", f"bad list index in {key[:64]!r}")
                found.add(int(n))
        if len(found) > MAX_LIST:
            raise ProtocolError("InvalidParameterValue", f"{prefix}: more than {MAX_LIST} entries")
        return sorted(found)

    def strings(self, prefix: str) -> list[str]:
        """``prefix.1``, ``prefix.2``, ... in order."""
        return [self.raw[f"{prefix}.{n}"] for n in self._indexes(prefix) if f"{prefix}.{n}" in self.raw]

    def filters(self) -> Filters:
        out: dict[str, list[str]] = {}
        for n in self._indexes("Filter"):
            name = self.raw.get(f"Filter.{n}.Name")
            if not name:
                raise ProtocolError("InvalidParameterValue", f"Filter.{n}.Name is missing")
            out.setdefault(name, []).extend(self.strings(f"Filter.{n}.Value"))
        return Filters(out)

    def tags(self, prefix: str = "Tag") -> list[tuple[str, str | None]]:
        out: list[tuple[str, str | None]] = []
        for n in self._indexes(prefix):
            key = self.raw.get(f"{prefix}.{n}.Key")
            if key is None:
                raise ProtocolError("InvalidParameterValue", f"{prefix}.{n}.Key is missing")
            out.append((key, self.raw.get(f"{prefix}.{n}.Value")))
        return out

    def tag_specifications(self, resource_type: str) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for n in self._indexes("TagSpecification"):
            kind = self.raw.get(f"TagSpecification.{n}.ResourceType")
            if kind != resource_type:
                raise ProtocolError("InvalidParameterValue",
                                    f"TagSpecification.{n}.ResourceType: only {resource_type!r} "
                                    "can be tagged at launch here")
            out += [(k, v or "") for k, v in self.tags(f"TagSpecification.{n}.Tag")]
        return out


# ------------------------------------------------------------------ XML
def iso_time(t: float | None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


class Raw(str):
    """XML already rendered (and escaped) by a fast path: inserted as is."""


def _render(out: list[str], value: Any) -> None:
    if isinstance(value, Raw):
        out.append(value)
    elif isinstance(value, Mapping):
        for k, v in value.items():
            if v is None:
                continue
            out.append(f"<{k}>")
            _render(out, v)
            out.append(f"</{k}>")
    elif isinstance(value, list | tuple):
        for item in value:
            out.append("<item>")
            _render(out, item)
            out.append("</item>")
    elif isinstance(value, bool):
        out.append("true" if value else "false")
    else:
        out.append(escape(str(value)))


def response(action: str, request_id: str, body: Mapping[str, Any]) -> bytes:
    out = [f'<?xml version="1.0" encoding="UTF-8"?>\n<{action}Response xmlns="{XMLNS}">',
           f"<requestId>{request_id}</requestId>"]
    _render(out, body)
    out.append(f"</{action}Response>")
    return "".join(out).encode()


def error(code: str, message: str, request_id: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{escape(code)}'
            f"</Code><Message>{escape(message)}</Message></Error></Errors>"
            f"<RequestID>{request_id}</RequestID></Response>").encode()
