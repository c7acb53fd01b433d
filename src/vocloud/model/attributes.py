"""STAND-IN, to be replaced by the ``spec`` helper's module of the same name (issue 9).

Only what the pool slice needs: :func:`restricted_violations` with the agreed signature and the
agreed minimal list. The real module holds the documented catalogue, site extensions from the
settings and the CLI listing; the lead keeps that one when merging.

Why a pool cares: the controller creates a VO's workers as the VO, so a pool template may carry
nothing a VO member could not ask for directly. Attributes that reach the host (a kernel, a 9p
export, a bridge, a MAC...) are administrators-only and, for pools, come from the site template.
"""

from __future__ import annotations

from vocloud.model.template import Template

#: Top-level attributes only an administrator may set.
RESTRICTED_TOP: frozenset[str] = frozenset({
    "KERNEL", "INITRD", "KERNEL_CMD", "MACHINE", "ACCEL", "READY_MARKER", "VIRTFS",
})
#: Attributes inside vectors only an administrator may set, as ``VECTOR/KEY``.
RESTRICTED_SUB: frozenset[str] = frozenset({
    "DISK/SOURCE", "DISK/PERSISTENT", "NIC/BRIDGE", "NIC/MAC", "NIC/VLAN_ID", "NIC/PHYDEV",
})


def restricted_violations(t: Template, extra: frozenset[str] = frozenset()) -> list[str]:
    """The restricted attributes ``t`` sets, as paths (``"VIRTFS"``, ``"NIC/BRIDGE"``), sorted.

    ``extra``: more paths a site restricts (same spelling, upper case)."""
    restricted = RESTRICTED_TOP | RESTRICTED_SUB | {p.upper() for p in extra}
    found: set[str] = set()
    for key, value in t.attrs.items():
        if key in restricted:
            found.add(key)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                found.update(f"{key}/{sub}" for sub in item if f"{key}/{sub}" in restricted)
    return sorted(found)
