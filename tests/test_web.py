"""The console without a browser: login, CSRF, tenant scoping, the token flow, no secret in any page, XSS.

The token form goes through the same ``ops.connection.connect`` as the CLI's ``connect``; these
tests drive it over HTTP (Starlette's TestClient) against the real sandbox on loopback.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.web_helpers import XSS_NAME, Console, console, csrf_of, login, wait_job


@pytest.fixture(scope="module")
def c(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    """One console for the module (hashing passwords and starting the sandbox take seconds); each test
    works on its own tenant or user, so the order does not matter."""
    with console(tmp_path_factory.mktemp("console")) as made:
        yield made


def connected(c: Console, client: Any, tenant: str) -> dict[str, Any] | None:
    """Connect ``tenant`` through the form unless it is; the initial import's snapshot."""
    if c.dep.store().get_connection(tenant) is not None:
        return None
    page = client.get(f"/tenants/{tenant}/scalara")
    r = client.post(f"/tenants/{tenant}/token", data={"csrf": csrf_of(page.text), "token": c.token})
    assert r.status_code == 303 and "msg_import" in r.headers["location"]
    return wait_job(c, tenant)


def no_secrets(c: Console, *bodies: str) -> None:
    for body in bodies:
        for secret in c.secrets():
            assert secret not in body


def test_unauthenticated_requests_are_redirected_to_login(c: Console) -> None:
    client = c.client()
    for path in ("/tenants", "/tenants/default/scalara", "/tenants/default/runs", "/audit", "/audit.csv",
                 "/tenants/default/plan"):
        r = client.get(path)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), path
    r = client.post("/tenants/default/token", data={"token": c.token})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_login_sets_a_safe_session_cookie_and_security_headers(c: Console) -> None:
    client = c.client()
    r = login(client, "team")
    assert r.status_code == 303 and r.headers["location"] == "/tenants"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    page = client.get("/tenants")
    assert page.status_code == 200 and "default" in page.text and "hv-sued" in page.text
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["cache-control"] == "no-store"
    assert "<script" not in page.text  # no inline script anywhere


@pytest.mark.slow
def test_wrong_password_and_throttling(c: Console) -> None:
    client = c.client()
    for _ in range(5):
        r = login(client, "sperre", "falsch-falsch")
        assert r.status_code == 400 and "Benutzername oder Passwort falsch" in r.text
    r = login(client, "sperre")  # right password, but throttled now
    assert r.status_code == 400 and "Zu viele fehlgeschlagene Anmeldungen" in r.text
    with c.dep.context().store() as store:
        actions = [e.action for e in store.audit_log(limit=10)]
    assert "login.throttled" in actions and "login.failed" in actions


def test_post_without_csrf_token_is_rejected(c: Console) -> None:
    client = c.client("team")
    r = client.post("/tenants/hv-sued/deactivate", data={})
    assert r.status_code == 403
    r = client.post("/tenants/hv-sued/deactivate", data={"csrf": "forged"})
    assert r.status_code == 403
    assert c.dep.store().tenant("hv-sued").activated
    # the login form has its own double-submit token
    fresh = c.client()
    r = fresh.post("/login", data={"user": "team", "password": "team-passwort-1"})
    assert r.status_code == 400 and "casavi_session" not in r.headers.get("set-cookie", "")


