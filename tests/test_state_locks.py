"""Run locks across real processes: contention, races, stale takeover, SIGKILL and the serve lock.

Each helper process runs a tiny command loop on the store (one command per stdin line, one
answer per stdout line), so the test decides exactly when it takes, holds and drops a lock.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.errors import StateError
from engine.state import StateStore

CHILD = r"""
import sys
from engine.errors import StateError
from engine.state import StateStore

store = StateStore.open(sys.argv[1])
held = {}
print("ready", flush=True)
for line in sys.stdin:
    cmd, *args = line.split()
    try:
        if cmd == "lock":
            held["lock"] = store.acquire_lock(args[0], args[1])
            print("locked", flush=True)
        elif cmd == "serve":
            held["serve"] = store.acquire_serve_lock()
            print("serving", flush=True)
        elif cmd == "begin":
            print("run", store.begin_run(args[0], "manual"), flush=True)
        elif cmd == "release":
            held.pop(args[0]).release()
            print("released", flush=True)
        elif cmd == "flood":  # write chunk after chunk until killed
            for n in range(10**9):
                with store.batch():
                    items = [("units", f"u{n % 50}-{i}", "units", str(i)) for i in range(100)]
                    store.mark_pending(args[0], items)
                    for kind, ref, src, sid in items:
                        store.mark_written(args[0], None, kind, ref, {"n": n, "x": "y" * 300}, str(n), src, sid)
                if n == 3:
                    print("flooding", flush=True)
        elif cmd == "exit":
            break
    except StateError as exc:
        print("refused", exc, flush=True)
store.close()
"""


class Child:
    def __init__(self, state: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", CHILD, str(state)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1)
        assert self.ask() == "ready"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def ask(self, line: str | None = None) -> str:
        if line is not None:
            self.send(line)
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.send("exit")
            self.proc.wait(timeout=10)


@pytest.fixture
def state(state_location: Path | str) -> Path | str:
    """Both backends: a SQLite file, and a PostgreSQL database in the ``cluster`` group."""
    with StateStore.open(state_location) as store:
        store.add_tenant("acme", "key-00001234", "secret-5678")
    return state_location


def is_pg(state: Path | str | str) -> bool:
    return isinstance(state, str)


def sqlite_only(state: Path | str | str) -> None:
    if is_pg(state):
        pytest.skip("SQLite's pid-based liveness; PostgreSQL uses server-side session locks")


def wait_until_free(store: StateStore, tenant: str) -> None:
    """PostgreSQL notices a killed client's closed socket within milliseconds, not at once."""
    deadline = time.monotonic() + 10
    while store.lock_holder(tenant) is not None and time.monotonic() < deadline:
        time.sleep(0.02)


@pytest.fixture
def children(state: Path | str) -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        if child.proc.poll() is None:
            child.kill()


def test_a_lock_is_exclusive_within_one_process_and_released_by_close(state: Path | str) -> None:
    with StateStore.open(state) as store:
        with store.acquire_lock("acme", "manual") as lock:
            assert lock.held and lock.tenant == "acme" and lock.taken_over is None
            with pytest.raises(StateError, match=rf"already being synced by pid {os.getpid()} on host .* \(manual\)"):
                store.acquire_lock("acme", "schedule")
            assert store.lock_holder("acme") == lock.info
        assert not lock.held and store.lock_holder("acme") is None
        store.acquire_lock("acme", "schedule")  # never released by hand
    with StateStore.open(state) as store:
        assert store.lock_holder("acme") is None  # close() released it
        store.acquire_lock("acme", "manual").release()


def test_another_process_holding_the_lock_is_named_then_released(state: Path | str, children: list[Child]) -> None:
    child = Child(state)
    children.append(child)
    assert child.ask("lock acme schedule") == "locked"
    with StateStore.open(state) as store:
        with pytest.raises(StateError) as info:
            store.acquire_lock("acme", "manual")
        message = str(info.value)
        assert message.startswith(f"tenant 'acme' is already being synced by pid {child.pid} on host ")
        assert message.endswith("(schedule)")
        holder = store.lock_holder("acme")
        assert holder is not None and holder.pid == child.pid
        store.acquire_lock("default", "manual").release()  # other tenants are not affected
        assert child.ask("release lock") == "released"
        with store.acquire_lock("acme", "manual") as lock:
            assert lock.taken_over is None
            assert child.ask("lock acme schedule").startswith("refused tenant 'acme' is already being synced")
    child.stop()


def test_processes_racing_for_the_lock_get_exactly_one_winner(state: Path | str, children: list[Child]) -> None:
    racers = [Child(state) for _ in range(3)]
    children.extend(racers)
    for child in racers:
        child.send("lock acme manual")  # all at once: nobody waits for an answer first
    answers = [child.ask() for child in racers]
    assert sorted(a.split()[0] for a in answers) == ["locked", "refused", "refused"]
    for child in racers:
        child.stop()


