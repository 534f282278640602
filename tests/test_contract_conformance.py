"""What a contract-conformance campaign against an independent implementation of API.md found.

Each test drives the engine against an answer that the contract allows but our sandbox never gives
(the sandbox adds fields and leniencies of its own), by rewriting the sandbox's answers on the way
in an httpx transport: the engine must not need anything the contract does not promise.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from engine.connectors.casavi import CasaviClient
from tests.conftest import World

# scenario tests (several runs each against a sandbox behind a stricter casavi): the slow group
pytestmark = pytest.mark.slow


class Forwarding(httpx.BaseTransport):
    """Forwards every request to the sandbox over real HTTP; subclasses answer some themselves."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


class ContractOnlyReads(Forwarding):
    """Forwards to the sandbox; removes every archive marker from casavi's read answers (API.md
    names none: it only says archived records are left out unless includeArchived=true)."""

    def __init__(self) -> None:
        super().__init__()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.method != "GET":
            return response
        response.read()
        body = json.loads(response.content)

        def strip(rec: Any) -> Any:
            return {k: v for k, v in rec.items() if "archiv" not in k.lower()} if isinstance(rec, dict) else rec

        if isinstance(body, dict) and isinstance(body.get("list"), list):
            body["list"] = [strip(r) for r in body["list"]]
        else:
            body = strip(body)
        return httpx.Response(response.status_code, json=body)


def run_through(world: World, transport: httpx.BaseTransport, **options: Any) -> Any:
    """One run whose casavi calls go through ``transport`` (a stricter casavi in front of the sandbox)."""
    client = CasaviClient(world.config, world.sandbox.casavi_key, world.sandbox.casavi_secret, transport=transport)
    try:
        return world.run(casavi=client, **options)
    finally:
        client.close()


def first_unit_with_building(data: Any, *, owned: bool = False) -> dict[str, Any]:
    """The sandbox unit with the smallest id whose building exists (and, if ``owned``, that has an owner)."""
    return next(u for u in sorted(data["units"].values(), key=lambda u: u["id"])
                if u["buildingId"] in data["buildings"]
                and (not owned or any(o["unitId"] == u["id"] for o in data["ownerships"].values())))


def correct_house_number(world: World) -> tuple[dict[str, Any], str]:
    """After an import, SCALARA corrects the house number of the first unit's building ("12" ->
    "12a"): the unit and the address it had in casavi ("Lindenstraße 12")."""
    world.run()
    data = world.sandbox.scalara.dataset()
    unit = first_unit_with_building(data)
    building = data["buildings"][unit["buildingId"]]
    world.sandbox.scalara.update_record("buildings", building["id"], {"houseNumber": f"{building['houseNumber']}a"})
    return unit, f"{building['street']} {building['houseNumber']}"


def _casavi(world: World) -> CasaviClient:
    return CasaviClient(world.config, world.sandbox.casavi_key, world.sandbox.casavi_secret,
                        transport=ContractOnlyReads())


def test_reconcile_restores_what_was_archived_in_casavi_without_an_archived_field(world: World) -> None:
    assert world.run().outcome in ("clean", "partial")   # the sandbox tenant has records SCALARA cannot map
    unit = sorted(r["id"] for r in world.sandbox.casavi.records("units"))[0]
    contact = sorted(r["id"] for r in world.sandbox.casavi.records("contacts"))[0]
    with _casavi(world) as casavi:            # someone archives them by hand in casavi
        casavi.archive("units", unit)
        casavi.archive("contacts", contact)
    outcome = run_through(world, ContractOnlyReads(), reconcile=True)
    assert outcome.outcome in ("clean", "partial"), outcome.report.get("error")
    restored = outcome.report["counts"]["units"].get("restore"), outcome.report["counts"]["contacts"].get("restore")
    assert restored == (1, 1), outcome.report["counts"]
    assert not world.sandbox.casavi.record("units", unit).get("archived")
    assert not world.sandbox.casavi.record("contacts", contact).get("archived")