def test_only_the_casavi_team_activates(c: Console) -> None:
    kunde = c.client("kunde")
    page = kunde.get("/tenants/default/scalara")
    assert "casavi-Team muss sie zuerst aktivieren" in page.text and 'id="activate"' not in page.text
    r = kunde.post("/tenants/default/activate", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 403
    team = c.client("team")
    page = team.get("/tenants/default/scalara")
    r = team.post("/tenants/default/activate", data={"csrf": csrf_of(page.text)})
    assert r.status_code == 303
    assert c.dep.store().tenant("default").activated


def test_customer_admin_sees_only_their_tenant(c: Console) -> None:
    kunde = c.client("kunde")
    page = kunde.get("/tenants")
    assert "/tenants/default/scalara" in page.text and "hv-sued" not in page.text
    for path in ("/tenants/hv-sued/scalara", "/tenants/hv-sued/runs", "/tenants/hv-sued/plan",
                 "/tenants/nirgendwo/scalara"):
        assert kunde.get(path).status_code == 404, path
    assert kunde.get("/audit").status_code == 403
    csrf = csrf_of(page.text)
    assert kunde.post("/tenants/hv-sued/token", data={"csrf": csrf, "token": c.token}).status_code == 404
    assert c.dep.store().get_connection("hv-sued") is None


def test_wrong_token_shows_the_german_error_with_the_menu_path(c: Console) -> None:
    client = c.client("team")
    page = client.get("/tenants/hv-sued/scalara")
    assert 'type="password"' in page.text and 'autocomplete="off"' in page.text
    r = client.post("/tenants/hv-sued/token", data={"csrf": csrf_of(page.text), "token": "falsches-token-123456"})
    assert r.status_code == 400
    assert "SCALARA hat dieses Token abgelehnt" in r.text
    assert "Systemeinstellungen &gt; Externe Anbindungen &gt; casavi &gt; Generieren" in r.text
    assert "falsches-token-123456" not in r.text
    assert c.dep.store().get_connection("hv-sued") is None


@pytest.mark.slow
def test_connect_imports_then_replace_without_import_no_secret_anywhere(c: Console) -> None:
    client = c.client("team")
    assert c.dep.store().get_connection("hv-nord") is None
    snap = connected(c, client, "hv-nord")
    assert snap is not None and snap["outcome"] in ("clean", "partial") and snap["runId"]
    assert {s["phase"] for s in snap["steps"]} >= {"extract"}
    bodies = []
    page = client.get("/tenants/hv-nord/scalara")
    bodies.append(page.text)
    assert "Bericht #" in page.text and c.dep.store().get_connection("hv-nord").initial_import_at
    runs_before = len(c.dep.store().runs("hv-nord"))
    r = client.post("/tenants/hv-nord/token", data={"csrf": csrf_of(page.text), "token": c.token})
    assert r.status_code == 303 and "msg_replaced" in r.headers["location"]
    assert c.token not in r.headers["location"]
    bodies.append(client.get(r.headers["location"]).text)
    assert len(c.dep.store().runs("hv-nord")) == runs_before
    run_id = snap["runId"]
    for path in ("/tenants", "/tenants/hv-nord/runs", f"/tenants/hv-nord/runs/{run_id}", "/tenants/hv-nord/mappings",
                 "/audit", "/audit.csv", "/audit.json"):
        resp = client.get(path)
        assert resp.status_code == 200, path
        bodies.append(resp.text)
    no_secrets(c, *bodies)
    mappings = client.get("/tenants/hv-nord/mappings").text
    assert '<strong id="validity">gültig</strong>' in mappings and f"#{run_id}" in mappings  # coverage of that run
    audit = client.get("/audit.json").json()
    assert [e["action"] for e in audit if e["tenant"] == "hv-nord"][:3] == ["token.replaced", "run.started",
                                                                             "token.saved"]
    assert all(e["actor"] == "web:team" for e in audit[:3])


@pytest.mark.slow
def test_scalara_data_is_escaped(c: Console) -> None:
    client = c.client("team")
    connected(c, client, "hv-nord")
    prop = sorted(c.sb.scalara.dataset()["properties"])[0]
    c.sb.scalara.update_record("properties", prop, {"name": XSS_NAME})
    plan = client.get("/tenants/hv-nord/plan")
    assert plan.status_code == 200
    assert "<script>alert" not in plan.text
    assert "&lt;script&gt;alert(" in plan.text and "Müller &amp; Söhne" in plan.text and "Grüne Aue" in plan.text
    explain = client.get(f"/tenants/hv-nord/explain/properties/{prop}")
    assert explain.status_code == 200 and "<script>alert" not in explain.text and "&lt;script&gt;" in explain.text


@pytest.mark.slow
def test_run_now_is_refused_while_the_lock_is_held(c: Console) -> None:
    connected(c, c.client("team"), "hv-nord")
    client = c.client("ops")
    page = client.get("/tenants/hv-nord/runs")
    with c.dep.context("hv-nord").store() as store, store.acquire_lock("hv-nord", "manual"):
        r = client.post("/tenants/hv-nord/run", data={"csrf": csrf_of(page.text)})
        plan = client.get("/tenants/hv-nord/plan")
    assert r.status_code == 409 and "wird gerade synchronisiert" in r.text and "Prozess" in r.text
    assert 'id="busy"' in plan.text and 'id="run-now"' not in plan.text


def test_english_is_switchable(c: Console) -> None:
    client = c.client("team")
    r = client.get("/lang/en?next=/tenants")
    assert r.status_code == 303 and r.headers["location"] == "/tenants"
    assert "Tenants" in client.get("/tenants").text
    assert client.get("/lang/en?next=https://evil.example/").headers["location"] == "/tenants"


@pytest.mark.slow
def test_failures_are_listed_and_acknowledged(c: Console) -> None:
    connected(c, c.client("team"), "hv-nord")
    client = c.client("ops")
    page = client.get("/tenants/hv-nord/failures")
    assert page.status_code == 200 and 'id="failures"' in page.text and "failure-new" in page.text
    from engine.ops.failures import list_failures

    first = list_failures(c.dep.context("hv-nord"))[0]
    r = client.post("/tenants/hv-nord/failures/acknowledge",
                    data={"csrf": csrf_of(page.text), "kind": first["kind"], "id": first["id"], "note": "<b>wissen wir</b>"})
    assert r.status_code == 303
    after = client.get(r.headers["location"])
    assert "Fehler bestätigt" in after.text and "&lt;b&gt;wissen wir&lt;/b&gt;" in after.text
    assert any(f["acknowledged"] for f in list_failures(c.dep.context("hv-nord")))
    assert client.post("/tenants/hv-nord/failures/acknowledge", data={"kind": "x", "id": "y"}).status_code == 403
    assert "failure.acknowledged" in [e.action for e in c.dep.store().audit_log(tenant="hv-nord")]


def test_i18n_tables_have_the_same_keys() -> None:
    from engine.web.i18n import DE, EN, local_time, number

    assert set(DE) == set(EN)
    import datetime as dt

    from engine.schedule import load_zone

    zone = load_zone("Europe/Berlin")
    assert local_time("2026-12-02T04:13:00Z", zone, "de") == "02.12.2026 05:13 MEZ"
    assert local_time("2026-07-02T04:13:00Z", zone, "en") == "2026-07-02 06:13 CEST"
    assert number(1234.5, "de") == "1\u202f234,5" and number(1234, "en") == "1,234"
    assert local_time(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), zone, "de").startswith("01.01.2026 01:00")


