"""Golden interpreter cases: tests/interpret_cases/<case>.yaml, run with the fixture mappings (tests/fixtures/mappings/).

A case file::

    description: what the case shows
    date: 2024-06-01                      # the run date (today(), active())
    given: {<resource>: [records...]}     # SCALARA records by resource
    expect:
      payloads:                           # per casavi kind listed: exactly these reference ids
        contracts:
          "=ref_id('own', 'o1', 'c1')":   # a key starting with '=' is an expression (ids hash)
            {type: OWNER, startDate: 2020-01-01}   # these fields must be equal (others unchecked)
      errors:                             # exactly these per-record errors (default: none)
        - {sourceId: u2, reason: "no building"}    # reason is a substring; field optional
      stats: {units: {dropped: 0}}        # optional: counts per mapping

Kinds not listed under ``payloads`` are not checked, so each case states what it is about.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from engine.compile import MappingSet, compile_mappings
from engine.expr import compile_expr
from engine.interpret import map_records
from engine.loader import to_plain
from engine.paths import mapping_files
from tests.conftest import MAPPINGS_DIR

ROOT = Path(__file__).resolve().parent.parent
CASES = sorted((Path(__file__).parent / "interpret_cases").glob("*.yaml"))


def _yaml() -> YAML:
    return YAML(typ="safe", pure=True)


def shipped_mappings() -> MappingSet:
    specs: dict[str, dict[str, Any]] = {}
    for path in mapping_files(MAPPINGS_DIR):
        spec = _yaml().load(path.read_text(encoding="utf-8"))
        specs[spec["mapping"]] = spec
    return compile_mappings(specs)


@pytest.fixture(scope="module")
def mset() -> MappingSet:
    return shipped_mappings()


def _ref(key: str) -> str:
    return str(compile_expr(key[1:])({})) if key.startswith("=") else key


def test_there_are_golden_cases() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden_case(path: Path, mset: MappingSet) -> None:
    case = _yaml().load(path.read_text(encoding="utf-8"))
    given = to_plain(case["given"])
    expect = case["expect"]
    run_date = case.get("date")
    result = map_records(mset, given, run_date=run_date if isinstance(run_date, dt.date) else None)

    for kind, wanted in (expect.get("payloads") or {}).items():
        wanted = {_ref(k): to_plain(v) for k, v in (wanted or {}).items()}
        produced = result.outputs.get(kind, {})
        assert sorted(produced) == sorted(wanted), f"{kind}: reference ids"
        for rid, fields in wanted.items():
            payload = produced[rid].payload
            for name, value in (fields or {}).items():
                assert payload.get(name, "<absent>") == value, f"{kind} {rid} field {name}"

    got_errors = [e.as_dict() for e in result.errors]
    want_errors = expect.get("errors") or []
    assert len(got_errors) == len(want_errors), got_errors
    unmatched = list(got_errors)
    for want in want_errors:
        hit = next((g for g in unmatched if g["sourceId"] == want["sourceId"]
                    and want["reason"] in g["reason"]
                    and ("field" not in want or g["field"] == want["field"])), None)
        assert hit is not None, f"no error like {want} in {got_errors}"
        unmatched.remove(hit)

    for mapping, counts in (expect.get("stats") or {}).items():
        stats = result.stats[mapping].as_dict()
        for key, value in counts.items():
            assert stats[key] == value, f"stats {mapping}.{key}: {stats}"
