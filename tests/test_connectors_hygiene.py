"""Two promises of the connectors: API names live only in default.yaml; secrets never leak."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import httpx
import pytest
from test_connectors_fakes import CASAVI_KEY, CASAVI_SECRET, SCALARA_TOKEN, FakeCasavi, FakeClock, config

from engine.connectors import CasaviClient, CasaviRejected, ScalaraClient
from engine.connectors.config import DEFAULT_CONFIG
from engine.errors import CasaviSyncError

CONNECTORS = DEFAULT_CONFIG.parent

# Substrings no string literal in the connector code may contain ...
FORBIDDEN_SUBSTRINGS = ["nextCursor", "_links", "/v2/", "includeArchived", "includeDeleted", "modifiedAfter",
                        "updatedSince", "Bearer", "expiresAt", "authenticate", "deletedAt", "invalid_token",
                        "scalara.de", "mycasavi", "/me", "responsibilities/", "/archive", "/restore"]
# ... and literals that may not appear as a whole (too generic as substrings).
FORBIDDEN_EXACT = {"items", "list", "next", "token", "page", "limit", "cursor", "deleted", "message", "errors",
                   "field", "code", "error", "key", "secret", "Authorization", "PUT", "POST", "DELETE",
                   "/properties", "/units", "/contacts"}


def _literals(file: Path) -> list[tuple[int, str]]:
    tree = ast.parse(file.read_text(encoding="utf-8"))
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


@pytest.mark.parametrize("file", sorted(CONNECTORS.glob("*.py")), ids=lambda p: p.name)
def test_assumed_api_names_live_only_in_default_yaml(file: Path) -> None:
    # config.py reads default.yaml, so its literals are the config's own key names ("errors", ...):
    # only the substring list applies there.
    exact = set() if file.name == "config.py" else FORBIDDEN_EXACT
    offending = [(line, text) for line, text in _literals(file)
                 if text in exact or any(s in text for s in FORBIDDEN_SUBSTRINGS)]
    assert offending == [], f"{file.name}: move these into default.yaml: {offending}"


def test_the_scan_would_catch_a_hard_coded_name(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text('"""Docs may say nextCursor."""\nX = {"page": 1}\nY = f"/v2/{X}"\n', encoding="utf-8")
    texts = [t for _, t in _literals(sneaky)]
    assert "page" in texts and "/v2/" in texts and not any("nextCursor" in t for t in texts)


def test_default_yaml_holds_the_names_the_scan_forbids() -> None:
    text = DEFAULT_CONFIG.read_text(encoding="utf-8")
    for name in ["nextCursor", "_links", "includeArchived", "includeDeleted", "modifiedAfter", "updatedSince",
                 "Bearer", "expiresAt", "/v2/authenticate", "invalid_token"]:
        assert name in text


def _failing_casavi(clock: FakeClock) -> list[str]:
    """Drive casavi through auth, renewal, retries, throttling and rejections; collect messages."""
    fake = FakeCasavi(clock)
    client = CasaviClient(config(), CASAVI_KEY, CASAVI_SECRET, transport=httpx.MockTransport(fake.handler),
                          sleep=clock.sleep, clock=clock)
    messages = [repr(client)]
    client.put("contacts", "c-1", {"lastName": "Müller"})
    fake.revoke_all()
    fake.fail(2, (503, {}, {"message": "down"}))
    fake.fail(1, (429, {"Retry-After": "1"}, {"message": "slow"}))
    client.get("contacts", "c-1")
    for call in (lambda: client.put("contracts", "k-1", {"contactId": "nobody"}),
                 lambda: client.put("units", "bad/id", {}),
                 lambda: CasaviClient(config(), CASAVI_KEY, "wrong-" + CASAVI_SECRET,
                                      transport=httpx.MockTransport(fake.handler),
                                      sleep=clock.sleep, clock=clock).authenticate()):
        with pytest.raises(CasaviSyncError) as info:
            call()
        messages += [str(info.value), repr(info.value)]
        if isinstance(info.value, CasaviRejected):
            messages.append(str(info.value.as_dict()))
    fake.fail(6, httpx.ConnectError("refused"))
    with pytest.raises(CasaviSyncError) as info:
        client.get("contacts", "c-1")
    messages.append(str(info.value))
    return messages


def test_secrets_never_appear_in_messages_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock()
    messages = _failing_casavi(clock)
    scalara = ScalaraClient(config(), SCALARA_TOKEN, transport=httpx.MockTransport(
        lambda r: httpx.Response(401, json={"error": "invalid_token", "message": "revoked"})),
        sleep=clock.sleep, clock=clock)
    messages.append(repr(scalara))
    with pytest.raises(CasaviSyncError) as info:
        scalara.check_token()
    messages.append(str(info.value))
    assert any("retry" in r.getMessage() for r in caplog.records)          # the logs did say something
    everything = "\n".join(messages) + "\n" + caplog.text
    for secret in (CASAVI_KEY, CASAVI_SECRET, SCALARA_TOKEN, "tok-1", "tok-2"):
        assert secret not in everything
