"""Shared fixtures: cassette configuration and a sync "world" (sandbox + state + clients).

Cassettes live in the top-level ``cassettes/<test module>/``. They are recorded against the
in-process sandbox (``pytest --record-mode=rewrite tests/test_sync_cassettes.py``) and replayed in CI
(``--record-mode=none --block-network``, set in pyproject's addopts). Every secret is scrubbed from
requests and responses before a cassette is written; ``test_cassettes_hold_no_secrets`` checks it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
CASSETTES = ROOT / "cassettes"
MAPPINGS_DIR = ROOT / "tests" / "fixtures" / "mappings"
"""The mappings the engine's tests run with: a frozen copy of the shipped defaults, so that a
consultant's valid change to mappings/ (with its *.test.yaml updated) never breaks the engine's
tests (cassettes, golden cases, the hand-written comparison). The shipped mappings are tested by
their own *.test.yaml (tests/test_shipped_mappings.py). Not engine.paths.MAPPINGS_DIR."""
FIXED_NOW = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.UTC)
RUN_DATE = FIXED_NOW.date()
REDACTED = "***REDACTED***"  # starts with "*": never mistaken for a real value by secret scanners
_SECRET_FIELDS = ("token", "key", "secret", "password")
_SCALARA_TOKEN = re.compile(r"scl_[A-Za-z0-9]{40}")


def _scrub_json(text: str) -> str:
    try:
        data = json.loads(text)
    except ValueError:
        return _SCALARA_TOKEN.sub("scl_" + REDACTED, text)
    if isinstance(data, dict):
        for name in _SECRET_FIELDS:
            if name in data and isinstance(data[name], str):
                data[name] = REDACTED
    return _SCALARA_TOKEN.sub("scl_" + REDACTED, json.dumps(data, ensure_ascii=False, sort_keys=True))


def _scrub_request(request: Any) -> Any:
    if request.body:
        body = request.body.decode("utf-8") if isinstance(request.body, bytes) else str(request.body)
        request.body = _scrub_json(body).encode("utf-8")
    return request


def _scrub_response(response: dict[str, Any]) -> dict[str, Any]:
    body = response.get("body", {}).get("string")
    if body:
        text = body.decode("utf-8") if isinstance(body, bytes) else str(body)
        response["body"]["string"] = _scrub_json(text).encode("utf-8")
    response["headers"] = {k: v for k, v in response.get("headers", {}).items()
                           if k.lower() not in ("set-cookie", "token", "authorization")}
    return response


@pytest.fixture(autouse=True)
def _fixture_mappings_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run without --mappings (and subprocesses) use the fixture mappings, not the shipped ones."""
    monkeypatch.setenv("CASAVI_SYNC_MAPPINGS", str(MAPPINGS_DIR))


@functools.lru_cache(maxsize=8192)
def _canonical_body(body: bytes) -> str | bytes:
    try:
        return json.dumps(json.loads(body), sort_keys=True)
    except ValueError:
        return body


def _same_request(r1: Any, r2: Any) -> None:
    """Method, path, query and body (JSON compared as data) in one matcher.

    vcrpy compares every live request with every recorded one and formats a message for each failed
    matcher: four matchers and parsing both JSON bodies for each pair made replaying a cassette five
    times slower than talking to the sandbox. One matcher and bodies parsed once keep it cheap.
    """
    def body(r: Any) -> str | bytes:
        raw = r.body or b""
        return _canonical_body(raw.encode("utf-8") if isinstance(raw, str) else bytes(raw))

    # A plain raise, not `assert`: pytest rewrites asserts in conftest.py and would describe both
    # requests in detail for each of the thousands of expected mismatches.
    if r1.method != r2.method or r1.path != r2.path or sorted(r1.query) != sorted(r2.query) or body(r1) != body(r2):
        raise AssertionError


def pytest_recording_configure(config: pytest.Config, vcr: Any) -> None:
    vcr.register_matcher("same_request", _same_request)


@pytest.fixture(scope="session")
def vcr_config() -> dict[str, Any]:
    return {
        "match_on": ["same_request"],
        "filter_headers": ["authorization", "token", "cookie"],
        "before_record_request": _scrub_request,
        "before_record_response": _scrub_response,
        "decode_compressed_response": True,
    }


@pytest.fixture
def vcr_cassette_dir(request: pytest.FixtureRequest) -> str:
    return str(CASSETTES / request.module.__name__.split(".")[-1])


# -- the sync world --------------------------------------------------------------------------------


