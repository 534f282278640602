"""The generated per-rule loops (engine.rulegen): no code injection, and the slow paths still report.

The interpreter writes Python source per rule. Field names, loop and lookup names and constants
come from a mapping file, so a hostile one must end up as data, never as code; and the records
the fast path hands back to the generic code (bad ids, duplicates, required lookups without a
match, for_each over a non-list) must be reported exactly as before.
"""

from __future__ import annotations

import builtins
import dataclasses
import gc
import random
import sys
from pathlib import Path
from typing import Any

import pytest

from engine.compile import compile_mappings
from engine.expr import compile_expr
from engine.functions import REGISTRY
from engine.interpret import Scope, map_records
from engine.rulegen import proven_reference_id
from tests.conftest import MAPPINGS_DIR

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bench_mapping import RUN_DATE, generate, shipped  # noqa: E402

EVIL = "x': __import__('builtins').setattr(__import__('builtins'), 'PWNED', 1), 'y"
EVIL2 = 'x": __import__("builtins").setattr(__import__("builtins"), "PWNED", 2), "y'
EVIL3 = "a\n    __import__('builtins').setattr(__import__('builtins'), 'PWNED', 3)\n#"


def _spec(rules: list[dict[str, Any]], target: str = "contracts") -> dict[str, Any]:
    return {"mapping": "m", "target": target, "rules": rules}


def test_hostile_field_names_constants_and_loop_names_stay_data() -> None:
    spec = _spec([{
        "name": EVIL, "source": "ownerships",
        "lookups": {EVIL2: {"resource": "units", "key": "unitId", "many": True}},
        "for_each": [{"name": EVIL3, "in": "owners"}],
        "id": "ref_id('own', id)",
        "fields": {EVIL: {"const": EVIL2}, EVIL2: {"const": EVIL3}, EVIL3: {"object": {EVIL: {"const": EVIL}}},
                   "type": {"const": "OWNER"}, "contactId": {"const": "c"}, "unitId": {"const": "u"},
                   "startDate": {"const": "2020-01-01"},
                   "code": {"map": "kind", "values": {EVIL: EVIL2}, "default": EVIL3}},
    }])
    records = {"ownerships": [{"id": "o1", "owners": ["a"], "unitId": "u1", "kind": EVIL}],
               "units": [{"id": "u1"}]}
    result = map_records(compile_mappings({"m": spec}), records)
    assert not hasattr(builtins, "PWNED")
    payload = result.outputs["contracts"]["own-o1"].payload
    assert payload[EVIL] == EVIL2 and payload[EVIL2] == EVIL3 and payload[EVIL3] == {EVIL: EVIL}
    assert payload["code"] == EVIL2
    assert result.outputs["contracts"]["own-o1"].rule == EVIL


def test_hostile_string_literals_in_expressions_stay_data() -> None:
    literal = "__import__(\"builtins\").setattr(__import__(\"builtins\"), \"PWNED\", 4)"
    spec = _spec([{"name": "p", "source": "properties", "id": "ref_id('p', id)",
                   "filter": f"name != '{literal}'",
                   "fields": {"name": f"join_nonempty(' ', ['{literal}', name])"}}], target="properties")
    result = map_records(compile_mappings({"m": spec}), {"properties": [{"id": "1", "name": "n"}]})
    assert result.outputs["properties"]["p-1"].payload == {"name": f"{literal} n"}
    assert not hasattr(builtins, "PWNED")


def test_reference_ids_are_proven_only_for_a_literal_short_prefix() -> None:
    assert proven_reference_id(compile_expr("ref_id('own', id, owner)"))
    assert not proven_reference_id(compile_expr("ref_id(kind, id)"))
    assert not proven_reference_id(compile_expr("ref_id('bad prefix', id)"))
    assert not proven_reference_id(compile_expr(f"ref_id('{'p' * 32}', id)"))
    assert not proven_reference_id(compile_expr("id"))


