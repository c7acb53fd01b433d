"""``$SECRET[name]`` references in CONTEXT: parsing and who may use them (pure; no I/O).

Site secrets (the munge key...) reach only the site's own worker VMs: see
:mod:`vocloud.engine.secrets` for where they are read and why templates only name them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from vocloud.errors import InvalidInput

#: ``$SECRET[name]`` in a CONTEXT value.
SECRET_REF = re.compile(r"\$SECRET\[([^\]]*)\]")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

Resolver = Callable[[str], str]


def names_in(values: Iterable[str]) -> list[str]:
    """The secret names referenced by these context values, in order of first use."""
    seen: list[str] = []
    for value in values:
        for name in SECRET_REF.findall(value):
            if name not in seen:
                seen.append(name)
    return seen


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"bad secret name {name!r}: letters, digits, '_', '.', '-' (at most 64), "
                           "not starting with '.' or '-'")
    return name


def refuse_for_user(context: dict[str, str], is_admin: bool) -> None:
    """Refuse a VM whose context names secrets unless an administrator creates it."""
    names = names_in(context.values())
    for name in names:
        check_name(name)
    if names and not is_admin:
        raise InvalidInput(f"CONTEXT names the site secret(s) {', '.join(names)}: only the site's "
                           "own worker VMs (created by an administrator or a VO pool) receive them")


def substitute(value: str, resolve: Resolver) -> str:
    return SECRET_REF.sub(lambda m: resolve(m.group(1)), value)
