"""Incremental extraction: a run reads only what changed, and ends exactly where a full read ends.

The randomized test drives day-two changes (edits, owner changes, ended tenancies and roles,
deletions, undeletes, new contacts) into one SCALARA and syncs two sides from it: one reading
incrementally, one reading everything. Both casavis and both state stores must agree.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.sync.extract import IncrementalPolicy, _read_changes
from tests.incremental_rig import Crash, DyingWriter, Rig

RESOURCES = ("properties", "buildings", "units", "contacts", "ownerships", "usages", "property-roles")


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, properties=1, seed=3)
    yield r
    r.close()


def reads_by_resource(rig: Rig) -> dict[str, int]:
    return rig.last_stats["scalara"].get("pages", 0)  # type: ignore[no-any-return]


def data(rig: Rig) -> Any:
    return rig.scalara.dataset()


# -- the basics -------------------------------------------------------------------------------------


def test_second_run_reads_only_changes_and_writes_nothing(rig: Rig) -> None:
    first = rig.run("a")
    assert first.report["extraction"]["mode"] == "full"
    assert "first run" in first.report["extraction"]["reason"]
    full_pages = rig.last_stats["scalara"]["pages"]
    rig.advance(0.01)
    second = rig.run("a")
    ex = second.report["extraction"]
    assert ex["mode"] == "incremental" and ex["since"] is not None
    assert sum(ex["changed"].values()) == 0 and sum(ex["deleted"].values()) == 0
    assert rig.last_stats["scalara"]["pages"] == len(RESOURCES) <= full_pages
    assert rig.last_stats["casavi"].get("writes", 0) == 0


def test_a_changed_building_rewrites_exactly_the_units_that_look_it_up(rig: Rig) -> None:
    rig.run("a")
    rig.advance(1)
    building = next(b for b in sorted(data(rig)["buildings"]) if any(
        u["buildingId"] == b for u in data(rig)["units"].values()))
    rig.scalara.update_record("buildings", building, {"street": "Neue Straße", "houseNumber": "7"})
    out = rig.run("a")
    assert out.report["extraction"]["changed"]["buildings"] == 1
    assert sum(out.report["extraction"]["changed"].values()) == 1
    units = {f"{u}" for u, rec in data(rig)["units"].items() if rec["buildingId"] == building}
    updated = {(a.kind, a.source_id) for a in out.prepared.plan.actions}
    assert {s for k, s in updated if k == "units"} <= units
    assert any(k == "units" for k, _ in updated)
    # and a full read now finds nothing left to do
    assert not rig.run("a", full=True).prepared.plan.actions


def test_equality_boundary_record_at_the_cursor_is_not_lost(rig: Rig) -> None:
    rig.run("a")
    cursor = rig.side("a").store.source_cursor("default").cursor
    contact = sorted(data(rig)["contacts"])[0]
    # a record written in the very millisecond of the cursor (same updatedAt), after the read
    rec = dict(data(rig)["contacts"][contact], lastName="Grenzfall", updatedAt=cursor)
    data(rig)["contacts"][contact] = rec
    out = rig.run("a", incremental=IncrementalPolicy(overlap_s=0))
    assert out.report["extraction"]["mode"] == "incremental"
    assert out.report["extraction"]["changed"]["contacts"] == 1


def test_server_ignoring_updated_since_still_gives_a_correct_run_and_says_so(rig: Rig) -> None:
    rig.run("a")
    rig.advance(1)
    gone = sorted(data(rig)["property-roles"])[0]
    rig.scalara.delete_record("property-roles", gone)
    data(rig)["property-roles"].pop(gone, None)

    def ignore(request: httpx.Request) -> None:
        params = [(k, v) for k, v in request.url.params.multi_items() if k not in ("updatedSince", "includeDeleted")]
        request.url = request.url.copy_with(params=params)
        return None
    rig.tamper = ignore
    out = rig.run("a")
    ex = out.report["extraction"]
    assert ex["mode"] == "incremental"
    assert any("ignored updatedSince" in w for w in ex["warnings"])
    assert ex["deleted"]["property-roles"] == 1
    rig.tamper = None
    assert not rig.run("a", full=True).prepared.plan.actions
    assert rig.store_state("a")["sources"] == _full_sources(rig)


def test_a_400_on_updated_since_falls_back_to_a_full_read_with_a_warning(rig: Rig) -> None:
    rig.run("a")
    rig.advance(1)

    def reject(request: httpx.Request) -> httpx.Response | None:
        if "updatedSince" in request.url.params:
            return httpx.Response(400, json={"error": "invalid_parameter", "message": "updatedSince unsupported"})
        return None
    rig.tamper = reject
    out = rig.run("a")
    ex = out.report["extraction"]
    assert out.outcome != "aborted"
    assert ex["mode"] == "full" and "400" in ex["reason"]
    assert ex["warnings"] and "reads everything" in ex["warnings"][0]


class _Pages:
    """A reader answering fixed pages (for the merge rules)."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items = items

    def iter_pages(self, resource: str, *, updated_since: str | None = None,
                   include_deleted: bool = False) -> Iterator[list[dict[str, Any]]]:
        yield self.items


