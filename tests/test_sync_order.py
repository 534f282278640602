"""Property by property: the initial import completes one property after the other.

The proof reads the casavi sandbox's request log (the order in which casavi answered the writes),
assigns every write to a property from casavi's own data -- not from the engine's grouping --
and checks that no property starts before the property ``max_ahead`` places earlier is complete,
that a record is written only after what it references, and that a shared contact is written once.
The same check fails on the older kind-by-kind order, so it can fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.sync.order import Completion, group_actions
from engine.sync.plan import CREATE, UPDATE, Action
from tests.conftest import World, make_world

ORDER = ("properties", "contacts", "units", "responsibilities", "contracts")


def act(kind: str, ref: str, *deps: tuple[str, str], action: str = CREATE, **payload: Any) -> Action:
    return Action(kind, ref, action, dict(payload), None, "src", ref, tuple(deps))


# -- grouping ------------------------------------------------------------------------------------


def test_records_go_with_their_property_and_a_shared_contact_with_the_first_that_needs_it() -> None:
    p1, p2 = ("properties", "P1"), ("properties", "P2")
    u1, u2 = ("units", "U1"), ("units", "U2")
    shared, board = ("contacts", "C"), ("contacts", "C2")
    actions = [
        act("contacts", "C3"), act("contacts", "C2"), act("contacts", "C"),
        act("contracts", "K2", u2, shared), act("contracts", "K1", u1, shared),
        act("responsibilities", "R2", p2, board),
        act("units", "U2", p2), act("units", "U1", p1),
        act("properties", "P1", name="Am Markt 1"), act("properties", "P2", name="Hauptstraße 2"),
    ]
    groups = group_actions(actions, ORDER)
    assert [(g.anchor, g.name) for g in groups] == [("P1", "Am Markt 1"), ("P2", "Hauptstraße 2"), (None, None)]
    assert [[a.ref_id for a in g.actions] for g in groups] == [
        ["P1", "C", "U1", "K1"], ["P2", "C2", "U2", "R2", "K2"], ["C3"]]


def test_records_of_unchanged_parents_find_their_property_through_the_mapped_records() -> None:
    mapped = {("units", "U9"): ((("properties", "P9"),), {}), ("properties", "P9"): ((), {"name": "Ringweg 9"})}
    actions = [act("properties", "P1"), act("contracts", "K9", ("units", "U9"), ("contacts", "C9"), action=UPDATE)]
    groups = group_actions(actions, ORDER, lambda kind, ref: mapped.get((kind, ref)))
    assert [(g.anchor, g.name, [a.ref_id for a in g.actions]) for g in groups] == [
        ("P1", None, ["P1"]), ("P9", "Ringweg 9", ["K9"])]


def test_no_group_waits_on_a_later_group() -> None:
    """A record leading to two properties goes with the later one; what it needs stays at or before."""
    actions = [act("properties", "P1"), act("properties", "P2"), act("units", "U1", ("properties", "P1")),
               act("units", "U2", ("properties", "P2")),
               act("contracts", "K", ("units", "U1"), ("units", "U2"), ("contacts", "C")), act("contacts", "C")]
    groups = group_actions(actions, ORDER)
    where = {a.ref_id: g.index for g in groups for a in g.actions}
    assert where["K"] == where["P2"] and where["C"] == where["P2"]
    for g in groups:
        for a in g.actions:
            assert all(where[d[1]] <= g.index for d in a.depends_on if d[1] in where)


def test_the_smallest_property_goes_first() -> None:
    """Shortest job first: the most properties complete at every moment; ties keep the plan's order."""
    actions = [act("properties", "BIG"), act("properties", "SMALL"), act("properties", "TIE"),
               *(act("units", f"B{i}", ("properties", "BIG")) for i in range(3)),
               act("units", "S1", ("properties", "SMALL")), act("units", "T1", ("properties", "TIE"))]
    assert [g.anchor for g in group_actions(actions, ORDER)] == ["SMALL", "TIE", "BIG"]