def test_trusted_proxy_header_only_from_the_proxy(c: Console) -> None:
    import dataclasses

    from starlette.testclient import TestClient

    from engine.web import create_app

    trusting = create_app(dataclasses.replace(c.dep, trusted_header="X-Remote-User",
                                              trusted_proxies=frozenset({"testclient"})))
    client = TestClient(trusting, base_url="https://testserver", follow_redirects=False)
    r = client.get("/tenants", headers={"X-Remote-User": "kunde"})
    assert r.status_code == 200 and "hv-sued" not in r.text and "kunde" in r.text
    assert client.get("/tenants", headers={"X-Remote-User": "niemand"}).status_code == 303
    elsewhere = create_app(dataclasses.replace(c.dep, trusted_header="X-Remote-User",
                                               trusted_proxies=frozenset({"10.0.0.5"})))
    other = TestClient(elsewhere, base_url="https://testserver", follow_redirects=False)
    assert other.get("/tenants", headers={"X-Remote-User": "team"}).status_code == 303


def test_cli_user_add_list_and_audit_export(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from click.testing import CliRunner

    from engine.cli import main
    from engine.ops import users
    from engine.state import StateStore
    from tests.web_helpers import FAST_HASH

    monkeypatch.setattr(users, "HASH_PARAMS", dict(FAST_HASH))
    state = tmp_path / "state.db"
    StateStore.open(state).close()
    env = {"CASAVI_SYNC_STATE": str(state)}
    run = CliRunner().invoke
    r = run(main, ["user", "add", "anna", "--role", "customer-admin", "--password-stdin"], input="lang-genug-123\n",
            env=env)
    assert r.exit_code == 3 and "--tenant" in r.output  # a customer admin belongs to one tenant
    r = run(main, ["user", "add", "kunde", "--role", "customer-admin", "--tenant", "default", "--password-stdin"],
            input="lang-genug-123\n", env=env)
    assert r.exit_code == 0 and "tenant default" in r.output
    r = run(main, ["user", "add", "anna", "--role", "operator", "--password-stdin"], input="kurz\n", env=env)
    assert r.exit_code == 3 and "too short" in r.output
    r = run(main, ["user", "add", "anna", "--role", "operator", "--password-stdin"], input="lang-genug-123\n", env=env)
    assert r.exit_code == 0, r.output
    assert "lang-genug-123" not in r.output
    listed = run(main, ["user", "list"], env=env).output
    assert "anna" in listed and "kunde" in listed and "default" in listed
    with StateStore.open(state) as store:
        user = store.get_user("anna")
    assert user is not None and user.password_hash.startswith("$argon2id$")
    r = run(main, ["audit", "--format", "json"], env=env)
    entries = json.loads(r.output)
    assert entries[0]["action"] == "user.saved" and entries[0]["actor"].startswith("cli:")
    assert entries[0]["detail"] == {"user": "anna", "role": "operator"}
    assert "lang-genug-123" not in r.output
    with StateStore.open(state) as store:
        store.audit("web:anna", "token.saved", "default", account=None, token="…wxyz")
    text = run(main, ["audit", "--timezone", "Europe/Berlin", "--limit", "1"], env=env).output
    # for a person: local time with its zone, and no "account=None"
    assert " CET " in text and "Z " not in text and "T" not in text.split()[1], text
    assert "token=…wxyz" in text and "account" not in text and "None" not in text
    r = run(main, ["audit", "--format", "csv"], env=env)
    assert r.output.splitlines()[0] == "id,at,actor,action,tenant,detail"
    assert run(main, ["user", "remove", "anna"], env=env).exit_code == 0
    assert run(main, ["user", "remove", "anna"], env=env).exit_code == 3


@pytest.mark.slow
def test_a_guard_hold_is_shown_and_allow_archive_runs_again(tmp_path: Any) -> None:
    """Its own console: the contacts it deletes in SCALARA would disturb the other tests."""
    with console(tmp_path) as own:
        team = own.client("team")
        page = team.get("/tenants/default/scalara")
        team.post("/tenants/default/activate", data={"csrf": csrf_of(page.text)})
        connected(own, team, "default")
        contacts = sorted(own.sb.scalara.dataset()["contacts"])
        for cid in contacts[: len(contacts) // 2]:  # half of the contacts vanish: the guard holds
            own.sb.scalara.delete_record("contacts", cid)
        ops = own.client("ops")
        page = ops.get("/tenants/default/runs")
        assert ops.post("/tenants/default/run", data={"csrf": csrf_of(page.text)}).status_code == 303
        held = wait_job(own, "default")
        report = ops.get(f"/tenants/default/runs/{held['runId']}")
        assert 'id="guard"' in report.text and 'id="allow-archive"' in report.text
        r = ops.post(f"/tenants/default/runs/{held['runId']}/allow-archive", data={"csrf": csrf_of(report.text)})
        assert r.status_code == 303
        deadline = time.monotonic() + 60
        while own.dep.jobs.current("default").snapshot()["runId"] == held["runId"] or \
                not own.dep.jobs.current("default").finished:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        again = own.dep.jobs.current("default").snapshot()
        archived = ops.get(f"/tenants/default/runs/{again['runId']}")
        assert 'id="guard"' not in archived.text
        run = own.dep.store().get_run(again["runId"])
        assert run is not None and run.outcome_counts.get("archive", 0) > 0
        actions = [e.action for e in own.dep.store().audit_log(tenant="default")]
        assert actions[:2] == ["run.started", "archive.allowed"]


@pytest.mark.slow
def test_serve_with_web_serves_the_console_and_stops_on_sigterm(c: Console) -> None:
    import signal
    import subprocess
    import sys

    import httpx

    from tests.web_helpers import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", "from engine.cli import main; main()", "serve",
                             "--state", str(c.dep.ctx.state_path), "--config", str(c.dep.ctx.config_path),
                             "--web", f"127.0.0.1:{port}", "--at", "03:00", "--tick", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        page = None
        while time.monotonic() < deadline and page is None:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/login", timeout=2)
            except httpx.HTTPError:
                time.sleep(0.2)
        assert page is not None and page.status_code == 200 and "frame-ancestors 'none'" in page.headers[
            "content-security-policy"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"console at http://127.0.0.1:{port}/" in err + out
