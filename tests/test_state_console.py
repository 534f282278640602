"""The console's share of the state store on both backends: users, sessions, throttling, audit log."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from engine.state import StateStore


def test_users_sessions_failures_and_audit(state_location: str | Path) -> None:
    store = StateStore.open(state_location)
    try:
        store.add_tenant("hv-nord", "key-123456789", "secret-123456789")
        user = store.save_user("anna", "customer-admin", "hv-nord", "$argon2id$fake")
        assert (user.name, user.role, user.tenant) == ("anna", "customer-admin", "hv-nord")
        assert "fake" not in repr(user)
        store.create_session("sid-1", "anna", "csrf-1", dt.timedelta(hours=1))
        session = store.get_session("sid-1")
        assert session is not None and session.user.name == "anna" and session.csrf == "csrf-1"
        assert store.get_session("sid-2") is None
        store.create_session("sid-old", "anna", "csrf-2", dt.timedelta(seconds=-1))
        assert store.get_session("sid-old") is None  # expired
        # saving the user again (new role or password) ends its sessions
        store.save_user("anna", "consultant", None, "$argon2id$other")
        assert store.get_session("sid-1") is None
        assert [u.role for u in store.list_users()] == ["consultant"]

        store.note_login_failure("user:anna", "client:10.0.0.1")
        store.note_login_failure("user:anna")
        assert store.login_failures("user:anna", dt.timedelta(minutes=15)) == 2
        assert store.login_failures("client:10.0.0.1", dt.timedelta(minutes=15)) == 1
        store.clear_login_failures("user:anna")
        assert store.login_failures("user:anna", dt.timedelta(minutes=15)) == 0

        store.audit("web:anna", "token.saved", "hv-nord", token="…wxyz", account="Hausverwaltung Müller")
        store.audit("cli:root", "user.saved", None, user="anna")
        entries = store.audit_log()
        assert [e.action for e in entries] == ["user.saved", "token.saved"]
        assert entries[1].detail == {"token": "…wxyz", "account": "Hausverwaltung Müller"}
        assert [e.action for e in store.audit_log(tenant="hv-nord")] == ["token.saved"]
        assert store.delete_user("anna") and not store.delete_user("anna")
    finally:
        store.close()
