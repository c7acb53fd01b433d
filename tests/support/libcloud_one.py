"""apache-libcloud's OpenNebula (OCCI) driver, as the OCCI tests build it.

One place for the construction: libcloud is untyped, so the driver is handed out as ``Any``."""

from __future__ import annotations

from typing import Any

from libcloud.compute.drivers.opennebula import OpenNebulaNodeDriver


def one_driver(user: str, token: str, port: int, **kw: Any) -> Any:
    """libcloud's driver for a vocloud daemon on 127.0.0.1: API 3.8 with the plain token
    (``kw`` overrides, e.g. ``plain_auth=False`` to see the SHA1 refusal)."""
    opts: dict[str, Any] = {"api_version": "3.8", "plain_auth": True}
    opts.update(kw)
    return OpenNebulaNodeDriver(key=user, secret=token, secure=False,  # type: ignore[no-untyped-call]
                                host="127.0.0.1", port=port, **opts)
