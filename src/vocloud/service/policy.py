"""What a site decides about VM requests: its extra restricted attributes and its limits.

One frozen value handed to the service at the composition root (``engine/daemon.py`` builds it
from the settings), so the checks in ``VMService.create`` read no global state and tests can pass
their own. ``Cloud(db)`` without a policy gets these safe defaults.
"""

from __future__ import annotations

from dataclasses import dataclass

from vocloud.errors import InvalidInput
from vocloud.model.attributes import parse_restricted_setting
from vocloud.model.template import MAX_TEMPLATE_BYTES, MAX_TEMPLATE_DEPTH

#: Hard ceiling of VMs in one request, for administrators too (the REST schema says the same).
ADMIN_MAX_VMS_PER_REQUEST = 10_000


@dataclass(frozen=True, slots=True)
class VMPolicy:
    """``restricted``: attribute paths the site restricts on top of the catalogue's."""

    restricted: frozenset[str] = frozenset()
    max_vms_per_request: int = 100
    max_template_bytes: int = MAX_TEMPLATE_BYTES
    max_template_depth: int = MAX_TEMPLATE_DEPTH

    def __post_init__(self) -> None:
        if not 1 <= self.max_vms_per_request <= ADMIN_MAX_VMS_PER_REQUEST:
            raise InvalidInput(f"setting max_vms_per_request: {self.max_vms_per_request} is not "
                               f"between 1 and {ADMIN_MAX_VMS_PER_REQUEST}")
        if not 1024 <= self.max_template_bytes <= 16 * 1024 * 1024:
            raise InvalidInput(f"setting max_template_bytes: {self.max_template_bytes} is not "
                               "between 1024 and 16777216")
        if not 3 <= self.max_template_depth <= 64:
            raise InvalidInput(f"setting max_template_depth: {self.max_template_depth} is not "
                               "between 3 (what a template needs) and 64")

    @classmethod
    def from_settings(cls, restricted_attrs: str, max_vms_per_request: int, max_template_bytes: int,
                      max_template_depth: int) -> VMPolicy:
        return cls(parse_restricted_setting(restricted_attrs), max_vms_per_request,
                   max_template_bytes, max_template_depth)

    def max_count(self, is_admin: bool) -> int:
        return ADMIN_MAX_VMS_PER_REQUEST if is_admin else self.max_vms_per_request
