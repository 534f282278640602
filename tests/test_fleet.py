"""The worker fleet for real: PostgreSQL, three `casavi-sync worker` processes, 30 tenants in the sandbox.

One worker is SIGKILLed in the middle of a run. Proven afterwards, from the run history and from
casavi's content: every tenant ran exactly once to completion for the day; the killed run's tenant
was finished by another worker within the stall bound; no two runs of a tenant overlapped; casavi
holds exactly what a single-process run of the same data writes; SIGTERM drains the others (exit 0).
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.sandbox import FaultConfig, Sandbox
from engine.sandbox.generator import generate
from engine.state import StateStore
from tests.conftest import fast_connector_config

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

TENANTS = 30
STALL_S = 4.0
KINDS = ("properties", "units", "contacts", "contracts")
WORKER = "from engine.cli import main; main()"


def tenant_name(i: int) -> str:
    return f"hv{i:02d}"


def make_sandbox(latency_ms: int) -> Sandbox:
    faults = FaultConfig(latency_ms=latency_ms)
    sb = Sandbox(properties=1, seed=1, scalara_faults=faults, casavi_faults=faults)
    for i in range(TENANTS):
        sb.scalara.add_account(f"acc{i}", generate(1, 100 + i, today=sb.clock.today()))
    return sb.start()


def register(sb: Sandbox, store: StateStore) -> None:
    for i in range(TENANTS):
        key, secret = sb.casavi.add_account(tenant_name(i))
        store.add_tenant(tenant_name(i), key, secret)
        store.activate_tenant(tenant_name(i))
        store.save_connection(tenant_name(i), sb.generate_scalara_token(f"acc{i}"), f"acc{i}")


def add_tenant(sb: Sandbox, url: str, name: str, account: str | None = "acc0") -> None:
    """A casavi account and an active tenant; connected to SCALARA ``account`` unless None."""
    key, secret = sb.casavi.add_account(name)
    with StateStore.open(url) as store:
        store.add_tenant(name, key, secret)
        store.activate_tenant(name)
        if account is not None:
            store.save_connection(name, sb.generate_scalara_token(account), account)


def worker_env(sb: Sandbox, url: str, tmp_path: Path) -> dict[str, str]:
    """What a `casavi-sync worker` process of a test runs with: the sandbox, the state, fast retries."""
    return {**os.environ, "CASAVI_SYNC_SCALARA_URL": sb.scalara_url, "CASAVI_SYNC_CASAVI_URL": sb.casavi_url,
            "CASAVI_SYNC_CONNECTOR_CONFIG": str(fast_connector_config(tmp_path)), "CASAVI_SYNC_STATE": url,
            "CASAVI_SYNC_REPORTS": str(tmp_path / "reports"), "PYTHONPATH": str(Path.cwd())}


def canon(value: Any) -> Any:
    """Lists the sandbox builds in write order (a property's units, a contact's contracts) sorted."""
    if isinstance(value, dict):
        return {k: canon(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((canon(v) for v in value), key=repr)
    return value


def content(sb: Sandbox, account: str) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for kind in KINDS:
        rows = [canon({k: v for k, v in r.items() if k not in ("internalId", "modifiedAt")})
                for r in sb.casavi.records(kind, account)]
        out[kind] = sorted(rows, key=lambda r: str(r["id"]))
    return out


def first_difference(a: dict[str, list[dict[str, Any]]], b: dict[str, list[dict[str, Any]]]) -> Any:
    for kind in KINDS:
        for x, y in zip(a[kind], b[kind], strict=False):
            if x != y:
                return kind, {k: (x.get(k), y.get(k)) for k in set(x) | set(y) if x.get(k) != y.get(k)}
        if len(a[kind]) != len(b[kind]):
            return kind, len(a[kind]), len(b[kind])
    return None


@pytest.fixture
def fleet_env(tmp_path: Path, pg_url: str) -> Iterator[tuple[str, Sandbox, dict[str, str]]]:
    result = CliRunner().invoke(main, ["state", "migrate", "--state", pg_url])
    assert result.exit_code == 0, result.output
    assert "job queue tables (procrastinate) created" in result.output
    sb = make_sandbox(latency_ms=25)
    try:
        with StateStore.open(pg_url) as store:
            register(sb, store)
        yield pg_url, sb, worker_env(sb, pg_url, tmp_path)
    finally:
        sb.stop()


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    now = dt.datetime.now(dt.UTC)
    args = [sys.executable, "-c", WORKER, "worker", "--at", f"{now:%H:%M}", "--timezone", "UTC", "--jitter", "0",
            "--tick", "1", "--stall-timeout", str(STALL_S), "--heartbeat", "0.5", "--concurrency", "2",
            "--log-format", "json"]
    return subprocess.Popen(args, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def status_running(url: str, tenant: str) -> Any:
    import json

    result = CliRunner().invoke(main, ["status", "--state", url, "--tenant", tenant, "--format", "json"],
                                env={"CASAVI_SYNC_STATE": None})
    assert result.exit_code == 0, result.output
    return json.loads(result.output)["tenants"][0]["running"]


def runs_by_tenant(store: StateStore) -> dict[str, list[Any]]:
    return {tenant_name(i): sorted(store.runs(tenant_name(i), limit=50), key=lambda r: r.id) for i in range(TENANTS)}


def test_three_workers_run_every_tenant_once_and_survive_a_sigkill(fleet_env: Any, tmp_path: Path) -> None:
    url, sb, env = fleet_env
    now = dt.datetime.now(dt.UTC)
    if now.hour == 23 and now.minute == 59:
        time.sleep(61)  # the slot is "this minute": not across midnight
    workers = [start_worker(env, tmp_path / f"worker{n}.log") for n in range(3)]
    killed_pid, killed_tenant, killed_at = 0, "", 0.0
    try:
        with StateStore.open(url) as store:
            deadline = time.monotonic() + 120
            while not killed_pid and time.monotonic() < deadline:  # kill a worker in the middle of a run
                for runs in runs_by_tenant(store).values():
                    running = [r for r in runs if r.outcome == "running"]
                    if running and running[0].counts == {} and any(w.pid == running[0].pid for w in workers):
                        killed_pid, killed_tenant = int(running[0].pid or 0), running[0].tenant
                        shown = status_running(url, killed_tenant)  # status names the worker running it
                        os.kill(killed_pid, signal.SIGKILL)
                        killed_at = time.monotonic()
                        break
                time.sleep(0.05)
            assert killed_pid, "no run was seen in progress"
            assert shown is not None and shown["pid"] == killed_pid and shown["purpose"] == "schedule"
            today = dt.datetime.now(dt.UTC).date()
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                if all(store.last_scheduled_day(tenant_name(i)) == today for i in range(TENANTS)):
                    break
                time.sleep(0.5)
            finished_at = time.monotonic()
            history = runs_by_tenant(store)
        survivors = [w for w in workers if w.pid != killed_pid]
        for w in survivors:  # SIGTERM drains: both exit 0 while idle
            w.send_signal(signal.SIGTERM)
        assert [w.wait(timeout=60) for w in survivors] == [0, 0]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
    logs = "".join((tmp_path / f"worker{n}.log").read_text() for n in range(3))
    assert "pg-test-secret" not in logs and "Traceback" not in logs

    # every tenant: exactly one completed run for the day; the killed one also shows its interrupted run
    for tenant, runs in history.items():
        done = [r for r in runs if r.outcome in ("clean", "partial")]
        assert len(done) == 1, (tenant, runs)  # partial: the generated data has a few invalid records
        others = [r for r in runs if r not in done]
        if tenant == killed_tenant or others:  # the killed worker ran up to two tenants (--concurrency 2)
            assert [(r.outcome, r.pid) for r in others] == [("interrupted", killed_pid)], (tenant, runs)
            assert done[0].pid != killed_pid and done[0].id > others[0].id
        # no two runs of a tenant overlap: each starts after the previous one ended
        for before, after in itertools.pairwise(runs):
            assert before.finished_at is not None and before.finished_at <= after.started_at
    assert finished_at - killed_at < STALL_S + 60  # bounded: stall timeout plus the run itself
    assert len({r.pid for runs in history.values() for r in runs}) == 3  # all three workers took part

    # casavi holds what a single process writes from the same data
    reference = make_sandbox(latency_ms=0)
    try:
        from engine.ops.context import Context
        from engine.ops.runs import start_run

        ref_state = tmp_path / "ref" / "state.db"
        with StateStore.open(ref_state) as store:
            register(reference, store)
        ctx = Context(ref_state, config_path=tmp_path / "connectors.yaml",
                      env={"CASAVI_SYNC_SECRET_KEY_FILE": os.environ["CASAVI_SYNC_SECRET_KEY_FILE"],
                           "CASAVI_SYNC_SCALARA_URL": reference.scalara_url,
                           "CASAVI_SYNC_CASAVI_URL": reference.casavi_url})
        for i in range(TENANTS):
            outcome = start_run(ctx.for_tenant(tenant_name(i)), trigger="schedule")
            fleet_run = next(r for r in history[tenant_name(i)] if r.outcome in ("clean", "partial"))
            assert outcome.outcome == fleet_run.outcome
        for i in range(TENANTS):
            fleet, single = content(sb, tenant_name(i)), content(reference, tenant_name(i))
            assert fleet == single and fleet["units"], (tenant_name(i), first_difference(fleet, single))
    finally:
        reference.stop()


def test_connects_initial_import_is_a_job_a_worker_runs(tmp_path: Path, pg_url: str) -> None:
    assert CliRunner().invoke(main, ["state", "migrate", "--state", pg_url]).exit_code == 0
    sb = make_sandbox(latency_ms=0)
    try:
        add_tenant(sb, pg_url, "solo", account=None)  # connect saves the token
        cfg = fast_connector_config(tmp_path)
        env = {"CASAVI_SYNC_SCALARA_URL": sb.scalara_url, "CASAVI_SYNC_CASAVI_URL": sb.casavi_url,
               "CASAVI_SYNC_CONNECTOR_CONFIG": str(cfg), "CASAVI_SYNC_STATE": pg_url, "CASAVI_SYNC_TENANT": "solo",
               "CASAVI_SYNC_REPORTS": str(tmp_path / "reports")}
        result = CliRunner().invoke(main, ["connect", "--token-stdin"], env=env,
                                    input=sb.generate_scalara_token("acc0") + "\n")
        assert result.exit_code == 0, result.output
        assert "initial import of tenant 'solo' queued as job " in result.output
        with StateStore.open(pg_url) as store, store._read() as db:  # waiting in procrastinate's queue
            row = db.execute("SELECT status, lock, queueing_lock FROM procrastinate_jobs WHERE task_name = ?",
                             ("casavi_sync.run_tenant",)).fetchone()
        assert tuple(row) == ("todo", "tenant:solo", "initial:solo")
        worker = start_worker({**os.environ, **env, "PYTHONPATH": str(Path.cwd())}, tmp_path / "worker.log")
        try:
            deadline = time.monotonic() + 60
            with StateStore.open(pg_url) as store:
                while time.monotonic() < deadline:
                    conn = store.get_connection("solo")
                    if conn is not None and conn.initial_import_at:
                        break
                    time.sleep(0.3)
                runs = store.runs("solo")
            assert runs[-1].trigger == "initial" and runs[-1].outcome in ("clean", "partial")
            assert sb.casavi.counts("solo")["units"] > 0
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    finally:
        sb.stop()


def test_sigterm_drains_a_worker_mid_run_and_another_finishes_the_tenant(tmp_path: Path, pg_url: str) -> None:
    """A rolling restart: the stopped run is handed over, not skipped for the day."""
    assert CliRunner().invoke(main, ["state", "migrate", "--state", pg_url]).exit_code == 0
    sb = make_sandbox(latency_ms=60)
    try:
        add_tenant(sb, pg_url, "roll")
        env = worker_env(sb, pg_url, tmp_path)
        first = start_worker(env, tmp_path / "first.log")
        second = None
        try:
            with StateStore.open(pg_url) as store:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not any(r.outcome == "running" for r in store.runs("roll")):
                    time.sleep(0.05)
                time.sleep(0.5)  # some writes done, more to go
                first.send_signal(signal.SIGTERM)
                assert first.wait(timeout=60) == 0
                stopped = store.runs("roll")
                assert [r.outcome for r in stopped] == ["stopped"]
                today = dt.datetime.now(dt.UTC).date()
                assert store.last_scheduled_day("roll") != today  # the day is not done
                second = start_worker(env, tmp_path / "second.log")
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline and store.last_scheduled_day("roll") != today:
                    time.sleep(0.2)
                runs = sorted(store.runs("roll"), key=lambda r: r.id)
            assert runs[0].outcome == "stopped" and runs[1].outcome in ("clean", "partial")
            assert len(runs) == 2 and runs[1].pid == second.pid and runs[0].finished_at <= runs[1].started_at
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=60) == 0
        finally:
            for w in (first, second):
                if w is not None and w.poll() is None:
                    w.kill()
                    w.wait()
    finally:
        sb.stop()


def test_postgresql_restarting_mid_run_fails_the_run_in_one_line_and_the_day_still_completes(
        tmp_path: Path, pg_server: Any, pg_url: str) -> None:
    assert CliRunner().invoke(main, ["state", "migrate", "--state", pg_url]).exit_code == 0
    sb = make_sandbox(latency_ms=60)
    try:
        add_tenant(sb, pg_url, "pgr")
        env = worker_env(sb, pg_url, tmp_path)
        worker = start_worker(env, tmp_path / "worker.log")
        try:
            today = dt.datetime.now(dt.UTC).date()
            with StateStore.open(pg_url) as store:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not any(r.outcome == "running" for r in store.runs("pgr")):
                    time.sleep(0.05)
            time.sleep(0.5)
            pg_server.restart()
            deadline = time.monotonic() + 120
            done = False
            while time.monotonic() < deadline and not done:
                time.sleep(0.5)
                try:
                    with StateStore.open(pg_url) as store:
                        done = store.last_scheduled_day("pgr") == today
                        runs = sorted(store.runs("pgr"), key=lambda r: r.id)
                except Exception:  # the server is still starting
                    continue
            assert done, (tmp_path / "worker.log").read_text()[-2000:]
            assert runs[-1].outcome in ("clean", "partial") and len(runs) >= 2
            assert all(r.outcome == "interrupted" for r in runs[:-1])
            for r in sb.casavi.records("units", "pgr"):  # nothing duplicated: one record per reference id
                assert sum(1 for x in sb.casavi.records("units", "pgr") if x["id"] == r["id"]) == 1
            log = (tmp_path / "worker.log").read_text()
            assert "Traceback" not in log and "lost the connection to PostgreSQL" in log
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=60) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    finally:
        sb.stop()
