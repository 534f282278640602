"""The state file itself: creation, permissions, migrations, and refusing what is not ours."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from engine.errors import StateError
from engine.secrets import SecretBox
from engine.state import (
    DEFAULT_TENANT,
    LATEST_VERSION,
    Migration,
    StateStore,
    default_state_path,
    migrate,
    payload_hash,
)
from engine.state.migrations import APPLICATION_ID


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def version_of(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


def test_fresh_file_is_private_migrated_and_has_the_default_tenant(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    with StateStore.open(path) as store:
        assert store.schema_version == LATEST_VERSION
        assert [t.name for t in store.list_tenants()] == [DEFAULT_TENANT]
        store.add_tenant("acme", "key-1234", "secret-5678")  # forces -wal/-shm into existence
        assert mode(path) == 0o600
        for side in ("-wal", "-shm"):
            assert mode(Path(f"{path}{side}")) == 0o600
    assert mode(path.parent) == 0o700
    assert version_of(path) == LATEST_VERSION


def test_reopen_is_idempotent_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore.open(path) as store:
        store.add_tenant("acme", "key-1234", "secret-5678")
        store.mark_written("acme", None, "units", "u1", {"name": "WE 01"}, "h1", "units", "s1")
    for _ in range(2):
        with StateStore.open(path) as store:
            assert store.schema_version == LATEST_VERSION
            assert [t.name for t in store.list_tenants()] == ["acme", DEFAULT_TENANT]
            assert store.records("acme")["units", "u1"].payload == {"name": "WE 01"}


def test_a_v0_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    raw = sqlite3.connect(path)
    raw.execute("VACUUM")  # a valid, empty SQLite database at user_version 0
    raw.close()
    assert path.stat().st_size > 0 and version_of(path) == 0
    with StateStore.open(path) as store:
        assert store.schema_version == LATEST_VERSION
        assert store.get_tenant(DEFAULT_TENANT) is not None


def test_migrations_are_stepwise_idempotent_and_transactional(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
    one = Migration("one", ("CREATE TABLE a (x)",))
    two = Migration("two", ("CREATE TABLE b (x)",))
    assert migrate(db, [one, two]) == [1, 2]
    assert migrate(db, [one, two]) == []
    broken = Migration("three", ("CREATE TABLE c (x)", "CREATE TABLE a (x)"))  # second statement fails
    with pytest.raises(sqlite3.OperationalError):
        migrate(db, [one, two, broken])
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert tables == {"a", "b"}  # "c" rolled back with the failed step
    assert int(db.execute("PRAGMA user_version").fetchone()[0]) == 2
    assert not db.in_transaction
    fixed = Migration("three", ("CREATE TABLE c (x)",), function=lambda d: d.execute("INSERT INTO c VALUES (1)"))
    assert migrate(db, [one, two, fixed]) == [3]
    assert db.execute("SELECT x FROM c").fetchall() == [(1,)]
    db.close()


def _make_newer(path: Path) -> None:
    with StateStore.open(path) as store:
        store.add_tenant("acme", "key-1234", "secret-5678")
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    raw.commit()
    raw.close()


def test_a_newer_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    _make_newer(path)
    before = path.read_bytes()
    files_before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(StateError, match="newer casavi-sync") as info:
        StateStore.open(path)
    assert "upgrade casavi-sync" in str(info.value) and "\n" not in str(info.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == files_before


def test_a_newer_version_still_in_the_wal_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore.open(path).close()
    raw = sqlite3.connect(path, isolation_level=None)  # keeps the WAL alive: the header on disk is stale
    raw.execute("PRAGMA wal_autocheckpoint = 0")
    raw.execute(f"PRAGMA user_version = {LATEST_VERSION + 3}")
    try:
        with pytest.raises(StateError, match=f"schema v{LATEST_VERSION + 3}"):
            StateStore.open(path)
    finally:
        raw.close()


def _sqlite_of_someone_else(path: Path) -> None:
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
    raw.commit()
    raw.close()


def _truncated(path: Path) -> None:
    with StateStore.open(path) as store:
        store.add_tenant("acme", "key-1234", "secret-5678")
        with store.batch():
            for i in range(3000):
                store.mark_written("acme", None, "units", f"u{i}", {"n": "x" * 200}, "h", "units", str(i))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _foreign_application(path: Path) -> None:
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA application_id = {APPLICATION_ID + 1}")
    raw.commit()
    raw.close()


@pytest.mark.parametrize("make", [
    pytest.param(lambda p: p.write_bytes(os.urandom(8192)), id="random-bytes"),
    pytest.param(lambda p: p.write_text("tenant: acme\ntoken: nope\n"), id="text-file"),
    pytest.param(lambda p: p.write_bytes(b"SQLite format 3\x00" + b"\x00" * 20), id="header-cut-short"),
    pytest.param(_truncated, id="truncated-database"),
    pytest.param(_sqlite_of_someone_else, id="foreign-sqlite-database"),
    pytest.param(_foreign_application, id="other-application-id"),
])
def test_what_is_not_a_state_file_is_refused_in_one_line(tmp_path: Path, make: Callable[[Path], object]) -> None:
    path = tmp_path / "state.db"
    make(path)
    before = path.read_bytes()
    with pytest.raises(StateError) as info:
        StateStore.open(path)
    message = str(info.value)
    assert message == (f"{path} is not a casavi-sync state file (or it is damaged); "
                       "restore it from backup or point --state elsewhere")
    assert path.read_bytes() == before


def test_damage_found_later_is_a_state_error_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore.open(path) as store:
        store.add_tenant("acme", "key-1234", "secret-5678")
        with store.batch():
            for i in range(3000):
                store.mark_written("acme", None, "units", f"u{i}", {"n": "x" * 200}, payload_hash({"i": i}),
                                   "units", str(i))
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(3 * page, len(data) - page, page):  # scribble over every page header but the first few
        data[offset:offset + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(StateError, match="not a casavi-sync state file"), StateStore.open(path) as store:
        store.records("acme")


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="is a directory"):
        StateStore.open(tmp_path)


def test_a_loose_mode_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    StateStore.open(path).close()
    os.chmod(path, 0o644)
    StateStore.open(path).close()
    assert mode(path) == 0o600


@pytest.mark.parametrize(("environ", "expected"), [
    ({"CASAVI_SYNC_STATE": "/srv/cs/state.db", "XDG_STATE_HOME": "/x"}, "/srv/cs/state.db"),
    ({"XDG_STATE_HOME": "/var/lib/me", "HOME": "/home/u"}, "/var/lib/me/casavi-sync/state.db"),
    ({"XDG_STATE_HOME": "relative/ignored", "HOME": "/home/u"}, "/home/u/.local/state/casavi-sync/state.db"),
    ({"HOME": "/home/u"}, "/home/u/.local/state/casavi-sync/state.db"),
    ({"CASAVI_SYNC_STATE": "  ", "HOME": "/home/u"}, "/home/u/.local/state/casavi-sync/state.db"),
])
def test_default_state_path(environ: dict[str, str], expected: str) -> None:
    assert default_state_path(environ) == Path(expected)


def test_backup_is_a_private_consistent_copy(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with StateStore.open(path) as store:
        store.add_tenant("acme", "key-1234", "secret-5678")
        with store.batch():
            store.mark_written("acme", 7, "units", "u1", {"name": "WE 01"}, "h1", "units", "s1")
            copy = store.backup(tmp_path / "backups" / "state-1.db")  # queued marks are included
        with pytest.raises(StateError, match="already exists"):
            store.backup(copy)
    assert mode(copy) == 0o600
    assert b"secret-5678" not in copy.read_bytes()  # the backup holds the secrets encrypted only
    # The key does not travel with the backup: restoring it elsewhere needs the key file too.
    with StateStore.open(copy, secrets=SecretBox.for_state(path)) as restored:
        assert restored.records("acme")["units", "u1"].updated_run == 7
        assert restored.tenant_credentials("acme").secret == "secret-5678"
