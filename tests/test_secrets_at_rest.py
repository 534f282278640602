"""Secrets at rest (issue 9, item 13): the tokens and key pairs in the state store are encrypted.

The key never lives in the state store: it comes from CASAVI_SYNC_SECRET_KEY, a key file, or the
generated 0600 default key file beside the state file. Each ciphertext names its key; rotate-key
re-encrypts with the old key accepted until it is done; a process with the wrong key refuses to
start with a message that says what to do, including when the key is lost.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.fernet import Fernet

from engine.cli import main
from engine.errors import ConfigError
from engine.secrets import KEY_ENV, KEY_FILE_ENV, PREFIX, KeySource, SecretBox, SecretKeyError, key_id
from engine.state import StateStore

KEY, SECRET, TOKEN = "ck_live_0123456789abcdef", "cs_live_fedcba9876543210", "scl_" + "T0k3n" * 8


def _stored(path: Path) -> list[str]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT casavi_key, casavi_secret FROM tenants WHERE name = 'acme'").fetchall()
        rows += db.execute("SELECT scalara_token, '' FROM connections WHERE tenant = 'acme'").fetchall()
    finally:
        db.close()
    return [v for row in rows for v in row if v]


def _raw_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.delenv(KEY_ENV, raising=False)
    monkeypatch.delenv(KEY_FILE_ENV, raising=False)
    path = tmp_path / "deploy" / "state.db"
    with StateStore.open(path) as store:
        store.add_tenant("acme", KEY, SECRET)
        store.save_connection("acme", TOKEN, None)
    yield path


def test_secrets_are_encrypted_in_the_state_file_and_the_key_lives_apart(state: Path) -> None:
    raw = _raw_bytes(state)
    for secret in (KEY, SECRET, TOKEN):
        assert secret.encode() not in raw
    key_file = state.parent / "secret.key"
    assert key_file.exists() and os.stat(key_file).st_mode & 0o777 == 0o600
    key = next(line for line in key_file.read_text().splitlines() if not line.startswith("#")).encode()
    assert key not in raw  # never the key in the state file
    for value in _stored(state):  # each ciphertext names the key that made it
        assert value.startswith(f"{PREFIX}{key_id(key)}:")
    with StateStore.open(state) as store:
        assert tuple(store.tenant_credentials("acme")) == (KEY, SECRET)
        assert store.connection_token("acme") == TOKEN
        assert store.get_tenant("acme").casavi_key_fingerprint == "…" + KEY[-4:]  # type: ignore[union-attr]


def test_a_key_from_the_environment_is_used_and_no_key_file_is_written(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    key = Fernet.generate_key()
    monkeypatch.setenv(KEY_ENV, key.decode())
    path = tmp_path / "state.db"
    with StateStore.open(path) as store:
        store.add_tenant("acme", KEY, SECRET)
    assert not (tmp_path / "secret.key").exists()
    assert all(v.startswith(f"{PREFIX}{key_id(key)}:") for v in _stored(path))
    monkeypatch.setenv(KEY_ENV, "not-a-key")
    with pytest.raises(ConfigError, match=f"{KEY_ENV} .entry 1. is not a Fernet key"):
        StateStore.open(path)


def test_a_wrong_key_refuses_to_start_and_says_what_to_do(state: Path) -> None:
    other = Fernet.generate_key().decode()
    result = CliRunner().invoke(main, ["status", "--state", str(state)], env={KEY_ENV: other})
    assert result.exit_code == 3
    text = result.output
    assert "error: the stored secrets were encrypted with key" in text and key_id(other.encode()) in text
    assert "rotate-key --forget-unreadable" in text and "casavi-sync connect --tenant NAME" in text
    assert "Traceback" not in text and len(text.strip().splitlines()) == 1
    # A missing key file (the state file moved without it) is refused the same way.
    (state.parent / "secret.key").rename(state.parent / "elsewhere.key")
    result = CliRunner().invoke(main, ["run", "--state", str(state), "--tenant", "acme"], env={KEY_ENV: ""})
    assert result.exit_code == 3 and "does not exist" in result.output
    result = CliRunner().invoke(main, ["status", "--state", str(state)],
                                env={KEY_ENV: "", KEY_FILE_ENV: str(state.parent / "elsewhere.key")})
    assert result.exit_code == 0, result.output


def test_rotate_key_re_encrypts_and_retires_the_old_key(state: Path) -> None:
    key_file = state.parent / "secret.key"
    old = KeySource(None, key_file).load()
    result = CliRunner().invoke(main, ["rotate-key", "--state", str(state)], env={KEY_ENV: ""})
    assert result.exit_code == 0, result.output
    new = KeySource(None, key_file).load()
    assert len(new) == 1 and new != old
    assert "3 secret(s) re-encrypted" in result.output and key_id(old[0]) in result.output
    assert all(v.startswith(f"{PREFIX}{key_id(new[0])}:") for v in _stored(state))
    assert os.stat(key_file).st_mode & 0o777 == 0o600
    with StateStore.open(state) as store:
        assert tuple(store.tenant_credentials("acme")) == (KEY, SECRET)
        assert store.connection_token("acme") == TOKEN


def test_a_rotation_interrupted_midway_still_decrypts_and_finishes_on_rerun(state: Path) -> None:
    key_file = state.parent / "secret.key"
    source = KeySource(None, key_file)
    old = source.load()
    source.write([Fernet.generate_key(), *old])  # step 1 done, crash before step 2
    with StateStore.open(state) as store:
        assert store.connection_token("acme") == TOKEN  # the old key is still accepted
    result = CliRunner().invoke(main, ["rotate-key", "--state", str(state)], env={KEY_ENV: ""})
    assert result.exit_code == 0, result.output
    assert len(source.load()) == 1
    with StateStore.open(state) as store:
        assert store.connection_token("acme") == TOKEN


def test_a_running_process_keeps_reading_secrets_across_a_rotation(state: Path) -> None:
    with StateStore.open(state) as serving:  # e.g. serve, holding the old key ring
        assert serving.connection_token("acme") == TOKEN
        result = CliRunner().invoke(main, ["rotate-key", "--state", str(state)], env={KEY_ENV: ""})
        assert result.exit_code == 0, result.output
        assert serving.connection_token("acme") == TOKEN  # reloads the key file on the new key id


def test_environment_keys_rotate_new_first_with_the_old_accepted(state: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = KeySource(None, state.parent / "secret.key").load()[0]
    new = Fernet.generate_key()
    both = f"{new.decode()},{old.decode()}"
    result = CliRunner().invoke(main, ["rotate-key", "--state", str(state)], env={KEY_ENV: both})
    assert result.exit_code == 0, result.output
    assert f"remove them from {KEY_ENV}" in result.output and key_id(old) in result.output
    assert all(v.startswith(f"{PREFIX}{key_id(new)}:") for v in _stored(state))
    monkeypatch.setenv(KEY_ENV, new.decode())
    with StateStore.open(state) as store:
        assert store.connection_token("acme") == TOKEN


def test_a_lost_key_means_forget_and_reconnect(state: Path) -> None:
    (state.parent / "secret.key").unlink()
    result = CliRunner().invoke(main, ["rotate-key", "--state", str(state)], env={KEY_ENV: ""})
    assert result.exit_code == 3 and "--forget-unreadable" in result.output
    result = CliRunner().invoke(main, ["rotate-key", "--state", str(state), "--forget-unreadable"],
                                env={KEY_ENV: ""})
    assert result.exit_code == 0, result.output
    assert "casavi-sync connect --tenant acme" in result.output and "casavi-sync tenant add acme" in result.output
    with StateStore.open(state) as store:  # starts again; the tenant and its history stay
        assert store.get_tenant("acme") is not None and store.connection_token("acme") is None
        store.add_tenant("acme", KEY, SECRET)
        assert store.tenant_credentials("acme").secret == SECRET


def test_plaintext_from_an_older_release_is_sealed_on_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    path = tmp_path / "state.db"
    with StateStore.open(path):
        pass
    db = sqlite3.connect(path)
    db.execute("INSERT INTO tenants (name, casavi_key, casavi_secret, created_at) VALUES ('acme', ?, ?, 'x')",
               (KEY, SECRET))
    db.execute("INSERT INTO connections VALUES ('acme', ?, NULL, 'x', 'x')", (TOKEN,))
    db.commit()
    db.close()
    with StateStore.open(path) as store:
        assert store.connection_token("acme") == TOKEN
        assert store.secret_key_ids() == {key_id(KeySource(None, tmp_path / "secret.key").load()[0]): 3}
    assert all(v.startswith(PREFIX) for v in _stored(path))


def test_a_damaged_ciphertext_is_a_clear_error(state: Path) -> None:
    db = sqlite3.connect(state)
    (value,) = db.execute("SELECT scalara_token FROM connections").fetchone()
    db.execute("UPDATE connections SET scalara_token = ?", (value[:-6] + "AAAAAA",))
    db.commit()
    db.close()
    with pytest.raises(SecretKeyError, match="does not decrypt with key"):
        StateStore.open(state)


def test_the_default_key_file_is_created_once_by_concurrent_openers(tmp_path: Path) -> None:
    boxes = [SecretBox(KeySource(None, tmp_path / "secret.key")) for _ in range(3)]
    sealed = [b.seal("x") for b in boxes]  # each one created or adopted the one key file
    assert all(b.unseal(s) == "x" for b in boxes for s in sealed)
    assert len(KeySource(None, tmp_path / "secret.key").load()) == 1


def test_the_key_file_is_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        SecretBox(KeySource(None, tmp_path / "new" / "secret.key")).seal("x")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "new" / "secret.key").st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "new").st_mode & 0o777 == 0o700