def test_a_sigkilled_holder_is_stale_and_its_run_becomes_interrupted(state: Path | str, children: list[Child]) -> None:
    child = Child(state)
    children.append(child)
    assert child.ask("lock acme manual") == "locked"
    run_id = int(child.ask("begin acme").split()[1])
    with StateStore.open(state) as store:
        run = store.get_run(run_id)
        assert run is not None and run.outcome == "running"
        child.kill()
        wait_until_free(store, "acme")
        run = store.get_run(run_id)
        assert run is not None and run.outcome == "interrupted" and run.finished_at is None  # seen, not yet recorded
        with store.acquire_lock("acme", "manual") as lock:
            assert lock.taken_over is not None and lock.taken_over.pid == child.pid
            assert lock.interrupted_runs == [run_id]
        run = store.get_run(run_id)
        assert run is not None and run.outcome == "interrupted" and run.finished_at is not None
        assert run.error == f"the run's process (pid {child.pid}) ended before the run finished"


@pytest.mark.slow
def test_sigkill_in_the_middle_of_writing_never_damages_the_file(state: Path | str, children: list[Child]) -> None:
    for delay in (0.05, 0.13, 0.31):
        child = Child(state)
        children.append(child)
        child.send("flood acme")
        assert child.ask() == "flooding"
        time.sleep(delay)
        child.kill()
        if not is_pg(state):
            raw = sqlite3.connect(state)
            assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            raw.close()
        with StateStore.open(state) as store:
            records = store.records("acme")
            assert len(records) >= 400 and len(records) % 100 == 0  # pending commits whole chunks
            pending = [r for r in records.values() if r.status == "pending"]
            assert len(pending) <= 100 and {r.status for r in records.values()} <= {"pending", "written"}
            assert all(r.payload is None or r.payload["n"] == int(r.payload_hash or -1) for r in records.values())


def test_a_lock_from_another_host_is_respected_until_broken(state: Path | str) -> None:
    sqlite_only(state)
    raw = sqlite3.connect(state)
    raw.execute("INSERT INTO locks (name, tenant, pid, hostname, started_at, purpose, nonce) "
                "VALUES ('tenant:acme', 'acme', 4242, 'elsewhere', '2026-03-01T06:00:00.000Z', 'schedule', 'n')")
    raw.commit()
    raw.close()
    with StateStore.open(state) as store:
        with pytest.raises(StateError, match=re.escape("by pid 4242 on host elsewhere since 2026-03-01 07:00:00 CET")):
            store.acquire_lock("acme", "manual")
        broken = store.break_lock("acme")
        assert broken is not None and (broken.pid, broken.hostname) == (4242, "elsewhere")
        store.acquire_lock("acme", "manual").release()


def test_a_recycled_pid_does_not_keep_a_lock(state: Path | str) -> None:
    sqlite_only(state)
    raw = sqlite3.connect(state)  # our own (live) pid, but a different process start time
    raw.execute("INSERT INTO locks (name, tenant, pid, hostname, proc_start, started_at, purpose, nonce) "
                "VALUES ('tenant:acme', 'acme', ?, ?, '1', '2026-03-01T06:00:00.000Z', 'manual', 'n')",
                (os.getpid(), os.uname().nodename))
    raw.commit()
    raw.close()
    with StateStore.open(state) as store, store.acquire_lock("acme", "manual") as lock:
        assert lock.taken_over is not None and lock.taken_over.pid == os.getpid()


def test_serve_lock_refuses_a_second_serve_and_dies_with_its_process(state: Path | str, children: list[Child]) -> None:
    child = Child(state)
    children.append(child)
    assert child.ask("serve") == "serving"
    if not is_pg(state):
        assert Path(f"{state}.serve.lock").stat().st_mode & 0o077 == 0
    with StateStore.open(state) as store:
        with pytest.raises(StateError) as info:
            store.acquire_serve_lock()
        assert str(info.value).startswith(f"casavi-sync serve is already running on {store.where} (pid {child.pid} "
                                          "on host ")
        # a person reads it: local time with its zone, as every human-facing time (not ISO UTC)
        assert re.search(r" since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d (CET|CEST)\)$", str(info.value)), info.value
        child.kill()  # SIGKILL: no cleanup at all; the kernel drops the flock (PostgreSQL: the session lock)
        if is_pg(state):
            deadline = time.monotonic() + 10
            while store._pg_lock_held("serve") and time.monotonic() < deadline:
                time.sleep(0.02)
        with store.acquire_serve_lock() as serve:
            assert serve.held and serve.info.pid == os.getpid()
            with pytest.raises(StateError, match="already running"):
                store.acquire_serve_lock()  # a second one in the same process is refused too
        with store.acquire_serve_lock():
            pass


def test_a_dead_machines_lock_is_free_at_once_on_postgresql(state: Path | str) -> None:
    """A row left by a machine that died holds nothing: the server-side session lock went with it."""
    if not is_pg(state):
        pytest.skip("PostgreSQL only (SQLite respects another host's row until broken)")
    with StateStore.open(state) as store:
        with store._write() as db:
            db.execute("INSERT INTO locks (name, tenant, pid, hostname, started_at, purpose, nonce) VALUES "
                       "('tenant:acme', 'acme', 4242, 'elsewhere', '2026-03-01T06:00:00.000Z', 'schedule', 'n')")
        assert store.lock_holder("acme") is None
        with store.acquire_lock("acme", "manual") as lock:
            assert lock.taken_over is not None and lock.taken_over.hostname == "elsewhere"


def test_serve_lock_and_tenant_locks_are_independent(state: Path | str) -> None:
    with StateStore.open(state) as store, store.acquire_serve_lock(), store.acquire_lock("acme", "schedule"):
        assert store.lock_holder("acme") is not None