def test_tombstone_and_live_record_with_one_id_the_later_wins() -> None:
    live = {"id": "a", "updatedAt": "2026-11-27T10:00:00.000Z", "x": 1}
    dead = {"id": "a", "deleted": True, "deletedAt": "2026-11-27T11:00:00.000Z"}
    delta = _read_changes(_Pages([live, dead]), "contacts", "2026-11-27T00:00:00Z", None, None)
    assert delta.latest["a"][1] is None
    delta = _read_changes(_Pages([dead, live]), "contacts", "2026-11-27T00:00:00Z", None, None)
    assert delta.latest["a"][1] is None
    later_live = dict(live, updatedAt="2026-11-27T12:00:00.000Z")
    delta = _read_changes(_Pages([dead, later_live]), "contacts", "2026-11-27T00:00:00Z", None, None)
    assert delta.latest["a"][1] == later_live


def test_tombstones_of_records_never_seen_are_ignored(rig: Rig) -> None:
    rig.run("a")
    rig.advance(1)
    ghost = "00000000-0000-4000-8000-000000000001"
    rig.scalara.dataset().tombstones["contacts"][ghost] = rig.clock.timestamp()
    acct = rig.scalara._account("demo")
    acct.ids["contacts"] = sorted({*acct.ids["contacts"], ghost})
    out = rig.run("a")
    assert out.report["extraction"]["deleted"]["contacts"] == 0
    assert out.outcome in ("clean", "partial")


def test_a_crash_never_moves_the_cursor_past_unapplied_records(rig: Rig) -> None:
    rig.run("a")
    store = rig.side("a").store
    before = store.source_cursor("default")
    rig.advance(0.01)  # the same day: a settled snapshot would let an unchanged run skip mapping
    contact = sorted(data(rig)["contacts"])[0]
    rig.scalara.update_record("contacts", contact, {"lastName": "Absturz"})

    with pytest.raises(Crash):
        rig.run("a", writer=DyingWriter())
    after = store.source_cursor("default")
    assert after.cursor == before.cursor and not after.settled  # the read was stored, the cursor did not move
    out = rig.run("a")
    assert out.report["extraction"]["mode"] == "incremental" and not out.prepared.skipped_mapping
    assert out.outcome in ("clean", "partial")
    assert store.source_cursor("default").cursor > (before.cursor or "")
    written = [r for r in rig.side("a").casavi.records("contacts") if r.get("lastName") == "Absturz"]
    assert len(written) == 1


@pytest.mark.parametrize(("option", "days", "reason"), [
    ({"full": True}, 1, "--full"),
    ({"reconcile": True}, 1, "reconciling"),
    ({}, 8, "periodic"),
    ({}, 91, "tombstone retention"),
    ({"incremental": IncrementalPolicy(full_every_days=1000, tombstone_retention_days=5)}, 6, "retention"),
])
def test_full_reads_when_the_engine_cannot_be_sure(rig: Rig, option: dict[str, Any], days: float,
                                                   reason: str) -> None:
    rig.run("a")
    rig.advance(days)
    out = rig.run("a", **option)
    assert out.report["extraction"]["mode"] == "full"
    assert reason in out.report["extraction"]["reason"]