def test_completion_counts_properties_and_names_the_current_one() -> None:
    actions = [act("properties", "P1", name="Eins"), act("units", "U1", ("properties", "P1")),
               act("properties", "P2", name="Zwei")]
    c = Completion(group_actions(actions, ORDER))
    assert c.detail()["properties"] == {"done": 0, "total": 2, "current": {"id": "P2", "name": "Zwei"}}
    assert not c.settled(actions[0], True)  # P1 still waits for its unit
    assert c.detail()["properties"]["current"]["name"] == "Zwei"
    assert c.settled(actions[2], True)
    assert c.detail()["properties"]["done"] == 1 and c.detail()["properties"]["current"]["name"] == "Eins"
    assert c.settled(actions[1], False)
    assert c.detail()["properties"] == {"done": 2, "total": 2, "current": None}
    assert c.detail()["records"] == {"done": 3, "total": 3}
    assert [(d.anchor, d.records, d.failed) for d in c.done] == [("P2", 1, 0), ("P1", 2, 1)]


# -- the order casavi saw --------------------------------------------------------------------------


def writes_by_property(world: World) -> tuple[list[str], dict[str, list[int]], list[tuple[str, str, int]]]:
    """From the request log: the properties in the order they were first written, the log positions
    of every write of each property's records, and every (kind, id, position) write."""
    casavi = world.sandbox.casavi
    unit_prop = {u["id"]: u["propertyId"] for u in casavi.records("units")}
    contracts = {c["id"]: c for c in casavi.records("contracts")}
    writes: list[tuple[str, str, int]] = []
    for pos, (_, method, path, _status) in enumerate(world.sandbox.casavi_server.counters.log()):
        parts = path.strip("/").split("/")
        if method != "PUT" or parts[0] != "v2":
            continue
        if len(parts) == 5:
            writes.append(("responsibilities", f"{parts[2]}/{parts[4]}", pos))
        else:
            writes.append((parts[1], parts[2], pos))
    order = [ref for kind, ref, _ in writes if kind == "properties"]
    rank = {p: i for i, p in enumerate(order)}
    prop_of: dict[tuple[str, str], str] = {}
    contact_props: dict[str, list[str]] = {}
    for kind, ref, _ in writes:
        if kind == "properties":
            prop_of[(kind, ref)] = ref
        elif kind == "units":
            prop_of[(kind, ref)] = unit_prop[ref]
        elif kind == "contracts" and ref in contracts:
            prop = unit_prop[contracts[ref]["unitId"]]
            prop_of[(kind, ref)] = prop
            contact_props.setdefault(contracts[ref]["contactId"], []).append(prop)
        elif kind == "responsibilities":
            prop, contact = ref.split("/")
            prop_of[(kind, ref)] = prop
            contact_props.setdefault(contact, []).append(prop)
    for contact, props in contact_props.items():
        prop_of[("contacts", contact)] = min(props, key=rank.__getitem__)
    positions: dict[str, list[int]] = {p: [] for p in order}
    for kind, ref, pos in writes:
        if (kind, ref) in prop_of:
            positions[prop_of[(kind, ref)]].append(pos)
    return order, positions, writes


def lead(order: list[str], positions: dict[str, list[int]]) -> int:
    """The most properties the run had moved on past an incomplete one: for each property, how many
    later properties had started before its last write."""
    worst = 0
    for i, prop in enumerate(order):
        last = max(positions[prop])
        started_later = sum(1 for later in order[i + 1:] if min(positions[later]) < last)
        worst = max(worst, started_later)
    return worst


@pytest.fixture
def four(tmp_path: Path) -> Iterator[World]:
    yield from make_world(tmp_path, properties=4, seed=3)