def test_the_slow_paths_report_what_the_fast_path_hands_back() -> None:
    units = _spec([{
        "name": "u", "source": "units",
        "lookups": {"building": {"resource": "buildings", "key": "buildingId", "required": True}},
        "id": "id",   # not proven: checked against casavi's id syntax
        "fields": {"propertyId": {"const": "p"}, "name": "number", "address": "building.street"},
    }], target="units")
    records = {
        "units": [{"id": "u1", "buildingId": "b1", "number": "1"},
                  {"id": "u2", "buildingId": "b9", "number": "2"},              # required lookup: no match
                  {"id": "u3", "buildingId": ["b1"], "number": "3"},            # unhashable key: no match
                  {"id": "bad id", "buildingId": "b1", "number": "4"},          # not a reference id
                  {"id": "u5", "buildingId": "b1", "number": None}],            # required field empty
        "buildings": [{"id": "b1", "street": "Am Markt"}],
    }
    result = map_records(compile_mappings({"m": units}), records)
    assert list(result.outputs["units"]) == ["u1"]
    assert result.outputs["units"]["u1"].payload == {"propertyId": "p", "name": "1", "address": "Am Markt"}
    reasons = {e.source_id: (e.field, e.details["code"]) for e in result.errors}
    assert reasons == {"u2": (None, "lookup_missing"), "u3": (None, "lookup_missing"),
                       "bad id": ("id", "bad_reference_id"), "u5": ("name", "required_empty")}


def test_for_each_duplicates_and_failures_in_the_generated_loop() -> None:
    spec = _spec([{
        "name": "c", "source": "usages", "filter": "type == 'RENTAL'",
        "for_each": [{"name": "unit", "in": "unitIds"}, {"name": "tenant", "in": "tenants"}],
        "id": "ref_id('rent', id, unit, tenant)",
        "fields": {"type": {"const": "RENTER"}, "contactId": "tenant", "unitId": "unit", "startDate": "start"},
    }])
    records = {"usages": [
        {"id": "a", "type": "RENTAL", "unitIds": ["u1", "u2"], "tenants": ["t1", "t1"], "start": "2020-01-01"},
        {"id": "b", "type": "RENTAL", "unitIds": ["u1"], "tenants": "t1", "start": "2020-01-01"},     # not a list
        {"id": "c", "type": "RENTAL", "unitIds": ["u1"], "tenants": [None], "start": "2020-01-01"},   # null part
        {"id": "d", "type": "VACANCY", "unitIds": ["u1"], "tenants": ["t1"], "start": "2020-01-01"},  # filtered
        {"id": "e", "type": "RENTAL", "unitIds": [], "tenants": ["t1"], "start": "2020-01-01"},       # empty
        {"id": "f", "type": "RENTAL", "unitIds": ["u1"], "tenants": None, "start": "2020-01-01"},     # null list
        {"id": "g", "type": "RENTAL", "unitIds": ["u1"], "tenants": ["t2"], "start": None},           # required
    ]}
    result = map_records(compile_mappings({"m": spec}), records)
    assert len(result.outputs["contracts"]) == 2
    assert {o.payload["unitId"] for o in result.outputs["contracts"].values()} == {"u1", "u2"}
    codes = sorted((e.source_id, e.details["code"]) for e in result.errors)
    assert codes == [("a", "duplicate_reference_id"), ("a", "duplicate_reference_id"), ("b", "record_failed"),
                     ("c", "bad_reference_id"), ("g", "required_empty")]
    assert result.stats["m"].filtered_out == 3


def _contacts(fields: dict[str, Any]) -> dict[str, Any]:
    return _spec([{"name": "c", "source": "contacts", "id": "ref_id('c', id)", "fields": fields}], target="contacts")


def test_a_call_shared_by_fields_runs_once_per_record(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Any] = []
    spec = REGISTRY["valid_email"]
    assert spec.impl is not None
    impl = spec.impl

    def counting(value: Any) -> Any:
        calls.append(value)
        return impl(value)

    monkeypatch.setitem(REGISTRY, "valid_email", dataclasses.replace(spec, impl=counting))
    mset = compile_mappings({"m": _contacts({
        "lastName": "name", "email": "valid_email(email)",
        "way": "valid_email(email) && 'ONLINE' || 'POSTAL'",
        "late": "flag && valid_email(other)", "other": "valid_email(other)"})})
    records = {"contacts": [{"id": "1", "name": "A", "email": "a@example.org", "other": "o@example.org"},
                            {"id": "2", "name": "B", "email": "kaputt", "flag": True, "other": "p@example.org"}]}
    result = map_records(mset, records)
    assert result.outputs["contacts"]["c-1"].payload == {
        "lastName": "A", "email": "a@example.org", "way": "ONLINE", "late": None, "other": "o@example.org"}
    assert result.outputs["contacts"]["c-2"].payload == {
        "lastName": "B", "email": None, "way": "POSTAL", "late": "p@example.org", "other": "p@example.org"}
    # email: once per record; other: computed in 'late' only where flag is set (a conditional
    # call is never shared), so 'other' computes it itself: 1 + 2 calls
    assert calls.count("a@example.org") == 1 and calls.count("kaputt") == 1
    assert calls.count("o@example.org") == 1 and calls.count("p@example.org") == 2


