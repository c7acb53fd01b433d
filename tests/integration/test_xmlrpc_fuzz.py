"""Every XML-RPC method with parameters of every shape, in process on both stores: each answer is
an XML-RPC fault or OpenNebula's array, never the internal error that marks a bug."""

from __future__ import annotations

import random
import xmlrpc.client
from typing import Any

import pytest

from tests.support.helpers import admin
from vocloud.api.xmlrpc.app import dispatch
from vocloud.api.xmlrpc.methods import INTERNAL, METHODS
from vocloud.service.cloud import Cloud

VALUES: list[Any] = [
    -2**31, -5, -2, -1, 0, 1, 2, 7, 2**31 - 1, True, False, "", "x", "0", "-1", "a:b", "NAME=\"x\"",
    'VM=[VMS="a"]', 'LEASES=[IP="10.0.0.300"]', 'SIZE="99999999999"', "CPU=[[[",
    "<TEMPLATE><A>1</A></TEMPLATE>", "<TEMPLATE>", "\u00e9\u4e2d", "x" * 5000,
    1.5, [], [1, "a"], {}, {"a": 1},
]


def _answer(body: bytes) -> list[Any] | None:
    try:
        (value,), _ = xmlrpc.client.loads(body)
    except xmlrpc.client.Fault:
        return None
    assert isinstance(value, list)
    return value


def test_no_method_fails_with_an_internal_error(cloud: Cloud) -> None:
    root = admin(cloud)
    token = cloud.accounts.new_token(root, "admin")["token"]
    cloud.hosts.create(root, "h1", "sim", cpu=8, memory=16384)
    rng = random.Random(12)
    good = f"admin:{token}"
    ints = [v for v in VALUES if type(v) is int]
    texts = [v for v in VALUES if isinstance(v, str)]
    for name in sorted(METHODS):
        for _ in range(60):
            # mostly the shapes the methods take (ints, then strings), with any value anywhere
            params = [rng.choice(VALUES if rng.random() < 0.2 else (ints if i == 0 else ints + texts))
                      for i in range(rng.randint(0, 6))]
            session = good if rng.random() < 0.9 else rng.choice(["admin:wrong", "", "admin"])
            body = xmlrpc.client.dumps((session, *params), name, allow_none=True).encode()
            out = _answer(dispatch(cloud, body))
            if out is not None and out[0] is False:
                assert out[2] != INTERNAL, (name, params, out)


@pytest.mark.parametrize("body", [b"", b"<", b"<methodCall/>", b"\x00" * 100])
def test_non_calls_are_faults(cloud: Cloud, body: bytes) -> None:
    assert _answer(dispatch(cloud, body)) is None
