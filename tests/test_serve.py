"""The serve loop: due tenants, DST, downtime, the shared run lock, the parallel bound, stopping.

Most tests drive ``Server.tick()`` with a fake clock and an instrumented runner (no real sync);
the last ones run the real ``casavi-sync serve`` against an in-process sandbox and stop it with
SIGTERM in the middle of a run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import engine.cli.serve_cmd  # noqa: F401  (attaches `serve` to main)
from engine.cli import main
from engine.errors import ConfigError, StateError
from engine.ops.runs import scheduled_runner
from engine.schedule import Schedule, load_zone
from engine.serve import BUSY, RunResult, ServeOptions, Server, total_counts
from engine.state import StateStore

BERLIN = load_zone("Europe/Berlin")
TENANTS = ["alpha", "bravo", "charlie"]


def berlin(text: str) -> dt.datetime:
    if text.endswith(("+01:00", "+02:00")):
        return dt.datetime.fromisoformat(text)
    return dt.datetime.fromisoformat(text).replace(tzinfo=BERLIN)


class FakeClock:
    def __init__(self, now: str) -> None:
        self.now = berlin(now)

    def __call__(self) -> dt.datetime:
        return self.now

    def set(self, now: str) -> None:
        self.now = berlin(now)


class RecLog:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, message: str, **fields: Any) -> None:
        self.lines.append(("info", message, fields))

    def warn(self, message: str, **fields: Any) -> None:
        self.lines.append(("warning", message, fields))

    def error(self, message: str, **fields: Any) -> None:
        self.lines.append(("error", message, fields))

    def events(self, event: str) -> list[dict[str, Any]]:
        return [f for _, _, f in self.lines if f.get("event") == event]


class FakeRunner:
    """Records every call; optionally blocks until released; measures concurrency."""

    def __init__(self, *, block: bool = False, result: Callable[[str], RunResult] | None = None) -> None:
        self.calls: list[str] = []
        self.release = threading.Event()
        if not block:
            self.release.set()
        self.result = result or (lambda t: RunResult(t, "clean", run_id=len(self.calls), counts={"create": 1}))
        self.active = 0
        self.max_active = 0
        self.stopped_by_flag: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, tenant: str, should_stop: Callable[[], bool]) -> RunResult:
        with self._lock:
            self.calls.append(tenant)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            while not self.release.wait(0.005):
                if should_stop():
                    self.stopped_by_flag.append(tenant)
                    return RunResult(tenant, "stopped", run_id=99)
            return self.result(tenant)
        finally:
            with self._lock:
                self.active -= 1


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "state.db"
    with StateStore.open(path) as store:
        for name in [*TENANTS, "inactive", "unconnected"]:
            store.add_tenant(name, f"key-{name}", f"secret-{name}")
            if name != "inactive":
                store.activate_tenant(name)
            if name != "unconnected":
                store.save_connection(name, f"scl_token_{name}", "demo")
    yield path


def server(state: Path, runner: Any, clock: FakeClock, *, at: str = "04:00", jitter: int = 0,
           parallel: int = 3, tick_s: float = 0.01) -> tuple[Server, RecLog]:
    log = RecLog()
    opts = ServeOptions(Schedule.from_strings(at, "Europe/Berlin", jitter), parallel, tick_s)
    return Server(state, opts, runner, log, clock=clock), log


def settle(srv: Server) -> None:
    srv.wait(timeout=5)


def last_days(state: Path) -> dict[str, dt.date | None]:
    with StateStore.open(state) as store:
        return {t: store.last_scheduled_day(t) for t in TENANTS}


# -- scheduling -----------------------------------------------------------------------------------

def test_each_activated_connected_tenant_runs_once_a_day(state: Path) -> None:
    clock, runner = FakeClock("2026-05-04T03:59"), FakeRunner()
    srv, log = server(state, runner, clock)
    with srv:
        assert srv.tick() == []
        clock.set("2026-05-04T04:00")
        assert sorted(srv.tick()) == TENANTS          # never "inactive" or "unconnected"
        settle(srv)
        for minute in ("04:01", "12:00", "23:59"):
            clock.set(f"2026-05-04T{minute}")
            assert srv.tick() == []
        clock.set("2026-05-05T04:00")
        assert sorted(srv.tick()) == TENANTS
        settle(srv)
    assert sorted(runner.calls) == sorted(TENANTS * 2)
    assert set(last_days(state).values()) == {dt.date(2026, 5, 5)}
    ends = log.events("run.end")
    assert len(ends) == 6 and all(e["outcome"] == "clean" and e["counts"] == {"create": 1} for e in ends)
    assert len(log.events("run.start")) == 6


@pytest.mark.parametrize(("at", "ticks"), [
    # spring forward: 02:30 does not exist -> 03:00 CEST
    ("02:30", [("2026-03-29T01:59+01:00", False), ("2026-03-29T03:00+02:00", True), ("2026-03-29T03:30+02:00", False),
               ("2026-03-30T02:29+02:00", False), ("2026-03-30T02:30+02:00", True)]),
    # fall back: 02:30 exists twice -> the first (CEST) only
    ("02:30", [("2026-10-25T02:29+02:00", False), ("2026-10-25T02:30+02:00", True), ("2026-10-25T02:30+01:00", False),
               ("2026-10-25T03:30+01:00", False), ("2026-10-26T02:30+01:00", True)]),
    # 04:00 is untouched by either change
    ("04:00", [("2026-03-29T03:59+02:00", False), ("2026-03-29T04:00+02:00", True), ("2026-03-29T23:59+02:00", False)]),
    ("04:00", [("2026-10-25T03:59+01:00", False), ("2026-10-25T04:00+01:00", True), ("2026-10-25T05:00+01:00", False)]),
])
def test_dst_days(state: Path, at: str, ticks: list[tuple[str, bool]]) -> None:
    with StateStore.open(state) as store:
        for t in TENANTS:
            store.set_last_scheduled_day(t, berlin(ticks[0][0]).date() - dt.timedelta(days=1))
    clock, runner = FakeClock(ticks[0][0]), FakeRunner()
    srv, _ = server(state, runner, clock, at=at)
    with srv:
        for moment, runs in ticks:
            clock.set(moment)
            assert bool(srv.tick()) == runs, moment
            settle(srv)
    assert len(runner.calls) == 3 * sum(r for _, r in ticks)


def test_downtime_catches_up_once(state: Path) -> None:
    with StateStore.open(state) as store:
        for t in TENANTS:
            store.set_last_scheduled_day(t, dt.date(2026, 4, 20))
    clock, runner = FakeClock("2026-05-04T10:00"), FakeRunner()
    srv, log = server(state, runner, clock)
    with srv:
        assert sorted(srv.tick()) == TENANTS
        settle(srv)
        for _ in range(1, 120):
            clock.now += dt.timedelta(minutes=1)
            assert srv.tick() == []
    assert sorted(runner.calls) == TENANTS
    assert set(last_days(state).values()) == {dt.date(2026, 5, 4)}
    assert [e["day"] for e in log.events("run.start")] == ["2026-05-04"] * 3


def test_jittered_tenants_start_at_their_own_minutes(state: Path) -> None:
    clock, runner = FakeClock("2026-05-04T04:00"), FakeRunner()
    srv, log = server(state, runner, clock, jitter=30)
    schedule = srv.options.schedule
    with srv:
        for _ in range(40):
            srv.tick()
            settle(srv)
            clock.now += dt.timedelta(minutes=1)
    starts = {e["tenant"]: i for i, e in enumerate(log.events("run.start"))}
    assert sorted(starts) == TENANTS and sorted(runner.calls) == TENANTS
    order = sorted(TENANTS, key=lambda t: schedule.offset(t))
    assert sorted(starts, key=lambda t: starts[t]) == order


# -- the shared lock, failures -----------------------------------------------------------------------

def test_a_manual_run_holding_the_lock_defers_the_scheduled_one(state: Path) -> None:
    clock, runner = FakeClock("2026-05-04T04:00"), FakeRunner()
    srv, log = server(state, runner, clock)
    with StateStore.open(state) as manual, srv:
        lock = manual.acquire_lock("alpha", "manual")
        assert sorted(srv.tick()) == ["bravo", "charlie"]
        settle(srv)
        assert srv.tick() == []                      # still held: still waiting, logged once
        assert last_days(state)["alpha"] == dt.date(2026, 5, 3)   # first sight stored; today not marked: due
        busy = log.events("run.busy")
        assert len(busy) == 1 and busy[0]["tenant"] == "alpha" and busy[0]["holder_purpose"] == "manual"
        lock.release()
        clock.set("2026-05-04T05:30")
        assert srv.tick() == ["alpha"]
        settle(srv)
    assert sorted(runner.calls) == TENANTS


def test_losing_the_race_for_the_lock_puts_the_day_back(state: Path) -> None:
    answers = iter([RunResult("alpha", BUSY, error="already being synced")])

    def result(t: str) -> RunResult:
        return next(answers) if t == "alpha" else RunResult(t, "clean", run_id=1)

    clock, runner = FakeClock("2026-05-04T04:00"), FakeRunner(result=result)
    srv, log = server(state, runner, clock)
    with srv:
        assert sorted(srv.tick()) == TENANTS
        settle(srv)
        assert last_days(state)["alpha"] == dt.date(2026, 5, 3)
        assert srv.tick() == ["alpha"]
        settle(srv)
        assert srv.tick() == []
    assert runner.calls.count("alpha") == 2
    assert last_days(state)["alpha"] == dt.date(2026, 5, 4)
    assert len(log.events("run.busy")) == 1


def test_a_run_that_cannot_start_is_logged_and_not_retried_every_tick(state: Path) -> None:
    def result(t: str) -> RunResult:
        if t == "alpha":
            raise ConfigError("tenant 'alpha' has no casavi API key and secret stored yet")
        if t == "bravo":
            raise RuntimeError("boom")
        return RunResult(t, "partial", run_id=7, counts={"failed": 2, "update": 1}, error=None)

    clock, runner = FakeClock("2026-05-04T04:00"), FakeRunner(result=result)
    srv, log = server(state, runner, clock)
    with srv:
        srv.tick()
        settle(srv)
        clock.set("2026-05-04T06:00")
        assert srv.tick() == []
    errors = {f["tenant"]: m for lvl, m, f in log.lines if lvl == "error"}
    assert "no casavi API key" in errors["alpha"]
    assert "internal error: RuntimeError: boom" in errors["bravo"]
    warns = [m for lvl, m, _ in log.lines if lvl == "warning"]
    assert warns == ["run 7 for tenant 'charlie': partial in 0.0 s; failed 2, update 1"]


# -- parallel bound, stopping ----------------------------------------------------------------------------

def test_at_most_parallel_runs_at_a_time(state: Path) -> None:
    with StateStore.open(state) as store:
        for i in range(4):
            store.add_tenant(f"extra{i}", "k", "s")
            store.activate_tenant(f"extra{i}")
            store.save_connection(f"extra{i}", "scl_x", None)
    clock, runner = FakeClock("2026-05-04T04:00"), FakeRunner(block=True)
    srv, _ = server(state, runner, clock, parallel=2)
    with srv:
        assert len(srv.tick()) == 2
        assert srv.tick() == []                          # both slots busy
        assert len(srv.running()) == 2
        runner.release.set()
        started = 2
        for _ in range(10):
            settle(srv)
            started += len(srv.tick())
        assert started == 7
    assert runner.max_active == 2
    assert sorted(runner.calls) == sorted([*TENANTS, "extra0", "extra1", "extra2", "extra3"])


def test_stop_tells_running_runs_to_stop_and_starts_no_new_ones(state: Path) -> None:
    clock, runner = FakeClock("2026-05-04T04:00"), FakeRunner(block=True)
    srv, log = server(state, runner, clock, parallel=2)
    done = threading.Event()

    def loop() -> None:
        srv.serve_forever()
        done.set()

    with srv:
        thread = threading.Thread(target=loop)
        thread.start()
        deadline = time.monotonic() + 60  # generous: a loaded machine starts threads late
        while len(runner.calls) < 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        srv.request_stop("SIGTERM")
        assert done.wait(60)
        thread.join()
    assert sorted(runner.stopped_by_flag) == sorted(runner.calls) and len(runner.calls) == 2
    events = [f.get("event") for _, _, f in log.lines]
    assert events[0] == "serve.start" and events[-1] == "serve.stop"
    # runs end because of the stop request (stopped_by_flag above); the loop logs "serve.stopping"
    # when it notices, which may be after a run thread has already logged its end
    assert "serve.stopping" in events and events.count("run.end") == 2
    stopping = [m for _, m, f in log.lines if f.get("event") == "serve.stopping"]
    assert stopping and stopping[0].startswith("stopping (SIGTERM): waiting for 2 run(s)")
    assert {e["outcome"] for e in log.events("run.end")} == {"stopped"}
    assert len([d for d in last_days(state).values() if d == dt.date(2026, 5, 4)]) == 2   # the third never started


def test_a_second_serve_on_the_same_state_is_refused(state: Path) -> None:
    clock = FakeClock("2026-05-04T03:00")
    first, _ = server(state, FakeRunner(), clock)
    second, _ = server(state, FakeRunner(), clock)
    with first:
        with pytest.raises(StateError, match="serve is already running"), second:
            pass
        result = CliRunner().invoke(main, ["serve", "--state", str(state)])
        assert result.exit_code == 3
        assert result.output.strip().splitlines() == [result.output.strip()]
        assert result.output.startswith("error: casavi-sync serve is already running on ")
    with second:                                         # free again once the first has ended
        assert second.tick() == []


@pytest.mark.parametrize(("args", "message", "code"), [
    (["--at", "4pm"], "expected HH:MM", 3),
    (["--timezone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'", 2),   # a bad option value: usage
])
def test_bad_schedule_options_are_one_line_errors(state: Path, args: list[str], message: str, code: int) -> None:
    result = CliRunner().invoke(main, ["serve", "--state", str(state), *args])
    assert result.exit_code == code
    assert message in result.output and "Traceback" not in result.output


def test_total_counts() -> None:
    assert total_counts({"units": {"planned_create": 3, "create": 2, "failed": 1, "unchanged": 5},
                         "contacts": {"create": 1, "unchanged": 2}}) == {"create": 3, "failed": 1, "unchanged": 7}


# -- the real thing ----------------------------------------------------------------------------------------

@pytest.fixture
def world(tmp_path: Path) -> Iterator[Any]:
    from engine.sandbox import FaultConfig
    from tests.conftest import make_world

    # casavi answers slowly, so a run takes a few seconds and SIGTERM lands in the middle of it
    yield from make_world(tmp_path, properties=2, casavi_faults=FaultConfig(latency_ms=25))


def test_the_real_runner_records_a_scheduled_run_and_yields_to_a_held_lock(world: Any) -> None:
    from engine.cli.console import Console
    from engine.cli.context import OperatorContext

    ctx = OperatorContext(world.tmp / "state.db", "default", world.tmp / "connectors.yaml", None,
                          console=Console(quiet=True))
    env = {"CASAVI_SYNC_SCALARA_URL": world.sandbox.scalara_url, "CASAVI_SYNC_CASAVI_URL": world.sandbox.casavi_url}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        runner = scheduled_runner(ctx)
        with world.store.acquire_lock("default", "manual"):
            busy = runner("default", lambda: False)
        assert busy.outcome == BUSY and "already being synced" in (busy.error or "")
        stop_now = runner("default", lambda: True)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert stop_now.outcome == "stopped" and stop_now.run_id is not None
    run = world.store.get_run(stop_now.run_id)
    assert run is not None and run.trigger == "schedule" and run.outcome == "stopped"
    assert stop_now.report_path and Path(stop_now.report_path).parent == world.tmp / "reports" / "default"


SERVE = "import engine.cli.serve_cmd; from engine.cli import main; main()"


def _serve(world: Any, *extra: str) -> subprocess.Popen[str]:
    now = dt.datetime.now(BERLIN) - dt.timedelta(minutes=1)
    env = {**os.environ, "CASAVI_SYNC_SCALARA_URL": world.sandbox.scalara_url,
           "CASAVI_SYNC_CASAVI_URL": world.sandbox.casavi_url, "PYTHONUNBUFFERED": "1"}
    env.pop("CASAVI_SYNC_STATE", None)
    cmd = [sys.executable, "-c", SERVE, "serve", "--state", str(world.tmp / "state.db"),
           "--config", str(world.tmp / "connectors.yaml"), "--at", f"{now:%H:%M}", "--jitter", "0",
           "--tick", "0.2", "--log-format", "json", *extra]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parent.parent)


@pytest.mark.slow  # a real serve process, a run and a signal (seconds of waiting)
def test_sigterm_mid_run_stops_cleanly(world: Any) -> None:
    # yesterday counts as done: the run due is today's (or, right after midnight, yesterday's)
    world.store.set_last_scheduled_day("default", dt.datetime.now(BERLIN).date() - dt.timedelta(days=2))
    proc = _serve(world)
    try:
        deadline = time.monotonic() + 15
        run = None
        while time.monotonic() < deadline:
            runs = world.store.runs("default", limit=1)
            if runs and runs[0].trigger == "schedule":
                run = runs[0]
                break
            time.sleep(0.05)
        assert run is not None, "serve did not start the scheduled run"
        while world.sandbox.casavi_server.counters.writes() < 3 and time.monotonic() < deadline:   # in the apply phase
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    events = [rec.get("event") for rec in lines]
    assert events[0] == "serve.start" and events[-1] == "serve.stop"
    assert "run.start" in events and "run.end" in events and "serve.stopping" in events
    end = next(rec for rec in lines if rec.get("event") == "run.end")
    assert end["outcome"] in ("stopped", "clean") and end["run_id"] == run.id
    final = world.store.get_run(run.id)
    assert final is not None and final.outcome in ("stopped", "clean") and final.finished_at
    assert world.store.lock_holder("default") is None
    assert world.store.last_scheduled_day("default") is not None
    assert "SIGTERM" in next(rec["msg"] for rec in lines if rec.get("event") == "serve.stopping")
    assert world.token not in err + out


def test_serve_without_a_state_file_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    """As `status` and `run`: a mistyped --state must not become a new, empty state served forever."""
    missing = tmp_path / "no" / "such" / "state.db"
    result = CliRunner().invoke(main, ["serve", "--state", str(missing), "--tick", "0.05"])
    assert result.exit_code == 3, result.output
    assert result.output.startswith(f"error: no state file at {missing}")
    assert not (tmp_path / "no").exists()


def test_next_run_in_the_start_log_is_a_utc_stamp(state: Path) -> None:
    """Machine fields (--log-format json) are ISO 8601 UTC with Z, as every other machine stamp."""
    clock = FakeClock("2026-05-04T03:00")                    # before the 04:00 Berlin slot
    srv, log = server(state, FakeRunner(), clock)
    with srv:
        srv._log_start()
    nexts = {f["tenant"]: f["next_run"] for _, _, f in log.lines if f.get("event") == "schedule.next"}
    assert nexts and set(nexts.values()) == {"2026-05-04T02:00:00.000Z"}   # 04:00 CEST
