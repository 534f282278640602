"""ScalaraClient against a stateful MockTransport fake: pagination, auth, retries, errors."""

from __future__ import annotations

import email.utils
from typing import Any

import httpx
import pytest
from test_connectors_fakes import SCALARA_TOKEN, FakeClock, FakeScalara, config

from engine.connectors import ScalaraClient
from engine.errors import AuthError, ConfigError, NetworkError

UNITS = [{"id": f"u{i:04d}", "number": f"WE {i:02d}", "updatedAt": "2025-01-01T00:00:00Z"} for i in range(1, 1201)]


def make(records: dict[str, list[dict[str, Any]]] | None = None, token: str = SCALARA_TOKEN,
         cfg: Any = None, me: dict[str, Any] | None = None) -> tuple[ScalaraClient, FakeScalara, FakeClock]:
    fake = FakeScalara(records if records is not None else {"units": UNITS}, me=me)
    clock = FakeClock()
    client = ScalaraClient(cfg or config(), token, transport=httpx.MockTransport(fake.handler),
                           sleep=clock.sleep, clock=clock, rng=lambda: 1.0)
    return client, fake, clock


def test_cursor_pagination_reads_every_page() -> None:
    client, fake, _ = make()
    pages = list(client.iter_pages("units"))
    assert [len(p) for p in pages] == [500, 500, 200]
    assert [r["id"] for p in pages for r in p] == [u["id"] for u in UNITS]
    first, second, third = (r.url for r in fake.requests)
    assert first.path == "/export/v1/units"
    assert dict(first.params) == {"limit": "500"}
    assert dict(second.params) == {"limit": "500", "cursor": "500"}
    assert third.params["cursor"] == "1000"
    assert fake.requests[0].headers["authorization"] == f"Bearer {SCALARA_TOKEN}"
    assert client.stats["requests"] == 3 and client.stats["pages"] == 3


def test_filters_and_tombstones() -> None:
    rows = [{"id": "a", "updatedAt": "2025-02-01T00:00:00Z"},
            {"id": "b", "deleted": True, "deletedAt": "2025-02-02T00:00:00Z"}]
    client, fake, _ = make({"contacts": rows})
    records = client.fetch_all("contacts", updated_since="2025-01-01T00:00:00Z", include_deleted=True)
    assert [client.is_tombstone(r) for r in records] == [False, True]
    params = fake.requests[0].url.params
    assert params["updatedSince"] == "2025-01-01T00:00:00Z" and params["includeDeleted"] == "true"
    assert client.fetch_all("contacts") == rows[:1]
    assert "includeDeleted" not in fake.requests[-1].url.params


def test_empty_resource_yields_one_empty_page() -> None:
    client, _, _ = make({"usages": []})
    assert list(client.iter_pages("usages")) == [[]]


def test_page_size_comes_from_config(tmp_path: Any) -> None:
    ops = tmp_path / "ops.yaml"
    ops.write_text("scalara: {pagination: {page_size: 300}}\n", encoding="utf-8")
    from engine.connectors import load_connector_config
    client, fake, _ = make(cfg=load_connector_config(ops, env={}))
    assert [len(p) for p in client.iter_pages("units")] == [300, 300, 300, 300]
    assert fake.requests[0].url.params["limit"] == "300"


def test_token_check_uses_only_the_contract() -> None:
    """The contract has no account endpoint: a token is proven by the first page of a resource
    (limit=1); nothing else is asked unless an account endpoint is configured."""
    client, fake, _ = make()
    assert client.check_token() is None
    (request,) = fake.requests
    assert request.url.path == "/export/v1/properties" and dict(request.url.params) == {"limit": "1"}
    assert client.get("units", "u0007") == UNITS[6]
    assert client.get("units", "nope") is None


def test_configured_account_endpoint_is_used_when_present_and_never_required(tmp_path: Any) -> None:
    from engine.connectors import load_connector_config

    ops = tmp_path / "ops.yaml"
    ops.write_text("scalara: {me_path: /me}\n", encoding="utf-8")
    cfg = load_connector_config(ops, env={})
    client, fake, _ = make(cfg=cfg, me={"accountId": "a-1", "accountName": "demo"})
    assert client.check_token() == {"accountId": "a-1", "accountName": "demo"}
    assert [r.url.path for r in fake.requests] == ["/export/v1/properties", "/export/v1/me"]
    absent, fake, _ = make(cfg=cfg)                                   # 404: fine, account unknown
    assert absent.check_token() is None
    broken, fake, _ = make(cfg=cfg, me={})
    fake.fail(1, (500, {}, {"error": "internal", "message": "-"}), lambda r: r.url.path.endswith("/me"))
    assert broken.check_token() is None


def test_wrong_token_tells_the_admin_where_to_generate_one() -> None:
    bad = "scl_" + "x" * 40
    client, fake, clock = make(token=bad)
    with pytest.raises(AuthError) as info:
        client.check_token()
    message = str(info.value)
    assert "Systemeinstellungen -> Externe Anbindungen -> casavi -> Generieren" in message
    assert "casavi-sync connect" in message
    assert bad not in message and "x" * 10 not in message
    assert len(fake.requests) == 1 and clock.sleeps == []          # a 401 is not retried


