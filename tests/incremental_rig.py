"""An in-process sync rig for the incremental-extraction tests: the sandbox apps behind
``httpx.MockTransport`` (the real clients, no sockets), one shared SCALARA, any number of
"sides" (a state store + a casavi account each), so that an incremental and a full run can be
compared on the very same SCALARA data.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

from tests.conftest import FIXED_NOW

CONFIG = (
    "scalara:\n  rate_limit: {rate_per_s: 100000, burst: 100000}\n"
    "  retry: {max_attempts: 2, base_delay_s: 0.001, max_delay_s: 0.001, retry_after_cap_s: 0.01}\n"
    "casavi:\n  rate_limit: {rate_per_s: 100000, burst: 100000}\n"
    "  retry: {max_attempts: 2, base_delay_s: 0.001, max_delay_s: 0.001, retry_after_cap_s: 0.01}\n"
)

_SHARED: dict[str, Any] = {}
Tamper = Callable[[httpx.Request], httpx.Response | None]


def app_transport(app: Any, tamper: Tamper | None = None) -> httpx.MockTransport:
    from engine.sandbox.app import Request

    def handler(request: httpx.Request) -> httpx.Response:
        if tamper is not None:
            answer = tamper(request)
            if answer is not None:
                return answer
        query = parse_qs(request.url.query.decode("utf-8"), keep_blank_values=True)
        req = Request(request.method, request.url.path, query,
                      {k.lower(): v for k, v in request.headers.items()}, request.content)
        resp = app.handle(req)
        return httpx.Response(resp.status, content=resp.encoded(),
                              headers={"content-type": "application/json", **resp.headers})
    return httpx.MockTransport(handler)


class Crash(BaseException):
    """The process dies (a BaseException: nothing in the engine catches it)."""


class DyingWriter:
    """A casavi writer whose process dies at the first write."""

    def __enter__(self) -> DyingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def put(self, *args: Any) -> Any:
        raise Crash

    put_responsibility = delete_responsibility = archive = restore = put


@dataclass
class Side:
    store: Any
    casavi: Any  # CasaviApp
    key: str
    secret: str


class Rig:
    def __init__(self, tmp: Path, *, properties: int = 1, seed: int = 1) -> None:
        from engine.compile import compile_mappings
        from engine.connectors import load_connector_config
        from engine.sandbox import Clock
        from engine.sandbox.generator import generate
        from engine.sandbox.scalara import ADMIN_USER, DEFAULT_ADMIN_PASSWORD, ScalaraApp
        from engine.validate import load_mapping_set
        from tests.conftest import MAPPINGS_DIR

        self.tmp = tmp
        self.clock = Clock(FIXED_NOW)
        self.scalara = ScalaraApp(self.clock, {"demo": generate(properties, seed, today=self.clock.today())})
        self.token = self.scalara.issue_token("demo", ADMIN_USER, DEFAULT_ADMIN_PASSWORD)
        if not _SHARED:  # read once per test session: the rig is built hundreds of times
            cfg = tmp / "connectors.yaml"
            cfg.write_text(CONFIG, encoding="utf-8")
            _SHARED["config"] = load_connector_config(cfg, env={"CASAVI_SYNC_SCALARA_URL": "http://scalara.test",
                                                                "CASAVI_SYNC_CASAVI_URL": "http://casavi.test"})
            _SHARED["mset"] = compile_mappings(load_mapping_set([MAPPINGS_DIR]))
        self.config = _SHARED["config"]
        self.mset = _SHARED["mset"]
        self.sides: dict[str, Side] = {}
        self.tamper: Tamper | None = None
        self.locations: dict[str, str] = {}
        self.last_stats: dict[str, Any] = {}

    def side(self, name: str) -> Side:
        from engine.sandbox import CasaviApp
        from engine.state import StateStore

        if name not in self.sides:
            app = CasaviApp(self.clock)
            key, secret = app.default_credentials or ("", "")
            where = self.locations.get(name)
            if where is None:
                store = StateStore.open(self.tmp / f"{name}.db", clock=self.clock.now)
            else:  # a PostgreSQL URL (the cluster group)
                store = StateStore.open(where, clock=self.clock.now, migrate=True)
            store.add_tenant("default", key, secret)
            store.activate_tenant("default")
            self.sides[name] = Side(store, app, key, secret)
        return self.sides[name]

    def close(self) -> None:
        for s in self.sides.values():
            s.store.close()

    def run(self, name: str, **options: Any) -> Any:
        from engine.connectors.casavi import CasaviClient
        from engine.connectors.scalara import ScalaraClient
        from engine.sync.runner import SyncOptions
        from engine.sync.session import run_for_tenant

        side = self.side(name)
        scalara = ScalaraClient(self.config, self.token, transport=app_transport(self.scalara, self.tamper))
        casavi = options.pop("writer", None) or CasaviClient(self.config, side.key, side.secret,
                                                             transport=app_transport(side.casavi))
        with scalara, casavi:
            outcome = run_for_tenant(side.store, "default", self.mset, scalara, casavi,
                                     SyncOptions(run_date=self.clock.today(), concurrency=1, **options))
            self.last_stats = {"scalara": scalara.stats.snapshot(), "casavi": casavi.stats.snapshot()}
        return outcome

    # -- comparison -----------------------------------------------------------------------------

    def casavi_state(self, name: str) -> dict[str, list[Any]]:
        app = self.side(name).casavi
        return {kind: sorted((_normal(r) for r in app.records(kind)), key=_dump)
                for kind in ("properties", "units", "contacts", "contracts")}

    def store_state(self, name: str) -> dict[str, Any]:
        store = self.side(name).store
        with store._read() as db:
            records = db.execute("SELECT kind, ref_id, payload_hash, payload, status, previous_status, "
                                 "source_resource, source_id, error FROM records WHERE tenant = 'default' "
                                 "ORDER BY kind, ref_id").fetchall()
            sources = db.execute("SELECT resource, id, stamp, body FROM source_records WHERE tenant = 'default' "
                                 "ORDER BY resource, id").fetchall()
            deps = db.execute("SELECT resource, id, dep, detail FROM source_deps WHERE tenant = 'default' "
                              "ORDER BY resource, id, dep").fetchall()
            until = db.execute("SELECT resource, id, until FROM source_until WHERE tenant = 'default' "
                               "ORDER BY resource, id").fetchall()
        return {"records": records, "sources": sources, "deps": deps, "until": until}

    def advance(self, days: float) -> dt.date:
        self.clock.advance(days=days)
        return self.clock.today()


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _normal(value: Any) -> Any:
    """casavi's view without server bookkeeping (internal ids, modification times), lists sorted."""
    if isinstance(value, dict):
        return {k: _normal(v) for k, v in value.items() if k not in ("internalId", "modifiedAt")}
    if isinstance(value, list):
        return sorted((_normal(v) for v in value), key=_dump)
    return value
