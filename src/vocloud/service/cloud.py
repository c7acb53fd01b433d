"""The service facade every front-end holds: one object, all the checks."""

from __future__ import annotations

from typing import Any

from vocloud.model.attributes import catalogue_rows
from vocloud.service.accounts import AccountService
from vocloud.service.auth import Actor, authenticate
from vocloud.service.catalog import ImageService, NetworkService, TemplateService
from vocloud.service.hosts import HostService
from vocloud.service.policy import VMPolicy
from vocloud.service.pools import PoolService
from vocloud.service.vms import VMService
from vocloud.store.db import Database


class Cloud:
    def __init__(self, db: Database, policy: VMPolicy | None = None) -> None:
        """``policy``: the site's restricted attributes and limits; safe defaults without one."""
        self.db = db
        self.policy = policy or VMPolicy()
        self.vms = VMService(db, self.policy)
        self.hosts = HostService(db)
        self.images = ImageService(db)
        self.networks = NetworkService(db)
        self.templates = TemplateService(db, self.policy)
        self.accounts = AccountService(db)
        self.pools = PoolService(db)

    def attributes(self, actor: Actor) -> dict[str, Any]:
        """The attribute catalogue with this site's extra restrictions applied (any user)."""
        del actor  # any authenticated user may read it: it is the documentation of the boundary
        extra = self.policy.restricted
        rows = catalogue_rows()
        for row in rows:
            if row["name"] in extra and row["access"] == "user":
                row.update(access="admin", restricted=True, site=True)
        return {"attributes": rows, "site_restricted": sorted(extra)}

    def authenticate(self, token: str | None) -> Actor:
        with self.db.read() as s:
            return authenticate(s, token)

    def instantiate(self, actor: Actor, ref: int | str, count: int = 1, name: str | None = None,
                    hold: bool = False, extra: dict[str, str] | None = None,
                    group: int | str | None = None) -> list[int]:
        """``template instantiate``: the stored template (USE right needed) plus extra attributes."""
        tmpl: dict[str, Any] = self.templates.get(actor, ref)
        return self.vms.create(actor, tmpl["body"], fmt="one", count=count, name=name, hold=hold,
                               extra=extra, group=group)
