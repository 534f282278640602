"""CasaviApp: API.md section 2 rule by rule, through real HTTP on loopback.

Most rules are golden cases (request -> status and a subset of the answer) run against one small
seeded account; flows that need several steps (auth, archive/delete, pagination) are tests of
their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from engine.errors import ConfigError
from engine.sandbox.casavi import CasaviApp
from engine.sandbox.clock import Clock
from engine.sandbox.http import ServerHandle, serve

STREETS = ["Lindenstraße 12", "Lindenstraße 14"]
SEED: list[tuple[str, dict[str, Any]]] = [
    ("/v2/properties/p1", {"name": "WEG Lindenstraße", "number": "1001", "city": "Hamburg",
                           "addresses": [{"street": s} for s in STREETS], "customFields": {"kind": "WEG"}}),
    ("/v2/properties/p2", {"name": "MV Ring"}),
    ("/v2/units/u1", {"propertyId": "p1", "name": "WE 01", "address": STREETS[0], "usage": "PRIVATE",
                      "customFields": {"mea": 123.4}}),
    ("/v2/units/u2", {"propertyId": "p1", "name": "WE 02", "address": STREETS[1]}),
    ("/v2/contacts/c1", {"lastName": "Müller", "firstName": "Jürgen", "email": "j.mueller@example.de",
                         "salutation": "MR", "preferredWayOfContact": "ONLINE"}),
    ("/v2/contacts/c2", {"companyName": "Hausmeister Groß GmbH"}),
    ("/v2/contracts/k1", {"type": "OWNER", "contactId": "c1", "unitId": "u1", "startDate": "2019-04-01"}),
    ("/v2/properties/p1/responsibilities/c2", {"roleName": "Hausmeister", "roleType": "EXTERNAL",
                                               "showInPortal": True}),
]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(clock: Clock) -> CasaviApp:
    return CasaviApp(clock, page_size=2, unit_quota=3, token_lifetime_s=60)


@pytest.fixture
def server(app: CasaviApp) -> Iterator[ServerHandle]:
    with serve(app) as handle:
        yield handle


def _login(client: httpx.Client, app: CasaviApp) -> str:
    assert app.default_credentials is not None
    key, secret = app.default_credentials
    response = client.post("/v2/authenticate", json={"key": key, "secret": secret})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


@pytest.fixture
def api(server: ServerHandle, app: CasaviApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=5) as client:
        client.headers["token"] = _login(client, app)
        for path, body in SEED:
            assert client.put(path, json=body).status_code == 201, path
        yield client


def subset(expected: Any, actual: Any) -> bool:
    """``expected`` is contained in ``actual`` (dicts by key, lists element-wise and same length)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and subset(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(
            subset(e, a) for e, a in zip(expected, actual, strict=True))
    return bool(expected == actual)


def bad(*pairs: str) -> dict[str, Any]:
    return {"errors": [{"field": f, "code": c} for f, c in zip(pairs[::2], pairs[1::2], strict=True)]}


UNIT = {"propertyId": "p1", "name": "WE 03", "address": STREETS[0]}
CONTRACT = {"type": "RENTER", "contactId": "c1", "unitId": "u2", "startDate": "2024-01-01"}

# (case id, method, path, body (dict, bytes or None), status, expected subset of the JSON answer)
CASES: list[tuple[str, str, str, Any, int, Any]] = [
    ("create unit", "PUT", "/v2/units/u3", UNIT, 201, {"id": "u3", "internalId": 8, "archived": False}),
    ("update unit", "PUT", "/v2/units/u1", {**UNIT, "name": "WE 01a"}, 200, {"name": "WE 01a", "number": None}),
    ("create contract", "PUT", "/v2/contracts/k2", CONTRACT, 201, {"endDate": None, "contractNumber": None}),
    ("id syntax", "PUT", "/v2/units/bad%20id", UNIT, 400, bad("id", "invalid_reference_id")),
    ("id too long", "PUT", "/v2/units/" + "a" * 65, UNIT, 400, bad("id", "invalid_reference_id")),
    ("id of 64 is fine", "PUT", "/v2/units/" + "a" * 64, UNIT, 201, {"id": "a" * 64}),
    ("required", "PUT", "/v2/units/u9", {"propertyId": "p1"}, 400, bad("name", "required")),
    ("blank required", "PUT", "/v2/units/u9", {**UNIT, "name": "  "}, 400, bad("name", "required")),
    ("unknown field", "PUT", "/v2/units/u9", {**UNIT, "area": 70}, 400, bad("area", "unknown_field")),
    ("wrong type", "PUT", "/v2/units/u9", {**UNIT, "name": 7, "customFields": []}, 400,
     bad("name", "invalid_type", "customFields", "invalid_type")),
    ("enum", "PUT", "/v2/units/u9", {**UNIT, "usage": "OFFICE"}, 400, bad("usage", "invalid_value")),
    ("read-only field", "PUT", "/v2/contacts/c1", {"lastName": "X", "isRegistered": True}, 400,
     bad("isRegistered", "read_only")),
    ("id must match path", "PUT", "/v2/units/u1", {**UNIT, "id": "u7"}, 400, bad("id", "path_mismatch")),
    ("id equal to path", "PUT", "/v2/units/u1", {**UNIT, "id": "u1"}, 200, {"id": "u1"}),
    ("null for object", "PUT", "/v2/units/u9", {**UNIT, "customFields": None}, 400,
     bad("customFields", "invalid_type")),
    ("email", "PUT", "/v2/contacts/c9", {"lastName": "A", "email": "not-an-address"}, 400,
     bad("email", "invalid_format")),
    ("name or company", "PUT", "/v2/contacts/c9", {"firstName": "Anna"}, 400,
     bad("lastName", "required_one_of", "companyName", "required_one_of")),
    ("end before start", "PUT", "/v2/contracts/k9", {**CONTRACT, "endDate": "2023-12-31"}, 400,
     bad("endDate", "end_before_start")),
    ("bad date", "PUT", "/v2/contracts/k9", {**CONTRACT, "startDate": "2024-02-30"}, 400,
     bad("startDate", "invalid_format")),
    ("unit address", "PUT", "/v2/units/u9", {**UNIT, "address": "Ringstraße 1"}, 400,
     bad("address", "address_not_in_property")),
    ("address item", "PUT", "/v2/properties/p9", {"name": "N", "addresses": [{"street": "A", "units": []}, "B"]},
     400, bad("addresses[0].units", "read_only", "addresses[1]", "invalid_type")),
    ("duplicate street", "PUT", "/v2/properties/p9", {"name": "N", "addresses": [{"street": "A"}, {"street": "A"}]},
     400, bad("addresses[1].street", "duplicate")),
    ("unknown property", "PUT", "/v2/units/u9", {**UNIT, "propertyId": "nope"}, 422,
     {"message": "reference to an unknown record", **bad("propertyId", "unknown_reference")}),
    ("unknown contact and unit", "PUT", "/v2/contracts/k9", {**CONTRACT, "contactId": "x", "unitId": "y"}, 422,
     bad("contactId", "unknown_reference", "unitId", "unknown_reference")),
    ("responsibility unknown contact", "PUT", "/v2/properties/p1/responsibilities/c9", {"roleName": "Beirat"},
     422, bad("contactId", "unknown_reference")),
    ("responsibility unknown property", "PUT", "/v2/properties/p9/responsibilities/c1", {"roleName": "Beirat"},
     404, {"code": "not_found"}),
    ("responsibility fields", "PUT", "/v2/properties/p1/responsibilities/c1",
     {"roleName": "", "roleType": "BOSS", "showInPortal": "yes"}, 400,
     bad("roleName", "required", "roleType", "invalid_value", "showInPortal", "invalid_type")),
    ("responsibility create", "PUT", "/v2/properties/p1/responsibilities/c1", {"roleName": "Beirat"}, 201,
     {"contactId": "c1", "roleName": "Beirat", "roleType": None, "showInPortal": None}),
    ("responsibility update", "PUT", "/v2/properties/p1/responsibilities/c2", {"roleName": "Hausmeister"}, 200,
     {"contactId": "c2", "showInPortal": None}),
    ("responsibility delete", "DELETE", "/v2/properties/p1/responsibilities/c2", None, 204, None),
    ("responsibility delete missing", "DELETE", "/v2/properties/p1/responsibilities/c1", None, 404,
     {"code": "not_found"}),
    ("bad json", "PUT", "/v2/units/u9", b"{nope", 400, bad("$", "invalid_json")),
    ("NaN is no json", "PUT", "/v2/units/u9", b'{"name": NaN}', 400, bad("$", "invalid_json")),
    ("not utf-8", "PUT", "/v2/units/u9", b'{"name": "\xff"}', 400, bad("$", "invalid_json")),
    ("not an object", "PUT", "/v2/units/u9", b"[1]", 400, bad("$", "invalid_type")),
    ("empty body", "PUT", "/v2/units/u9", b"", 400, bad("$", "invalid_json")),
    ("get one", "GET", "/v2/units/u1", None, 200, {"id": "u1", "customFields": {"mea": 123.4}}),
    ("get missing", "GET", "/v2/units/zz", None, 404, {"code": "not_found"}),
    ("unknown kind", "GET", "/v2/buildings", None, 404, {"code": "not_found"}),
    ("unknown sub path", "POST", "/v2/units/u1/explode", None, 404, {"code": "not_found"}),
    ("wrong method", "POST", "/v2/units", None, 405, {"code": "method_not_allowed"}),
    ("page zero", "GET", "/v2/units?page=0", None, 400, bad("page", "invalid_parameter")),
    ("page text", "GET", "/v2/units?page=two", None, 400, bad("page", "invalid_parameter")),
    ("page twice", "GET", "/v2/units?page=1&page=2", None, 400, bad("page", "invalid_parameter")),
    ("bad modifiedAfter", "GET", "/v2/units?modifiedAfter=yesterday", None, 400,
     bad("modifiedAfter", "invalid_parameter")),
    ("bad includeArchived", "GET", "/v2/units?includeArchived=yes", None, 400,
     bad("includeArchived", "invalid_parameter")),
    ("unknown parameter", "GET", "/v2/units?pageSize=500", None, 400, bad("pageSize", "unknown_parameter")),
    ("page past the end", "GET", "/v2/units?page=9", None, 200, {"list": [], "_links": {"next": None}}),
    ("delete unarchived", "DELETE", "/v2/units/u1", None, 409, {"code": "not_archived"}),
    ("quota", "PUT", "/v2/units/" + "q", {**UNIT}, 201, {"id": "q"}),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_golden(api: httpx.Client, method: str, path: str, body: Any, status: int, expected: Any) -> None:
    content = body if isinstance(body, bytes) else None
    response = api.request(method, path, json=None if content is not None or body is None else body,
                           content=content)
    assert response.status_code == status, response.text
    if expected is None:
        assert response.content == b""
    else:
        assert subset(expected, response.json()), response.json()
    assert "message" in response.json() if status >= 400 else True


def test_identical_write_changes_nothing(api: httpx.Client, clock: Clock) -> None:
    before = api.get("/v2/units/u1").json()
    clock.advance(seconds=5)
    again = api.put("/v2/units/u1", json=SEED[2][1])
    assert again.status_code == 200
    assert again.json() == before
    changed = api.put("/v2/units/u1", json={**SEED[2][1], "note": "neu"})
    assert changed.json()["modifiedAt"] > before["modifiedAt"]
    assert changed.json()["internalId"] == before["internalId"]


def test_body_replaces_writable_fields(api: httpx.Client) -> None:
    body = api.put("/v2/contacts/c1", json={"lastName": "Müller"}).json()
    assert body["firstName"] is None and body["email"] is None and body["customFields"] == {}


def test_reads_show_addresses_responsibilities_and_contracts(api: httpx.Client) -> None:
    prop = api.get("/v2/properties/p1").json()
    assert prop["addresses"] == [{"street": STREETS[0], "units": ["u1"]}, {"street": STREETS[1], "units": ["u2"]}]
    assert prop["responsibilities"] == [
        {"contactId": "c2", "roleName": "Hausmeister", "roleType": "EXTERNAL", "showInPortal": True}]
    contact = api.get("/v2/contacts/c1").json()
    assert contact["contracts"] == [{"id": "k1", "type": "OWNER", "propertyId": "p1", "unitId": "u1",
                                     "startDate": "2019-04-01", "endDate": None}]
    assert contact["isRegistered"] is False and contact["isInvited"] is False


def test_responsibility_change_moves_property_modified_at(api: httpx.Client, clock: Clock) -> None:
    before = api.get("/v2/properties/p1").json()["modifiedAt"]
    clock.advance(seconds=1)
    api.put("/v2/properties/p1/responsibilities/c2", json=SEED[7][1])          # identical
    assert api.get("/v2/properties/p1").json()["modifiedAt"] == before
    api.put("/v2/properties/p1/responsibilities/c1", json={"roleName": "Beirat"})
    assert api.get("/v2/properties/p1").json()["modifiedAt"] > before


def test_pagination_follows_next_links(api: httpx.Client, server: ServerHandle) -> None:
    for i in range(3, 6):
        api.put(f"/v2/contacts/x{i}", json={"lastName": f"Name {i}"})
    ids: list[str] = []
    url: str | None = "/v2/contacts"
    pages = 0
    while url:
        page = api.get(url).json()
        assert len(page["list"]) <= 2
        ids += [r["id"] for r in page["list"]]
        url = page["_links"]["next"]
        assert url is None or url.startswith(server.url + "/v2/contacts?page=")
        pages += 1
    assert ids == ["c1", "c2", "x3", "x4", "x5"] and pages == 3


def test_next_link_keeps_filters(api: httpx.Client, server: ServerHandle) -> None:
    api.put("/v2/units/u3", json=UNIT)
    page = api.get("/v2/units", params={"includeArchived": "true", "modifiedAfter": "2000-01-01T00:00:00Z"}).json()
    assert page["_links"]["next"] == (
        f"{server.url}/v2/units?includeArchived=true&modifiedAfter=2000-01-01T00%3A00%3A00Z&page=2")


def test_modified_after_filter(api: httpx.Client, clock: Clock) -> None:
    clock.advance(seconds=2)
    mark = clock.timestamp()
    clock.advance(seconds=2)
    api.put("/v2/contacts/c2", json={"companyName": "Hausmeister Groß GmbH & Co. KG"})
    listed = api.get("/v2/contacts", params={"modifiedAfter": mark}).json()["list"]
    assert [r["id"] for r in listed] == ["c2"]


def test_archive_restore_delete(api: httpx.Client, app: CasaviApp) -> None:
    app.set_portal_state("c1", registered=True, invited=True)
    assert api.get("/v2/contacts/c1").json()["isRegistered"] is True
    archived = api.post("/v2/contacts/c1/archive")
    assert archived.status_code == 200 and archived.json()["archived"] is True
    assert archived.json()["isRegistered"] is False               # archiving ends portal access
    assert [r["id"] for r in api.get("/v2/contacts").json()["list"]] == ["c2"]
    assert [r["id"] for r in api.get("/v2/contacts?includeArchived=true").json()["list"]] == ["c1", "c2"]
    # writing to an archived record is allowed and it stays archived
    assert api.put("/v2/contacts/c1", json={"lastName": "Müller"}).json()["archived"] is True
    assert api.delete("/v2/contacts/c1").json()["code"] == "has_dependents"   # contract k1
    assert api.post("/v2/contacts/c1/restore").json()["archived"] is False
    # deleting a unit deletes its contracts
    api.post("/v2/units/u1/archive")
    assert api.get("/v2/properties/p1").json()["addresses"][0]["units"] == []
    assert api.delete("/v2/units/u1").status_code == 204
    assert api.get("/v2/contracts/k1").status_code == 404
    assert api.get("/v2/contacts/c1").json()["contracts"] == []
    assert app.counts() == {"properties": 2, "units": 1, "contacts": 2, "contracts": 0, "archived": 0,
                            "responsibilities": 1}
    api.post("/v2/contacts/c2/archive")
    assert api.delete("/v2/contacts/c2").status_code == 204
    assert api.get("/v2/properties/p1").json()["responsibilities"] == []
    api.post("/v2/properties/p1/archive")
    assert api.delete("/v2/properties/p1").json()["code"] == "has_dependents"


def test_unit_quota(api: httpx.Client) -> None:
    assert api.put("/v2/units/u3", json=UNIT).status_code == 201
    over = api.put("/v2/units/u4", json=UNIT)
    assert over.status_code == 409
    assert over.json() == {"message": "unit quota of 3 reached", "code": "unit_quota_exceeded", "limit": 3}
    assert api.put("/v2/units/u3", json={**UNIT, "note": "x"}).status_code == 200    # updates still work
    api.post("/v2/units/u3/archive")
    assert api.put("/v2/units/u4", json=UNIT).status_code == 201
    assert api.post("/v2/units/u3/restore").json()["code"] == "unit_quota_exceeded"


def test_one_contact_per_person(api: httpx.Client) -> None:
    twin = api.put("/v2/contacts/c1-copy", json={"lastName": "Müller", "firstName": "Jürgen",
                                                 "email": "J.Mueller@example.de"})
    assert twin.status_code == 409 and twin.json()["code"] == "duplicate_contact"
    partner = api.put("/v2/contacts/c3", json={"lastName": "Müller", "firstName": "Erika",
                                               "email": "j.mueller@example.de"})
    assert partner.status_code == 201                       # a couple may share an address


def test_auth_rules(server: ServerHandle, app: CasaviApp, clock: Clock) -> None:
    with httpx.Client(base_url=server.url) as client:
        assert client.get("/v2/units").status_code == 401
        assert client.get("/v2/units", headers={"token": "made-up"}).json()["code"] == "unauthorized"
        assert client.get("/v2/units", headers={"Authorization": "Bearer x"}).status_code == 401
        wrong = client.post("/v2/authenticate", json={"key": app.default_credentials[0], "secret": "nope"})  # type: ignore[index]
        assert wrong.status_code == 401 and "nope" not in wrong.text
        assert client.post("/v2/authenticate", json={"key": 1}).json()["errors"] == [
            {"field": "key", "code": "invalid_type"}, {"field": "secret", "code": "required"}]
        token = _login(client, app)
        assert client.get("/v2/units", headers={"token": token}).status_code == 200
        clock.advance(seconds=61)
        expired = client.get("/v2/units", headers={"token": token})
        assert expired.status_code == 401 and expired.json()["code"] == "token_expired"
        fresh = _login(client, app)                                   # re-auth and repeat
        assert client.get("/v2/units", headers={"token": fresh}).status_code == 200


def test_accounts_are_separate(server: ServerHandle, app: CasaviApp, api: httpx.Client) -> None:
    key, secret = app.add_account("other")
    with pytest.raises(ConfigError):
        app.add_account("other")
    with httpx.Client(base_url=server.url) as client:
        token = client.post("/v2/authenticate", json={"key": key, "secret": secret}).json()["token"]
        assert client.get("/v2/units", headers={"token": token}).json()["list"] == []
    assert len(app.records("units")) == 2 and app.records("units", "other") == []
    with pytest.raises(ConfigError, match="known: demo, other"):
        app.records("units", "nobody")


def test_http_counters_know_casavi_resources(api: httpx.Client, server: ServerHandle) -> None:
    assert server.counters.requests("PUT", "responsibilities") == 1
    assert server.counters.requests("POST", "authenticate") == 1
    assert server.counters.writes() == len(SEED)            # authentication is no write


def test_layer_errors_use_casavi_shape(api: httpx.Client, server: ServerHandle) -> None:
    response = api.put("/v2/units/u1", content=b"x" * (2 * 1024 * 1024))
    assert response.status_code == 413
    assert response.json() == {"message": "request body larger than 1048576 bytes", "code": "body_too_large"}
