"""XML documents that attack a parser: entity expansion, external entities, depth.

Shared by the OCCI unit and integration tests (and any later XML front-end)."""

from __future__ import annotations


def billion_laughs(levels: int = 9, fan: int = 10, root: str = "COMPUTE") -> bytes:
    """The classic entity bomb: ``fan ** levels`` copies of "lol" once expanded (1e9 by
    default, about 3 GB)."""
    entities = [b'<!ENTITY lol0 "lol">']
    for i in range(1, levels + 1):
        entities.append(b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1)) * fan))
    return (b'<?xml version="1.0"?><!DOCTYPE %s [' % root.encode() + b"".join(entities)
            + b"]><%s><NAME>&lol%d;</NAME><INSTANCE_TYPE>small</INSTANCE_TYPE></%s>"
            % (root.encode(), levels, root.encode()))


def quadratic_blowup(size: int = 100_000, repeat: int = 5_000, root: str = "COMPUTE") -> bytes:
    """One large entity referenced many times (no nesting: dodges naive depth limits)."""
    return (b'<?xml version="1.0"?><!DOCTYPE %s [<!ENTITY a "%s">]><%s><NAME>%s</NAME></%s>'
            % (root.encode(), b"a" * size, root.encode(), b"&a;" * repeat, root.encode()))


def external_entity(path: str = "/etc/passwd", root: str = "COMPUTE") -> bytes:
    """An external entity that would read a host file into the document."""
    return (b'<?xml version="1.0"?><!DOCTYPE c [<!ENTITY x SYSTEM "file://%s">]>'
            b"<%s><NAME>&x;</NAME><INSTANCE_TYPE>small</INSTANCE_TYPE></%s>"
            % (path.encode(), root.encode(), root.encode()))


def deep(depth: int = 50_000, root: str = "COMPUTE") -> bytes:
    """A document nested ``depth`` levels inside ``root``."""
    return (b"<%s><INSTANCE_TYPE>small</INSTANCE_TYPE>" % root.encode() + b"<X>" * depth
            + b"</X>" * depth + b"</%s>" % root.encode())