def test_output_into_a_closed_pipe_ends_quietly_not_as_an_internal_error() -> None:
    # found with `casavi-sync history | head`: "error: internal error (BrokenPipeError ...); this is a
    # bug in casavi-sync", exit 3. A reader that quits is not an error of ours.
    import subprocess
    import sys

    script = ("import click\n"
              "from engine.cli.context import handle_errors\n"
              "@handle_errors\n"
              "def many():\n"
              "    for i in range(200000):\n"
              "        click.echo(f'run {i}')\n"
              "many()\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline() == b"run 0\n"
    proc.stdout.close()                       # what `head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=30) == 141, err
    assert err == ""


class RefusesWritesToArchived(Forwarding):
    """Forwards to the sandbox, but refuses a PUT to an archived record with 409, as a casavi may
    (API.md is silent on writing to an archived record; the sandbox accepts it)."""

    def __init__(self, sandbox: Any) -> None:
        super().__init__()
        self.sandbox = sandbox

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.removeprefix("/v2/").split("/")
        if request.method == "PUT" and len(parts) == 2:
            rec = self.sandbox.casavi.record(parts[0], parts[1])
            if rec is not None and rec.get("archived"):
                return httpx.Response(409, json={"error": "archived", "message": "restore the record first"})
        return self.inner.handle_request(request)


def test_reconcile_restores_a_record_whose_writes_casavi_refused_because_it_was_archived(world: World) -> None:
    world.run()
    data = world.sandbox.scalara.dataset()
    unit = next(u for u in sorted(data["units"]) if data["units"][u]["buildingId"] in data["buildings"])
    with _casavi(world) as casavi:            # someone archives it by hand in casavi
        casavi.archive("units", f"u-{unit}")
    world.sandbox.scalara.update_record("units", unit, {"label": "Neu vermessen"})
    for _ in range(2):                        # refused twice: now in backoff
        run_through(world, RefusesWritesToArchived(world.sandbox))
    assert world.sandbox.casavi.record("units", f"u-{unit}").get("archived")
    run_through(world, RefusesWritesToArchived(world.sandbox), reconcile=True)
    rec = world.sandbox.casavi.record("units", f"u-{unit}")
    assert not rec.get("archived") and rec["name"].endswith("Neu vermessen")


def test_an_incremental_read_through_many_empty_pages_with_cursors_completes() -> None:
    # API.md: nextCursor is null on the last page, and nothing forbids an empty page before it. A
    # SCALARA that pages through a table by id and filters each page by updatedSince answers an
    # incremental read of a big table with dozens of empty pages; the run aborted after 10.
    from engine.connectors import load_connector_config
    from engine.connectors.scalara import ScalaraClient

    def handler(request: httpx.Request) -> httpx.Response:
        n = int(request.url.params.get("cursor", "0"))
        if n < 40:
            return httpx.Response(200, json={"items": [], "nextCursor": str(n + 1)})
        return httpx.Response(200, json={"items": [{"id": "c-1", "updatedAt": "2026-12-01T10:00:00Z"}],
                                         "nextCursor": None})

    client = ScalaraClient(load_connector_config(env={}), "scl_" + "a" * 40,
                           transport=httpx.MockTransport(handler), sleep=lambda s: None)
    with client:
        rows = client.fetch_all("contacts", updated_since="2026-12-01T00:00:00Z", include_deleted=True)
    assert [r["id"] for r in rows] == ["c-1"]


class KeepsAddressesInUse(Forwarding):
    """Forwards to the sandbox, but refuses a property PUT that drops an address an active unit
    still has (409), as a casavi may: API.md says a unit's address must be one of its property's,
    and is silent on what removing a used one does; the sandbox accepts it."""

    def __init__(self, sandbox: Any) -> None:
        super().__init__()
        self.sandbox = sandbox

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.removeprefix("/v2/").split("/")
        if request.method == "PUT" and len(parts) == 2 and parts[0] == "properties":
            keep = {a.get("street") for a in json.loads(request.content).get("addresses") or []}
            used = {u.get("address") for u in self.sandbox.casavi.records("units")
                    if u.get("propertyId") == parts[1] and not u.get("archived")}
            if used - keep - {None}:
                return httpx.Response(409, json={"message": "an address still has units",
                                                 "errors": [{"field": "addresses", "code": "address_in_use"}]})
        return self.inner.handle_request(request)


def test_a_corrected_building_address_reaches_casavi_when_casavi_keeps_addresses_in_use(world: World) -> None:
    unit, old_street = correct_house_number(world)
    runs = []
    for _ in range(2):
        runs.append(run_through(world, KeepsAddressesInUse(world.sandbox)))
    # one run: the property with both addresses, its units, then the property without the old one
    stored = world.sandbox.casavi.record("units", f"u-{unit['id']}")
    assert stored["address"] == f"{old_street}a"
    prop = world.sandbox.casavi.record("properties", f"p-{unit['propertyId']}")
    streets = [a["street"] for a in prop["addresses"]]
    assert f"{old_street}a" in streets and old_street not in streets
    assert runs[0].result is not None and not runs[0].result.failed
    assert runs[0].result.counts()["properties"] == {"update": 1}  # two calls, one changed record
    assert runs[1].result is not None and not runs[1].result.outcomes  # the state knows the final payload


class RefusesOneProperty(Forwarding):
    """Forwards to the sandbox; refuses every PUT of one property with a 409 while ``refusing``."""

    def __init__(self, ref_id: str) -> None:
        super().__init__()
        self.ref_id, self.refusing = ref_id, True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.refusing and request.method == "PUT" and request.url.path == f"/v2/properties/{self.ref_id}":
            return httpx.Response(409, json={"message": "busy", "errors": [{"field": None, "code": "conflict"}]})
        return self.inner.handle_request(request)


def test_units_of_a_property_held_in_backoff_are_not_refused_for_good(world: World) -> None:
    unit, old_street = correct_house_number(world)
    transport = RefusesOneProperty(f"p-{unit['propertyId']}")
    for step in range(4):                     # refused, held in backoff, then accepted again
        transport.refusing = step < 2
        if step == 3:
            world.sandbox.clock.advance(days=1)   # past the property's backoff
        run_through(world, transport)
    assert world.sandbox.casavi.record("units", f"u-{unit['id']}")["address"] == f"{old_street}a"


def test_a_record_deleted_in_casavi_after_archiving_comes_back_when_scalara_brings_it_back(world: World) -> None:
    world.run()
    data = world.sandbox.scalara.dataset()
    unit = first_unit_with_building(data)
    owned = [o for o in data["ownerships"].values() if o["unitId"] == unit["id"]]
    used = [g for g in data["usages"].values() if unit["id"] in g["unitIds"]]
    for o in owned:
        world.sandbox.scalara.delete_record("ownerships", o["id"])
    for g in used:
        world.sandbox.scalara.delete_record("usages", g["id"])
    world.sandbox.scalara.delete_record("units", unit["id"])
    world.run(allow_archive=True)
    assert world.sandbox.casavi.record("units", f"u-{unit['id']}")["archived"]
    with _casavi(world) as casavi:             # a casavi admin deletes the archived unit
        assert casavi.delete("units", f"u-{unit['id']}").status < 300
    world.sandbox.scalara.add_record("units", {k: v for k, v in unit.items() if k != "updatedAt"})
    for o in owned:
        world.sandbox.scalara.add_record("ownerships", {k: v for k, v in o.items() if k != "updatedAt"})
    world.run()
    world.run()
    stored = world.sandbox.casavi.record("units", f"u-{unit['id']}")
    assert stored is not None and not stored.get("archived")


class NamesNoArchiveState(Forwarding):
    """Forwards to the sandbox; no answer names an archive state (the contract names no field), and
    restoring a record that is not archived is refused (409), as another casavi may do."""

    def __init__(self, sandbox: Any) -> None:
        super().__init__()
        self.sandbox, self.restores = sandbox, 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        parts = request.url.path.removeprefix("/v2/").split("/")
        if request.method == "POST" and len(parts) == 3 and parts[2] == "restore":
            self.restores += 1
            rec = self.sandbox.casavi.record(parts[0], parts[1])
            if rec is not None and not rec.get("archived"):
                return httpx.Response(409, json={"message": "not archived", "errors": [{"field": None, "code": "not_archived"}]})
        response = self.inner.handle_request(request)
        response.read()
        if not response.content.strip():
            return response
        body = json.loads(response.content)
        if isinstance(body, dict):
            body = {k: v for k, v in body.items() if "archiv" not in k.lower()}
        return httpx.Response(response.status_code, json=body)


def unit_archived_in_casavi_only(world: World) -> str:
    """A unit (with its ownerships) that casavi holds archived under our reference id from an
    earlier import, unknown to the state (a first run without it), then back in SCALARA; its ref."""
    data = world.sandbox.scalara.dataset()
    unit = first_unit_with_building(data, owned=True)
    owned = [o for o in data["ownerships"].values() if o["unitId"] == unit["id"]]
    for o in owned:
        world.sandbox.scalara.delete_record("ownerships", o["id"])
    for g in [g for g in data["usages"].values() if unit["id"] in g["unitIds"]]:
        world.sandbox.scalara.delete_record("usages", g["id"])
    world.sandbox.scalara.delete_record("units", unit["id"])
    world.run()                               # the first run: the unit is not in SCALARA
    ref = f"u-{unit['id']}"
    with _casavi(world) as casavi:            # an earlier import left it in casavi, archived
        casavi.put("units", ref, {"propertyId": f"p-{unit['propertyId']}", "name": "alt"})
        casavi.archive("units", ref)
    world.sandbox.scalara.add_record("units", {k: v for k, v in unit.items() if k != "updatedAt"})
    for o in owned:
        world.sandbox.scalara.add_record("ownerships", {k: v for k, v in o.items() if k != "updatedAt"})
    return ref


@pytest.mark.parametrize("names_state", [True, False], ids=["archived-field", "no-archived-field"])
def test_a_record_casavi_holds_archived_under_our_id_is_active_after_it_is_created(world: World,
                                                                                   names_state: bool) -> None:
    ref = unit_archived_in_casavi_only(world)
    transport = NamesNoArchiveState(world.sandbox)
    outcome = world.run() if names_state else run_through(world, transport)
    assert not world.sandbox.casavi.record("units", ref).get("archived")
    assert outcome.result is not None and not outcome.result.failed
    if not names_state:  # one restore, for the one create casavi answered 200: not one per create
        assert transport.restores == 1


class KeepsAddressesAndRefusesOneUnit(KeepsAddressesInUse):
    """As KeepsAddressesInUse, and refuses one unit's PUT with a 409 while ``refusing``."""

    def __init__(self, sandbox: Any, unit_ref: str) -> None:
        super().__init__(sandbox)
        self.unit_ref, self.refusing = unit_ref, True

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.refusing and request.method == "PUT" and request.url.path == f"/v2/units/{self.unit_ref}":
            return httpx.Response(409, json={"message": "busy", "errors": [{"field": None, "code": "conflict"}]})
        return super().handle_request(request)


def test_an_address_move_whose_unit_fails_keeps_both_addresses_until_the_unit_moved(world: World) -> None:
    unit, old_street = correct_house_number(world)
    transport = KeepsAddressesAndRefusesOneUnit(world.sandbox, f"u-{unit['id']}")

    def run() -> Any:
        return run_through(world, transport)

    def streets() -> list[str]:
        return [a["street"] for a in world.sandbox.casavi.record("properties", f"p-{unit['propertyId']}")["addresses"]]

    first = run()
    assert first.result is not None and [o.ref_id for o in first.result.failed] == [f"u-{unit['id']}"]
    assert old_street in streets() and f"{old_street}a" in streets()  # the unit still uses the old one
    assert world.sandbox.casavi.record("units", f"u-{unit['id']}")["address"] == old_street
    assert world.store.records("default", "properties")[("properties", f"p-{unit['propertyId']}")].status == "pending"
    transport.refusing = False
    world.sandbox.clock.advance(days=1)  # past the unit's backoff
    second = run()                       # an incremental day: the pending property is decided again
    assert second.result is not None and not second.result.failed
    assert world.sandbox.casavi.record("units", f"u-{unit['id']}")["address"] == f"{old_street}a"
    assert old_street not in streets() and f"{old_street}a" in streets()


def _expiring_cursor_scalara(refusals: int) -> tuple[Any, list[str]]:
    """SCALARA of 7 contacts, 2 a page; the cursor of the third page is refused ``refusals`` times."""
    rows = [{"id": f"c-{i}", "updatedAt": "2026-12-01T10:00:00Z"} for i in range(7)]
    asked: list[str] = []
    left = [refusals]

    def handler(request: httpx.Request) -> httpx.Response:
        cursor = request.url.params.get("cursor")
        asked.append(cursor or "-")
        if cursor == "4" and left[0] > 0:
            left[0] -= 1
            return httpx.Response(400, json={"error": "invalid_parameter", "message": "cursor expired"})
        start = int(cursor or 0)
        nxt = str(start + 2) if start + 2 < len(rows) else None
        return httpx.Response(200, json={"items": rows[start:start + 2], "nextCursor": nxt})

    return handler, asked


def test_a_cursor_refused_in_the_middle_of_a_walk_starts_it_again_without_duplicates() -> None:
    # API.md gives a cursor no lifetime; one that expired while requests were retried (400
    # invalid_parameter) aborted a full read with "check the parameter names in the connector config".
    from engine.connectors import load_connector_config
    from engine.connectors.scalara import ScalaraClient

    handler, asked = _expiring_cursor_scalara(refusals=1)
    client = ScalaraClient(load_connector_config(env={}), "scl_" + "a" * 40,
                           transport=httpx.MockTransport(handler), sleep=lambda s: None)
    with client:
        rows = client.fetch_all("contacts")
    assert [r["id"] for r in rows] == [f"c-{i}" for i in range(7)]
    assert asked == ["-", "2", "4", "-", "2", "4", "6"]


def test_a_cursor_refused_again_and_again_still_aborts_with_the_reason() -> None:
    from engine.connectors import load_connector_config
    from engine.connectors.scalara import ScalaraClient
    from engine.errors import ConfigError

    handler, _ = _expiring_cursor_scalara(refusals=99)
    client = ScalaraClient(load_connector_config(env={}), "scl_" + "a" * 40,
                           transport=httpx.MockTransport(handler), sleep=lambda s: None)
    with client, pytest.raises(ConfigError, match="cursor expired"):
        client.fetch_all("contacts")


def test_a_record_casavi_holds_archived_under_our_id_is_created_when_casavi_refuses_writes_to_archived(
        world: World) -> None:
    ref = unit_archived_in_casavi_only(world)
    for _ in range(2):
        run_through(world, RefusesWritesToArchived(world.sandbox))
    stored = world.sandbox.casavi.record("units", ref)
    assert not stored.get("archived") and stored["name"] != "alt"
