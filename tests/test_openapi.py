"""schemas/openapi-casavi.yaml: a valid OpenAPI 3.1 document that the sandbox's answers obey.

A scenario drives the real CasaviApp over HTTP through every operation and error; each answer is
looked up in the document by path template, method and status (a missing entry fails) and
validated against its schema (Draft 2020-12). Successful write bodies are checked against the
documented request schema too, so the document cannot drift from the implementation either way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from ruamel.yaml import YAML

from engine.sandbox.casavi import CasaviApp
from engine.sandbox.clock import Clock
from engine.sandbox.faults import FaultConfig
from engine.sandbox.http import serve

DOC_PATH = Path(__file__).resolve().parent.parent / "schemas" / "openapi-casavi.yaml"
DOC: dict[str, Any] = YAML(typ="safe", pure=True).load(DOC_PATH.read_text(encoding="utf-8"))
BASE = "urn:openapi-casavi"
REGISTRY: Registry = Registry().with_resource(BASE, Resource.from_contents(DOC, default_specification=DRAFT202012))
SOURCES = {"documented", "seen", "assumed"}


def _deref(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = DOC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _operation(method: str, path: str) -> dict[str, Any]:
    for template, item in DOC["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path):
            operations = _deref(item)
            assert method.lower() in operations, f"{method} {template} is not documented"
            return dict(operations[method.lower()])
    raise AssertionError(f"{path} is not documented")


def _check(schema: dict[str, Any], instance: Any) -> None:
    validator = Draft202012Validator(schema, registry=REGISTRY)
    problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(instance)]
    assert not problems, problems


def _ref(pointer: str) -> dict[str, Any]:
    return {"$ref": f"{BASE}#{pointer}"}


def check_response(method: str, path: str, response: httpx.Response) -> None:
    responses = _operation(method, path)["responses"]
    status = str(response.status_code)
    assert status in responses, f"{method} {path} -> {status} is not documented"
    content = _deref(responses[status]).get("content")
    if content is None:
        assert response.content == b""
        return
    schema = content["application/json"]["schema"]
    pointer = schema["$ref"].removeprefix("#") if "$ref" in schema else None
    assert pointer, "response schemas are named components"
    _check(_ref(pointer), response.json())


def check_request(method: str, path: str, body: Any) -> None:
    schema = _operation(method, path)["requestBody"]["content"]["application/json"]["schema"]
    _check(_ref(schema["$ref"].removeprefix("#")), body)


def test_document_is_valid_openapi_31() -> None:
    validate(DOC)
    assert DOC["openapi"].startswith("3.1")


def test_every_operation_and_response_says_where_it_comes_from() -> None:
    for template, item in DOC["paths"].items():
        for method, operation in _deref(item).items():
            if method == "parameters":
                continue
            assert operation.get("x-source") in SOURCES, f"{method} {template}"
    for name, response in DOC["components"]["responses"].items():
        assert response.get("x-source") in SOURCES, name


STREET = "Lindenstraße 12"
# (method, path, body or None): the scenario, in order. Every answer is checked against the document.
SCENARIO: list[tuple[str, str, Any]] = [
    ("PUT", "/v2/properties/p1", {"name": "WEG Lindenstraße", "addresses": [{"street": STREET}],
                                  "customFields": {"kind": "WEG"}}),
    ("PUT", "/v2/properties/p1", {"name": "WEG Lindenstraße", "addresses": [{"street": STREET}],
                                  "customFields": {"kind": "WEG"}}),
    ("PUT", "/v2/units/u1", {"propertyId": "p1", "name": "WE 01", "address": STREET, "usage": "PRIVATE",
                             "customFields": {"mea": 100.5, "areaSqm": 71}}),
    ("PUT", "/v2/units/u2", {"propertyId": "p1", "name": "WE 02"}),
    ("PUT", "/v2/contacts/c1", {"salutation": "MRS", "firstName": "Åsa", "lastName": "Groß",
                                "email": "a.gross@example.de", "preferredWayOfContact": "ONLINE"}),
    ("PUT", "/v2/contacts/c2", {"companyName": "Hausmeisterei Süd GmbH"}),
    ("PUT", "/v2/contracts/k1", {"type": "OWNER", "contactId": "c1", "unitId": "u1", "startDate": "2020-01-01",
                                 "endDate": None, "contractNumber": "V-1"}),
    ("PUT", "/v2/properties/p1/responsibilities/c2", {"roleName": "Hausmeister", "roleType": "EXTERNAL",
                                                      "showInPortal": True}),
    ("PUT", "/v2/properties/p1/responsibilities/c2", {"roleName": "Hausmeister"}),
    ("GET", "/v2/properties", None),
    ("GET", "/v2/units", None),
    ("GET", "/v2/units?page=2", None),
    ("GET", "/v2/contacts?includeArchived=true", None),
    ("GET", "/v2/contracts?modifiedAfter=2000-01-01T00:00:00Z", None),
    ("GET", "/v2/properties/p1", None),
    ("GET", "/v2/units/u1", None),
    ("GET", "/v2/contacts/c1", None),
    ("GET", "/v2/contracts/k1", None),
    # errors
    ("PUT", "/v2/units/bad!", {"propertyId": "p1", "name": "x"}),
    ("PUT", "/v2/units/u9", {"propertyId": "p1", "name": 3, "extra": True}),
    ("PUT", "/v2/units/u9", {"propertyId": "p9", "name": "x"}),
    ("PUT", "/v2/units/u9", {"propertyId": "p1", "name": "x"}),            # quota of 2
    ("PUT", "/v2/contacts/c3", {"firstName": "Åsa", "lastName": "Groß", "email": "A.Gross@example.de"}),
    ("PUT", "/v2/contracts/k9", {"type": "RENTER", "contactId": "c9", "unitId": "u1", "startDate": "2020-01-01"}),
    ("PUT", "/v2/properties/p1/responsibilities/c9", {"roleName": "Beirat"}),
    ("GET", "/v2/units?page=0", None),
    ("GET", "/v2/units/nothing", None),
    ("DELETE", "/v2/units/u1", None),
    ("DELETE", "/v2/properties/p1/responsibilities/c9", None),
    # archive, restore, delete
    ("POST", "/v2/contacts/c2/archive", None),
    ("POST", "/v2/contacts/c2/restore", None),
    ("POST", "/v2/contracts/k1/archive", None),
    ("DELETE", "/v2/contracts/k1", None),
    ("POST", "/v2/units/u2/archive", None),
    ("POST", "/v2/properties/p1/archive", None),
    ("DELETE", "/v2/properties/p1", None),
    ("POST", "/v2/units/u2/restore", None),
    ("DELETE", "/v2/properties/p1/responsibilities/c2", None),
]


@pytest.fixture(scope="module")
def answers() -> list[tuple[str, str, Any, httpx.Response]]:
    app = CasaviApp(Clock(), page_size=1, unit_quota=2)
    assert app.default_credentials is not None
    key, secret = app.default_credentials
    out: list[tuple[str, str, Any, httpx.Response]] = []
    with serve(app) as server, httpx.Client(base_url=server.url, timeout=5) as client:
        out.append(("POST", "/v2/authenticate", None, client.post("/v2/authenticate", json={"key": key, "secret": "x"})))
        out.append(("POST", "/v2/authenticate", None, client.post("/v2/authenticate", json={"key": key})))
        auth = client.post("/v2/authenticate", json={"key": key, "secret": secret})
        out.append(("POST", "/v2/authenticate", None, auth))
        out.append(("GET", "/v2/units", None, client.get("/v2/units", headers={"token": "nope"})))
        client.headers["token"] = auth.json()["token"]
        for method, path, body in SCENARIO:
            out.append((method, path, body, client.request(method, path, json=body)))
    return out


def test_scenario_covers_every_status_class(answers: list[tuple[str, str, Any, httpx.Response]]) -> None:
    statuses = {r.status_code for *_, r in answers}
    assert {200, 201, 204, 400, 401, 404, 409, 422} <= statuses


def test_answers_conform_to_the_document(answers: list[tuple[str, str, Any, httpx.Response]]) -> None:
    for method, path, body, response in answers:
        check_response(method, path.split("?")[0], response)
        if body is not None and response.status_code in (200, 201):
            check_request(method, path, body)


def test_documented_schemas_reject_what_the_sandbox_rejects() -> None:
    schema = _ref("/components/schemas/UnitWrite")
    validator = Draft202012Validator(schema, registry=REGISTRY)
    assert not validator.is_valid({"propertyId": "p1"})
    assert not validator.is_valid({"propertyId": "p1", "name": "x", "area": 3})
    assert validator.is_valid({"propertyId": "p1", "name": "x", "usage": None})


def test_rate_limited_answer_conforms() -> None:
    app = CasaviApp(Clock())
    with serve(app, faults=FaultConfig(rate_limit_per_s=0.01, burst=1)) as server, httpx.Client(
            base_url=server.url) as client:
        client.post("/v2/authenticate", json={})
        limited = client.post("/v2/authenticate", json={})
    assert limited.status_code == 429 and limited.headers["retry-after"].isdigit()
    check_response("POST", "/v2/authenticate", limited)
