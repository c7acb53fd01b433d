"""The service facade every front-end holds: one object, all the checks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vocloud.drivers.registry import DriverCatalog
from vocloud.model.attributes import catalogue_rows
from vocloud.model.instance_types import InstanceType, parse_instance_types
from vocloud.service.access_keys import (
    AccessKeyService,
    Sealer,
    SigV2Authenticator,
    SigV4Authenticator,
)
from vocloud.service.accounting import AccountingService
from vocloud.service.accounts import AccountService
from vocloud.service.audit import AuditService
from vocloud.service.auth import Actor, Credentials, default_authenticators
from vocloud.service.catalog import ImageService, TemplateService
from vocloud.service.console import ConsoleReader, ConsoleService
from vocloud.service.datastores import DatastoreService
from vocloud.service.ec2 import Ec2Service
from vocloud.service.hosts import HostService
from vocloud.service.networks import DEFAULT_MAX_RESERVATION, NetworkService
from vocloud.service.policy import VMPolicy
from vocloud.service.pools import PoolService
from vocloud.service.vms import VMService
from vocloud.store.db import Database
from vocloud.store.group_commit import GroupCommit, for_store


class Cloud:
    def __init__(self, db: Database, catalog: DriverCatalog | None = None,
                 max_reservation_size: int = DEFAULT_MAX_RESERVATION,
                 policy: VMPolicy | None = None, data_dir: Path | None = None,
                 protected: Sequence[Path] = (),
                 instance_types: Mapping[str, InstanceType] | None = None,
                 sealer: Sealer | None = None, pool_site_template: str = "") -> None:
        """``catalog``: what the daemon's drivers declare (the composition root passes its
        registry's); the built-in declarations otherwise. ``policy``: the site's restricted
        attributes and request limits (docs/security.md); safe defaults without one.
        ``data_dir`` and ``protected`` (e.g. the secrets directory): paths no datastore may
        contain; the daemon passes them. ``instance_types``: the sizes EC2 offers (default:
        OpenNebula's). ``sealer``: seals EC2 secret keys with the site's key file (the daemon
        passes it; without one, a random key for this process). ``pool_site_template``: the
        daemon's default site template for pool workers (also for Slurm power saving)."""
        self.db = db
        self.policy = policy or VMPolicy()
        self.vms = VMService(db, self.policy, catalog)
        self.hosts = HostService(db, catalog)
        self.datastores = DatastoreService(db, data_dir, protected)
        self.images = ImageService(db, self.datastores)
        self.networks = NetworkService(db, max_reservation_size)
        self.templates = TemplateService(db, self.policy)
        self.accounts = AccountService(db)
        self.pools = PoolService(db, self.vms, pool_site_template)
        self.console = ConsoleService(db)
        #: the authentication schemes front-ends may use (see ``service/auth.py``)
        self.authenticators = default_authenticators()
        self.access_keys = AccessKeyService(db, sealer)
        self.authenticators.register(SigV4Authenticator(self.access_keys))
        self.authenticators.register(SigV2Authenticator(self.access_keys))
        self.ec2 = Ec2Service(db, self.vms, self.images, self.templates,
                              instance_types or parse_instance_types(""), self.console)
        self.accounting = AccountingService(db)
        #: front-ends run a user's create and act calls here: many to one transaction
        #: (``store/group_commit.py``; only calls in ``audit.IN_CALL_TRANSACTION`` belong)
        self.group_commit: GroupCommit = for_store(db)
        # last: every state-changing call of every service above is audited (service/audit.py)
        self.audit = AuditService(db)
        self.audit.instrument_all(self)

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
        """A bearer token -> its Actor."""
        return self.authenticate_with(Credentials("bearer", token or ""))

    def authenticate_with(self, credentials: Credentials | None) -> Actor:
        """Credentials of any registered scheme -> the Actor, or ``Unauthorized``."""
        if self.authenticators.on_connection(credentials):  # bearer: every REST request
            with self.db.read_connection() as conn:
                return self.authenticators.authenticate(conn, credentials)
        with self.db.read() as s:
            return self.authenticators.authenticate(s, credentials)

    def set_console_reader(self, reader: ConsoleReader) -> None:
        """Where guest consoles are read from (the daemon's reconciler, which knows the drivers)."""
        self.console.reader = reader

    def instantiate(self, actor: Actor, ref: int | str, count: int = 1, name: str | None = None,
                    hold: bool = False, extra: dict[str, str] | None = None,
                    group: int | str | None = None) -> list[int]:
        """``template instantiate``: the stored template (USE right needed) plus extra attributes."""
        tmpl: dict[str, Any] = self.templates.get(actor, ref)
        return self.vms.create(actor, tmpl["body"], fmt="one", count=count, name=name, hold=hold,
                               extra=extra, group=group)
