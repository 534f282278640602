"""CasaviClient against a stateful MockTransport fake: auth, pagination, writes, rejections, threads."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from test_connectors_fakes import CASAVI_KEY, CASAVI_SECRET, FakeCasavi, FakeClock, config

from engine.connectors import CasaviClient, CasaviRejected, WriteResult, load_connector_config
from engine.errors import AuthError, NetworkError, RecordError


def make(*, key: str = CASAVI_KEY, secret: str = CASAVI_SECRET, cfg: Any = None,
         **fake_args: Any) -> tuple[CasaviClient, FakeCasavi, FakeClock]:
    clock = FakeClock()
    fake = FakeCasavi(clock, **fake_args)
    client = CasaviClient(cfg or config(), key, secret, transport=httpx.MockTransport(fake.handler),
                          sleep=clock.sleep, clock=clock, rng=lambda: 1.0)
    return client, fake, clock


def seed(client: CasaviClient, kind: str, n: int) -> None:
    for i in range(n):
        client.put(kind, f"{kind[:1]}-{i}", {"name": f"{kind} {i}", "lastName": "X"})


def test_authenticates_once_and_sends_the_token_header() -> None:
    client, fake, _ = make()
    result = client.put("properties", "p-1", {"name": "Lindenstraße 12"})
    assert result == WriteResult(201, True, {"id": "p-1", "name": "Lindenstraße 12"})
    assert client.put("properties", "p-1", {"name": "Lindenstraße 12"}).created is False
    auth, first, second = fake.requests
    assert (auth.method, auth.url.path) == ("POST", "/v2/authenticate")
    assert (first.method, first.url.path) == ("PUT", "/v2/properties/p-1")
    assert first.headers["token"] == second.headers["token"] == "tok-1"
    assert "authorization" not in first.headers
    assert fake.auth_calls == 1
    assert client.stats["writes"] == 2 and client.stats["reauths"] == 0


def test_pages_follow_links_next() -> None:
    client, fake, _ = make(page_size=2)
    seed(client, "contacts", 5)
    client.archive("contacts", "c-4")
    pages = list(client.iter_pages("contacts", modified_after="2025-01-01T00:00:00Z"))
    assert [[r["id"] for r in p] for p in pages] == [["c-0", "c-1"], ["c-2", "c-3"]]
    lists = [r for r in fake.requests if r.method == "GET"]
    assert dict(lists[0].url.params) == {"page": "1", "modifiedAfter": "2025-01-01T00:00:00Z"}
    assert lists[1].url.params["page"] == "2"
    archived = client.fetch_all("contacts", include_archived=True)
    assert [r["id"] for r in archived] == ["c-0", "c-1", "c-2", "c-3", "c-4"]
    assert fake.requests[-1].url.params["includeArchived"] == "true"


def test_a_read_with_archived_records_marks_them_without_a_field_the_contract_lacks() -> None:
    # API.md names no field that marks an archived record in a read (this fake, like an independent
    # casavi, sends none); it only says archived records are left out unless includeArchived=true.
    client, _, _ = make(page_size=2)
    seed(client, "contacts", 5)
    client.archive("contacts", "c-1")
    client.archive("contacts", "c-4")
    rows = client.fetch_all("contacts", include_archived=True)
    assert {r["id"]: r["archived"] for r in rows} == {
        "c-0": False, "c-1": True, "c-2": False, "c-3": False, "c-4": True}
    assert all("archived" not in r for r in client.fetch_all("contacts"))


def test_next_link_to_another_host_stays_on_the_configured_host() -> None:
    client, fake, _ = make(page_size=1, link_base="http://internal-node-7:8080")
    seed(client, "units", 3)
    assert len(client.fetch_all("units")) == 3
    assert {r.url.host for r in fake.requests} == {"api.mycasavi.com"}


def test_link_loop_is_stopped() -> None:
    client, fake, _ = make(page_size=1)
    seed(client, "units", 3)
    fake.loop_links = True
    with pytest.raises(NetworkError, match="pagination loop"):
        list(client.iter_pages("units"))


def test_endless_empty_pages_are_stopped() -> None:
    client, fake, _ = make(page_size=1)
    fake.endless_links = True
    with pytest.raises(NetworkError, match="made no progress"):
        list(client.iter_pages("units"))
    assert len([r for r in fake.requests if "/v2/units" in str(r.url)]) == 10


def test_get_and_not_found() -> None:
    client, _, _ = make()
    seed(client, "units", 1)
    assert client.get("units", "u-0") == {"id": "u-0", "name": "units 0", "lastName": "X"}
    assert client.get("units", "u-9") is None


def test_reauthenticates_once_after_401_then_succeeds() -> None:
    client, fake, _ = make()
    seed(client, "contacts", 1)
    fake.revoke_all()
    assert client.get("contacts", "c-0") is not None
    assert fake.auth_calls == 2 and fake.unauthorized == 1
    assert client.stats["reauths"] == 1


def test_a_second_401_renews_again_and_only_a_refused_authenticate_blames_the_key() -> None:
    """Issue 9, item 7: a 401 on a token older than the last renewal renews again."""
    client, fake, _ = make()
    seed(client, "contacts", 1)
    fake.fail(2, (401, {}, {"message": "token expired"}), when=lambda r: r.url.path != "/v2/authenticate")
    assert client.get("contacts", "c-0") is not None
    assert fake.auth_calls == 3
    fake.fail(100, (401, {}, {"message": "token expired"}), when=lambda r: r.url.path != "/v2/authenticate")
    with pytest.raises(AuthError) as info:
        client.get("contacts", "c-0")
    assert "refused the tokens it issued (6 in a row" in str(info.value)
    assert "rejected the API key/secret" not in str(info.value)


def test_tokens_shorter_lived_than_a_retry_sequence_never_blame_the_key() -> None:
    """The storm case: every token dies within a second, while 503s make a call retry for 15 s;
    the pair is right, so the call succeeds (renewing on the way) instead of "key rejected"."""
    client, fake, clock = make(lifetime_s=1)
    seed(client, "contacts", 1)
    fake.fail(5, (503, {}, {"message": "busy"}), when=lambda r: r.url.path != "/v2/authenticate")
    assert client.get("contacts", "c-0") is not None
    assert sum(clock.sleeps) > 1 and fake.auth_calls >= 3


def test_tokens_that_die_before_their_expires_at_are_renewed_as_often_as_needed() -> None:
    """casavi ends every token early, in the middle of retry sequences (503, then 401 for the token
    renewed after the last 401): the old client renewed once and then blamed the key/secret."""
    clock = FakeClock()
    fake = FakeCasavi(clock)
    answers = iter([503, 401, 503, 401, 503, 401])

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/v2/authenticate":
            status = next(answers, None)
            if status is not None:
                return httpx.Response(status, json={"message": "busy" if status == 503 else "token expired"})
        return fake.handler(request)

    client = CasaviClient(config(), CASAVI_KEY, CASAVI_SECRET, transport=httpx.MockTransport(handler),
                          sleep=clock.sleep, clock=clock)
    assert client.put("contacts", "c-1", {"lastName": "N"}).status == 201
    assert fake.auth_calls == 4                # the first token and three renewals


def test_rejected_key_names_the_menu_and_hides_the_secret() -> None:
    client, fake, clock = make(secret="wrong-secret-123")
    with pytest.raises(AuthError) as info:
        client.put("properties", "p-1", {"name": "x"})
    message = str(info.value)
    assert "Administration > API-Zugangsdaten" in message and "casavi-sync tenant" in message
    assert "wrong-secret-123" not in message and CASAVI_KEY not in message
    assert fake.auth_calls == 1 and clock.sleeps == []


def test_token_is_renewed_before_it_expires() -> None:
    client, fake, clock = make(lifetime_s=3600)
    seed(client, "units", 1)
    clock.advance(3600 - 299)                 # inside refresh_before_s (300 s) of expiresAt
    client.get("units", "u-0")
    assert fake.auth_calls == 2
    assert fake.unauthorized == 0             # renewed proactively, never sent an expired token
    clock.advance(60)
    client.get("units", "u-0")
    assert fake.auth_calls == 2


def test_short_lived_tokens_are_renewed_at_half_life() -> None:
    client, fake, clock = make(lifetime_s=10)
    seed(client, "units", 1)
    clock.advance(4)
    client.get("units", "u-0")
    assert fake.auth_calls == 1
    clock.advance(2)
    client.get("units", "u-0")
    assert fake.auth_calls == 2 and fake.unauthorized == 0


# (kind, ref id, payload, status, field, reason)
REJECTIONS = [
    ("properties", "p-1", {"number": "7"}, 400, "name", "required on name: validation failed"),
    ("contracts", "k-1", {"type": "OWNER", "contactId": "c-404", "unitId": "u-0"}, 422, "contactId",
     "unknown_reference on contactId: contact 'c-404' does not exist"),
    ("units", "u-9", {"name": "WE 9", "propertyId": "p-1"}, 409, None,
     "unit_quota_exceeded: unit quota of 3 reached"),
]


@pytest.mark.parametrize(("kind", "ref", "payload", "status", "field", "reason"), REJECTIONS,
                         ids=[str(r[3]) for r in REJECTIONS])
def test_rejections_are_record_errors(kind: str, ref: str, payload: dict[str, Any], status: int,
                                      field: str | None, reason: str) -> None:
    client, _, clock = make()
    seed(client, "units", 3)
    with pytest.raises(CasaviRejected) as info:
        client.put(kind, ref, payload)
    err = info.value
    assert isinstance(err, RecordError)
    assert (err.status, err.field, err.reason) == (status, field, reason)
    assert (err.resource, err.target_id) == (kind, ref)
    assert err.as_dict()["status"] == status
    assert clock.sleeps == []                                # a rejection is not retried


def test_archive_restore_delete_and_responsibilities() -> None:
    client, fake, _ = make()
    seed(client, "contacts", 1)
    with pytest.raises(CasaviRejected, match="not_archived: archive the record first") as info:
        client.delete("contacts", "c-0")
    assert info.value.status == 409
    assert client.archive("contacts", "c-0").status == 200
    assert client.restore("contacts", "c-0").status == 200
    client.archive("contacts", "c-0")
    assert client.delete("contacts", "c-0") == WriteResult(204, False, {})
    assert client.delete("contacts", "c-0").status == 404                # already gone
    with pytest.raises(CasaviRejected) as missing:
        client.archive("contacts", "c-0")
    assert missing.value.status == 404
    body = {"roleName": "Beirat", "roleType": "EXTERNAL", "showInPortal": True}
    assert client.put_responsibility("p-1", "c-1", body).created is True
    assert fake.requests[-1].url.path == "/v2/properties/p-1/responsibilities/c-1"
    assert client.delete_responsibility("p-1", "c-1").status == 204
    assert client.delete_responsibility("p-1", "c-1").status == 404


@pytest.mark.parametrize("ref", ["", "a/b", "ü-1", "x" * 65, "../etc"])
def test_invalid_reference_ids_never_reach_the_server(ref: str) -> None:
    client, fake, _ = make()
    with pytest.raises(CasaviRejected, match="invalid reference id") as info:
        client.put("units", ref, {"name": "x"})
    assert info.value.field == "id"
    assert fake.requests == []


def test_429_pauses_the_shared_limiter() -> None:
    client, fake, clock = make()
    seed(client, "units", 1)
    fake.fail(1, (429, {"Retry-After": "4"}, {"message": "slow down"}))
    t0 = clock()
    client.get("units", "u-0")
    assert clock.sleeps[-1] == 4.0 and clock() - t0 == pytest.approx(4.0)
    assert client.limiter.reserve() >= t0 + 4.0              # everyone else waits too
    assert client.stats["throttled"] == 1


def test_retries_exhausted_on_writes() -> None:
    client, fake, _ = make()
    fake.fail(6, (502, {}, b"<html>bad gateway</html>"), when=lambda r: r.method == "PUT")
    with pytest.raises(NetworkError, match=r"casavi: PUT https://api.mycasavi.com/v2/units/u-1 failed after 6 attempt\(s\); last: HTTP 502"):
        client.put("units", "u-1", {"name": "x"})


def test_concurrent_401s_renew_the_token_only_once() -> None:
    clock = FakeClock()
    fake = FakeCasavi(clock)
    client = CasaviClient(config(), CASAVI_KEY, CASAVI_SECRET, transport=httpx.MockTransport(fake.handler),
                          sleep=lambda s: None, clock=clock)
    seed(client, "contacts", 1)
    fake.revoke_all()
    barrier = threading.Barrier(8)

    def work(i: int) -> int:
        barrier.wait()
        return client.put("contacts", f"c-{i}", {"lastName": f"N{i}"}).status

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(work, range(8)))
    assert sorted(statuses) == [200] + [201] * 7
    assert fake.auth_calls == 2
    assert client.stats["reauths"] == 1


@pytest.mark.slow
def test_eight_writer_threads_respect_the_rate_limit(tmp_path: Any) -> None:
    """Real clock, loosely measured: 48 writes at 40/s with burst 4 take at least (48-4)/40 s."""
    ops = tmp_path / "ops.yaml"
    ops.write_text("casavi: {rate_limit: {rate_per_s: 40, burst: 4}}\n", encoding="utf-8")
    cfg = load_connector_config(ops, env={})
    fake = FakeCasavi(time.time)
    sent: list[float] = []
    lock = threading.Lock()

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            sent.append(time.monotonic())
        return fake.handler(request)

    client = CasaviClient(cfg, CASAVI_KEY, CASAVI_SECRET, transport=httpx.MockTransport(handler))
    client.authenticate()
    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: client.put("contacts", f"c-{i}", {"lastName": "N"}), range(48)))
    elapsed = time.monotonic() - start
    assert elapsed >= (48 - 4) / 40 - 0.05
    writes = sorted(sent[1:])
    for i, t in enumerate(writes):                          # any 0.5 s window: <= burst + rate/2 (+1 slack)
        assert sum(1 for u in writes[i:] if u - t < 0.5) <= 4 + 20 + 1
    assert client.stats["writes"] == 48


def test_a_client_clock_ahead_of_casavi_does_not_renew_before_every_call() -> None:
    server_clock = FakeClock()
    fake = FakeCasavi(server_clock, lifetime_s=3600)
    ahead = FakeClock()
    ahead.advance(2 * 3600)  # the client's clock runs two hours ahead: expiresAt looks past
    client = CasaviClient(config(), CASAVI_KEY, CASAVI_SECRET, transport=httpx.MockTransport(fake.handler),
                          sleep=ahead.sleep, clock=ahead, rng=lambda: 1.0)
    seed(client, "units", 1)
    for _ in range(5):
        client.get("units", "u-0")
    assert fake.auth_calls == 1 and fake.unauthorized == 0
