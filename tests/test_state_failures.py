"""The failures table and the sealed secrets behave the same on SQLite and PostgreSQL (cluster group)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from engine.secrets import PREFIX
from engine.state import StateStore
from engine.state.failures import FailureRow


def _row(ref: str, **kw: object) -> FailureRow:
    base = FailureRow(stage="write", kind="units", ref_id=ref, source_resource="units", source_id="s-" + ref,
                      category="rejected", status=422, reason="invalid_value on name: too long", field="name",
                      payload_hash="h1", first_run=1, first_seen_at="2026-12-01T04:00:00Z", last_run=1,
                      last_seen_at="2026-12-01T04:00:00Z", occurrences=1, attempts=1, next_retry_at=None,
                      retry_requested=False, acknowledged_at=None, ack_note=None)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_failures_are_stored_acknowledged_retried_and_resolved(state_location: str | Path) -> None:
    with StateStore.open(state_location) as store:
        store.add_tenant("acme", "ck_key_0123456789", "cs_secret_0123456789")
        store.save_failures("acme", [_row("u-1"), _row("u-2", category="conflict", status=409,
                                                      next_retry_at="2026-12-01T05:00:00Z")])
        rows = store.failures("acme")
        assert set(rows) == {("write", "units", "u-1"), ("write", "units", "u-2")}
        assert rows["write", "units", "u-2"].status == 409 and rows["write", "units", "u-1"].retry_requested is False
        assert store.acknowledge_failures("acme", [("write", "units", "u-1")], "Kunde informiert") == 1
        assert store.request_retry("acme", [("write", "units", "u-2")]) == 1
        rows = store.failures("acme")
        assert rows["write", "units", "u-1"].ack_note == "Kunde informiert"
        assert rows["write", "units", "u-1"].acknowledged and rows["write", "units", "u-2"].retry_requested
        store.save_failures("acme", [_row("u-1", occurrences=2, last_run=2)], delete=[("write", "units", "u-2")])
        rows = store.failures("acme")
        assert list(rows) == [("write", "units", "u-1")] and rows["write", "units", "u-1"].occurrences == 2
        assert store.unacknowledge_failures("acme", [("write", "units", "u-1")]) == 1
        store.remove_tenant("acme")
        assert store.get_tenant("acme") is None


def test_secrets_are_sealed_on_either_backend(state_location: str | Path) -> None:
    with StateStore.open(state_location) as store:
        store.add_tenant("acme", "ck_key_0123456789", "cs_secret_0123456789")
        store.save_connection("acme", "scl_token_0123456789", None)
        assert store.secret_key_ids() and None not in store.secret_key_ids()
        assert store.connection_token("acme") == "scl_token_0123456789"
        result = store.rotate_secrets()
        assert result.already_current == 3
    with StateStore.open(state_location) as store:
        assert tuple(store.tenant_credentials("acme")) == ("ck_key_0123456789", "cs_secret_0123456789")
        assert all(kid is not None for kid in store.secret_key_ids())
    assert PREFIX.startswith("enc:")


def test_a_copy_to_a_location_with_another_key_re_encrypts_the_secrets(tmp_path: Path,
                                                                        state_location: str | Path) -> None:
    from engine.secrets import KeySource, SecretBox
    from engine.state.copy import copy_state

    src_box = SecretBox(KeySource(None, tmp_path / "src" / "secret.key"))
    dst_box = SecretBox(KeySource(None, tmp_path / "dst" / "secret.key"))
    src_path = tmp_path / "src" / "state.db"
    with StateStore.open(src_path, secrets=src_box) as src:
        src.add_tenant("acme", "ck_key_0123456789", "cs_secret_0123456789")
        src.save_connection("acme", "scl_token_0123456789", None)
        dst_path = state_location if isinstance(state_location, str) else tmp_path / "dst" / "state.db"
        with StateStore.open(dst_path, secrets=dst_box) as dst:
            copy_state(src, dst)
    with StateStore.open(dst_path, secrets=SecretBox(KeySource(None, tmp_path / "dst" / "secret.key"))) as dst:
        assert dst.connection_token("acme") == "scl_token_0123456789"
        assert tuple(dst.tenant_credentials("acme")) == ("ck_key_0123456789", "cs_secret_0123456789")


def test_rotate_key_on_either_backend(state_location: str | Path) -> None:
    from click.testing import CliRunner

    from engine.cli import main

    with StateStore.open(state_location) as store:
        store.add_tenant("acme", "ck_key_0123456789", "cs_secret_0123456789")
        before = set(store.secret_key_ids())
    result = CliRunner().invoke(main, ["rotate-key", "--state", str(state_location)])
    assert result.exit_code == 0, result.output
    assert "2 secret(s) re-encrypted" in result.output
    with StateStore.open(state_location) as store:
        after = set(store.secret_key_ids())
        assert after.isdisjoint(before) and len(after) == 1
        assert store.tenant_credentials("acme").secret == "cs_secret_0123456789"
