"""Runs that end and say the right thing, whatever SCALARA sends (issue 9, items 5 and 6).

A 10 MB text field used to make stdout, the run report and the state file each grow by 40 MB (the
error quoted the value four times); a value casavi refuses for its size aborted the whole run.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import httpx
import pytest

from engine.sync.report import run_summary
from tests.conftest import RUN_DATE, World

HUGE = "x" * 10_000_000


class Spiked(httpx.BaseTransport):
    """SCALARA's answers with raw JSON spliced into the first record of chosen resources: values the
    sandbox would never store (it validates), as an independent SCALARA might send them."""

    def __init__(self, spikes: list[tuple[str, str, str]]) -> None:
        self.inner = httpx.HTTPTransport()
        self.spikes = spikes

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        content = response.read()
        todo = [(f, raw) for r, f, raw in self.spikes if request.url.path.endswith("/" + r)]
        if todo and not request.url.params.get("cursor"):
            body = json.loads(content)
            if body["items"]:
                for n, (name, _) in enumerate(todo):
                    body["items"][0][name] = f"__spike{n}__"
                content = json.dumps(body).encode()
                for n, (_, raw) in enumerate(todo):
                    content = content.replace(f'"__spike{n}__"'.encode(), raw.encode())
        return httpx.Response(response.status_code, headers={"content-type": "application/json"},
                              content=content)


def _run(world: World, spikes: list[tuple[str, str, str]]) -> Any:
    from engine.connectors.scalara import ScalaraClient
    from engine.sync.runner import SyncOptions
    from engine.sync.session import run_for_tenant

    _, casavi = world.clients()
    with casavi, ScalaraClient(world.config, world.token, transport=Spiked(spikes)) as scalara:
        return run_for_tenant(world.store, world.tenant, world.mset, scalara, casavi,
                              SyncOptions(run_date=RUN_DATE, concurrency=4, full=True),
                              report_dir=world.tmp / "reports")


@pytest.mark.slow
def test_a_huge_value_is_quoted_cut_everywhere_and_casavi_refusing_it_fails_one_record(world: World) -> None:
    world.run()
    spikes = [("units", "type", json.dumps(HUGE)),            # a value-map miss quotes the code
              ("ownerships", "validFrom", json.dumps(HUGE)),  # a date function quotes its argument
              ("contacts", "city", json.dumps(HUGE)),         # casavi refuses the body (413): one record
              ("usages", "unitIds", json.dumps([HUGE]))]      # a reference to a unit nobody produced
    outcome = _run(world, spikes)
    report = outcome.report
    assert outcome.outcome == "partial", report["error"]
    text = json.dumps(report)
    assert len(text) < 200_000
    lines = run_summary(report)
    assert max(len(line) for line in lines) < 2_000
    failures = report["mapErrors"] + report["writeFailures"]
    assert any("413" in str(f) for f in report["writeFailures"])
    assert any("characters" in f["reason"] for f in failures)     # says how long the value was
    with sqlite3.connect(world.tmp / "state.db") as db:
        for table in ("records", "runs", "run_outcomes"):
            longest = db.execute(f"SELECT max(length(error)) FROM {table}").fetchone()[0] or 0
            assert longest < 3_000, table


@pytest.mark.parametrize(("raw", "says"), [
    ("NaN", "NaN, which JSON cannot carry"),
    ("1" + "0" * 5000, "an integer of 5,001 digits"),
    pytest.param("-Infinity", "-Infinity, which JSON cannot carry", marks=pytest.mark.slow),
    pytest.param("1e400", "inf, which JSON cannot carry", marks=pytest.mark.slow),
    pytest.param("[" * 500 + "]" * 500, "nested deeper than 32 levels", marks=pytest.mark.slow),
])
def test_a_value_json_cannot_carry_is_a_per_record_error(world: World, raw: str, says: str) -> None:
    """Issue 9, item 5: NaN/Infinity used to reach the PUT ('out of range float values') and a
    5,001-digit integer the decoder: "internal error ... this is a bug"."""
    world.run()
    outcome = _run(world, [("units", "areaSqm", raw)])
    assert outcome.outcome == "partial", outcome.report["error"]
    flagged = [e for e in outcome.report["mapErrors"] if e.get("stage") == "extract"]
    assert len(flagged) == 1 and says in flagged[0]["reason"] and flagged[0]["resource"] == "units"
    archived = sum(row.get("archive", 0) for row in outcome.report["counts"].values())
    assert archived == 0                         # the unit left out is not mistaken for a removal


def test_an_answer_nested_too_deeply_aborts_with_a_clear_reason(world: World) -> None:
    world.run()
    outcome = _run(world, [("units", "label", "[" * 100_000 + "]" * 100_000)])
    assert outcome.outcome == "aborted"
    assert "nested too deeply" in outcome.report["error"] and "/units failed after" in outcome.report["error"]
