"""Access decisions, pure: who may USE or MANAGE which object.

The defaults keep every VO in its own group: a user sees and acts on what its group owns, and
on objects marked public (USE only). Admins may do everything. Anything beyond that is an ACL
rule in OpenNebula's shape ``subject resource/target rights`` (e.g. ``@3 VM/@4 USE``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from vocloud.errors import InvalidInput
from vocloud.service.auth import Actor

RIGHTS = ("USE", "MANAGE", "ADMIN")
RESOURCES = ("VM", "HOST", "IMAGE", "VNET", "TEMPLATE", "USER", "GROUP", "ALL")


@dataclass(frozen=True, slots=True)
class Rule:
    subject: str  # "#<user id>", "@<group id>", "*"
    resource: str  # one of RESOURCES
    target: str  # "#<object id>", "@<group id>", "*"
    rights: frozenset[str]


@dataclass(frozen=True, slots=True)
class ObjRef:
    kind: str  # VM, HOST, IMAGE, VNET, TEMPLATE, USER, GROUP
    id: int
    owner_id: int | None = None
    group_id: int | None = None
    public: bool = False


def _check_ref(text: str, what: str) -> None:
    if text == "*":
        return
    if 2 <= len(text) <= 11 and text[0] in "#@" and text[1:].isascii() and text[1:].isdigit():
        return
    raise InvalidInput(f"ACL {what} must be '*', '#<id>' or '@<group id>', got {text!r}")


def parse_rule(subject: str, resource: str, target: str, rights: str) -> Rule:
    _check_ref(subject, "subject")
    _check_ref(target, "target")
    res = resource.upper()
    if res not in RESOURCES:
        raise InvalidInput(f"ACL resource must be one of {', '.join(RESOURCES)}, got {resource!r}")
    rset = frozenset(r.strip().upper() for r in rights.replace("+", ",").split(",") if r.strip())
    bad = rset - set(RIGHTS)
    if not rset or bad:
        raise InvalidInput(f"ACL rights must be among {', '.join(RIGHTS)}, got {rights!r}")
    return Rule(subject, res, target, rset)


def _implied(right: str) -> set[str]:
    # MANAGE implies USE, ADMIN implies both, as in OpenNebula.
    return {"USE": {"USE", "MANAGE", "ADMIN"}, "MANAGE": {"MANAGE", "ADMIN"}, "ADMIN": {"ADMIN"}}[right]


def _rule_applies(rule: Rule, actor: Actor, obj: ObjRef) -> bool:
    if rule.subject != "*" and rule.subject not in (f"#{actor.user_id}", f"@{actor.group_id}"):
        return False
    if rule.resource not in ("ALL", obj.kind):
        return False
    if rule.target == "*":
        return True
    if rule.target == f"#{obj.id}":
        return True
    return obj.group_id is not None and rule.target == f"@{obj.group_id}"


def allowed(actor: Actor, right: str, obj: ObjRef, rules: Iterable[Rule] = ()) -> bool:
    if actor.is_admin:
        return True
    ok_rights = _implied(right)
    if obj.kind in ("VM", "IMAGE", "VNET", "TEMPLATE"):
        if obj.group_id == actor.group_id and right in ("USE", "MANAGE"):
            return True
        if obj.public and right == "USE":
            return True
    if obj.kind == "HOST" and right == "USE":
        return True  # every user may see the hosts its VMs run on
    if obj.kind == "USER" and obj.id == actor.user_id and right == "USE":
        return True
    if obj.kind == "GROUP" and obj.id == actor.group_id and right == "USE":
        return True
    return any(rule.rights & ok_rights and _rule_applies(rule, actor, obj) for rule in rules)


def visible_group_ids(actor: Actor, kind: str, rules: Iterable[Rule]) -> set[int] | None:
    """Groups whose objects of ``kind`` the actor may list; None means all of them."""
    if actor.is_admin:
        return None
    groups = {actor.group_id}
    for rule in rules:
        if not rule.rights & _implied("USE") or rule.resource not in ("ALL", kind):
            continue
        if rule.subject != "*" and rule.subject not in (f"#{actor.user_id}", f"@{actor.group_id}"):
            continue
        if rule.target == "*":
            return None
        if rule.target.startswith("@"):
            groups.add(int(rule.target[1:]))
    return groups


def visible_object_ids(actor: Actor, kind: str, rules: Iterable[Rule]) -> set[int]:
    """Single objects granted by ``#id`` targets (listed in addition to visible groups)."""
    out: set[int] = set()
    for rule in rules:
        if rule.resource not in ("ALL", kind) or not rule.rights & _implied("USE"):
            continue
        if rule.subject != "*" and rule.subject not in (f"#{actor.user_id}", f"@{actor.group_id}"):
            continue
        if rule.target.startswith("#"):
            out.add(int(rule.target[1:]))
    return out