def test_a_shared_call_that_fails_fails_in_the_first_field_using_it() -> None:
    mset = compile_mappings({"m": _contacts({"lastName": "name", "a": "ref_id('x', code)", "b": "ref_id('x', code)"})})
    result = map_records(mset, {"contacts": [{"id": "1", "name": "A", "code": None}]})
    (err,) = result.errors
    assert err.field == "a" and "a part is empty" in err.reason


@pytest.mark.slow
def test_a_run_leaves_no_cyclic_garbage() -> None:
    # the generated functions and the error path must not tie the run into reference cycles
    # (the collector is off during a run; whatever it builds must be freed by reference counts)
    mset = compile_mappings({"m": _contacts({"lastName": "name", "a": "ref_id('x', code)"})})
    records = {"contacts": [{"id": "1", "name": "A", "code": None}, {"id": "2", "name": "B", "code": "c"}]}
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        result = map_records(mset, records)
        assert len(result.errors) == 1
        del result
        assert gc.collect() == 0
    finally:
        if enabled:
            gc.enable()


def test_sources_sort_by_id_as_text_and_count_records_without_an_id() -> None:
    mset = compile_mappings({"m": _contacts({"lastName": "name"})})
    mixed = [{"id": 10, "name": "A"}, {"id": "9", "name": "B"}, {"id": 2, "name": "C"}, {"id": "", "name": "D"},
             "not an object", {"name": "no id"}, {"id": "1", "deleted": True}]
    result = map_records(mset, {"contacts": iter(mixed)})  # any iterable, read once
    assert [o.source_id for o in result.outputs["contacts"].values()] == ["10", "2", "9"]
    assert sum(e.details["code"] == "no_id" for e in result.errors) == 3
    texts = map_records(mset, {"contacts": [{"id": "b", "name": "B"}, {"id": "a", "name": "A"}]})
    assert list(texts.outputs["contacts"]) == ["c-a", "c-b"]


def _messy(seed: int) -> dict[str, list[Any]]:
    """The benchmark's generated tenant, small, with every kind of bad record sprinkled in."""
    rnd = random.Random(seed)
    data: dict[str, list[Any]] = generate(scale=0.02, seed=seed)
    breakers = [
        lambda r: r.update(id=None), lambda r: r.update(id=""), lambda r: r.update(id=rnd.randrange(100)),
        lambda r: r.update(id="bad id!"), lambda r: r.update(deleted=True),
        lambda r: r.update(type=rnd.choice(["GARDEN", None, 3, True])), lambda r: r.update(salutation="DR"),
        lambda r: r.update(role=rnd.choice(["CONCIERGE", None])), lambda r: r.update(buildingId=["b"]),
        lambda r: r.update(buildingId=None), lambda r: r.update(ownerContactIds="c1"),
        lambda r: r.update(ownerContactIds=[None, "x"]), lambda r: r.update(unitIds={"a": 1}),
        lambda r: r.update(tenantContactIds=None), lambda r: r.update(lastName=None, companyName=""),
        lambda r: r.update(name=None), lambda r: r.update(validFrom=None), lambda r: r.update(startDate=None),
        lambda r: r.update(propertyId=rnd.choice([None, "p-gone", 7])), lambda r: r.update(number=None, label=None),
        lambda r: r.update(email=rnd.choice([3, "x@y.z", ["a"]])), lambda r: r.update(contactId=None),
    ]
    for records in data.values():
        for rec in rnd.sample(records, max(1, len(records) // 8)):
            rnd.choice(breakers)(rec)
        if records:
            records.append(dict(rnd.choice(records)))  # a duplicate
        records.append("not an object")
    return data


@pytest.mark.parametrize("seed", range(6))
def test_generated_loops_and_generic_paths_agree(seed: int) -> None:
    # a run with a Scope takes the generic paths for every record; without, the generated loops
    # (handing back only the unusual ones): the results must be the same in every detail
    mset = shipped(MAPPINGS_DIR)
    data = _messy(seed)
    fast = map_records(mset, data, run_date=RUN_DATE)
    generic = map_records(mset, data, run_date=RUN_DATE, scope=Scope())
    assert fast.errors, "the messy tenant should have failed records"
    assert {k: list(v.items()) for k, v in fast.outputs.items()} == {
        k: list(v.items()) for k, v in generic.outputs.items()}
    assert [e.as_dict() for e in fast.errors] == [e.as_dict() for e in generic.errors]
    assert {k: s.as_dict() for k, s in fast.stats.items()} == {k: s.as_dict() for k, s in generic.stats.items()}
    assert fast.misses == generic.misses and fast.misses
    assert fast.identities == generic.identities and fast.failed == generic.failed
