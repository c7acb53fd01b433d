"""The service facade every front-end holds: one object, all the checks."""

from __future__ import annotations

from typing import Any

from vocloud.drivers.registry import DriverCatalog
from vocloud.service.accounts import AccountService
from vocloud.service.auth import Actor, authenticate
from vocloud.service.catalog import ImageService, TemplateService
from vocloud.service.hosts import HostService
from vocloud.service.networks import DEFAULT_MAX_RESERVATION, NetworkService
from vocloud.service.pools import PoolService
from vocloud.service.vms import VMService
from vocloud.store.db import Database


class Cloud:
    def __init__(self, db: Database, catalog: DriverCatalog | None = None,
                 max_reservation_size: int = DEFAULT_MAX_RESERVATION) -> None:
        """``catalog``: what the daemon's drivers declare (the composition root passes its
        registry's); the built-in declarations otherwise."""
        self.db = db
        self.vms = VMService(db)
        self.hosts = HostService(db, catalog)
        self.images = ImageService(db)
        self.networks = NetworkService(db, max_reservation_size)
        self.templates = TemplateService(db)
        self.accounts = AccountService(db)
        self.pools = PoolService(db)

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
