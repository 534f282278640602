"""The state store's verbs: tenants, connections, record state, run history, schedule."""

from __future__ import annotations

import datetime as dt
import pickle
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ConfigError
from engine.state import (
    DEFAULT_TENANT,
    Outcome,
    RecordState,
    StateStore,
    canonical_json,
    payload_hash,
)

KEY, SECRET, TOKEN = "ck_live_AAAABBBBCCCC1234", "cs_topsecret_zzzz9876", "scl_" + "x" * 36 + "T0K3"
SECRETS = (KEY, SECRET, TOKEN, "9876", "T0K3x")


class FakeClock:
    def __init__(self) -> None:
        self.moment = dt.datetime(2026, 3, 1, 6, 30, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += dt.timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(state_location: Path | str, clock: FakeClock) -> Iterator[StateStore]:
    """The store on both backends: SQLite, and PostgreSQL in the ``cluster`` group (conftest)."""
    with StateStore.open(state_location, clock=clock) as s:
        s.add_tenant("acme", KEY, SECRET)
        yield s


def no_secret_in(obj: Any) -> None:
    text = repr(obj) + str(obj)
    for secret in (KEY, SECRET, TOKEN):
        assert secret not in text
        assert secret[:-4] not in text  # not even most of it


# -- tenants -----------------------------------------------------------------------------------


def test_tenant_lifecycle(store: StateStore, clock: FakeClock) -> None:
    acme = store.get_tenant("acme")
    assert acme is not None
    assert (acme.name, acme.activated, acme.activated_at) == ("acme", False, None)
    assert acme.created_at == "2026-03-01T06:30:00.000Z"
    assert acme.casavi_key_fingerprint == "…1234"
    assert store.tenant_credentials("acme") == (KEY, SECRET)

    clock.advance(60)
    assert store.activate_tenant("acme").activated_at == "2026-03-01T06:31:00.000Z"
    clock.advance(60)
    assert store.activate_tenant("acme").activated_at == "2026-03-01T06:31:00.000Z"  # already on: kept
    assert store.deactivate_tenant("acme").activated is False

    rotated = store.add_tenant("acme", "ck_new_key_5555", "cs_new_secret")
    assert rotated.casavi_key_fingerprint == "…5555"
    assert rotated.created_at == acme.created_at
    key, secret = store.tenant_credentials("acme")
    assert (key, secret) == ("ck_new_key_5555", "cs_new_secret")

    store.add_tenant("beta", "k-beta-0001", "s-beta")
    assert [t.name for t in store.list_tenants()] == ["acme", "beta", DEFAULT_TENANT]
    store.remove_tenant("beta")
    assert store.get_tenant("beta") is None


def test_the_default_tenant_always_exists(store: StateStore) -> None:
    default = store.get_tenant(DEFAULT_TENANT)
    assert default is not None and default.casavi_key_fingerprint is None
    with pytest.raises(ConfigError, match="no casavi API key and secret"):
        store.tenant_credentials(DEFAULT_TENANT)
    store.add_tenant(DEFAULT_TENANT, KEY, SECRET)
    store.mark_written(DEFAULT_TENANT, None, "units", "u1", {}, "h", None, None)
    store.remove_tenant(DEFAULT_TENANT)
    default = store.get_tenant(DEFAULT_TENANT)
    assert default is not None and default.casavi_key_fingerprint is None
    assert store.records(DEFAULT_TENANT) == {}


@pytest.mark.parametrize("call", [
    lambda s: s.activate_tenant("acmee"),
    lambda s: s.records("acmee"),
    lambda s: s.save_connection("acmee", TOKEN, None),
    lambda s: s.acquire_lock("acmee", "manual"),
    lambda s: s.begin_run("acmee", "manual"),
    lambda s: s.tenant_credentials("acmee"),
    lambda s: s.mark_written("acmee", None, "units", "u", {}, "h", None, None),
    lambda s: s.last_scheduled_day("acmee"),
    lambda s: s.remove_tenant("acmee"),
])
def test_an_unknown_tenant_is_a_config_error_with_a_suggestion(store: StateStore, call: Any) -> None:
    with pytest.raises(ConfigError) as info:
        call(store)
    assert str(info.value) == "unknown tenant 'acmee'; did you mean 'acme'? known: acme, default"


def test_an_unknown_tenant_without_a_near_miss(store: StateStore) -> None:
    with pytest.raises(ConfigError) as info:
        store.records("zzz")
    assert str(info.value) == "unknown tenant 'zzz'; known: acme, default"


@pytest.mark.parametrize("name", ["", "-x", "a b", "ä", "x" * 65, "a/b"])
def test_tenant_names_are_checked(store: StateStore, name: str) -> None:
    with pytest.raises(ConfigError, match="invalid tenant name"):
        store.add_tenant(name, KEY, SECRET)


# -- connections -------------------------------------------------------------------------------


def test_connection_lifecycle_and_first_save(store: StateStore, clock: FakeClock) -> None:
    assert store.get_connection("acme") is None and store.connection_token("acme") is None
    assert store.save_connection("acme", TOKEN, "acc-1").first_save is True
    conn = store.get_connection("acme")
    assert conn is not None
    assert (conn.tenant, conn.token_fingerprint, conn.account_id, conn.initial_import_at) == (
        "acme", "…T0K3", "acc-1", None)
    since = conn.connected_since

    clock.advance(3600)
    assert store.save_connection("acme", "scl_replacement_token_9999", "acc-1").first_save is False
    conn = store.get_connection("acme")
    assert conn is not None and conn.token_fingerprint == "…9999" and conn.connected_since == since
    assert store.connection_token("acme") == "scl_replacement_token_9999"

    run_id = store.begin_run("acme", "initial")
    store.mark_initial_import("acme", run_id)
    assert store.delete_connection("acme") is True
    assert store.get_connection("acme") is None and store.connection_token("acme") is None
    assert store.runs("acme")[0].id == run_id  # history stays

    assert store.save_connection("acme", TOKEN, None).first_save is False  # reconnect: not a first save
    conn = store.get_connection("acme")
    assert conn is not None and conn.initial_import_at == "2026-03-01T07:30:00.000Z"
    assert conn.initial_import_run == run_id


def test_no_returned_object_carries_a_secret(store: StateStore) -> None:
    store.save_connection("acme", TOKEN, "acc-1")
    with store.acquire_lock("acme", "manual") as lock:
        run_id = store.begin_run("acme", "manual")
        store.finish_run(run_id, "clean", {"units": 1}, None)
        for obj in (store.get_tenant("acme"), store.list_tenants(), store.get_connection("acme"),
                    store.save_connection("acme", TOKEN, "acc-1"), store.tenant_credentials("acme"), lock,
                    store.runs("acme"), store.get_run(run_id), store, store.activate_tenant("acme")):
            no_secret_in(obj)


def test_secrets_are_scrubbed_from_stored_errors(store: StateStore) -> None:
    store.save_connection("acme", TOKEN, None)
    run_id = store.begin_run("acme", "manual")
    store.mark_failed("acme", run_id, "units", "u1", f"401 for token {TOKEN}")
    store.record_outcomes(run_id, [Outcome("units", "u1", "units", "s1", "error", "failed", f"secret={SECRET}")])
    store.finish_run(run_id, "partial", {}, None, error=f"auth with {KEY}/{SECRET} failed")
    no_secret_in(store.records("acme")["units", "u1"].error)
    no_secret_in(store.run_outcomes(run_id))
    info = store.get_run(run_id)
    assert info is not None and info.error == "auth with ***/*** failed"


# -- record state ------------------------------------------------------------------------------

P1, P2 = {"name": "WE 01", "customFields": {"mea": 12.5}}, {"name": "WE 01 (neu)", "customFields": {"mea": 12.5}}
H1, H2 = payload_hash(P1), payload_hash(P2)

# Each case: the calls made (op, args...) and the record's state afterwards:
# (status, payload_hash, payload, previous_status, error, updated_run)
RECORD_CASES: dict[str, tuple[list[tuple[Any, ...]], tuple[Any, ...] | None]] = {
    "new record announced": ([("pending", None)], ("pending", None, None, None, None, None)),
    "pending then written": ([("pending", 1), ("written", 1, P1)], ("written", H1, P1, None, None, 1)),
    "pending keeps the last payload": (
        [("written", 1, P1), ("pending", 2)], ("pending", H1, P1, "written", None, 2)),
    "failed keeps the old hash": (
        [("written", 1, P1), ("pending", 2), ("failed", 2, "400 invalid email")],
        ("failed", H1, P1, "written", "400 invalid email", 2)),
    "failed twice keeps the settled status": (
        [("written", 1, P1), ("failed", 2, "a"), ("pending", 3), ("failed", 3, "b")],
        ("failed", H1, P1, "written", "b", 3)),
    "failed create has no hash": ([("pending", 1), ("failed", 1, "422")], ("failed", None, None, None, "422", 1)),
    "retry after failure succeeds": (
        [("written", 1, P1), ("failed", 2, "x"), ("written", 3, P2)], ("written", H2, P2, None, None, 3)),
    "archived keeps the payload": (
        [("written", 1, P1), ("archived", 2)], ("archived", H1, P1, None, None, 2)),
    "restore pending remembers archived": (
        [("written", 1, P1), ("archived", 2), ("pending", 3)], ("pending", H1, P1, "archived", None, 3)),
    "restored is written again": (
        [("written", 1, P1), ("archived", 2), ("restored", 3)], ("written", H1, P1, None, None, 3)),
    "forgotten": ([("written", 1, P1), ("forget",)], None),
}


def apply_ops(store: StateStore, ops: list[tuple[Any, ...]]) -> None:
    for op, *args in ops:
        if op == "pending":
            store.mark_pending("acme", [("units", "u1", "units", "s1")], run_id=args[0])
        elif op == "written":
            store.mark_written("acme", args[0], "units", "u1", args[1], payload_hash(args[1]), "units", "s1")
        elif op == "failed":
            store.mark_failed("acme", args[0], "units", "u1", args[1])
        elif op == "archived":
            store.mark_archived("acme", args[0], "units", "u1")
        elif op == "restored":
            store.mark_restored("acme", args[0], "units", "u1")
        elif op == "forget":
            store.forget("acme", "units", "u1")


@pytest.mark.parametrize("batched", [False, True], ids=["direct", "batched"])
@pytest.mark.parametrize("case", list(RECORD_CASES))
def test_record_state_transitions(store: StateStore, case: str, batched: bool) -> None:
    ops, expected = RECORD_CASES[case]
    if batched:
        with store.batch():
            apply_ops(store, ops)
    else:
        apply_ops(store, ops)
    state = store.get_record("acme", "units", "u1")
    if expected is None:
        assert state is None and store.records("acme") == {}
        return
    assert state is not None
    assert (state.status, state.payload_hash, state.payload, state.previous_status, state.error,
            state.updated_run) == expected
    assert (state.kind, state.ref_id, state.source_resource, state.source_id) == ("units", "u1", "units", "s1")
    assert state.updated_at == "2026-03-01T06:30:00.000Z"
    assert store.records("acme") == {("units", "u1"): state}


def test_records_filter_by_kind_and_tenant(store: StateStore) -> None:
    store.add_tenant("beta", "k-beta-0001", "s-beta")
    with store.batch():
        store.mark_written("acme", 1, "units", "u1", P1, H1, "units", "s1")
        store.mark_written("acme", 1, "contacts", "c1", P2, H2, "contacts", "s2")
        store.mark_written("beta", 1, "units", "u1", P2, H2, "units", "s9")
    assert set(store.records("acme")) == {("units", "u1"), ("contacts", "c1")}
    assert set(store.records("acme", "contacts")) == {("contacts", "c1")}
    assert store.records("beta")["units", "u1"].payload == P2
    assert store.record_counts("acme") == {"units": {"written": 1}, "contacts": {"written": 1}}


def test_pending_is_durable_at_once_even_inside_a_batch(store: StateStore, state_location: Path | str) -> None:
    with store.batch():
        store.mark_written("acme", 1, "units", "u0", P1, H1, "units", "s0")
        store.mark_pending("acme", [("units", "u1", "units", "s1"), ("units", "u2", "units", "s2")])
        with StateStore.open(state_location) as other:  # another process's view
            assert {k: r.status for k, r in other.records("acme").items()} == {
                ("units", "u0"): "written", ("units", "u1"): "pending", ("units", "u2"): "pending"}
        store.mark_written("acme", 1, "units", "u1", P1, H1, "units", "s1")
        assert store.records("acme")["units", "u1"].status == "written"  # reads see queued marks


def test_a_batch_keeps_its_marks_when_the_block_fails(store: StateStore) -> None:
    with pytest.raises(RuntimeError), store.batch():
        store.mark_written("acme", 1, "units", "u1", P1, H1, "units", "s1")
        raise RuntimeError("casavi went away")
    assert store.records("acme")["units", "u1"].status == "written"


def test_payload_hash_is_canonical() -> None:
    a = {"b": 1, "a": {"y": "Straße", "x": [1, 2]}}
    b = {"a": {"x": [1, 2], "y": "Straße"}, "b": 1}
    assert payload_hash(a) == payload_hash(b)
    assert payload_hash({"a": 1}) == "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
    assert payload_hash({"a": "ß"}) != payload_hash({"a": "ss"})


@pytest.mark.slow
def test_many_records_load_fast(store: StateStore, tmp_path: Path) -> None:
    if store.postgres:
        pytest.skip("a measurement of the SQLite file's load path")
    n, sample = 200_000, 20_000
    payload = {"propertyId": "p-000123", "name": "WE 17 Vorderhaus", "number": "WE 17", "usage": "PRIVATE",
               "address": "Lindenstraße 12", "customFields": {"mea": 123.45, "areaSqm": 78.5, "type": "APARTMENT"}}
    t0 = time.perf_counter()
    with store.batch():  # the sync's path, timed on a sample
        for i in range(sample):
            store.mark_written("acme", 1, "units", f"unit-{i:06d}", payload, H1, "units", f"src-{i}")
    t_write = (time.perf_counter() - t0) / sample
    raw = sqlite3.connect(tmp_path / "state.db")  # the rest in bulk, to keep the test short
    with raw:
        raw.executemany(
            "INSERT INTO records (tenant, kind, ref_id, payload_hash, payload, status, source_resource, source_id, "
            "updated_run, updated_at) VALUES ('acme', 'units', ?, ?, ?, 'written', 'units', ?, 1, ?)",
            ((f"unit-{i:06d}", H1, canonical_json(payload), f"src-{i}", "2026-03-01T06:30:00.000Z")
             for i in range(sample, n)))
    raw.close()
    c0 = time.process_time()
    records = store.records("acme")
    c_load = time.process_time() - c0
    t0 = time.perf_counter()
    decoded = sum(1 for r in records.values() if r.payload)
    t_decode = time.perf_counter() - t0
    # the numbers themselves belong to the benchmarks (bench/), not to the test output
    assert t_write < 0.01 and t_decode < 10.0
    assert len(records) == n and decoded == n
    assert records["units", "unit-199999"].source_id == "src-199999"
    assert records["units", "unit-000001"] == records["units", "unit-000001"]
    assert c_load < 2.0  # CPU time: other processes on a busy machine do not make it flaky


# -- run history -------------------------------------------------------------------------------


def test_run_history(store: StateStore, clock: FakeClock) -> None:
    first = store.begin_run("acme", "initial")
    info = store.get_run(first)
    assert info is not None and (info.outcome, info.finished_at, info.trigger) == ("running", None, "initial")
    rows = [
        Outcome("units", "u1", "units", "s1", "create", "written"),
        Outcome("units", "u2", "units", "s2", "unchanged", "written"),
        Outcome("units", "u3", "units", "s3", "unchanged", "written"),
        Outcome("contacts", "c1", "contacts", "s4", "error", "failed", "400 invalid email"),
    ]
    assert store.record_outcomes(first, rows) == 2
    assert store.record_outcomes(first, [Outcome("units", "u4", "units", "s5", "archive", "archived")]) == 1
    clock.advance(90)
    store.finish_run(first, "partial", {"units": {"create": 1, "unchanged": 2}}, "/r/run-000001.json", "1 failed")

    info = store.get_run(first)
    assert info is not None
    assert (info.outcome, info.started_at, info.finished_at, info.report_path, info.error) == (
        "partial", "2026-03-01T06:30:00.000Z", "2026-03-01T06:31:30.000Z", "/r/run-000001.json", "1 failed")
    assert info.counts == {"units": {"create": 1, "unchanged": 2}}
    assert info.outcome_counts == {"create": 1, "unchanged": 2, "error": 1, "archive": 1}
    assert [(o.ref_id, o.action, o.error) for o in store.run_outcomes(first)] == [
        ("u1", "create", None), ("c1", "error", "400 invalid email"), ("u4", "archive", None)]

    later = [store.begin_run("acme", t) for t in ("manual", "schedule", "reconcile")]
    for run_id in later:
        store.finish_run(run_id, "clean", {}, None)
    assert [r.id for r in store.runs("acme")] == [*reversed(later), first]
    assert [r.id for r in store.runs("acme", limit=2)] == list(reversed(later))[:2]
    assert store.runs(DEFAULT_TENANT) == []
    assert store.get_run(10_000) is None
    assert store.prune_runs("acme", keep=2) == 2
    assert [r.id for r in store.runs("acme")] == list(reversed(later))[:2]
    assert store.run_outcomes(first) == []


@pytest.mark.parametrize("call", [
    lambda s: s.begin_run("acme", "nightly"),
    lambda s: s.finish_run(s.begin_run("acme", "manual"), "fine", {}, None),
    lambda s: s.finish_run(424242, "clean", {}, None),
])
def test_run_history_rejects_programming_mistakes(store: StateStore, call: Any) -> None:
    with pytest.raises(ValueError):
        call(store)


def test_schedule_bookkeeping(store: StateStore) -> None:
    assert store.last_scheduled_day("acme") is None
    store.set_last_scheduled_day("acme", dt.date(2026, 3, 1))
    assert store.last_scheduled_day("acme") == dt.date(2026, 3, 1)
    assert store.last_scheduled_day(DEFAULT_TENANT) is None


def test_record_state_is_a_value() -> None:
    a = RecordState("units", "u1", H1, P1, "written")
    b = RecordState("units", "u1", H1, {"name": "WE 01", "customFields": {"mea": 12.5}}, "written")
    assert a == b and a.payload == P1 and a.payload is not a.payload  # decoded afresh: callers may mutate
    assert (a.kind, a.ref_id, a.status, a.pending, a.previous_status) == ("units", "u1", "written", False, None)
    assert pickle.loads(pickle.dumps(a)) == a
    assert "units" in repr(a) and "WE 01" not in repr(a)


def test_short_secrets_get_no_characters_in_their_fingerprint() -> None:
    from engine.state.models import fingerprint

    assert fingerprint("scl_" + "a" * 36 + "WXYZ") == "…WXYZ"
    assert fingerprint("k123") == "…" and fingerprint("short-key1") == "…"
    assert fingerprint("") is None and fingerprint(None) is None


def test_scheduled_tenants_are_the_activated_and_connected_ones(store: StateStore) -> None:
    store.add_tenant("beta", KEY, SECRET)
    store.activate_tenant("acme")
    store.activate_tenant("beta")
    store.save_connection("acme", TOKEN, "a1")
    store.set_last_scheduled_day("acme", dt.date(2026, 3, 1))
    assert store.scheduled_tenants() == [("acme", dt.date(2026, 3, 1))]  # beta has no connection
    store.save_connection("beta", TOKEN, "b1")
    store.deactivate_tenant("acme")
    assert store.scheduled_tenants() == [("beta", None)]