@pytest.mark.slow  # a four-property scenario against the sandbox (timing-sensitive on a loaded machine)
def test_the_request_log_shows_each_property_complete_before_the_run_moves_on(four: World) -> None:
    four.sandbox.casavi_server.counters.start_log()
    outcome = four.run(max_ahead=2)
    assert outcome.report["writeFailures"] == []
    order, positions, writes = writes_by_property(four)
    assert len(order) == 4
    assert lead(order, positions) <= 1  # max_ahead 2: property n + 2 starts after property n is complete
    # a record goes out after what it references; a shared contact once, before its first user
    first = {(kind, ref): pos for kind, ref, pos in reversed(writes)}
    puts = [(kind, ref) for kind, ref, _ in writes]
    assert len(puts) == len(set(puts))
    for c in four.sandbox.casavi.records("contracts"):
        at = first[("contracts", c["id"])]
        assert first[("units", c["unitId"])] < at and first[("contacts", c["contactId"])] < at
    for kind, ref, pos in writes:
        if kind == "responsibilities":
            prop, contact = ref.split("/")
            assert first[("properties", prop)] < pos and first[("contacts", contact)] < pos
    props = outcome.report["properties"]
    assert props["writeOrder"] == "property" and props["total"] == props["complete"] == 4
    assert [p["id"] for p in props["completed"]] == order
    after = [p["afterS"] for p in props["completed"]]
    assert after == sorted(after) and props["firstCompleteS"] == after[0]
    # the first property is complete long before the end: counted in writes, not seconds (a loaded
    # machine stretches the extraction before the first write, which is no fault of the order)
    assert max(positions[order[0]]) < len(writes) / 2


@pytest.mark.slow  # a four-property scenario against the sandbox (timing-sensitive on a loaded machine)
def test_the_same_check_fails_kind_by_kind(four: World) -> None:
    four.sandbox.casavi_server.counters.start_log()
    outcome = four.run(write_order="kind")
    assert outcome.report["writeFailures"] == []
    order, positions, _ = writes_by_property(four)
    assert lead(order, positions) == 3  # every property starts before the first is complete
    assert outcome.report["properties"]["complete"] == 4


@pytest.fixture
def quota(tmp_path: Path) -> Iterator[World]:
    yield from make_world(tmp_path, properties=2, seed=3, unit_quota=10)


def test_a_rejected_unit_skips_only_its_contracts_and_the_next_run_retries_them(quota: World) -> None:
    outcome = quota.run()
    failures = outcome.report["writeFailures"]
    rejected = {f["id"] for f in failures if f["kind"] == "units" and f["action"] != "skipped"}
    skipped = [f for f in failures if f["action"] == "skipped"]
    assert rejected and skipped
    assert {f["kind"] for f in skipped} == {"contracts"}
    assert all("depends on units" in f["error"]["reason"] for f in skipped)
    written = {c["unitId"] for c in quota.sandbox.casavi.records("contracts")}
    assert written and not written & rejected  # the other contracts went through
    statuses = {(k, r): s.status for (k, r), s in quota.store.records("default").items()}
    assert {statuses[("contracts", f["id"])] for f in skipped} <= {"failed"}  # announced, then settled
    assert outcome.report["properties"]["complete"] == 2
    assert sum(p["failed"] for p in outcome.report["properties"]["completed"]) == len(failures)
    quota.sandbox.casavi.unit_quota = None
    again = quota.run()
    assert again.report["writeFailures"] == []
    assert again.report["counts"]["contracts"].get("create", 0) == len(skipped)


# -- what the operator sees ------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path) -> Iterator[tuple[Any, dict[str, str]]]:
    from engine.sandbox import FaultConfig, Sandbox
    from tests.conftest import fast_connector_config
    from tests.test_plan_cmd import invoke

    with Sandbox(properties=2, seed=4, scalara_faults=FaultConfig(), casavi_faults=FaultConfig()) as sb:
        env = {"CASAVI_SYNC_STATE": str(tmp_path / "state.db"), "CASAVI_SYNC_SCALARA_URL": sb.scalara_url,
               "CASAVI_SYNC_CASAVI_URL": sb.casavi_url,
               "CASAVI_SYNC_CONNECTOR_CONFIG": str(fast_connector_config(tmp_path))}
        invoke(env, "tenant", "add", "--key", sb.casavi_key, "--secret-stdin", input=sb.casavi_secret)
        invoke(env, "tenant", "activate")
        invoke(env, "connect", "--no-initial-import", "--token-stdin", input=sb.generate_scalara_token())
        yield sb, env