def test_a_changed_mapping_set_reads_everything(rig: Rig, tmp_path: Path) -> None:
    import shutil

    from engine.compile import compile_mappings
    from engine.validate import load_mapping_set
    from tests.conftest import MAPPINGS_DIR

    rig.run("a")
    rig.advance(1)
    edited = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, edited)
    text = (edited / "properties.yaml").read_text(encoding="utf-8")
    (edited / "properties.yaml").write_text(text.replace("      name: name\n", "      name: upper(name)\n"),
                                            encoding="utf-8")
    rig.mset = compile_mappings(load_mapping_set([edited]))
    out = rig.run("a")
    assert out.report["extraction"]["mode"] == "full"
    assert "mapping set changed" in out.report["extraction"]["reason"]


def _full_sources(rig: Rig) -> list[tuple[str, str, str, str]]:
    rows = []
    for res in RESOURCES:
        for rid, rec in sorted(data(rig)[res].items()):
            rows.append((res, rid, rec["updatedAt"], json.dumps(rec, ensure_ascii=False, separators=(",", ":"))))
    return sorted(rows)


# -- the randomized equivalence -----------------------------------------------------------------------


class Changer:
    """Random day-two changes through the sandbox's mutation API (as SCALARA users make them)."""

    def __init__(self, rig: Rig, rng: random.Random) -> None:
        self.rig, self.rng = rig, rng
        self.graveyard: list[tuple[str, dict[str, Any]]] = []

    def pick(self, resource: str) -> str | None:
        ids = sorted(data(self.rig)[resource])
        return self.rng.choice(ids) if ids else None

    def day(self, n: int) -> list[str]:
        done = []
        for _ in range(n):
            what = self.rng.choice(("building", "contact", "unit", "property", "owner", "end_usage", "end_role",
                                    "delete", "delete", "undelete", "new_owner", "new_contact", "new_role"))
            try:
                getattr(self, what)()
                done.append(what)
            except Exception:  # a change the sandbox refuses (e.g. overlapping ownership) is skipped
                done.append(what + "!")
        return done

    def today(self, shift: int = 0) -> str:
        return (self.rig.clock.today() + dt.timedelta(days=shift)).isoformat()

    def building(self) -> None:
        bid = self.pick("buildings")
        if bid:
            self.rig.scalara.update_record("buildings", bid, {"street": self.rng.choice(["Am Markt", "Elbchaussee"]),
                                                              "houseNumber": str(self.rng.randint(1, 99))})

    def contact(self) -> None:
        cid = self.pick("contacts")
        if cid:
            self.rig.scalara.update_record("contacts", cid, self.rng.choice([
                {"lastName": self.rng.choice(["Müller", "Weiß", "Öztürk"])},
                {"email": self.rng.choice([None, f"x{self.rng.randint(1, 999)}@example.org"])},
                {"city": "Lübeck"}]))

    def unit(self) -> None:
        uid = self.pick("units")
        if uid:
            self.rig.scalara.update_record("units", uid, {"label": self.rng.choice([None, "Dachgeschoss"]),
                                                          "areaSqm": self.rng.choice([None, 55.5, 80])})

    def property(self) -> None:
        pid = self.pick("properties")
        if pid:
            self.rig.scalara.update_record("properties", pid, {"name": f"Objekt {self.rng.randint(1, 99)}"})

    def owner(self) -> None:
        uid, cid = self.pick("units"), self.pick("contacts")
        if uid and cid:
            self.rig.scalara.change_owner(uid, [cid], self.today(self.rng.randint(-3, 10)))

    def end_usage(self) -> None:
        usage = self.pick("usages")
        if usage:
            self.rig.scalara.end_usage(usage, self.today(self.rng.randint(-20, 5)))

    def end_role(self) -> None:
        role = self.pick("property-roles")
        if role:
            self.rig.scalara.update_record("property-roles", role, {"validTo": self.today(self.rng.randint(-5, 3))})

    def delete(self) -> None:
        res = self.rng.choice(RESOURCES)
        rid = self.pick(res)
        if rid:
            rec = data(self.rig)[res][rid]
            self.rig.scalara.delete_record(res, rid)
            self.graveyard.append((res, rec))

    def undelete(self) -> None:
        if self.graveyard:
            res, rec = self.graveyard.pop(self.rng.randrange(len(self.graveyard)))
            self.rig.scalara.add_record(res, {k: v for k, v in rec.items() if k != "updatedAt"})

    def _new_contact(self) -> str:
        rec = self.rig.scalara.add_record("contacts", {"kind": "PERSON", "salutation": "FRAU", "firstName": "Neue",
                                                       "lastName": f"Person{self.rng.randint(1, 9999)}"})
        return str(rec["id"])

    def new_owner(self) -> None:
        uid = self.pick("units")
        if uid:
            self.rig.scalara.change_owner(uid, [self._new_contact()], self.today(self.rng.randint(-2, 4)))

    def new_contact(self) -> None:
        self._new_contact()  # referenced by nothing: data protection keeps it out of casavi

    def new_role(self) -> None:
        pid, cid = self.pick("properties"), self.pick("contacts")
        if pid and cid:
            self.rig.scalara.add_record("property-roles", {
                "propertyId": pid, "contactId": cid, "role": self.rng.choice(["CARETAKER", "ADVISORY_BOARD_MEMBER"]),
                "validFrom": self.today(-self.rng.randint(0, 30)), "validTo": None})


