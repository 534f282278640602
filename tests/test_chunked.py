"""Chunked whole-tenant runs (engine.sync.chunked) end exactly where a whole mapping ends.

Two sides sync from one SCALARA: "whole" maps the tenant at once (``chunk_records=0``), "chunk"
maps, plans and applies it a few records at a time. After the import and after every day of
random changes (read fully on both sides: a chunked re-read of an existing state), casavi, the
state store (records, snapshot, dependency rows) and the report (counts, mapping errors, refused
writes, guard trips, coverage, outcome) must agree. The focused tests pin what the merge of the
chunks must get right: each record counted and tried once, archives of records whose source is
gone, a stop between chunks, a crash in the middle.
"""

from __future__ import annotations

import contextlib
import json
import random
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from engine.sync.chunked import ChunkedRun
from tests.incremental_rig import Crash, Rig, Tamper, app_transport
from tests.test_incremental import Changer, data

WHOLE, CHUNK = "whole", "chunk"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, properties=1, seed=5)
    yield r
    r.close()


def run(rig: Rig, name: str, *, should_stop: Callable[[], bool] | None = None, casavi_tamper: Tamper | None = None,
        writer: Any = None, **options: Any) -> Any:
    """Rig.run, with what it does not pass: a stop request, a tampered or dying casavi."""
    from engine.connectors.casavi import CasaviClient
    from engine.connectors.scalara import ScalaraClient
    from engine.sync.runner import SyncOptions
    from engine.sync.session import run_for_tenant

    side = rig.side(name)
    scalara = ScalaraClient(rig.config, rig.token, transport=app_transport(rig.scalara))
    casavi = writer or client(rig, name, casavi_tamper)
    assert isinstance(casavi, (CasaviClient, DiesAfter))
    with scalara, casavi:
        return run_for_tenant(side.store, "default", rig.mset, scalara, casavi,
                              SyncOptions(run_date=rig.clock.today(), concurrency=1, **options),
                              should_stop=should_stop)


def client(rig: Rig, name: str, tamper: Tamper | None = None) -> Any:
    from engine.connectors.casavi import CasaviClient

    side = rig.side(name)
    return CasaviClient(rig.config, side.key, side.secret, transport=app_transport(side.casavi, tamper))


class DiesAfter:
    """A casavi client whose process dies (``Crash``) after ``n`` successful writes."""

    WRITES = ("put", "put_responsibility", "delete_responsibility", "archive", "restore")

    def __init__(self, inner: Any, n: int) -> None:
        self.inner, self.left = inner, n

    def __enter__(self) -> DiesAfter:
        self.inner.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.inner.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in self.WRITES:
            return attr

        def write(*args: Any) -> Any:
            if self.left <= 0:
                raise Crash
            result = attr(*args)
            self.left -= 1
            return result
        return write


def _rows(rows: list[dict[str, Any]]) -> list[str]:
    """Report rows as a multiset (order free, duplicates kept)."""
    return sorted(json.dumps(r, sort_keys=True, ensure_ascii=False, default=str) for r in rows)


def assert_same(rig: Rig, whole: Any, chunk: Any, where: str, *, reports: bool = True,
                unannounced: bool = False) -> None:
    """The chunk side ended where the whole side did: casavi, state store and (``reports``) report.

    ``unannounced``: leave out the store's rows of records skipped because a record they depend on
    failed. Whether such a record has a row depends on the write order, in whole runs too: it has
    one when its intent was journaled before the failure (in the failed record's property group).
    """
    if reports:
        w, c = whole.report, chunk.report
        assert chunk.outcome == whole.outcome, (where, c["error"], w["error"])
        assert c["counts"] == w["counts"], where
        assert _rows(c["mapErrors"]) == _rows(w["mapErrors"]), where
        assert _rows(c["writeFailures"]) == _rows(w["writeFailures"]), where
        assert _rows(c["held"]) == _rows(w["held"]), where
        assert c["guard"] == w["guard"], where
        assert c["coverage"] == w["coverage"], where
        assert c["extracted"] == w["extracted"], where
        assert c["subjects"] == w["subjects"], where
        for key in ("total", "complete"):  # which property completed when depends on the write order
            assert c["properties"].get(key) == w["properties"].get(key), (where, key)
    assert rig.casavi_state(CHUNK) == rig.casavi_state(WHOLE), where
    a, b = rig.store_state(CHUNK), rig.store_state(WHOLE)
    if unannounced:
        for state in (a, b):
            state["records"] = [r for r in state["records"]
                                if not (r[4] == "failed" and str(r[8]).startswith("skipped: depends on"))]
    for part in ("records", "sources", "deps", "until"):
        assert a[part] == b[part], (where, part)


