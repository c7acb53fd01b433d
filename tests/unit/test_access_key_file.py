"""The site key that seals EC2 secrets: created 0600 once, refused when others can read it or
when it is not a key, and a secret sealed under another site's key does not open."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vocloud.app.daemon import ACCESS_KEY_FILE, access_key_sealer
from vocloud.errors import InvalidInput
from vocloud.service.access_keys import Sealer


def test_created_once_private_and_stable(tmp_path: Path) -> None:
    first = access_key_sealer(tmp_path)
    assert (tmp_path / ACCESS_KEY_FILE).stat().st_mode & 0o777 == 0o600
    sealed = first.seal("the-secret")
    assert "the-secret" not in sealed
    assert access_key_sealer(tmp_path).unseal(sealed) == "the-secret"  # a restart reads it back


def test_loose_mode_and_junk_are_refused(tmp_path: Path) -> None:
    access_key_sealer(tmp_path)
    os.chmod(tmp_path / ACCESS_KEY_FILE, 0o644)
    with pytest.raises(InvalidInput, match="readable by others"):
        access_key_sealer(tmp_path)
    os.chmod(tmp_path / ACCESS_KEY_FILE, 0o600)
    (tmp_path / ACCESS_KEY_FILE).write_text("junk\n")
    with pytest.raises(InvalidInput, match="Fernet key"):
        access_key_sealer(tmp_path)


def test_another_sites_key_opens_nothing() -> None:
    assert Sealer().unseal(Sealer().seal("x")) is None
    assert Sealer().unseal("not a token") is None