TENANTS, DAYS = 70, 3  # 210 scenarios: each day of random changes is compared on its own


def _tenant(tmp: Path, seed: int) -> tuple[int, int]:
    """One generated tenant, synced on both sides, then DAYS days of random changes; returns the
    number of days read incrementally, and of those mapped targeted (only what the changes touch)."""
    rng = random.Random(seed)
    rig = Rig(tmp, properties=rng.choice((1, 1, 2)), seed=seed)
    try:
        rig.run("inc")
        rig.run("full")
        changer = Changer(rig, rng)
        incremental = targeted = 0
        for day in range(DAYS):
            rig.advance(rng.choice((0.02, 1, 1, 2)))
            changes = changer.day(rng.randint(0, 6))
            inc = rig.run("inc")
            full = rig.run("full", full=True)
            where = f"tenant seed {seed}, day {day + 1}, changes {changes}"
            incremental += inc.report["extraction"]["mode"] == "incremental"
            how = inc.report["extraction"].get("targeted") or {}
            if how.get("mode") == "targeted":
                targeted += 1
            else:  # nothing changed since a settled run: nothing mapped at all
                assert inc.report["extraction"]["skippedMapping"], (where, how)
            assert inc.outcome == full.outcome, where
            assert inc.report["counts"] == full.report["counts"], where
            assert rig.casavi_state("inc") == rig.casavi_state("full"), where
            a, b = rig.store_state("inc"), rig.store_state("full")
            assert a["records"] == b["records"], where
            assert a["sources"] == b["sources"], where
            # what each record read: a targeted day's rows equal a whole mapping's
            assert a["deps"] == b["deps"], where
            assert a["until"] == b["until"], where
        return incremental, targeted
    finally:
        rig.close()


@pytest.mark.slow
def test_incremental_and_full_runs_agree_on_random_day_two_changes(tmp_path: Path) -> None:
    incremental = targeted = 0
    shm = Path("/dev/shm")  # state files in memory when the machine has it: fsyncs are most of the time
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else tmp_path) as base:
        for seed in range(TENANTS):
            where = Path(base) / f"t{seed}"
            where.mkdir()
            read, mapped = _tenant(where, seed)
            incremental += read
            targeted += mapped
    assert TENANTS * DAYS >= 200
    assert incremental == TENANTS * DAYS  # every later day was read incrementally (none fell back)
    assert targeted >= TENANTS * DAYS // 2  # the others changed nothing: every day that mapped, mapped targeted