def chunked(out: Any) -> bool:
    return (out.report["extraction"].get("targeted") or {}).get("mode") == "chunked"


# -- the randomized equivalence ---------------------------------------------------------------------


class MassChanger(Changer):
    """Changer's day-two changes, and days on which many units go at once (the guard's case)."""

    def mass_delete(self) -> int:
        units = sorted(data(self.rig)["units"])
        gone = self.rng.sample(units, max(1, int(len(units) * self.rng.uniform(0.25, 0.6))))
        for uid in gone:
            self.graveyard.append(("units", data(self.rig)["units"][uid]))
            self.rig.scalara.delete_record("units", uid)
        return len(gone)

    def mass_undelete(self) -> None:
        while self.graveyard:
            self.undelete()


TENANTS, DAYS = 30, 3  # 120 compared states: each tenant's import and each of its days


def refusing(ids: list[str]) -> Tamper:
    """casavi refuses every write of a record made from these SCALARA records (a validation error)."""
    def answer(request: httpx.Request) -> httpx.Response | None:
        if request.method == "PUT" and any(i in unquote(request.url.path) for i in ids):
            return httpx.Response(422, json={"message": "value is not valid"})
        return None
    return answer


def _tenant(tmp: Path, seed: int, seen: Counter[str], *, refusals: bool = False,
            write_order: str = "property") -> None:
    rng = random.Random(seed)
    rig = Rig(tmp, properties=rng.choice((1, 2, 3)), seed=seed)
    try:
        # ``refusals``: casavi refuses a few records (and, a record they depend on having failed,
        # their dependents are skipped): refused and held records, counted once, tried once
        refused = [rng.choice(sorted(data(rig)[res])) for res in ("contacts", "units", "properties")
                   if refusals and rng.random() < 0.4]
        tamper = refusing(refused) if refused else None
        size = rng.randint(3, 60)
        whole = run(rig, WHOLE, chunk_records=0, casavi_tamper=tamper, write_order=write_order)
        chunk = run(rig, CHUNK, chunk_records=size, casavi_tamper=tamper, write_order=write_order)
        where = f"seed {seed}, import, chunk_records {size}, refused {refused}, {write_order} order"
        assert chunked(chunk) and not chunked(whole), where
        assert_same(rig, whole, chunk, where, unannounced=bool(refused))
        seen["states"] += 1
        seen["refused"] += bool(whole.report["writeFailures"])
        changer = MassChanger(rig, rng)
        for day in range(DAYS):
            rig.advance(rng.choice((0.02, 1, 1, 2)))
            changes = changer.day(rng.randint(0, 8))
            roll = rng.random()
            if roll < 0.25:
                changes.append(f"mass_delete({changer.mass_delete()})")
            elif roll < 0.35:
                changer.mass_undelete()
                changes.append("mass_undelete")
            options: dict[str, Any] = {"full": True, "write_order": write_order}
            if rng.random() < 0.3:
                options["allow_archive"] = True
            if rng.random() < 0.15:
                options["reconcile"] = True
            if refused and rng.random() < 0.3:
                options["retry_failed"] = True
            size = rng.randint(3, 60)
            whole = run(rig, WHOLE, chunk_records=0, casavi_tamper=tamper, **options)
            chunk = run(rig, CHUNK, chunk_records=size, casavi_tamper=tamper, **options)
            where = (f"seed {seed}, day {day + 1}, chunk_records {size}, options {options}, changes {changes}, "
                     f"refused {refused}")
            assert chunked(chunk) == (sum(chunk.report["extracted"].values()) > size), where
            assert_same(rig, whole, chunk, where, unannounced=bool(refused))
            seen["states"] += 1
            seen["guard"] += bool(whole.report["guard"])
            seen["held"] += bool(whole.report["held"])
            seen["archived"] += sum(r.get("archive", 0) for r in whole.report["counts"].values())
    finally:
        rig.close()