def test_unknown_resource_lists_the_configured_ones() -> None:
    client, _, _ = make()
    with pytest.raises(ConfigError, match="unknown SCALARA resource 'unit'; configured: buildings, contacts"):
        list(client.iter_pages("unit"))


def test_rejected_parameter_is_a_config_error() -> None:
    client, fake, _ = make()
    fake.fail(1, (400, {}, {"error": "invalid_parameter", "message": "bad updatedSince"}))
    with pytest.raises(ConfigError, match=r"invalid_parameter.*bad updatedSince"):
        client.fetch_all("units", updated_since="yesterday")


@pytest.mark.parametrize("status", [502, 503, 504])
def test_transient_statuses_are_retried(status: int) -> None:
    client, fake, clock = make()
    fake.fail(2, (status, {}, {"error": "unavailable", "message": "-"}))
    assert len(client.fetch_all("units")) == 1200
    assert clock.sleeps == [0.5, 1.0]                     # rng=1.0: the full backoff
    assert client.stats["retries"] == 2 and client.stats["requests"] == 5


@pytest.mark.parametrize(("retry_after", "waited"), [
    ("7", 7.0),
    ("1000", 120.0),                                        # capped by retry_after_cap_s
    ("date+30", 30.0),
    ("garbage", 0.5),                                       # unreadable: normal backoff
])
def test_429_waits_as_told(retry_after: str, waited: float) -> None:
    client, fake, clock = make()
    if retry_after.startswith("date+"):
        retry_after = email.utils.formatdate(clock() + int(retry_after[5:]), usegmt=True)
    fake.fail(1, (429, {"Retry-After": retry_after}, {"error": "rate_limited", "message": "-"}))
    assert client.check_token() is None
    assert clock.sleeps == [pytest.approx(waited)]
    assert client.stats["throttled"] == 1


def test_malformed_body_is_retried_like_a_5xx() -> None:
    client, fake, _ = make()
    fake.fail(1, (200, {}, b'{"items": [{"id": '))
    fake.fail(1, (200, {}, {"rows": []}))                  # wrong envelope
    assert len(client.fetch_all("units")) == 1200
    assert client.stats["retries"] == 2


@pytest.mark.parametrize("error", [httpx.ConnectError, httpx.ReadTimeout, httpx.ConnectTimeout,
                                   httpx.RemoteProtocolError])
def test_connection_errors_and_timeouts_are_retried(error: type[Exception]) -> None:
    client, fake, _ = make()
    fake.fail(3, error("network down"))
    assert client.check_token() is None
    assert client.stats["retries"] == 3


def test_retries_exhausted_names_service_method_path_and_last_status() -> None:
    client, fake, clock = make()
    fake.fail(10, (503, {}, {"error": "unavailable", "message": "-"}))
    with pytest.raises(NetworkError) as info:
        client.get("units", "u0001")
    message = str(info.value)
    assert message.startswith("SCALARA: GET https://api.scalara.de/export/v1/units/u0001 failed after 6 attempt(s); "
                              "last: HTTP 503")
    assert SCALARA_TOKEN not in message
    assert len(fake.requests) == 6 and len(clock.sleeps) == 5
    assert clock.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0]


@pytest.mark.parametrize(("endless", "pages"), [("empty", 25), ("same", 10)])
def test_a_walk_without_progress_is_stopped(endless: str, pages: int) -> None:
    """Issue 9, item 4: fresh cursors and no new records kept a run going until max_pages (100,000).
    Empty pages are allowed by the contract, so only max_empty_pages of them (default 1000, 25
    here) stop a walk; 10 pages of records seen before do."""
    import dataclasses

    cfg = config()
    assert cfg.scalara.max_empty_pages == 1000 and cfg.scalara.max_idle_pages == 10
    cfg = dataclasses.replace(cfg, scalara=dataclasses.replace(cfg.scalara, max_empty_pages=25))
    client, fake, _ = make(cfg=cfg)
    fake.endless = endless
    with pytest.raises(NetworkError, match=f"made no progress: {pages} pages in a row"):
        list(client.iter_pages("units"))
    assert len(fake.requests) == pages + (endless == "same")   # the first page of "same" is new


def test_cursor_loop_is_stopped() -> None:
    client, fake, _ = make()
    fake.loop_cursor = True
    with pytest.raises(NetworkError, match="pagination loop"):
        list(client.iter_pages("units"))
    assert len(fake.requests) == 2


def test_other_statuses_fail_without_retry() -> None:
    client, fake, clock = make()
    fake.fail(1, (500, {}, {"error": "internal", "message": "stack overflow"}))
    with pytest.raises(NetworkError, match=r"SCALARA: GET /properties answered HTTP 500 internal: stack overflow"):
        client.check_token()
    assert clock.sleeps == []


def test_context_manager_closes_and_repr_hides_the_token() -> None:
    client, _, _ = make()
    with client as c:
        assert SCALARA_TOKEN not in repr(c)
    with pytest.raises(RuntimeError):
        c.check_token()
