"""Mapping sets per tenant: `tenant set NAME --mappings DIR` (validated when assigned), used by run,
plan, explain and serve (validated at its start); reports and history name the set (path and
content hash); `plan` after a change says how many records of which kinds the next run rewrites."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from engine.cli import main
from engine.ops.mappings import content_hash
from engine.schedule import load_zone
from tests.conftest import MAPPINGS_DIR, RUN_DATE, World, make_world

BERLIN = load_zone("Europe/Berlin")
ORT = "          etage: floor\n          ort: building.city\n"
PLZ = "          etage: floor\n          plz: building.postalCode\n"


def _mapping_set(folder: Path, extra: str) -> Path:
    shutil.copytree(MAPPINGS_DIR, folder, ignore=shutil.ignore_patterns("*.test.yaml"))
    units = folder / "units.yaml"
    units.write_text(units.read_text(encoding="utf-8").replace("          etage: floor\n", extra), encoding="utf-8")
    return folder


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[World, dict[str, str]]]:
    """Tenant 'default' and tenant 'b' (its own casavi account) on one sandbox, in one state file."""
    for world in make_world(tmp_path):
        key, secret = world.sandbox.casavi.add_account("b")
        world.store.add_tenant("b", key, secret)
        world.store.activate_tenant("b")
        world.store.save_connection("b", world.token, "demo")
        env = {"CASAVI_SYNC_STATE": str(tmp_path / "state.db"), "CASAVI_SYNC_SCALARA_URL": world.sandbox.scalara_url,
               "CASAVI_SYNC_CASAVI_URL": world.sandbox.casavi_url,
               "CASAVI_SYNC_CONNECTOR_CONFIG": str(tmp_path / "connectors.yaml")}
        yield world, env


def cli(env: dict[str, str], *args: str) -> Result:
    result = CliRunner().invoke(main, list(args), env=env)
    assert "Traceback" not in result.output
    return result


def unit_payloads(world: World, tenant: str) -> list[dict[str, Any]]:
    rows = world.store.records(tenant, "units").values()
    return [r.payload for r in rows if r.status == "written" and r.payload]


def test_an_invalid_set_is_never_assigned(two: tuple[World, dict[str, str]], tmp_path: Path) -> None:
    world, env = two
    broken = _mapping_set(tmp_path / "broken", "          etage: floor\n          ort: building.nosuchfield(\n")
    result = cli(env, "tenant", "set", "b", "--mappings", str(broken))
    assert result.exit_code == 3
    assert "invalid" in result.output and f"casavi-sync validate {broken}" in result.output
    assert world.store.tenant_mappings("b") is None
    assert cli(env, "tenant", "set", "b").exit_code == 2  # neither --mappings nor --default-mappings
    unknown = cli(env, "tenant", "set", "nobody", "--mappings", str(MAPPINGS_DIR))
    assert unknown.exit_code == 3 and "unknown tenant" in unknown.output


def test_two_tenants_two_sets_in_one_run_each_report_names_its_set(two: tuple[World, dict[str, str]],
                                                                   tmp_path: Path) -> None:
    world, env = two
    a_set, b_set = _mapping_set(tmp_path / "a", ORT), _mapping_set(tmp_path / "b", PLZ)
    assigned = cli(env, "tenant", "set", "default", "--mappings", str(a_set))
    assert assigned.exit_code == 0 and "valid" in assigned.output
    assert cli(env, "tenant", "set", "b", "--mappings", str(b_set)).exit_code == 0
    assert f"mappings {b_set}" in cli(env, "tenant", "list").output

    reports = {}
    for tenant in ("default", "b"):
        ran = cli(env, "run", "--tenant", tenant, "--date", RUN_DATE.isoformat(), "--format", "json")
        assert ran.exit_code in (0, 1), ran.output
        reports[tenant] = json.loads(ran.stdout)
    assert reports["default"]["mappings"] == {"path": str(a_set), "contentHash": content_hash(a_set),
                                              "origin": "tenant"}
    assert reports["b"]["mappings"]["path"] == str(b_set)
    a_units, b_units = unit_payloads(world, "default"), unit_payloads(world, "b")
    assert a_units and all("ort" in u["customFields"] and "plz" not in u["customFields"] for u in a_units)
    assert b_units and all("plz" in u["customFields"] and "ort" not in u["customFields"] for u in b_units)

    history = json.loads(cli(env, "history", "--format", "json").stdout)["runs"]
    assert {r["tenant"]: r["mappings"]["contentHash"] for r in history} == {
        "default": content_hash(a_set), "b": content_hash(b_set)}
    assert content_hash(a_set)[:12] in cli(env, "history").output


@pytest.mark.slow
def test_plan_after_a_change_counts_what_would_be_rewritten(two: tuple[World, dict[str, str]],
                                                            tmp_path: Path) -> None:
    world, env = two
    a_set = _mapping_set(tmp_path / "a", ORT)
    assert cli(env, "tenant", "set", "default", "--mappings", str(a_set)).exit_code == 0
    assert cli(env, "run", "--quiet", "--date", RUN_DATE.isoformat()).exit_code in (0, 1)
    units = len(unit_payloads(world, "default"))
    units_file = a_set / "units.yaml"
    units_file.write_text(units_file.read_text(encoding="utf-8").replace(ORT, ORT + "          plz: building.postalCode\n"),
                          encoding="utf-8")
    writes = world.sandbox.casavi_server.counters.writes()

    plan = cli(env, "plan", "--date", RUN_DATE.isoformat())
    assert plan.exit_code == 4
    assert "mappings changed since run 1 (content " in plan.output
    assert f"the next run rewrites {units} units" in plan.output
    doc = json.loads(cli(env, "plan", "--date", RUN_DATE.isoformat(), "--format", "json").stdout)
    assert doc["mappings"]["changedSinceLastRun"] is True
    assert doc["mappings"]["updatesByKind"] == {"units": units}
    assert doc["mappings"]["lastRun"]["runId"] == 1 and doc["mappings"]["path"] == str(a_set)
    assert world.sandbox.casavi_server.counters.writes() == writes  # plan wrote nothing
    # the other tenant never ran: nothing to compare with, no note
    assert "mappings changed" not in cli(env, "plan", "--tenant", "b", "--date", RUN_DATE.isoformat()).output


def test_explain_uses_the_tenants_set(two: tuple[World, dict[str, str]], tmp_path: Path) -> None:
    world, env = two
    assert cli(env, "tenant", "set", "b", "--mappings", str(_mapping_set(tmp_path / "b", PLZ))).exit_code == 0
    unit = next(iter(world.sandbox.scalara.dataset()["units"]))
    assert "plz = `building.postalCode`" in cli(env, "explain", "units", unit, "--tenant", "b").output
    assert "plz = " not in cli(env, "explain", "units", unit, "--tenant", "default").output


def _serve(env: dict[str, str]) -> subprocess.Popen[str]:
    now = dt.datetime.now(BERLIN) - dt.timedelta(minutes=1)
    cmd = [sys.executable, "-c", "from engine.cli import main; main()", "serve", "--at", f"{now:%H:%M}",
           "--jitter", "0", "--tick", "0.2", "--log-format", "json"]
    return subprocess.Popen(cmd, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_one_serve_runs_two_tenants_with_their_own_sets(two: tuple[World, dict[str, str]], tmp_path: Path) -> None:
    """Also the regression test of engine/state/db.py's connection registry: the `tenant set`
    stores opened next to world.store in this process used to drop its SQLite locks, and the
    serve process then checkpointed and deleted the WAL under it ("database disk image is
    malformed", every time)."""
    world, env = two
    a_set, b_set = _mapping_set(tmp_path / "a", ORT), _mapping_set(tmp_path / "b", PLZ)
    assert cli(env, "tenant", "set", "default", "--mappings", str(a_set)).exit_code == 0
    assert cli(env, "tenant", "set", "b", "--mappings", str(b_set)).exit_code == 0
    for tenant in ("default", "b"):
        world.store.set_last_scheduled_day(tenant, dt.datetime.now(BERLIN).date() - dt.timedelta(days=2))
    proc = _serve(env)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = [r for t in ("default", "b") for r in world.store.runs(t, limit=1) if r.finished_at]
            if len(done) == 2:
                break
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    logged = [json.loads(line) for line in err.splitlines() if line.strip()]
    told = {rec["tenant"]: rec["path"] for rec in logged if rec.get("event") == "serve.mappings"}
    assert told == {"default": str(a_set), "b": str(b_set)}
    for tenant, folder, field in (("default", a_set, "ort"), ("b", b_set, "plz")):
        runs = world.store.runs(tenant, limit=1)
        assert runs and runs[0].trigger == "schedule", err[-3000:]
        run = runs[0]
        used = world.store.run_mappings(run.id)
        assert used is not None and used.path == str(folder) and used.content_hash == content_hash(folder)
        report = json.loads(Path(run.report_path or "").read_text(encoding="utf-8"))
        assert report["mappings"]["path"] == str(folder)
        assert all(field in u["customFields"] for u in unit_payloads(world, tenant))


def test_serve_refuses_to_start_when_a_tenants_set_became_invalid(two: tuple[World, dict[str, str]],
                                                                  tmp_path: Path) -> None:
    _, env = two
    b_set = _mapping_set(tmp_path / "b", PLZ)
    assert cli(env, "tenant", "set", "b", "--mappings", str(b_set)).exit_code == 0
    (b_set / "units.yaml").write_text("mapping: units\ntarget: units\n  rules: [\n", encoding="utf-8")
    result = cli(env, "serve", "--tick", "0.05")
    assert result.exit_code == 3
    assert "the mapping set of tenant 'b' is invalid" in result.output
    assert f"casavi-sync validate {b_set}" in result.output


@pytest.mark.cluster
def test_a_worker_refuses_to_start_when_a_tenants_set_became_invalid(pg_url: str, tmp_path: Path) -> None:
    """As serve: a fleet worker checks every tenant's own set at start, not at 04:00."""
    from engine.state import StateStore

    b_set = _mapping_set(tmp_path / "b", PLZ)
    with StateStore.open(pg_url, migrate=True) as store:
        store.add_tenant("b", "ck_key", "cs_secret")
        store.set_tenant_mappings("b", str(b_set), content_hash(b_set))
    env = {"CASAVI_SYNC_STATE": pg_url, "CASAVI_SYNC_MAPPINGS": str(MAPPINGS_DIR)}
    (b_set / "units.yaml").write_text("mapping: units\ntarget: units\n  rules: [\n", encoding="utf-8")
    result = cli(env, "worker")
    assert result.exit_code == 3, result.output
    assert "the mapping set of tenant 'b' is invalid" in result.output
    assert f"casavi-sync validate {b_set}" in result.output


@pytest.mark.cluster
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_store_keeps_mapping_sets_on_both_backends(backend: str, request: pytest.FixtureRequest,
                                                       tmp_path: Path) -> None:
    from engine.state import StateStore
    from engine.state.mapsets import MappingSetRef

    where = request.getfixturevalue("pg_url") if backend == "postgresql" else str(tmp_path / "state.db")
    with StateStore.open(where, migrate=True) as store:
        store.add_tenant("acme", "ck_key", "cs_secret")
        assert store.tenant_mappings("acme") is None
        store.set_tenant_mappings("acme", "/srv/a", "h1")
        store.set_tenant_mappings("acme", "/srv/b", "h2")  # reassigning replaces
        own = store.tenant_mappings("acme")
        assert own is not None and (own.path, own.content_hash, own.origin) == ("/srv/b", "h2", "tenant")
        run = store.begin_run("acme", "manual")
        store.set_run_mappings(run, MappingSetRef("/srv/b", "h2", "tenant"))
        store.set_run_mappings(run, MappingSetRef("/srv/b", "h3", "tenant"))
        assert store.last_run_mappings("acme") is None  # not finished yet
        store.finish_run(run, "clean", {}, None, None)
        last = store.last_run_mappings("acme")
        assert last is not None and (last.run_id, last.content_hash) == (run, "h3")
        store.set_tenant_mappings("acme", None)
        assert store.tenant_mappings("acme") is None
        store.remove_tenant("acme")  # cascades