def _tenants(tmp_path: Path, seeds: Iterable[int], **options: Any) -> Counter[str]:
    """``_tenant`` for every seed, each in a folder of its own; what they saw, summed."""
    seen: Counter[str] = Counter()
    shm = Path("/dev/shm")  # state files in memory when the machine has it: fsyncs are most of the time
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else tmp_path) as base:
        for seed in seeds:
            where = Path(base) / f"t{seed}"
            where.mkdir()
            _tenant(where, seed, seen, **options)
    return seen


@pytest.mark.slow
def test_chunked_and_whole_runs_agree_on_imports_and_random_days(tmp_path: Path) -> None:
    seen = _tenants(tmp_path, range(TENANTS))
    assert seen["states"] == TENANTS * (DAYS + 1) >= 100
    assert seen["guard"] >= 3  # the mass-archive guard tripped (identically) on several days
    assert seen["archived"] > 0  # and archives went through on others


REFUSING = 25  # tenants on which casavi refuses records (40% of them per resource)


@pytest.mark.slow
def test_chunked_and_whole_runs_agree_when_casavi_refuses_records_kind_by_kind(tmp_path: Path) -> None:
    """Refused records, their skipped dependents, held records and their release, written kind by
    kind (where no skipped record's intent is journaled, in either run)."""
    seen = _tenants(tmp_path, range(500, 500 + REFUSING), refusals=True, write_order="kind")
    assert seen["states"] == REFUSING * (DAYS + 1)
    assert seen["refused"] >= 10 and seen["held"] >= 10  # casavi refused records, later runs held them back


@pytest.mark.slow
def test_chunked_and_whole_runs_agree_when_casavi_refuses_records(tmp_path: Path) -> None:
    seen = _tenants(tmp_path, range(TENANTS), refusals=True)
    assert seen["refused"] >= 3 and seen["held"] >= 3  # casavi refused records, later runs held them back


# -- focused: the merge of the chunks ----------------------------------------------------------------


def total_records(out: Any) -> int:
    return sum(out.report["extracted"].values())


def test_one_chunk_per_resource_and_many_small_chunks_count_each_record_once(rig: Rig) -> None:
    whole = rig.run(WHOLE, chunk_records=0)
    few = rig.run("few", chunk_records=total_records(whole) - 1)
    many = rig.run(CHUNK, chunk_records=3)
    assert chunked(few) and chunked(many)
    assert many.report["extraction"]["targeted"]["chunks"] > few.report["extraction"]["targeted"]["chunks"]
    assert few.report["counts"] == many.report["counts"] == whole.report["counts"]
    for kind, row in many.report["counts"].items():
        assert row.get("update", 0) == row.get("planned_update", 0) == 0, kind  # an import creates, once
        assert row.get("create", 0) == row.get("planned_create", 0) > 0, kind
    assert_same(rig, whole, many, "import")


def test_a_tenant_of_at_most_chunk_records_records_is_mapped_whole(rig: Rig) -> None:
    whole = rig.run(WHOLE, chunk_records=0)
    n = total_records(whole)
    at = rig.run(CHUNK, chunk_records=n)
    assert not chunked(at) and at.outcome == whole.outcome
    assert_same(rig, whole, at, "at the limit")
    above = rig.run("above", chunk_records=n - 1)
    assert chunked(above) and above.report["counts"] == whole.report["counts"]
    # whole_records sets the limit apart from the chunk size
    assert not chunked(rig.run("limit", chunk_records=5, whole_records=n))
    small = rig.run("small", chunk_records=5, whole_records=n - 1)
    assert chunked(small) and small.report["extraction"]["targeted"]["chunks"] >= n // 5
    assert small.report["counts"] == whole.report["counts"]


def _import_both(rig: Rig, size: int = 5) -> None:
    rig.run(WHOLE, chunk_records=0)
    rig.run(CHUNK, chunk_records=size)


def _archived(rig: Rig, name: str) -> set[tuple[str, str]]:
    return {(r[0], r[1]) for r in rig.store_state(name)["records"] if r[4] == "archived"}


