"""A rig for crash tests: a live loopback sandbox, a state file and a real ``casavi-sync run``
process that the test can SIGKILL at a chosen moment.

Why real processes: crash safety is a promise about what is on disk and in casavi when the
process vanishes without a chance to clean up (no ``finally``, no atexit, no flush). Only a
SIGKILLed child shows that; an exception raised in-process would run every cleanup handler.

    rig = CrashRig.create(tmp_path, properties=2)
    proc = rig.launch()
    rig.kill_when(proc, lambda: rig.writes() >= 10)
    outcome = rig.rerun()                    # in-process run_for_tenant, to completion
    assert snapshot(rig.sandbox) == reference

Everything here talks to 127.0.0.1 only; the sandbox runs in the test process so the test can
read its counters and data directly.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

FIXED_NOW = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.UTC)
RUN_DATE = FIXED_NOW.date()
TENANT = "default"
KINDS = ("properties", "units", "contacts", "contracts")
VOLATILE = frozenset({"internalId", "modifiedAt"})


def cli_command() -> list[str]:
    """The installed console script next to this interpreter, else ``python -c`` on the CLI."""
    script = Path(sys.executable).with_name("casavi-sync")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from engine.cli import main; sys.exit(main())"]


def child_env() -> dict[str, str]:
    """The parent's environment without anything that could redirect the child: no proxies, no
    operator overrides (state, tenant, connector config) leaking in from the developer's shell."""
    env = {k: v for k, v in os.environ.items()
           if not k.upper().endswith("_PROXY") and not k.startswith("CASAVI_SYNC_")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def connector_yaml(sb: Any, *, casavi_rate: float = 2000, casavi_burst: int = 200,
                   concurrency: int = 4) -> str:
    """An operator connector file pointing at the sandbox, with fast retries (an outage gives up
    after a fraction of a second instead of minutes)."""
    retry = "{max_attempts: 4, base_delay_s: 0.01, max_delay_s: 0.05, retry_after_cap_s: 0.25}"
    return (
        f"scalara:\n  base_url: {sb.scalara_url}\n"
        f"  rate_limit: {{rate_per_s: 2000, burst: 200}}\n  retry: {retry}\n"
        f"casavi:\n  base_url: {sb.casavi_url}\n"
        f"  rate_limit: {{rate_per_s: {casavi_rate}, burst: {casavi_burst}}}\n"
        f"  write_concurrency: {concurrency}\n  retry: {retry}\n"
    )


@cache
def mapping_set() -> Any:
    """The shipped mappings, compiled once per test session (they never change during it)."""
    from engine.compile import compile_mappings
    from engine.validate import load_mapping_set
    from tests.conftest import MAPPINGS_DIR

    return compile_mappings(load_mapping_set([MAPPINGS_DIR]))


@dataclass
class CrashRig:
    """A started sandbox, a state file with one connected tenant, and a connector file."""

    sandbox: Any
    tmp: Path
    state: Path
    config: Path

    @classmethod
    def create(cls, tmp: Path, *, properties: int = 2, seed: int = 5, casavi_faults: Any = None,
               scalara_faults: Any = None, casavi_rate: float = 2000, casavi_burst: int = 200,
               concurrency: int = 4) -> CrashRig:
        from engine.sandbox import Clock, FaultConfig, Sandbox
        from engine.state import StateStore

        sb = Sandbox(properties=properties, seed=seed, clock=Clock(FIXED_NOW),
                     scalara_faults=scalara_faults or FaultConfig(),
                     casavi_faults=casavi_faults or FaultConfig())
        sb.start()
        try:
            state = tmp / "state" / "state.db"
            with StateStore.open(state) as store:
                store.add_tenant(TENANT, sb.casavi_key, sb.casavi_secret)
                store.activate_tenant(TENANT)
                store.save_connection(TENANT, sb.generate_scalara_token(), "demo")
            config = tmp / "connectors.yaml"
            config.write_text(connector_yaml(sb, casavi_rate=casavi_rate, casavi_burst=casavi_burst,
                                             concurrency=concurrency), encoding="utf-8")
        except BaseException:
            sb.stop()
            raise
        return cls(sb, tmp, state, config)

    def stop(self) -> None:
        self.sandbox.stop()

    # -- counters ----------------------------------------------------------------------------------

    def writes(self) -> int:
        """Writes casavi accepted so far (2xx PUT/POST/DELETE; authentication is not a write)."""
        return int(self.sandbox.casavi_server.counters.successful_writes())

    def casavi_requests(self) -> int:
        return int(self.sandbox.casavi_server.counters.requests())

    def scalara_requests(self) -> int:
        return int(self.sandbox.scalara_server.counters.requests())

    def archive_calls(self) -> int:
        """POST .../archive and DELETE .../responsibilities requests casavi received."""
        calls = self.sandbox.casavi_server.counters.by_resource()
        return sum(n for (method, resource), n in calls.items()
                   if (method == "POST" and resource != "authenticate") or method == "DELETE")

    # -- the process under test -------------------------------------------------------------------

    def launch(self, *extra: str, config: Path | None = None, name: str = "run") -> subprocess.Popen[bytes]:
        """Start ``casavi-sync run`` against the sandbox; output goes to files in ``tmp``."""
        args = [*cli_command(), "run", "--state", str(self.state), "--config", str(config or self.config),
                "--date", RUN_DATE.isoformat(), "--quiet", *extra]
        n = len(list(self.tmp.glob(f"{name}-*.out")))
        out = (self.tmp / f"{name}-{n}.out").open("wb")
        err = (self.tmp / f"{name}-{n}.err").open("wb")
        try:
            return subprocess.Popen(args, stdout=out, stderr=err, env=child_env(), cwd=self.tmp)
        finally:
            out.close()
            err.close()

    def kill_when(self, proc: subprocess.Popen[bytes], condition: Callable[[], bool], *,
                  timeout_s: float = 20.0) -> None:
        """Poll ``condition`` every millisecond and SIGKILL the process as soon as it holds.

        Fails the test if the process ends by itself first (the kill point was never reached) or
        the condition does not come true in time.
        """
        deadline = time.monotonic() + timeout_s
        while not condition():
            if proc.poll() is not None:
                raise AssertionError(f"the run ended (exit {proc.returncode}) before the kill point; "
                                     f"stderr: {self.last_stderr()}")
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                raise AssertionError("the kill point was not reached in time")
            time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=10)
        assert code == -signal.SIGKILL, f"expected death by SIGKILL, got exit {code}"
        time.sleep(0.05)  # requests that reached the sandbox before the kill finish being answered

    def finish(self, proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
        return int(proc.wait(timeout=timeout_s))

    def last_stderr(self) -> str:
        errs = sorted(self.tmp.glob("*.err"), key=lambda p: p.stat().st_mtime)
        return errs[-1].read_text(encoding="utf-8", errors="replace")[-2000:] if errs else ""

    # -- in-process runs ---------------------------------------------------------------------------

    def rerun(self, **options: Any) -> Any:
        """One run to completion in this process (same state file, same connector file)."""
        from engine.connectors import load_connector_config
        from engine.connectors.casavi import CasaviClient
        from engine.connectors.scalara import ScalaraClient
        from engine.state import StateStore
        from engine.sync.runner import SyncOptions
        from engine.sync.session import run_for_tenant

        config = load_connector_config(self.config, env={})
        with StateStore.open(self.state) as store:
            key, secret = store.tenant_credentials(TENANT)
            token = store.connection_token(TENANT)
            assert token
            with ScalaraClient(config, token) as scalara, CasaviClient(config, key, secret) as casavi:
                # Any: ScalaraClient.iter_pages has keyword-only options, which runner.Reader's
                # ``**kwargs: Any`` does not accept under mypy (the CLI passes Any as well)
                reader: Any = scalara
                return run_for_tenant(
                    store, TENANT, mapping_set(), reader, casavi,
                    SyncOptions(run_date=RUN_DATE, concurrency=config.casavi.write_concurrency, **options),
                    report_dir=self.state.parent / "reports" / TENANT,
                    stats=lambda: {"casavi": casavi.stats.snapshot(), "scalara": scalara.stats.snapshot()})

    def record_statuses(self) -> dict[tuple[str, str], str]:
        from engine.state import StateStore

        with StateStore.open(self.state) as store:
            return {key: r.status for key, r in store.records(TENANT).items()}


# -- comparing casavi contents ---------------------------------------------------------------------


def _canonical(value: Any) -> Any:
    """Lists sorted by their JSON text: the order of a property's units or a contact's contracts
    follows casavi's insertion order, which concurrency and crashes legitimately change."""
    if isinstance(value, dict):
        return {k: _canonical(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        items = [_canonical(v) for v in value]
        return sorted(items, key=lambda v: json.dumps(v, sort_keys=True, ensure_ascii=False))
    return value


def snapshot(sb: Any) -> dict[str, dict[str, Any]]:
    """casavi's stored records per kind, keyed by reference id, without internalId/modifiedAt."""
    out: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        records = sb.casavi.records(kind)
        ids = [r["id"] for r in records]
        assert len(ids) == len(set(ids)), f"duplicate reference ids among {kind}"
        out[kind] = {r["id"]: _canonical(r) for r in records}
    return out


def duplicate_contacts(sb: Any) -> list[tuple[str, ...]]:
    """(first, last, company, email) keys held by more than one live contact."""
    keys = Counter(
        tuple((c.get(f) or "").strip().lower() for f in ("firstName", "lastName", "companyName", "email"))
        for c in sb.casavi.records("contacts") if not c.get("archived") and c.get("email"))
    return [k for k, n in keys.items() if n > 1]


def integrity(path: Path) -> str:
    """SQLite's own verdict on the state file ("ok" when sound)."""
    db = sqlite3.connect(str(path))
    try:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        db.close()


def remove_unit(sb: Any, unit_id: str) -> None:
    """Delete a unit in SCALARA together with its ownerships (as a day-two change)."""
    app, data = sb.scalara, sb.scalara.dataset()
    for oid, o in sorted(data["ownerships"].items()):
        if o["unitId"] == unit_id:
            app.delete_record("ownerships", oid)
    app.delete_record("units", unit_id)


def day_two_deletions(sb: Any, units: int = 4, usages: int = 2) -> None:
    """Remove some units without tenancies (with their ownerships) and some tenancies, so the next
    run archives units, OWNER and RENTER contracts (and contacts left without any link)."""
    data = sb.scalara.dataset()
    used = {u for usage in data["usages"].values() for u in usage["unitIds"]}
    candidates = [u for u in sorted(data["units"])
                  if u not in used and data["units"][u]["buildingId"] in data["buildings"]]
    for unit in candidates[:units]:
        remove_unit(sb, unit)
    rentals = [uid for uid in sorted(data["usages"]) if data["usages"][uid]["type"] == "RENTAL"
               and data["usages"][uid]["tenantContactIds"]]
    for uid in rentals[:usages]:
        sb.scalara.delete_record("usages", uid)
