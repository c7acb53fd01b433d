"""The daemon's start-up file-mode decision (engine/filemodes.py), pure and with real files."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from vocloud.config import Settings
from vocloud.engine.filemodes import (
    DIR_MODE,
    FILE_MODE,
    PRIVATE,
    FileModeError,
    Rule,
    Seen,
    decide,
    rules,
    secure,
    sqlite_file,
)

ME, OTHER = 1000, 1001
DATA = Rule(Path("/d"), "data directory", True, DIR_MODE)
DB = Rule(Path("/d/vocloud.db"), "database file", False, FILE_MODE)


def test_looser_modes_of_own_paths_are_fixed_to_the_rule() -> None:
    fixes, refusals = decide([(DATA, Seen(0o755, ME, True)), (DB, Seen(0o644, ME, False))], ME)
    assert refusals == []
    assert [(f.rule.path, f.old, f.new) for f in fixes] == [(Path("/d"), 0o755, 0o700),
                                                            (Path("/d/vocloud.db"), 0o644, 0o600)]
    assert str(fixes[1]) == "database file /d/vocloud.db: mode 0644 -> 0600"


def test_tight_or_tighter_modes_and_absent_paths_are_left_alone() -> None:
    fixes, refusals = decide([(DATA, Seen(0o700, ME, True)), (DB, Seen(0o400, ME, False)),
                              (Rule(Path("/d/admin.token"), "admin token", False, FILE_MODE), None)], ME)
    assert (fixes, refusals) == ([], [])


def test_only_the_extra_bits_go() -> None:
    run_file = Rule(Path("/d/qemu/vc-1/x"), "VM run file", False, PRIVATE)
    (fix,), _ = decide([(run_file, Seen(0o755, ME, False))], ME)
    assert fix.new == 0o700  # an executable stays executable for its owner
    (fix,), _ = decide([(DB, Seen(0o4777, ME, False))], ME)
    assert fix.new == 0o600  # setuid and friends go too


def test_a_loose_path_of_another_user_is_refused_with_what_to_do() -> None:
    fixes, (refusal,) = decide([(DATA, Seen(0o700, ME, True)), (DB, Seen(0o644, OTHER, False))], ME)
    assert fixes == [] and refusal.path == Path("/d/vocloud.db")
    assert refusal.message == (
        "database file /d/vocloud.db has mode 0644, open to other users, and belongs to uid 1001, "
        "not to the daemon's user (uid 1000), so the daemon will not change it: run "
        "'chown 1000 /d/vocloud.db' or, as its owner, 'chmod 0600 /d/vocloud.db'")


def test_a_tight_path_of_another_user_is_accepted() -> None:
    assert decide([(DB, Seen(0o600, OTHER, False))], ME) == ([], [])


def test_a_path_of_the_wrong_kind_is_refused() -> None:
    _, (r1, r2) = decide([(DATA, Seen(0o700, ME, False)), (DB, Seen(0o700, ME, True))], ME)
    assert r1.message == "data directory /d is not a directory; move it away"
    assert r2.message == "database file /d/vocloud.db is not a regular file; move it away"


def test_sqlite_file_of_urls() -> None:
    assert sqlite_file("sqlite:////srv/v/vocloud.db") == Path("/srv/v/vocloud.db")
    assert sqlite_file("postgresql+psycopg://u:p@h/db") is None
    assert sqlite_file("sqlite:///:memory:") is None


def _mode(p: Path) -> int:
    return p.stat().st_mode & 0o7777


def test_secure_fixes_real_files_and_logs_each(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    (data / "secrets").mkdir(parents=True)
    (data / "qemu" / "vcabc-7").mkdir(parents=True)
    files = {data / "vocloud.db": 0o644, data / "vocloud.db-wal": 0o644, data / "admin.token": 0o640,
             data / "secrets" / "munge": 0o644, data / "qemu" / "vcabc-7" / "context.iso": 0o644,
             data / "vocloud.toml": 0o644}
    for f, mode in files.items():
        f.write_text("x")
        f.chmod(mode)
    for d in (data, data / "secrets", data / "qemu", data / "qemu" / "vcabc-7"):
        d.chmod(0o755)
    (data / "secrets" / "link").symlink_to("/etc/hostname")  # a link's target is not ours
    settings = Settings(data_dir=data)
    with caplog.at_level(logging.WARNING, "vocloud.daemon"):
        fixes = secure(settings)
    assert {f.rule.path for f in fixes} == {*files, data, data / "secrets", data / "qemu",
                                             data / "qemu" / "vcabc-7"}
    assert all(_mode(f) == 0o600 for f in files)
    assert _mode(data) == _mode(data / "secrets") == _mode(data / "qemu" / "vcabc-7") == 0o700
    assert f"file mode fixed, it was open to other users: data directory {data}: mode 0755 -> 0700" \
        in caplog.text
    assert f"{data / 'vocloud.db'}: mode 0644 -> 0600" in caplog.text
    assert secure(settings) == []  # a second start finds nothing to do
    assert _mode(Path("/etc/hostname")) & 0o044  # untouched


def test_secure_changes_nothing_when_one_path_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    data.chmod(0o755)
    db = data / "vocloud.db"
    db.write_text("")
    db.chmod(0o644)
    with pytest.raises(FileModeError) as exc:
        secure(Settings(data_dir=data), uid=os.geteuid() + 1)  # as if another user owned them
    assert exc.value.message.startswith("refusing to start, files would be open to other users: ")
    assert f"data directory {data} has mode 0755" in exc.value.message
    assert f"database file {db} has mode 0644" in exc.value.message
    assert _mode(data) == 0o755 and _mode(db) == 0o644


def test_rules_cover_the_configured_secrets_dir(tmp_path: Path) -> None:
    elsewhere = tmp_path / "s"
    elsewhere.mkdir()
    (elsewhere / "munge").write_text("k")
    got = {r.path: r.why for r in rules(Settings(data_dir=tmp_path / "d", secrets_dir=str(elsewhere)), None)}
    assert got[elsewhere] == "secrets directory" and got[elsewhere / "munge"] == "secret"