def test_a_deleted_scalara_record_archives_exactly_its_casavi_records(rig: Rig) -> None:
    _import_both(rig)
    records = rig.store_state(WHOLE)["records"]
    contact_of = {c["id"]: c["contactId"] for c in rig.casavi_state(WHOLE)["contracts"]}
    made: dict[tuple[str, str], set[str]] = {}
    for _kind, ref, *_, res, sid, _err in records:
        made.setdefault((res, sid), set()).add(ref)
    others = {src: Counter(contact_of[r] for s, refs in made.items() if s != src for r in refs if r in contact_of)
              for src in made if src[0] == "usages"}
    # a tenancy whose contacts have other contracts too: only its own contracts go
    usage = next(sid for (res, sid), refs in sorted(made.items()) if res == "usages"
                 and all(others[(res, sid)][contact_of[r]] for r in refs))
    own = {(r[0], r[1]) for r in records if (r[6], r[7]) == ("usages", usage)}
    rig.advance(1)
    rig.scalara.delete_record("usages", usage)
    whole = rig.run(WHOLE, chunk_records=0, full=True, allow_archive=True)
    chunk = rig.run(CHUNK, chunk_records=5, full=True, allow_archive=True)
    assert chunked(chunk)
    assert own and _archived(rig, CHUNK) == own == _archived(rig, WHOLE)
    assert chunk.report["counts"]["contracts"]["archive"] == len(own)
    assert_same(rig, whole, chunk, "usage deleted")


def test_a_deleted_property_takes_what_refers_to_it_along_as_a_whole_mapping_does(rig: Rig) -> None:
    """Records whose SCALARA source fails to map once the property is gone are left alone -- unless
    they refer to a record archived now: no active casavi record may refer to an archived one."""
    _import_both(rig)
    prop = sorted(data(rig)["properties"])[0]
    rig.advance(1)
    rig.scalara.delete_record("properties", prop)
    whole = rig.run(WHOLE, chunk_records=0, full=True, allow_archive=True)
    chunk = rig.run(CHUNK, chunk_records=5, full=True, allow_archive=True)
    assert_same(rig, whole, chunk, "property deleted")
    archived = {r["id"] for r in rig.casavi_state(CHUNK)["properties"] if r["archived"]}
    assert archived and not [u for u in rig.casavi_state(CHUNK)["units"]
                             if u["propertyId"] in archived and not u["archived"]]


