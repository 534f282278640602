"""PostgreSQL as the state backend: explicit migrations, refusals, one-line errors, `state copy`.

The store's behaviour on both backends is covered by test_state.py and test_state_locks.py (their
``state_location`` fixture); here is what only PostgreSQL has. A real server (tests/pgserver.py).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from engine.cli import main
from engine.errors import StateError
from engine.state import LATEST_VERSION, Outcome, StateStore, payload_hash
from engine.state.copy import dump

pytestmark = pytest.mark.cluster

SECRET, KEY, TOKEN = "casavi-secret-0123456789", "casavi-key-abcdef", "scl_" + "T" * 40


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"CASAVI_SYNC_STATE": None, "CASAVI_SYNC_TENANT": None})


def test_a_new_database_needs_an_explicit_migrate(pg_url: str) -> None:
    with pytest.raises(StateError) as info:
        StateStore.open(pg_url)
    message = str(info.value)
    assert "has no casavi-sync schema yet" in message and "casavi-sync state migrate" in message
    assert "pg-test-secret" not in message and "\n" not in message
    result = invoke("state", "migrate", "--state", pg_url)
    assert result.exit_code == 0, result.output
    assert f"state schema v{LATEST_VERSION}" in result.output and "pg-test-secret" not in result.output
    assert invoke("state", "migrate", "--state", pg_url).exit_code == 0  # idempotent
    with StateStore.open(pg_url) as store:
        assert store.schema_version == LATEST_VERSION and [t.name for t in store.list_tenants()] == ["default"]


def test_concurrent_migrations_apply_each_step_once(pg_url: str) -> None:
    errors: list[BaseException] = []

    def migrate() -> None:
        try:
            StateStore.open(pg_url, migrate=True).close()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=migrate) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with StateStore.open(pg_url) as store:
        assert store.schema_version == LATEST_VERSION


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    StateStore.open(pg_url, migrate=True).close()
    with StateStore.open(pg_url) as store, store._write() as db:
        db.execute("UPDATE casavi_sync_schema SET version = ?", (LATEST_VERSION + 5,))
    for migrate in (False, True):
        with pytest.raises(StateError, match=rf"newer casavi-sync \(state schema v{LATEST_VERSION + 5}, this "
                                             rf"release knows up to v{LATEST_VERSION}\); upgrade"):
            StateStore.open(pg_url, migrate=migrate)
    result = invoke("status", "--state", pg_url)
    assert result.exit_code == 3 and result.output.count("\n") == 1 and "newer casavi-sync" in result.output


@pytest.mark.parametrize("mistake", ["password", "database", "port"])
def test_a_wrong_url_is_one_line_naming_host_and_database(pg_server: Any, mistake: str) -> None:
    url = {"password": pg_server.url(password="not-the-password-xyz"),
           "database": pg_server.url("no_such_db"),
           "port": pg_server.url().replace(f":{pg_server.port}/", ":1/")}[mistake]
    result = invoke("status", "--state", url)
    assert result.exit_code == 3
    line = result.output.strip()
    assert "\n" not in line and line.startswith("error: cannot connect to PostgreSQL database ")
    assert "host 127.0.0.1" in line
    assert ("'no_such_db'" if mistake == "database" else "'postgres'") in line
    assert "not-the-password-xyz" not in line and "pg-test-secret" not in line


def _fill(store: StateStore) -> None:
    store.add_tenant("acme", KEY, SECRET)
    store.add_tenant("beta", KEY + "2", SECRET + "2")
    store.activate_tenant("acme")
    store.save_connection("acme", TOKEN, "acc-1")
    with store.acquire_lock("acme", "manual"):
        run = store.begin_run("acme", "initial")
        store.mark_pending("acme", [("units", "u1", "units", "s1"), ("units", "u2", "units", "s2")], run)
        with store.batch():
            store.mark_written("acme", run, "units", "u1", {"name": "WE 1 – Straße"}, payload_hash({"n": 1}),
                               "units", "s1")
            store.mark_failed("acme", run, "units", "u2", "casavi said no", "units", "s2")
        store.record_outcomes(run, [Outcome("units", "u1", "units", "s1", "create", "written"),
                                    Outcome("units", "u2", "units", "s2", "error", "failed", "casavi said no"),
                                    Outcome("units", "u3", "units", "s3", "unchanged", "written")])
        store.finish_run(run, "partial", {"create": 1, "error": 1}, "/reports/r1.json", "1 record failed")
        store.mark_initial_import("acme", run)
    store.begin_run("beta", "manual")  # an unfinished run (its process is this one)


def test_copy_sqlite_to_postgresql_and_back_loses_nothing(tmp_path: Path, pg_url: str) -> None:
    first, back = tmp_path / "state.db", tmp_path / "back.db"
    with StateStore.open(first) as store:
        _fill(store)
        original = dump(store)
    assert invoke("state", "migrate", "--state", pg_url).exit_code == 0
    result = invoke("state", "copy", str(first), pg_url)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("copied ") and "pg-test-secret" not in result.output
    with StateStore.open(pg_url) as store:
        assert dump(store) == original
        assert store.tenant_credentials("acme") == (KEY, SECRET) and store.connection_token("acme") == TOKEN
        assert store.runs("acme")[0].outcome_counts == {"create": 1, "error": 1, "unchanged": 1}
        assert store.begin_run("acme", "manual") == 3  # ids go on after the copied ones
    # and back: into a new SQLite file (the run just begun comes along)
    result = invoke("state", "copy", pg_url, str(back))
    assert result.exit_code == 0, result.output
    with StateStore.open(pg_url) as store:
        on_pg = dump(store)
    with StateStore.open(back) as store:
        assert dump(store) == on_pg
        assert {k: v for k, v in on_pg.items() if k != "runs"} == {k: v for k, v in original.items() if k != "runs"}
        assert store.begin_run("beta", "manual") == 4


def test_copy_refuses_a_destination_that_holds_a_deployment(tmp_path: Path, pg_url: str) -> None:
    with StateStore.open(tmp_path / "state.db") as store:
        _fill(store)
    StateStore.open(pg_url, migrate=True).close()
    assert invoke("state", "copy", str(tmp_path / "state.db"), pg_url).exit_code == 0
    result = invoke("state", "copy", str(tmp_path / "state.db"), pg_url)
    assert result.exit_code == 3 and "already holds a deployment" in result.output
    assert result.output.count("\n") == 1


def test_a_server_restart_fails_the_operation_in_one_line_and_loses_nothing(pg_server: Any, pg_url: str) -> None:
    with StateStore.open(pg_url, migrate=True) as store:
        store.add_tenant("acme", KEY, SECRET)
        store.mark_pending("acme", [("units", "u1", "units", "s1")])
        pg_server.restart()
        with pytest.raises(StateError) as info:
            store.records("acme")
        assert str(info.value).startswith("lost the connection to PostgreSQL database ") and "\n" not in str(info.value)
    with StateStore.open(pg_url) as store:
        assert store.records("acme")["units", "u1"].status == "pending"


def test_a_worker_refuses_a_schema_it_does_not_know_and_a_state_file(pg_url: str, tmp_path: Path) -> None:
    result = invoke("worker", "--state", pg_url)
    assert result.exit_code == 3 and "has no casavi-sync schema yet" in result.output
    assert "casavi-sync state migrate" in result.output and result.output.count("\n") == 1
    StateStore.open(pg_url, migrate=True).close()
    with StateStore.open(pg_url) as store, store._write() as db:
        db.execute("UPDATE casavi_sync_schema SET version = ?", (LATEST_VERSION + 1,))
    result = invoke("worker", "--state", pg_url)
    assert result.exit_code == 3 and "written by a newer casavi-sync" in result.output
    assert "pg-test-secret" not in result.output
    result = invoke("worker", "--state", str(tmp_path / "state.db"))
    assert result.exit_code == 3 and "needs a PostgreSQL state" in result.output