def test_progress_and_the_run_summary_count_complete_properties(cli_env: tuple[Any, dict[str, str]]) -> None:
    import json

    from tests.test_plan_cmd import invoke

    sb, env = cli_env
    names = sorted(p["name"] for p in sb.scalara.dataset()["properties"].values())
    result = invoke(env, "run", "--log-format", "json")
    events = [json.loads(line) for line in result.output.splitlines() if line.strip()]
    writing = [ev for ev in events if ev.get("msg") == "progress" and ev.get("phase") == "write"]
    assert writing and all(ev["kind"] == "records" for ev in writing)  # one count for all kinds
    last = writing[-1]["properties"]
    assert last["done"] == last["total"] == 2 and last["current"] is None
    assert any((ev["properties"]["current"] or {}).get("name") in names for ev in writing)
    end = next(ev for ev in events if ev.get("event") == "run.end")
    assert end["properties"]["complete"] == 2 and end["properties"]["firstCompleteS"] > 0

    data = sb.scalara.dataset()
    unit = next(u for u in sorted(data["units"]) if data["units"][u]["buildingId"] in data["buildings"])
    sb.scalara.update_record("units", unit, {"label": "Neubau"})  # a unit's change: its property, complete
    text = invoke(env, "run", "--write-order", "kind").output
    assert "properties        1 of 1 complete; the first after" in text


@pytest.mark.slow  # a four-property scenario against the sandbox (timing-sensitive on a loaded machine)
def test_a_stop_during_the_writes_ends_the_run_and_the_next_run_completes_it(four: World) -> None:
    from engine.sync.runner import SyncOptions
    from engine.sync.session import run_for_tenant
    from tests.conftest import RUN_DATE

    counters = four.sandbox.casavi_server.counters
    scalara, casavi = four.clients()
    with scalara, casavi:
        stopped = run_for_tenant(four.store, four.tenant, four.mset, scalara, casavi,
                                 SyncOptions(run_date=RUN_DATE, concurrency=4),
                                 should_stop=lambda: counters.writes() >= 60)
    assert stopped.outcome == "stopped"
    assert 60 <= counters.writes() < 80  # the calls in flight finished, no new ones started
    props = stopped.report["properties"]
    assert props["complete"] < props["total"] == 4
    again = four.run()
    assert again.report["writeFailures"] == []
    assert again.report["properties"]["complete"] == again.report["properties"]["total"]
    assert not [k for k, s in four.store.records("default").items() if s.status in ("pending", "failed")]
    assert four.run().report["calls"]["casavi"].get("writes", 0) == 0


def test_records_referring_to_each_other_in_a_circle_are_still_written() -> None:
    """Nothing releases a circle; the scheduler sends it anyway instead of stopping short."""
    from engine.sync.apply import apply_plan
    from engine.sync.plan import Plan

    class Casavi:
        def __init__(self) -> None:
            self.put_ids: list[str] = []

        def put(self, kind: str, ref_id: str, payload: dict[str, Any]) -> Any:
            self.put_ids.append(ref_id)

    class Journal:
        def pending(self, actions: Any) -> None: ...
        def written(self, action: Any) -> None: ...
        def flush(self) -> None: ...

    actions = [act("properties", "P"), act("units", "A", ("properties", "P"), ("units", "B")),
               act("units", "B", ("properties", "P"), ("units", "A"))]
    writer = Casavi()
    result = apply_plan(Plan(kinds=ORDER, actions=actions), writer, Journal(), order=ORDER)  # type: ignore[arg-type]
    assert sorted(writer.put_ids) == ["A", "B", "P"] and writer.put_ids[0] == "P"
    assert [d.anchor for d in result.properties_done] == ["P"]