def test_a_record_casavi_refuses_is_tried_once_per_run_not_once_per_chunk(rig: Rig) -> None:
    size = 3
    probe = rig.run("probe", chunk_records=0)
    assert probe.outcome in ("clean", "partial")
    records = rig.store_state("probe")["records"]
    source = {(r[0], r[1]): (r[6], r[7]) for r in records}
    position = {(res, rid): i for res in {s[0] for s in source.values()}
                for i, rid in enumerate(sorted(data(rig)[res]))}
    chunks_of: dict[str, set[tuple[str, int]]] = {}  # contact -> the chunks whose contracts refer to it
    for c in rig.casavi_state("probe")["contracts"]:
        res, sid = source[("contracts", c["id"])]
        chunks_of.setdefault(c["contactId"], set()).add((res, position[(res, sid)] // size))
    contact = max(sorted(chunks_of), key=lambda c: len(chunks_of[c]))
    assert len(chunks_of[contact]) >= 2  # its contracts come in two chunks or more, then its own chunk
    tries: Counter[str] = Counter()

    def refuse(name: str) -> Tamper:
        def answer(request: httpx.Request) -> httpx.Response | None:
            if request.method == "PUT" and contact in unquote(request.url.path):
                tries[name] += 1
                return httpx.Response(422, json={"message": "email address is not valid"})
            return None
        return answer

    whole = run(rig, WHOLE, chunk_records=0, casavi_tamper=refuse(WHOLE))
    chunk = run(rig, CHUNK, chunk_records=size, casavi_tamper=refuse(CHUNK))
    assert chunked(chunk)
    assert tries == {WHOLE: 1, CHUNK: 1}
    failed = [f for f in chunk.report["writeFailures"] if f.get("id") == contact or contact in json.dumps(f)]
    assert failed and chunk.outcome == whole.outcome == "partial"
    assert_same(rig, whole, chunk, "a contact refused", unannounced=True)
    # the next run holds it back (refused before, unchanged): counted nowhere, once
    rig.advance(1)
    whole = run(rig, WHOLE, chunk_records=0, full=True, casavi_tamper=refuse(WHOLE))
    chunk = run(rig, CHUNK, chunk_records=size, full=True, casavi_tamper=refuse(CHUNK))
    assert chunked(chunk) and tries == {WHOLE: 1, CHUNK: 1}
    assert [h["id"] for h in chunk.report["held"]] == [contact]
    assert_same(rig, whole, chunk, "a refused contact held", unannounced=True)


def between_chunks(after: int) -> Callable[[], bool]:
    """A stop requested once ``after`` chunks are done: it answers True only to the check between
    chunks (engine.sync.chunked.ChunkedRun.run), so no read or write is cut short."""
    asked = Counter[str]()

    def should_stop() -> bool:
        if sys._getframe(1).f_code is not ChunkedRun.run.__code__:
            return False
        asked["between"] += 1
        return asked["between"] > after
    return should_stop


def inside_a_chunk(rig: Rig, records: int) -> Callable[[], bool]:
    """A stop requested once casavi holds ``records`` records: apply sees it between two writes."""
    return lambda: sum(len(v) for v in rig.casavi_state(CHUNK).values()) >= records


@pytest.mark.parametrize("where", ["while mapping", "between groups", "inside a group"])
def test_a_stop_ends_the_run_stopped_and_a_rerun_completes_it(rig: Rig, where: str) -> None:
    """Chunks are first all mapped (nothing written), then written property group by group: a stop
    while mapping writes nothing; between or inside groups, some properties are out."""
    whole = rig.run(WHOLE, chunk_records=0)
    chunks = run(rig, "probe", chunk_records=5).report["extraction"]["targeted"]["chunks"]
    stop = {"while mapping": between_chunks(4), "between groups": between_chunks(chunks + 1),
            "inside a group": inside_a_chunk(rig, 12)}[where]
    stopped = run(rig, CHUNK, chunk_records=5, should_stop=stop)
    assert stopped.outcome == "stopped" and chunked(stopped)
    written = sum(len(v) for v in rig.casavi_state(CHUNK).values())
    if where == "while mapping":
        assert written == 0
    elif where == "inside a group":
        assert 0 < written < sum(len(v) for v in rig.casavi_state(WHOLE).values())
    else:  # the first group out (smallest properties first: it may hold all but the leftovers)
        assert 0 < written <= sum(len(v) for v in rig.casavi_state(WHOLE).values())
    again = run(rig, CHUNK, chunk_records=5)
    assert chunked(again) and again.outcome == whole.outcome
    if where != "between groups":  # the contracts come after the stop
        assert again.report["counts"]["contracts"]["create"] > 0
    assert_same(rig, whole, again, "stopped, then run again", reports=False)
    assert _rows(again.report["mapErrors"]) == _rows(whole.report["mapErrors"])
    settled = run(rig, CHUNK, chunk_records=5, full=True)  # nothing left to do
    assert not any(row.get(a, 0) for row in settled.report["counts"].values()
                   for a in ("create", "update", "archive", "restore"))


# -- a crash in the middle ------------------------------------------------------------------------------


CRASHES = 30  # crash points: a random tenant, chunk size and number of writes before the process dies


def _crash_once(tmp: Path, seed: int) -> int:
    rng = random.Random(seed)
    rig = Rig(tmp, properties=rng.choice((1, 2)), seed=seed)
    try:
        whole = rig.run(WHOLE, chunk_records=0)
        writes = rig.last_stats["casavi"]["writes"]
        size, n = rng.randint(3, 40), rng.randrange(1, writes)
        with pytest.raises(Crash):
            run(rig, CHUNK, chunk_records=size, writer=DiesAfter(client(rig, CHUNK), n))
        where = f"seed {seed}, chunk_records {size}, died after {n} of {writes} writes"
        assert 0 < sum(len(v) for v in rig.casavi_state(CHUNK).values()) <= n, where  # (+ responsibilities)
        again = None
        if rng.random() < 0.3:  # and once more, later (unless the rerun has fewer writes left)
            with contextlib.suppress(Crash):
                again = run(rig, CHUNK, chunk_records=size,
                            writer=DiesAfter(client(rig, CHUNK), rng.randrange(1, writes)))
        again = again or run(rig, CHUNK, chunk_records=rng.randint(3, 40))
        assert again.outcome == whole.outcome, where
        assert chunked(again) and not again.report["writeFailures"], where
        casavi = rig.side(CHUNK).casavi
        for kind in ("properties", "units", "contacts", "contracts"):  # nothing twice: one per reference id
            ids = [r["id"] for r in casavi.records(kind)]
            assert len(ids) == len(set(ids)), (where, kind)
        assert_same(rig, whole, again, where, reports=False)
        assert _rows(again.report["mapErrors"]) == _rows(whole.report["mapErrors"]), where
        return n
    finally:
        rig.close()


@pytest.mark.slow
def test_a_crash_in_the_middle_of_a_chunked_import_then_a_rerun_ends_where_a_whole_run_does(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else tmp_path) as base:
        points = []
        for seed in range(CRASHES):
            where = Path(base) / f"c{seed}"
            where.mkdir()
            points.append(_crash_once(where, 1000 + seed))
    assert len(set(points)) > CRASHES // 2  # crashed at many different places


def test_a_held_record_is_sent_again_when_an_earlier_chunk_writes_what_it_references(rig: Rig) -> None:
    unit = next(u for u, rec in sorted(data(rig)["units"].items()) if rec["buildingId"] in data(rig)["buildings"])
    prop = data(rig)["units"][unit]["propertyId"]
    tries: Counter[str] = Counter()

    def refuse(name: str) -> Tamper:
        inner = refusing([unit])

        def answer(request: httpx.Request) -> httpx.Response | None:
            got = inner(request)
            tries[name] += got is not None
            return got
        return answer

    for name, size in ((WHOLE, 0), (CHUNK, 5)):
        run(rig, name, chunk_records=size, casavi_tamper=refuse(name))
    rig.advance(1)
    rig.scalara.update_record("properties", prop, {"name": "Objekt umbenannt"})  # written in the properties chunk
    whole = run(rig, WHOLE, chunk_records=0, full=True, casavi_tamper=refuse(WHOLE))
    chunk = run(rig, CHUNK, chunk_records=5, full=True, casavi_tamper=refuse(CHUNK))
    assert chunked(chunk) and tries == {WHOLE: 2, CHUNK: 2}  # the unit went out again, once
    assert not chunk.report["held"] and [f["id"] for f in chunk.report["writeFailures"] if f["kind"] == "units"]
    assert_same(rig, whole, chunk, "a refused unit's property changed", unannounced=True)


def test_a_record_whose_stored_source_is_gone_but_another_source_still_makes_it_stays(rig: Rig) -> None:
    """A responsibility made from two equal roles of one contact: its stored source leaves SCALARA,
    the other role still makes it, unchanged -- not an orphan, though
    engine.state.sources.orphan_records lists it (its stored source is gone)."""
    role = next(r for _, r in sorted(data(rig)["property-roles"].items()) if r["validTo"] is None)
    rig.scalara.add_record("property-roles", {k: v for k, v in role.items() if k not in ("id", "updatedAt")})
    _import_both(rig)
    made = [r for r in rig.store_state(CHUNK)["records"] if r[0] == "responsibilities"
            and json.loads(r[3])["contactId"] == f"c-{role['contactId']}"]
    assert len(made) == 1
    rig.advance(1)
    rig.scalara.delete_record("property-roles", made[0][7])
    whole = rig.run(WHOLE, chunk_records=0, full=True, allow_archive=True)
    chunk = rig.run(CHUNK, chunk_records=5, full=True, allow_archive=True)
    assert chunked(chunk) and chunk.report["counts"]["responsibilities"].get("planned_archive") == 0
    assert [r[4] for r in rig.store_state(CHUNK)["records"] if r[1] == made[0][1]] == ["written"]
    assert_same(rig, whole, chunk, "one of two roles deleted")


def test_a_record_never_written_to_casavi_is_not_archived_when_its_source_goes(rig: Rig) -> None:
    prop = sorted(data(rig)["properties"])[0]
    tamper = refusing([prop])
    run(rig, WHOLE, chunk_records=0, casavi_tamper=tamper)
    never = [r for r in rig.store_state(WHOLE)["records"] if r[0] == "responsibilities"]
    assert never and all(r[4] == "failed" and r[3] is None for r in never)  # none was written
    rig.advance(1)
    rig.scalara.delete_record("property-roles", never[0][7])
    out = run(rig, WHOLE, chunk_records=0, full=True, allow_archive=True, casavi_tamper=tamper)
    assert out.report["counts"]["responsibilities"].get("planned_archive", 0) == 0
    assert not [f for f in out.report["writeFailures"] if f["action"] == "archive"]
