"""OpenNebula's ``OS=[...]`` boot vector, mapped onto vocloud's flat boot attributes (pure).

OpenNebula templates say how to boot a kernel in one vector; vocloud has flat attributes with the
same meaning and the same rights (docs/security.md), so a template written for OpenNebula boots
as written instead of being refused or, worse, silently ignored:

================  ==================  =================================================
``OS/KERNEL``     ``KERNEL``          a host path: administrators only
``OS/INITRD``     ``INITRD``          a host path: administrators only
``OS/KERNEL_CMD`` ``KERNEL_CMD``      administrators only
``OS/ROOT``       ``root=/dev/ROOT``  appended to the command line: administrators only
``OS/KERNEL_DS``  ``KERNEL_IMAGE``    ``$FILE[IMAGE_ID=n]`` or ``$FILE[IMAGE="name"]``: an
                                      image the user may USE, as OpenNebula writes it
``OS/INITRD_DS``  ``INITRD_IMAGE``    the same for the initrd
================  ==================  =================================================

Anything else in ``OS`` (``ARCH``, ``BOOT``, ``MACHINE``...) is an unknown attribute, refused
naming it (model/attributes.py); rights are checked on the ``OS/...`` names before this runs.
"""

from __future__ import annotations

import re

from vocloud.errors import InvalidInput
from vocloud.model.template import Template

_FLAT = {"KERNEL": "KERNEL", "INITRD": "INITRD", "KERNEL_CMD": "KERNEL_CMD",
         "KERNEL_DS": "KERNEL_IMAGE", "INITRD_DS": "INITRD_IMAGE"}
_FILE = re.compile(r'^\s*\$FILE\[\s*(IMAGE_ID|IMAGE)\s*=\s*"?([A-Za-z0-9._ -]+?)"?\s*\]\s*$', re.I)
_ROOT = re.compile(r"^[A-Za-z0-9]+$")


def image_of(value: str, key: str) -> str:
    """The image name or id of ``$FILE[IMAGE_ID=3]`` / ``$FILE[IMAGE="vmlinuz"]``."""
    m = _FILE.match(value)
    if m is None:
        raise InvalidInput(f'OS/{key} must be $FILE[IMAGE_ID=<id>] or $FILE[IMAGE="<name>"], '
                           f"got {value[:80]!r}", attribute=f"OS/{key}")
    return m.group(2).strip()


def flatten_os(t: Template) -> Template:
    """``t`` with its ``OS`` vector turned into flat attributes (``t`` itself when it has none)."""
    vec = t.vector("OS")
    if vec is None:
        return t
    out = t.copy()
    out.set("OS", [])
    for key, value in sorted(vec.items()):
        if key == "ROOT":
            continue
        flat = _FLAT.get(key)
        if flat is None:  # check_template refused it already; say so again rather than drop it
            raise InvalidInput(f"unknown attribute OS/{key}", attribute=f"OS/{key}")
        if t.get(flat) is not None:
            raise InvalidInput(f"give OS/{key} or {flat}, not both", attribute=f"OS/{key}")
        out.set(flat, image_of(value, key) if key.endswith("_DS") else value)
    root = vec.get("ROOT")
    if root is not None:
        if not _ROOT.fullmatch(root):
            raise InvalidInput(f"OS/ROOT must be a device name such as vda, got {root[:80]!r}",
                               attribute="OS/ROOT")
        cmd = out.get("KERNEL_CMD")
        if cmd is None:
            raise InvalidInput("OS/ROOT needs OS/KERNEL_CMD (the command line it is added to)",
                               attribute="OS/ROOT")
        out.set("KERNEL_CMD", f"{cmd} root=/dev/{root}".strip())
    return out
