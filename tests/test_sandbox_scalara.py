"""The sandbox's SCALARA export API: tokens, pages, filters, tombstones, mutations, OpenAPI conformance.

The app is called directly with ``Request`` objects, and once through an httpx ``MockTransport``
so that real URL encoding of cursors and timestamps is covered too.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_openapi
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from ruamel.yaml import YAML

from engine.sandbox.app import Request, Response
from engine.sandbox.clock import Clock
from engine.sandbox.generator import FIELDS, RESOURCES, generate
from engine.sandbox.scalara import (
    DEFAULT_ADMIN_PASSWORD,
    DEFAULT_USER_PASSWORD,
    ScalaraApiError,
    ScalaraApp,
)

ROOT = Path(__file__).resolve().parents[1]
START = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
TOKEN = re.compile(r"^scl_[A-Za-z0-9]{40}$")
NAMES = {"properties": "Property", "buildings": "Building", "units": "Unit", "contacts": "Contact",
         "ownerships": "Ownership", "usages": "Usage", "property-roles": "PropertyRole"}


class Api:
    """A tiny test client over ``ScalaraApp.handle``."""

    def __init__(self, app: ScalaraApp, token: str | None) -> None:
        self.app = app
        self.token = token

    def call(self, method: str, path: str, query: dict[str, Any] | None = None, body: Any = None,
             raw: bytes | None = None, token: str | None = None) -> Response:
        headers = {}
        if (token or self.token) is not None:
            headers["authorization"] = f"Bearer {token or self.token}"
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        q = {k: (v if isinstance(v, list) else [str(v)]) for k, v in (query or {}).items()}
        return self.app.handle(Request(method, path, q, headers, data))

    def get(self, path: str, **query: Any) -> Response:
        return self.call("GET", path, query)

    def walk(self, resource: str, **query: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        for _ in range(10_000):
            page = self.get(f"/{resource}", **query, **({"cursor": cursor} if cursor else {}))
            assert page.status == 200, page.body
            items += page.body["items"]
            cursor = page.body["nextCursor"]
            if cursor is None:
                return items
        raise AssertionError("pagination does not end")


@pytest.fixture()
def clock() -> Clock:
    return Clock(START)


@pytest.fixture()
def app(clock: Clock) -> ScalaraApp:
    return ScalaraApp(clock, {"demo": generate(7, seed=4, today=START.date()),
                              "other": generate(1, seed=5, today=START.date())})


@pytest.fixture()
def api(app: ScalaraApp) -> Api:
    return Api(app, app.issue_token("demo", "admin", DEFAULT_ADMIN_PASSWORD))


def sandbox(api: Api, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Response:
    return api.call(method, f"/sandbox/accounts/demo{path}", body=body, raw=raw)


# -- tokens and auth ---------------------------------------------------------------------------------


def test_default_app_has_a_demo_account(clock: Clock) -> None:
    app = ScalaraApp(clock)
    assert app.account_names() == ["demo"]
    assert len(app.dataset()["properties"]) >= 2


def test_token_endpoint_issues_a_token_and_revokes_the_previous_one(app: ScalaraApp) -> None:
    api = Api(app, None)
    first = api.call("POST", "/sandbox/accounts/demo/casavi-token",
                     body={"user": "admin", "password": DEFAULT_ADMIN_PASSWORD})
    assert first.status == 201 and TOKEN.match(first.body["token"])
    assert api.call("GET", "/me", token=first.body["token"]).status == 200
    second = api.call("POST", "/sandbox/accounts/demo/casavi-token",
                      body={"user": "admin", "password": DEFAULT_ADMIN_PASSWORD})
    assert second.body["token"] != first.body["token"]
    revoked = api.call("GET", "/units", token=first.body["token"])
    assert revoked.status == 401 and revoked.body["error"] == "invalid_token"
    assert first.body["token"] not in json.dumps(revoked.body)
    assert api.call("GET", "/units", token=second.body["token"]).status == 200


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"user": "user", "password": DEFAULT_USER_PASSWORD}, 403, "forbidden"),
    ({"user": "admin", "password": "wrong"}, 401, "invalid_credentials"),
    ({"user": "user", "password": "wrong"}, 401, "invalid_credentials"),
    ({"user": "nobody", "password": "x"}, 401, "invalid_credentials"),
    ({"user": "admin"}, 400, "invalid_body"),
    ({"user": "admin", "password": 5}, 400, "invalid_body"),
])
def test_token_endpoint_refuses(app: ScalaraApp, body: dict[str, Any], status: int, code: str) -> None:
    response = Api(app, None).call("POST", "/sandbox/accounts/demo/casavi-token", body=body)
    assert (response.status, response.body["error"]) == (status, code)


def test_token_for_unknown_account_is_404(app: ScalaraApp) -> None:
    response = Api(app, None).call("POST", "/sandbox/accounts/nope/casavi-token",
                                   body={"user": "admin", "password": DEFAULT_ADMIN_PASSWORD})
    assert response.status == 404


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc", "Bearer scl_" + "x" * 40])
def test_missing_or_unknown_token_is_401(app: ScalaraApp, header: str | None) -> None:
    headers = {} if header is None else {"authorization": header}
    response = app.handle(Request("GET", "/units", {}, headers))
    assert response.status == 401 and response.body["error"] == "invalid_token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_token_sees_only_its_own_account(app: ScalaraApp, api: Api) -> None:
    other = Api(app, app.issue_token("other", "admin", DEFAULT_ADMIN_PASSWORD))
    assert other.get("/me").body["accountName"] == "other"
    assert api.get("/me").body["accountName"] == "demo"
    assert api.get("/me").body["accountId"] != other.get("/me").body["accountId"]
    theirs = {u["id"] for u in other.walk("units", limit=500)}
    ours = {u["id"] for u in api.walk("units", limit=500)}
    assert theirs == set(app.dataset("other")["units"]) and not theirs & ours
    some = next(iter(ours))
    assert other.get(f"/units/{some}").status == 404


# -- lists -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 7, 100, 500])
def test_pages_cover_every_record_exactly_once_in_id_order(app: ScalaraApp, api: Api, limit: int) -> None:
    for resource in RESOURCES if limit > 1 else ("properties", "buildings", "property-roles"):
        ids = [item["id"] for item in api.walk(resource, limit=limit)]
        assert ids == sorted(app.dataset()[resource]), resource


def test_default_limit_is_100_and_pages_are_full(api: Api) -> None:
    page = api.get("/contacts")
    assert len(page.body["items"]) == 100 and page.body["nextCursor"]


def test_last_page_has_null_cursor_even_when_it_is_exactly_full(app: ScalaraApp, api: Api) -> None:
    total = len(app.dataset()["properties"])
    page = api.get("/properties", limit=total)
    assert len(page.body["items"]) == total and page.body["nextCursor"] is None


def test_single_record_and_404s(app: ScalaraApp, api: Api) -> None:
    unit_id = next(iter(app.dataset()["units"]))
    assert api.get(f"/units/{unit_id}").body == app.dataset()["units"][unit_id]
    for path in (f"/units/{'0' * 8}-0000-4000-8000-{'0' * 12}", "/flats", "/flats/1", "/units/a/b", "/"):
        response = api.get(path)
        assert (response.status, response.body["error"]) == (404, "not_found"), path


@pytest.mark.parametrize(("method", "path"), [("POST", "/units"), ("PUT", "/units/x"), ("DELETE", "/me"),
                                               ("GET", "/sandbox/clock/advance")])
def test_wrong_method_is_405(api: Api, method: str, path: str) -> None:
    response = api.call(method, path, body={})
    assert (response.status, response.body["error"]) == (405, "method_not_allowed")
    assert response.headers["Allow"]


def test_updated_since_keeps_records_updated_at_or_after(app: ScalaraApp, api: Api) -> None:
    stamps = sorted(c["updatedAt"] for c in app.dataset()["contacts"].values())
    since = stamps[len(stamps) // 2]
    expected = sorted(c["id"] for c in app.dataset()["contacts"].values() if c["updatedAt"] >= since)
    assert [c["id"] for c in api.walk("contacts", updatedSince=since, limit=50)] == expected
    moment = dt.datetime.fromisoformat(since)
    for variant in (moment.astimezone(dt.timezone(dt.timedelta(hours=2))).isoformat(timespec="milliseconds"),
                    (moment - dt.timedelta(microseconds=500)).isoformat().replace("+00:00", "Z")):
        assert [c["id"] for c in api.walk("contacts", updatedSince=variant, limit=500)] == expected
    later = (moment + dt.timedelta(microseconds=1)).isoformat().replace("+00:00", "Z")
    assert len(api.walk("contacts", updatedSince=later, limit=500)) == len(expected) - stamps.count(since)


BAD_QUERIES = [
    ({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"), ({"limit": "abc"}, "limit"),
    ({"limit": "1.5"}, "limit"), ({"limit": ""}, "limit"), ({"limit": "-3"}, "limit"),
    ({"limit": ["5", "6"]}, "limit"), ({"limit": "٣"}, "limit"),
    ({"cursor": "zzz"}, "cursor"), ({"cursor": ""}, "cursor"), ({"cursor": "!!!"}, "cursor"),
    ({"cursor": "dW5pdHM6"}, "cursor"),
    ({"updatedSince": "yesterday"}, "updatedSince"), ({"updatedSince": "2024-01-01"}, "updatedSince"),
    ({"updatedSince": "2024-01-01T00:00:00"}, "updatedSince"),
    ({"updatedSince": "2024-13-01T00:00:00Z"}, "updatedSince"), ({"updatedSince": ""}, "updatedSince"),
    ({"includeDeleted": "yes"}, "includeDeleted"), ({"includeDeleted": "TRUE"}, "includeDeleted"),
    ({"foo": "1"}, "foo"), ({"updated_since": "2024-01-01T00:00:00Z"}, "updated_since"),
]


@pytest.mark.parametrize(("query", "name"), BAD_QUERIES)
def test_bad_query_parameter_is_400_naming_it(api: Api, query: dict[str, Any], name: str) -> None:
    response = api.get("/units", **query)
    assert (response.status, response.body["error"]) == (400, "invalid_parameter")
    assert f"'{name}'" in response.body["message"]


def test_cursor_of_another_resource_is_refused(api: Api) -> None:
    cursor = api.get("/units", limit=1).body["nextCursor"]
    assert api.get("/units", limit=1, cursor=cursor).status == 200
    response = api.get("/contacts", cursor=cursor)
    assert response.status == 400 and "'cursor'" in response.body["message"]
    assert api.get("/me", limit=1).status == 400


# -- tombstones ---------------------------------------------------------------------------------------


def test_generated_deleted_building_is_a_tombstone(app: ScalaraApp, api: Api) -> None:
    gone = app.dataset().edge_cases["deleted_building"][0]
    plain = {b["id"] for b in api.walk("buildings")}
    with_deleted = {b["id"]: b for b in api.walk("buildings", includeDeleted="true")}
    assert gone not in plain and with_deleted[gone]["deleted"] is True
    assert set(with_deleted) - plain == {gone}


def test_delete_gives_a_tombstone_for_90_days(app: ScalaraApp, api: Api, clock: Clock) -> None:
    contact = next(iter(app.dataset()["contacts"]))
    deleted = sandbox(api, "DELETE", f"/records/contacts/{contact}")
    assert deleted.status == 200 and set(deleted.body) == {"id", "deleted", "deletedAt"}
    assert deleted.body["id"] == contact and deleted.body["deleted"] is True
    assert dt.timedelta(0) <= dt.datetime.fromisoformat(deleted.body["deletedAt"]) - START < dt.timedelta(seconds=5)
    assert api.get(f"/contacts/{contact}").status == 404
    assert contact not in {c["id"] for c in api.walk("contacts", limit=500)}

    def tombstones() -> list[dict[str, Any]]:
        return [c for c in api.walk("contacts", limit=500, includeDeleted="true") if c.get("deleted")]

    assert tombstones() == [deleted.body]
    since = deleted.body["deletedAt"]
    assert [c["id"] for c in api.walk("contacts", updatedSince=since, includeDeleted="true")] == [contact]
    assert api.walk("contacts", updatedSince=since) == []
    assert api.call("POST", "/sandbox/clock/advance", body={"days": 89}).status == 200
    assert tombstones() == [deleted.body]
    assert api.call("POST", "/sandbox/clock/advance", body={"days": 1, "seconds": 1}).status == 200
    assert tombstones() == []
    assert sandbox(api, "DELETE", f"/records/contacts/{contact}").status == 404


# -- mutations ----------------------------------------------------------------------------------------


def test_patch_is_visible_in_the_next_list_with_a_newer_updated_at(app: ScalaraApp, api: Api,
                                                                   clock: Clock) -> None:
    unit_id = next(iter(app.dataset()["units"]))
    before = api.get(f"/units/{unit_id}").body
    clock.advance(seconds=5)
    sent = clock.timestamp()
    changed = sandbox(api, "PATCH", f"/records/units/{unit_id}", body={"label": "Penthouse", "persons": 3})
    assert changed.status == 200 and changed.body["label"] == "Penthouse"
    assert changed.body["updatedAt"] > before["updatedAt"]
    # the sandbox clock runs in real time: the stamp is the moment of the PATCH, not of this line
    assert sent <= changed.body["updatedAt"] <= clock.timestamp()
    listed = {u["id"]: u for u in api.walk("units", limit=500)}
    assert listed[unit_id] == changed.body
    assert api.walk("units", updatedSince=changed.body["updatedAt"]) == [changed.body]
    assert before["label"] != "Penthouse" or before["persons"] != 3


@pytest.mark.parametrize(("body", "raw", "fragment"), [
    ({"colour": "blue"}, None, "unknown field 'colour'"),
    ({"id": "x"}, None, "read-only"),
    ({"updatedAt": "2026-01-01T00:00:00.000Z"}, None, "read-only"),
    ({"persons": "three"}, None, "'persons' must be integer"),
    ({"persons": True}, None, "'persons'"),
    ({"type": "CASTLE"}, None, "'type'"),
    ({"buildingId": "not-a-uuid"}, None, "'buildingId'"),
    ({"number": None}, None, "'number'"),
    (None, b"{not json", "not valid JSON"),
    (None, b"\xff\xfe", "not valid JSON"),
    (None, b"[1, 2]", "JSON object"),
    (None, b"", "not valid JSON"),
    (None, b'{"label": "' + b"x" * (1024 * 1024) + b'"}', "larger than"),
])
def test_bad_patch_is_400(app: ScalaraApp, api: Api, body: Any, raw: bytes | None, fragment: str) -> None:
    unit_id = next(iter(app.dataset()["units"]))
    before = dict(app.dataset()["units"][unit_id])
    response = sandbox(api, "PATCH", f"/records/units/{unit_id}", body=body, raw=raw)
    assert (response.status, response.body["error"]) == (400, "invalid_body")
    assert fragment in response.body["message"]
    assert app.dataset()["units"][unit_id] == before


def test_mutation_paths_that_do_not_exist_are_404(api: Api) -> None:
    assert sandbox(api, "PATCH", "/records/units/nope", body={"label": "x"}).status == 404
    assert sandbox(api, "POST", "/records/flats", body={}).status == 404
    assert api.call("PATCH", "/sandbox/accounts/nope/records/units/x", body={}).status == 404
    assert api.call("POST", "/sandbox/nothing", body={}).status == 404
    assert sandbox(api, "POST", "/records/units", body={}).status == 400
    assert api.call("POST", "/sandbox/clock/advance", {"x": "1"}, body={"days": 1}).status == 400


def test_add_record_generates_an_id_and_lists_it_in_order(app: ScalaraApp, api: Api) -> None:
    prop = next(iter(app.dataset()["properties"]))
    body = {"propertyId": prop, "street": "Neue Straße", "houseNumber": "1a", "postalCode": "20095",
            "city": "Hamburg", "country": "DE"}
    sent = app.clock.timestamp()
    added = sandbox(api, "POST", "/records/buildings", body=body)
    assert added.status == 201 and added.body["label"] is None
    assert sent <= added.body["updatedAt"] <= app.clock.timestamp()  # the moment of the POST (real-time clock)
    ids = [b["id"] for b in api.walk("buildings", limit=2)]
    assert added.body["id"] in ids and ids == sorted(ids)
    again = sandbox(api, "POST", "/records/buildings", body={**body, "id": added.body["id"]})
    assert (again.status, again.body["error"]) == (409, "conflict")
    missing = sandbox(api, "POST", "/records/buildings", body={"propertyId": prop})
    assert missing.status == 400 and "street" in missing.body["message"]
    bad_id = sandbox(api, "POST", "/records/buildings", body={**body, "id": "b-1"})
    assert bad_id.status == 400


def test_re_adding_a_deleted_record_drops_its_tombstone(app: ScalaraApp, api: Api) -> None:
    record = dict(next(iter(app.dataset()["property-roles"].values())))
    sandbox(api, "DELETE", f"/records/property-roles/{record['id']}")
    del record["updatedAt"]
    assert sandbox(api, "POST", "/records/property-roles", body=record).status == 201
    listed = api.walk("property-roles", includeDeleted="true")
    assert [r["id"] for r in listed].count(record["id"]) == 1 and not any(r.get("deleted") for r in listed)


def test_end_tenancy(app: ScalaraApp, api: Api) -> None:
    usage = next(u for u in app.dataset()["usages"].values() if u["type"] == "RENTAL" and not u["endDate"])
    ended = sandbox(api, "POST", f"/usages/{usage['id']}/end", body={"endDate": "2026-12-31"})
    assert ended.status == 200 and ended.body["endDate"] == "2026-12-31"
    assert ended.body["updatedAt"] > usage["updatedAt"]
    early = sandbox(api, "POST", f"/usages/{usage['id']}/end", body={"endDate": "1900-01-01"})
    assert early.status == 400 and "startDate" in early.body["message"]
    for body in ({"endDate": "31.12.2026"}, {"endDate": None}, {}, {"endDate": "2026-12-31", "why": "x"}):
        assert sandbox(api, "POST", f"/usages/{usage['id']}/end", body=body).status == 400, body
    assert sandbox(api, "POST", "/usages/nope/end", body={"endDate": "2026-12-31"}).status == 404


def test_owner_change_ends_the_open_ownership_the_day_before(app: ScalaraApp, api: Api) -> None:
    data = app.dataset()
    unit = data.edge_cases["co_owners"][0]
    unit_id = data["ownerships"][unit]["unitId"]
    buyer = data.edge_cases["unlinked_contact"][0]
    response = sandbox(api, "POST", f"/units/{unit_id}/owner-change",
                       body={"newOwnerContactIds": [buyer], "validFrom": "2027-02-01"})
    assert response.status == 201 and response.body["ownerContactIds"] == [buyer]
    assert response.body["validFrom"] == "2027-02-01" and response.body["validTo"] is None
    owns = sorted((o for o in api.walk("ownerships", limit=500) if o["unitId"] == unit_id),
                  key=lambda o: o["validFrom"])
    assert owns[-1] == response.body and owns[-2]["validTo"] == "2027-01-31"
    for body in ({"newOwnerContactIds": [buyer], "validFrom": "2027-01-15"},
                 {"newOwnerContactIds": [], "validFrom": "2028-01-01"},
                 {"newOwnerContactIds": ["1b4e28ba-2fa1-4d2b-a3a6-0f9d1d6c8e5a"], "validFrom": "2028-01-01"},
                 {"newOwnerContactIds": [buyer]}, {"newOwnerContactIds": [buyer], "validFrom": "2028-01-01",
                                                   "price": 1}):
        assert sandbox(api, "POST", f"/units/{unit_id}/owner-change", body=body).status == 400, body
    assert sandbox(api, "POST", "/units/nope/owner-change",
                   body={"newOwnerContactIds": [buyer], "validFrom": "2028-01-01"}).status == 404


def test_owner_change_before_a_registered_future_owner_is_refused(app: ScalaraApp) -> None:
    unit_id = app.dataset().edge_cases["future_owner_change"][0]
    buyer = app.dataset().edge_cases["unlinked_contact"][0]
    with pytest.raises(ScalaraApiError) as refused:
        app.change_owner(unit_id, [buyer], START.date() + dt.timedelta(days=10))
    assert refused.value.status == 400


@pytest.mark.parametrize("raw", [b"{}", b'{"days": -1}', b'{"days": "1"}', b'{"days": true}', b'{"hours": 1}',
                                 b'{"seconds": 1e999}', b'{"days": NaN}', b"[]"])
def test_bad_clock_advance_is_400(api: Api, clock: Clock, raw: bytes) -> None:
    assert api.call("POST", "/sandbox/clock/advance", raw=raw).status == 400
    assert clock.now() - START < dt.timedelta(seconds=5)


def test_clock_advance_reports_the_new_now(api: Api, clock: Clock) -> None:
    response = api.call("POST", "/sandbox/clock/advance", body={"days": 2})
    assert response.status == 200 and response.body["now"].startswith("2026-11-29T12:00")


def test_resource_of(app: ScalaraApp) -> None:
    def of(path: str) -> str:
        return app.resource_of(Request("GET", path, {}, {}))

    assert [of("/units"), of("/property-roles/x"), of("/me"), of("/sandbox/clock/advance"), of("/x"), of("/")] \
        == ["units", "property-roles", "me", "sandbox", "unknown", "unknown"]


def test_concurrent_reads_and_writes_stay_consistent(app: ScalaraApp, api: Api) -> None:
    unit_ids = list(app.dataset()["units"])[:40]
    failures: list[str] = []

    def writer(offset: int) -> None:
        for n, unit_id in enumerate(unit_ids[offset::4]):
            if app.update_record("units", unit_id, {"persons": n}).get("persons") != n:
                failures.append(unit_id)

    def reader() -> None:
        for _ in range(5):
            if len(api.walk("units", limit=50)) != len(app.dataset()["units"]):
                failures.append("count")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)] + [
        threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


def test_through_httpx_mock_transport(app: ScalaraApp, api: Api) -> None:
    def adapter(request: httpx.Request) -> httpx.Response:
        response = app.handle(Request(request.method, request.url.path,
                                      parse_qs(request.url.query.decode(), keep_blank_values=True),
                                      {k.lower(): v for k, v in request.headers.items()}, request.content))
        return httpx.Response(response.status, headers=response.headers, content=response.encoded())

    client = httpx.Client(transport=httpx.MockTransport(adapter), base_url="http://scalara.test",
                          headers={"Authorization": f"Bearer {api.token}"})
    ids, cursor = [], None
    while True:
        params: dict[str, str] = {"limit": "33", "updatedSince": "2000-01-01T00:00:00+00:00"}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/ownerships", params=params).json()
        ids += [o["id"] for o in body["items"]]
        cursor = body["nextCursor"]
        if not cursor:
            break
    assert ids == sorted(app.dataset()["ownerships"])


# -- the OpenAPI document ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    doc: dict[str, Any] = YAML(typ="safe").load((ROOT / "schemas" / "openapi-scalara.yaml").read_text("utf-8"))
    return doc


def conforms(openapi: dict[str, Any], schema: str, instance: Any) -> list[str]:
    registry: Registry[Any] = Registry().with_resource(
        "urn:scalara", Resource.from_contents(openapi, default_specification=DRAFT202012))
    validator = Draft202012Validator({"$ref": f"urn:scalara#/components/schemas/{schema}"}, registry=registry)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]


def test_openapi_document_is_valid_and_tagged(openapi: dict[str, Any]) -> None:
    validate_openapi(openapi)
    for path, item in openapi["paths"].items():
        assert item["x-source"] in ("documented", "seen", "assumed"), path
        # /me: an account endpoint the contract lacks (the engine never needs it)
        assert item.get("x-sandbox-only", False) == (path.startswith("/sandbox/") or path == "/me"), path
    for name, schema in openapi["components"]["schemas"].items():
        assert schema["x-source"] in ("documented", "seen", "assumed"), name
    assert {f"/{r}" for r in RESOURCES} | {f"/{r}/{{id}}" for r in RESOURCES} | {"/me"} <= set(openapi["paths"])


def test_openapi_fields_match_the_generator_and_the_engine_catalog(openapi: dict[str, Any]) -> None:
    catalog = YAML(typ="safe").load((ROOT / "engine" / "catalog" / "scalara.yaml").read_text("utf-8"))
    for resource, name in NAMES.items():
        schema = openapi["components"]["schemas"][name]
        assert list(schema["properties"]) == list(FIELDS[resource])
        assert set(schema["required"]) == set(FIELDS[resource])
        assert set(catalog["resources"][resource]["fields"]) == set(FIELDS[resource])


def test_real_responses_conform_to_the_openapi_schemas(app: ScalaraApp, api: Api,
                                                       openapi: dict[str, Any]) -> None:
    contact = next(iter(app.dataset()["contacts"]))
    tombstone = sandbox(api, "DELETE", f"/records/contacts/{contact}").body
    assert conforms(openapi, "Tombstone", tombstone) == []
    for resource, name in NAMES.items():
        page = api.get(f"/{resource}", limit=500, includeDeleted="true").body
        assert conforms(openapi, f"{name}List", page) == [], resource
        record = next(i for i in page["items"] if not i.get("deleted"))
        assert conforms(openapi, name, api.get(f"/{resource}/{record['id']}").body) == []
    assert conforms(openapi, "Me", api.get("/me").body) == []
    token = api.call("POST", "/sandbox/accounts/other/casavi-token",
                     body={"user": "admin", "password": DEFAULT_ADMIN_PASSWORD}).body
    assert conforms(openapi, "TokenResponse", token) == []
    now = api.call("POST", "/sandbox/clock/advance", body={"seconds": 1}).body
    assert conforms(openapi, "ClockNow", now) == []
    errors = [api.get("/units", limit=0), api.get("/units/nope"), api.call("POST", "/units"),
              api.call("GET", "/units", token="scl_" + "0" * 40), sandbox(api, "PATCH", "/records/units/x", raw=b"{")]
    for response in errors:
        assert conforms(openapi, "Error", response.body) == [], response.body


def test_documented_statuses_cover_what_the_app_answers(openapi: dict[str, Any], api: Api) -> None:
    listing = openapi["paths"]["/units"]["get"]["responses"]
    for status in (api.get("/units").status, api.get("/units", limit=0).status,
                   api.call("GET", "/units", token="bad").status):
        assert str(status) in listing
    assert "404" in openapi["paths"]["/units/{id}"]["get"]["responses"]
    assert set(openapi["paths"]["/sandbox/accounts/{account}/casavi-token"]["post"]["responses"]) >= {
        "201", "400", "401", "403", "404"}


@pytest.mark.slow
def test_big_account_pages_fast(clock: Clock) -> None:
    app = ScalaraApp(clock, {"big": generate(300, seed=1, today=START.date())})
    api = Api(app, app.issue_token("big", "admin", DEFAULT_ADMIN_PASSWORD))
    started = dt.datetime.now()
    ids = [c["id"] for c in api.walk("contacts", limit=500)]
    assert ids == sorted(app.dataset("big")["contacts"])
    assert (dt.datetime.now() - started).total_seconds() < 5