@dataclass
class World:
    """A sandbox, a state store with one connected tenant, and the shipped mappings."""

    sandbox: Any
    store: Any
    config: Any
    mset: Any
    token: str
    tmp: Path
    tenant: str = "default"
    reports: list[dict[str, Any]] = field(default_factory=list)

    def clients(self, token: str | None = None) -> tuple[Any, Any]:
        from engine.connectors.casavi import CasaviClient
        from engine.connectors.scalara import ScalaraClient

        return (ScalaraClient(self.config, token or self.token),
                CasaviClient(self.config, self.sandbox.casavi_key, self.sandbox.casavi_secret))

    def run(self, *, casavi: Any = None, token: str | None = None, **options: Any) -> Any:
        from engine.sync.runner import SyncOptions
        from engine.sync.session import run_for_tenant

        scalara, own_casavi = self.clients(token)
        writer = casavi or own_casavi
        try:
            outcome = run_for_tenant(
                self.store, self.tenant, self.mset, scalara, writer,
                SyncOptions(run_date=RUN_DATE, concurrency=4, **options),
                report_dir=self.tmp / "reports",
                stats=lambda: {"casavi": writer.stats.snapshot(), "scalara": scalara.stats.snapshot()},
            )
        finally:
            scalara.close()
            own_casavi.close()
        self.reports.append(outcome.report)
        return outcome

    def plan(self, **options: Any) -> Any:
        from engine.sync.runner import SyncOptions
        from engine.sync.session import plan_for_tenant

        scalara, casavi = self.clients()
        with scalara, casavi:
            return plan_for_tenant(self.store, self.tenant, self.mset, scalara, casavi,
                                   SyncOptions(run_date=RUN_DATE, **options))


def fast_connector_config(folder: Path, extra: str = "", retry_after_cap_s: float = 0.25) -> Path:
    """Write a connector config for tests against the in-process sandbox to folder/connectors.yaml.

    The contract's rate limits (10 and 20 requests/s) would make every test that imports a property
    wait seconds for nothing; retries back off in milliseconds for the same reason.
    """
    cfg = folder / "connectors.yaml"
    retry = "base_delay_s: 0.01, max_delay_s: 0.05, retry_after_cap_s: " + str(retry_after_cap_s)
    cfg.write_text(
        "scalara:\n  rate_limit: {rate_per_s: 2000, burst: 200}\n"
        f"  retry: {{max_attempts: 4, {retry}}}\n"
        "casavi:\n  rate_limit: {rate_per_s: 2000, burst: 200}\n"
        f"  retry: {{max_attempts: 8, {retry}}}\n" + extra, encoding="utf-8")
    return cfg


def replay_wait_cap(request: pytest.FixtureRequest) -> float:
    """The Retry-After cap for a cassette test: 0.25 s while recording (the sandbox really throttles),
    no wait while replaying (the recorded answers come back whatever the client waits)."""
    return 0.0 if request.config.getoption("record_mode") == "none" else 0.25


def make_world(tmp_path: Path, *, properties: int = 1, seed: int = 5, casavi_faults: Any = None,
               scalara_faults: Any = None, config_extra: str = "", retry_after_cap_s: float = 0.25,
               **sandbox_kw: Any) -> Iterator[World]:
    from engine.compile import compile_mappings
    from engine.connectors import load_connector_config
    from engine.sandbox import Clock, FaultConfig, Sandbox
    from engine.state import StateStore
    from engine.validate import load_mapping_set

    sb = Sandbox(properties=properties, seed=seed, clock=Clock(FIXED_NOW),
                 scalara_faults=scalara_faults or FaultConfig(), casavi_faults=casavi_faults or FaultConfig(),
                 **sandbox_kw)
    sb.start()
    try:
        cfg = fast_connector_config(tmp_path, config_extra, retry_after_cap_s)
        config = load_connector_config(cfg, env={"CASAVI_SYNC_SCALARA_URL": sb.scalara_url,
                                                 "CASAVI_SYNC_CASAVI_URL": sb.casavi_url})
        store = StateStore.open(tmp_path / "state.db", clock=sb.clock.now)  # one clock with SCALARA
        store.add_tenant("default", sb.casavi_key, sb.casavi_secret)
        store.activate_tenant("default")
        token = sb.generate_scalara_token()
        store.save_connection("default", token, "demo")
        mset = compile_mappings(load_mapping_set([MAPPINGS_DIR]))
        yield World(sb, store, config, mset, token, tmp_path)
        store.close()
    finally:
        sb.stop()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    yield from make_world(tmp_path)


# -- state backends: SQLite (default run) and a real PostgreSQL (the ``cluster`` group) ---------------

@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    """A throwaway PostgreSQL cluster for the whole session (tests/pgserver.py)."""
    import os

    from tests.pgserver import PgServer, find_bin_dir

    bin_dir = find_bin_dir()
    if bin_dir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed (.ci/run installs Debian's postgresql package)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = PgServer(bin_dir).start()
    try:
        yield server
    finally:
        from engine.state.pg import close_pools

        close_pools()
        server.stop()


@pytest.fixture
def pg_url(pg_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh, empty database of the session's cluster.

    A database has no folder for the secrets key: the test's key file is named explicitly (never
    the real ~/.local/state one), and a SQLite state of the same test shares it.
    """
    monkeypatch.setenv("CASAVI_SYNC_SECRET_KEY_FILE", str(tmp_path / "secret.key"))
    return str(pg_server.create_database())


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.cluster)])
def state_location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a state-store test keeps its state: a SQLite file, or (cluster group) a PostgreSQL database.

    The PostgreSQL database is migrated here, as `casavi-sync state migrate` would do.
    """
    if request.param == "sqlite":
        return tmp_path / "state.db"
    url = str(request.getfixturevalue("pg_url"))
    from engine.state import StateStore

    StateStore.open(url, migrate=True).close()
    return url
