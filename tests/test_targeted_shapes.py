"""The closure is generic over mapping shapes, not only the shipped ones: a consultant's mapping
set with a mapping made from two resources (one identity table, ids colliding across them), a
required lookup by a non-id field, a lookup into a resource that is itself mapped, a many-lookup,
for_each, a date filter and data protection. Random day-to-day changes; each day the targeted
re-map, merged with what the records outside the closure produced before, must equal mapping
everything, and the stored dependency rows must equal a whole mapping's.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import pytest

from engine.compile import MappingSet, compile_mappings
from engine.interpret import MapResult, map_records
from engine.mapscope import Scope
from engine.state import StateStore
from engine.state.sources import SourceCommit
from engine.sync.targeted import flat, remap, until_of, whole_rows

SPECS: dict[str, dict[str, Any]] = {
    "properties": {"mapping": "properties", "target": "properties", "rules": [{
        "name": "prop", "source": "props", "id": "ref_id('p', id)",
        "lookups": {"sites": {"resource": "sites", "match": "propId", "key": "id", "many": True}},
        "fields": {"name": "join_nonempty(' ', [name, sites[0].city])", "number": "number"}}]},
    "units": {"mapping": "units", "target": "units", "rules": [
        {"name": "flat", "source": "flats", "id": "ref_id('u', id)",
         "lookups": {"site": {"resource": "sites", "match": "code", "key": "siteCode", "required": True}},
         "fields": {"propertyId": {"ref": "properties", "from": "propId"},
                    "name": "join_nonempty(' ', [label, site.city])"}},
        {"name": "shop", "source": "shops", "id": "ref_id('u', id)",
         "fields": {"propertyId": {"ref": "properties", "from": "propId"}, "name": "label"}}]},
    "contacts": {"mapping": "contacts", "target": "contacts", "only_if_referenced_by": ["contracts"], "rules": [{
        "name": "person", "source": "people", "id": "ref_id('c', id)",
        "lookups": {"home": {"resource": "flats", "match": "id", "key": "flatId"}},
        "fields": {"lastName": "name", "street": "home.label"}}]},
    "contracts": {"mapping": "contracts", "target": "contracts", "rules": [{
        "name": "own", "source": "owns", "filter": "active(start, end)",
        "for_each": [{"name": "owner", "in": "ownerIds"}], "id": "ref_id('o', id, owner)",
        "fields": {"type": {"const": "OWNER"}, "contactId": {"ref": "contacts", "from": "owner"},
                   "unitId": {"ref": "units", "from": "unitId"}, "startDate": "start", "endDate": "end"}}]},
}
RESOURCES = ("props", "sites", "flats", "shops", "people", "owns")
DAY0 = dt.date(2026, 12, 1)


def _mset() -> MappingSet:
    return compile_mappings(SPECS)


def _record(res: str, rid: str, rng: random.Random) -> dict[str, Any]:
    ids = [str(i) for i in range(1, 7)]
    pick = rng.choice
    if res == "props":
        return {"id": rid, "name": pick(["A", "B", None]), "number": pick(["1", "2"])}
    if res == "sites":
        return {"id": rid, "propId": pick(ids), "code": pick(["s1", "s2", "s3", 7, 7.0]), "city": pick(["HH", "B"])}
    if res == "flats":
        return {"id": rid, "propId": pick(ids), "siteCode": pick(["s1", "s2", "s4", 7]), "label": pick(["EG", "OG"])}
    if res == "shops":
        return {"id": rid, "propId": pick(ids), "label": pick(["Laden", ""])}
    if res == "people":
        return {"id": rid, "name": pick(["Meyer", "Kaya", None]), "flatId": pick(ids)}
    start = (DAY0 + dt.timedelta(days=rng.randint(-3, 4))).isoformat()
    end = pick([None, (DAY0 + dt.timedelta(days=rng.randint(0, 6))).isoformat()])
    return {"id": rid, "ownerIds": rng.sample(ids, rng.randint(0, 2)), "unitId": pick(ids), "start": start, "end": end}


def _outputs(result: MapResult) -> dict[tuple[str, str], tuple[Any, ...]]:
    return {(kind, rid): (o.payload, o.source_resource, o.source_id, o.depends_on)
            for kind, outs in result.outputs.items() for rid, o in outs.items()}


def _errors(result: MapResult) -> set[tuple[Any, ...]]:
    return {(e.resource, e.source_id, e.target_id, e.reason) for e in result.errors}


def _stored(store: StateStore) -> tuple[list[Any], list[Any]]:
    with store._read() as db:
        return (db.execute("SELECT resource, id, dep, detail FROM source_deps ORDER BY 1, 2, 3").fetchall(),
                db.execute("SELECT resource, id, until FROM source_until ORDER BY 1, 2").fetchall())


@pytest.mark.parametrize("seed", [s if s < 8 else pytest.param(s, marks=pytest.mark.slow) for s in range(40)])
def test_targeted_re_maps_equal_mapping_everything_for_unusual_shapes(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    mset = _mset()
    data = {res: {str(i): _record(res, str(i), rng) for i in range(1, 7) if rng.random() < 0.8} for res in RESOURCES}
    store = StateStore.open(tmp_path / "s.db")
    whole = StateStore.open(tmp_path / "w.db")
    for s in (store, whole):
        s.add_tenant("t", "k", "s")

    def records() -> dict[str, list[dict[str, Any]]]:
        return {res: list(rows.values()) for res, rows in data.items()}

    def map_whole(day: dt.date, into: StateStore) -> MapResult:
        scope = Scope()
        got = map_records(mset, records(), run_date=day, scope=scope)
        into.save_deps("t", whole_rows(mset, records(), scope), until_of(scope), whole=True, mapping_hash="h")
        return got

    store.stage_sources("t", SourceCommit(RESOURCES, None, "h", full=True, replace=records()))
    before = map_whole(DAY0, store)
    for n in range(1, 6):
        day = DAY0 + dt.timedelta(days=n)
        delta: dict[str, dict[str, dict[str, Any] | None]] = {}
        for _ in range(rng.randint(1, 3)):
            res, rid = rng.choice(RESOURCES), str(rng.randint(1, 7))
            if rid in data[res] and rng.random() < 0.3:
                del data[res][rid]
                delta.setdefault(res, {})[rid] = None
            else:
                data[res][rid] = _record(res, rid, rng)
                delta.setdefault(res, {})[rid] = data[res][rid]
        store.stage_sources("t", SourceCommit(RESOURCES, None, "h", full=False,
                                              upserts={r: [v for v in d.values() if v] for r, d in delta.items()},
                                              deletes={r: [k for k, v in d.items() if v is None] for r, d in delta.items()}))
        t = remap(store, "t", mset, delta, run_date=day)
        full = map_records(mset, records(), run_date=day)
        where = f"seed {seed}, day {n}, delta {delta}"
        kept = {k: v for k, v in _outputs(before).items() if (v[1], v[2]) not in t.closure}
        assert {**kept, **_outputs(t.mapped)} == _outputs(full), where
        kept_errors = {e for e in _errors(before) if (e[0], e[1]) not in t.closure}
        assert kept_errors | _errors(t.mapped) == _errors(full), where
        store.save_deps("t", flat(t.rows), t.until, whole=False, mapping_hash="h", replaced=t.replaced)
        map_whole(day, whole)
        assert _stored(store) == _stored(whole), where
        before = full
    store.close()
    whole.close()