def test_the_policy_comes_from_the_connector_config(tmp_path: Path) -> None:
    from engine.connectors import load_connector_config
    from engine.errors import ConfigError

    assert IncrementalPolicy.from_config(load_connector_config(None, env={}).scalara.incremental) == IncrementalPolicy()
    cfg = tmp_path / "c.yaml"
    cfg.write_text("scalara:\n  incremental: {full_every_days: 1, overlap_s: 60, enabled: false}\n", encoding="utf-8")
    policy = IncrementalPolicy.from_config(load_connector_config(cfg, env={}).scalara.incremental)
    assert (policy.full_every_days, policy.overlap_s, policy.enabled) == (1, 60, False)
    cfg.write_text("scalara:\n  incremental: {full_every_days: -1}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="full_every_days"):
        load_connector_config(cfg, env={})


def test_a_connection_to_another_scalara_account_starts_with_a_full_read(rig: Rig) -> None:
    store = rig.side("a").store
    store.save_connection("default", "scl_" + "a" * 40, "account-1")
    rig.run("a")
    store.save_connection("default", "scl_" + "b" * 40, "account-1")  # a new token, same account
    assert store.source_cursor("default") is not None
    store.save_connection("default", "scl_" + "c" * 40, "account-2")
    assert store.source_cursor("default") is None
    rig.advance(0.01)
    assert rig.run("a").report["extraction"]["mode"] == "full"


def test_an_unchanged_day_maps_nothing_until_a_date_could_change_the_output(rig: Rig) -> None:
    role = sorted(data(rig)["property-roles"])[0]
    rig.scalara.update_record("property-roles", role, {"validFrom": None, "validTo": rig.clock.today().isoformat()})
    rig.run("a")
    second = rig.run("a")  # the first run may be partial (planted bad records): its errors are carried over
    stable = rig.side("a").store.source_cursor("default").stable_until
    assert stable == (rig.clock.today() + dt.timedelta(days=1)).isoformat()  # the role ends tonight
    same_day = rig.run("a")
    assert same_day.report["extraction"]["skippedMapping"] is True
    full_counts = rig.run("a", full=True).report["counts"]
    assert {k: r["unchanged"] for k, r in same_day.report["counts"].items()} == {
        k: r["unchanged"] for k, r in full_counts.items()}
    assert rig.last_stats["scalara"]["pages"] == len(RESOURCES) and rig.last_stats["casavi"].get("writes", 0) == 0
    reasons = sorted(e["reason"] for e in second.report["mapErrors"])
    assert sorted(e["reason"] for e in same_day.report["mapErrors"]) == reasons and same_day.outcome == second.outcome
    rig.advance(1)  # the role has ended: the run must map, and the responsibility goes
    next_day = rig.run("a")
    assert next_day.report["extraction"]["skippedMapping"] is False
    gone = next_day.prepared.plan.actions + next_day.prepared.plan.held_archives  # (the guard may hold it)
    assert [a.kind for a in gone] == ["responsibilities"]


def test_date_functions_report_when_their_answer_could_change() -> None:
    from engine.functions import HORIZON, RUN_DATE, active, today

    day = dt.date(2026, 11, 27)
    run, horizon = RUN_DATE.set(day), HORIZON.set([dt.date.max])
    try:
        assert active("2026-01-01", None) and HORIZON.get() == [dt.date.max]      # open-ended: never
        assert active("2026-01-01", "2026-12-31") and HORIZON.get() == [dt.date(2027, 1, 1)]
        assert not active("2026-12-05", None) and HORIZON.get() == [dt.date(2026, 12, 5)]
        assert not active(None, "2026-11-26") and HORIZON.get() == [dt.date(2026, 12, 5)]  # over for good
        assert today() == "2026-11-27" and HORIZON.get() == [dt.date(2026, 11, 28)]
    finally:
        HORIZON.reset(horizon)
        RUN_DATE.reset(run)
    assert HORIZON.get() is None and active("2026-01-01", None)


@pytest.mark.cluster
def test_incremental_runs_on_a_postgresql_state(tmp_path: Path, pg_url: str) -> None:
    rig = Rig(tmp_path, properties=1, seed=11)
    rig.locations["pg"] = pg_url
    try:
        rig.run("pg")
        rig.run("lite")
        rig.run("pg")  # settled: later days map only what changed
        changer = Changer(rig, random.Random(11))
        targeted = 0
        for _ in range(3):
            rig.advance(1)
            changer.day(5)
            inc = rig.run("pg")
            rig.run("lite", full=True)
            assert inc.report["extraction"]["mode"] == "incremental"
            targeted += (inc.report["extraction"].get("targeted") or {}).get("mode") == "targeted"
            assert rig.casavi_state("pg") == rig.casavi_state("lite")
            a, b = rig.store_state("pg"), rig.store_state("lite")
            for part in ("sources", "deps", "until"):
                assert a[part] == b[part], part
        assert targeted
    finally:
        rig.close()
