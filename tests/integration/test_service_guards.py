"""Service-layer guards every front-end relies on (both databases): pluggable authentication,
the console-log rights check, and references/names/numbers that used to crash the store."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from tests.support.helpers import admin, user_in
from vocloud.errors import Forbidden, InvalidInput, NotFound, Unauthorized
from vocloud.service import capacity
from vocloud.service.auth import Actor, Authenticator, Credentials
from vocloud.service.base import check_name, find
from vocloud.service.cloud import Cloud
from vocloud.store.schema import Group


def test_bearer_tokens_through_the_authenticator_registry(cloud: Cloud) -> None:
    token = cloud.accounts.new_token(admin(cloud), "admin")["token"]
    assert cloud.authenticate_with(Credentials("Bearer", token)).name == "admin"
    for creds, why in ((None, "missing credentials"), (Credentials("bearer", ""), "missing token"),
                       (Credentials("bearer", token + "x"), "invalid token"),
                       (Credentials("bearer", "x" * 10_000), "invalid token"),
                       (Credentials("bearer", "t\x00k"), "invalid token"),
                       (Credentials("basic", token), "scheme 'basic' is not accepted")):
        with pytest.raises(Unauthorized, match=why):
            cloud.authenticate_with(creds)
    assert token not in repr(Credentials("bearer", token))


def test_a_new_scheme_plugs_in_without_touching_front_ends(cloud: Cloud) -> None:
    class Sessions:
        """An OpenNebula-style ``user:password`` scheme, for the test only."""

        scheme = "one-session"

        def authenticate(self, session: Session, credentials: Credentials) -> Actor:
            user, _, password = credentials.value.partition(":")
            if password != "right":
                raise Unauthorized("wrong password")
            return Actor(99, user, 1, False)

    assert isinstance(Sessions(), Authenticator)
    cloud.authenticators.register(Sessions())
    assert cloud.authenticate_with(Credentials("one-session", "bob:right")).name == "bob"
    with pytest.raises(Unauthorized, match="wrong password"):
        cloud.authenticate_with(Credentials("one-session", "bob:wrong"))


def test_console_log_needs_manage_on_the_vm(cloud: Cloud) -> None:
    alice = user_in(cloud, "alice", "vo1")
    bob = user_in(cloud, "bob", "vo2")
    (vm,) = cloud.vms.create(alice, 'CPU="1"\nMEMORY="64"', hold=True)
    cloud.set_console_reader(lambda vm_id: f"console of {vm_id}")
    assert cloud.console.log(alice, vm)["log"] == f"console of {vm}"
    assert cloud.console.log(admin(cloud), vm)["state"] == "HOLD"
    with pytest.raises(Forbidden, match="MANAGE"):
        cloud.console.log(bob, vm)
    cloud.accounts.create_acl(admin(cloud), f"#{bob.user_id}", "VM", f"#{vm}", "USE")
    assert cloud.vms.show(bob, vm)["id"] == vm  # USE shows the record ...
    with pytest.raises(Forbidden, match="MANAGE"):
        cloud.console.log(bob, vm)  # ... but not the console
    with pytest.raises(NotFound):
        cloud.console.log(alice, 2**31 - 1)


def test_references_and_names_are_ascii_and_bounded(cloud: Cloud) -> None:
    with cloud.db.read() as s:
        assert find(s, Group, "group", "1").name == "admin"
        for ref in ("\u00b2", "\u0661", "99999999999", 2**63, -1):  # '²', Arabic-indic 1
            with pytest.raises(NotFound):
                find(s, Group, "group", ref)
        for bad in ("x" * 129, "a\x00b", ""):
            with pytest.raises(InvalidInput):
                find(s, Group, "group", bad)
    for name in ("\u00b2", "\u0661\u0662", "caf\u00e9", "12", "a b", "x" * 129):
        with pytest.raises(InvalidInput):
            check_name(name, "group")
    assert check_name(" vo-1.a_b ", "group") == "vo-1.a_b"


@pytest.mark.parametrize("cpu", [float("nan"), float("inf"), -float("inf"), 1e300])
def test_cpu_that_is_not_a_finite_size_is_refused(cloud: Cloud, cpu: float) -> None:
    with pytest.raises(InvalidInput, match="CPU"):
        capacity.milli(cpu)
    with pytest.raises(InvalidInput, match="cpu"):
        cloud.accounts.set_quota(admin(cloud), "group", "admin", cpu=cpu)


@pytest.mark.parametrize(("field", "value"), [("vms", 2**31), ("memory", 2**62), ("vms", -2)])
def test_quota_limits_are_bounded(cloud: Cloud, field: str, value: int) -> None:
    with pytest.raises(InvalidInput, match=field):
        cloud.accounts.set_quota(admin(cloud), "group", "admin", **{field: value})
