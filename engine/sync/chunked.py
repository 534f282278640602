"""Whole-tenant runs in bounded memory: a full read mapped, planned and applied in chunks.

Why: mapping a whole tenant at once held every SCALARA record, every payload, the plan and the
write order in memory -- about 0.35 MB per property, 750 MB for a 2,000-property import, several
GB for ``serve --parallel 8`` on big tenants. A run that maps everything (the import, a periodic
full read, a changed mapping set) now holds one chunk at a time.

How (a real run; a dry run maps the whole tenant in memory, as before):

1. the full read goes into the state store's snapshot page by page (engine.sync.extract);
2. the dependency rows start afresh with the match values of every lookup record, so the lookups
   of every chunk see every candidate, as a whole mapping does;
3. the records of the rule sources are taken ``chunk_records`` at a time in id order, resource
   by resource in the mapping set's order (sources of protected mappings after their
   referrers'), and each chunk is mapped as a targeted day that adds those records
   (engine.sync.targeted.remap): what records outside the chunk supply -- identities, lookup
   candidates, references to protected records -- comes from the rows of the chunks before, and
   records the chunk changes for (the contacts its contracts refer to) are mapped with it;
4. each chunk's plan is applied before the next chunk is mapped;
5. archives wait for the last chunk: only then is it known what is no longer produced. They are
   decided once, with the mass-archive guard over the whole tenant, and applied last.

After each chunk, casavi and the rows hold what a whole mapping of the records read so far gives
(the argument of targeted days: a chunk is a day that adds records), archives aside; after the
last one, what a whole mapping gives. tests/test_chunked.py compares chunked and whole runs.

Held in memory across chunks: sets of 64-bit hashes of the records counted and planned (about
60 bytes each per casavi record), mapping errors, refused writes, held records and archive
candidates -- no payloads or source records. Each chunk's garbage is collected before the next
(its cycles would otherwise wait for a full collection, and memory would grow chunk by chunk).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import itertools
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from engine.compile import MappingSet
from engine.coverage import compute_coverage, merge_coverage
from engine.functions import HORIZON
from engine.mapresult import MappingStats, MapResult
from engine.observe.notice import MAX_SUBJECTS, subject_facts
from engine.state import Outcome as StateOutcome
from engine.state import StateStore
from engine.sync.addresses import PROPERTIES, UNITS, _streets, split_address_moves
from engine.sync.apply import RESPONSIBILITIES, ApplyResult, Outcome, Progress, Writer, apply_plan
from engine.sync.archives import KindHold, plan_archives, references
from engine.sync.chunkmerge import (
    ChunkedPlan,
    ChunkedResult,
    Merged,
    Overlay,
    as_now,
    count_plan,
    own_part,
    release_held,
    tally_add,
)
from engine.sync.order import PropertyDone
from engine.sync.plan import ARCHIVE, RESTORE, SKIPPED, UPDATE, Action, Plan, build_plan
from engine.sync.targeted import Shape, flat, match_rows, remap

Key = tuple[str, str]
GC_RECORDS = 2_000  # records mapped between two full garbage collections (at least one per chunk above)
CHUNK_RECORDS = 2_000    # SCALARA records per chunk (a chunk holds 10-30 KB per record it maps)
WHOLE_RECORDS = 20_000   # a tenant with at most this many records is mapped at once (~200 properties)


def chunk_resources(mset: MappingSet) -> list[str]:
    """Rule sources in the order chunks take them: the order a whole run writes their kinds in
    (referenced mappings first, then the catalog's order: units before contracts even when a
    contract names its unit as text, not by ``ref``), but the sources of protected mappings
    (``only_if_referenced_by``) after all others, so that a protected record's own chunk knows
    every record referring to it."""
    from engine.sync.runner import kind_order

    rank = {kind: i for i, kind in enumerate(kind_order(mset))}
    first: list[str] = []
    last: list[str] = []
    for name in sorted(mset.order, key=lambda n: rank.get(mset.mappings[n].target, len(rank))):
        plan = mset.mappings[name]
        for rule in plan.rules:
            (last if plan.only_if_referenced_by else first).append(rule.source)
    ordered = list(dict.fromkeys(first))
    return ordered + [r for r in dict.fromkeys(last) if r not in ordered]


class ChunkedRun:
    """One whole-tenant run in chunks (see the module docstring)."""

    def __init__(self, store: StateStore, tenant: str, run_id: int, mset: MappingSet, options: Any, *,
                 fingerprint: str, holds: Mapping[Key, Any] | None, statuses: Mapping[tuple[str, str], int],
                 current: dict[Key, dict[str, Any]] | None, pairs: dict[tuple[str, str], dict[str, Any]] | None,
                 empty_kinds: Iterable[str], chunk_records: int = CHUNK_RECORDS) -> None:
        from engine.sync.runner import kind_order

        self.store, self.tenant, self.mset, self.options = store, tenant, mset, options
        self.fingerprint, self.holds, self.statuses = fingerprint, holds, statuses
        self.current, self.pairs = current, pairs
        self.empty_kinds = set(empty_kinds)
        self.existing = store.existing_counts(tenant)  # before the run writes: the guard's "of N"
        self.chunk_records = max(1, chunk_records)
        self.order = kind_order(mset)
        self.m = Merged(self.order, run_id)
        # every mapping is in the coverage, as in a whole run: one whose sources are empty (no
        # chunk maps it) produced nothing
        self.m.coverage = compute_coverage(mset, MapResult(outputs={}, errors=[],
                                                           stats={name: MappingStats() for name in mset.order}))
        self.timings: dict[str, float] = {"map_s": 0.0, "plan_s": 0.0, "apply_s": 0.0}
        self.passed: set[str] = set()  # resources whose chunks are all done
        # address moves (engine.sync.addresses): property -> (step 2, dropped streets); units
        # moving away from a dropped street -> their property; properties whose unit failed
        self.finals: dict[str, tuple[Action, set[str]]] = {}
        self.moving: dict[Key, str] = {}
        self.stuck: set[str] = set()
        self.again: set[Key] = set()   # records of the current chunk that an earlier chunk wrote

    # -- the rows every chunk starts from
    def start_rows(self) -> None:
        """Rows afresh: only the match values of every lookup record (a chunk's lookups see all)."""
        self.store.forget_deps(self.tenant)
        for res, fields in Shape.of(self.mset).lookup_fields.items():
            for page in self._pages(res, 5000):
                rows = [(res, rid, dep, detail) for rid, rec in page
                        if isinstance(rec, dict) and rec.get("deleted") is not True
                        for dep, detail in match_rows(res, rec, fields)]
                self.store.save_deps(self.tenant, rows, {}, whole=False, mapping_hash=self.fingerprint)

    def _pages(self, res: str, size: int) -> Iterable[list[tuple[str, dict[str, Any]]]]:
        after: str | None = None
        while page := self.store.source_page(self.tenant, res, after, size):
            yield page
            after = page[-1][0]

    # -- the chunks
    def run(self, writer: Writer, journal: Any, *, progress: Progress | None,
            should_stop: Callable[[], bool] | None) -> None:
        """Property by property (the write order a whole run has): first every chunk is mapped and
        its rows stored, nothing written; then the records go out property group by property
        group (engine.sync.groups), each mapped again from the rows. Without a root mapping, or
        in the kind-by-kind order, each chunk is written as it is mapped."""
        from engine.sync.groups import Groups, root_mapping

        self.start_rows()
        root = root_mapping(self.mset, self.order[0]) if self.options.write_order == "property" else None
        uncollected = 0
        for res in chunk_resources(self.mset):
            for page in self._pages(res, self.chunk_records):
                if should_stop is not None and should_stop():
                    self.m.result.stopped = True
                    return
                self.chunk(res, dict(page), writer, journal, progress, should_stop, write=root is None)
                # the chunks' cycles (compiled loops, closures), before the next chunk -- every
                # GC_RECORDS records: a full collection costs what the whole heap holds, so after
                # every one of many small chunks it would cost more than the mapping
                uncollected += len(page)
                if uncollected >= GC_RECORDS:
                    gc.collect()
                    uncollected = 0
                if self.m.result.aborted is not None or self.m.result.stopped:
                    return
            self.passed.add(res)
        if root is not None:
            self.m.covered.clear()  # the coverage is complete: its set goes before the writes' sets grow
            groups = Groups(self.store, self.tenant, self.mset, root, self.chunk_records)
            for ids in itertools.chain(groups.groups(), groups.leftovers(chunk_resources(self.mset))):
                if should_stop is not None and should_stop():
                    self.m.result.stopped = True
                    return
                delta = {res: self.store.source_records_by_id(self.tenant, res, got) for res, got in ids.items()}
                self.chunk(None, delta, writer, journal, progress, should_stop, note=False)
                uncollected += sum(len(got) for got in delta.values())
                if uncollected >= GC_RECORDS:
                    gc.collect()
                    uncollected = 0
                if self.m.result.aborted is not None or self.m.result.stopped:
                    return
        self.final_addresses(writer, journal, progress, should_stop)
        if self.m.result.aborted is not None or self.m.result.stopped:
            return
        self.archive_step(writer, journal, progress, should_stop)

    def chunk(self, res: str | None, records: dict[str, dict[str, Any]] | dict[str, dict[str, dict[str, Any]]],
              writer: Writer, journal: Any, progress: Progress | None, should_stop: Callable[[], bool] | None, *,
              note: bool = True, write: bool = True) -> None:
        """Map one chunk: ``res`` -> its records (``records``: id -> record), or, with ``res`` None,
        a group's records of several resources (resource -> id -> record). ``note``: keep what
        the report needs (errors, coverage, names) and store the rows; ``write``: plan and apply."""
        store, tenant, m = self.store, self.tenant, self.m
        t0 = time.perf_counter()
        delta: dict[str, dict[str, dict[str, Any] | None]] = (
            {res: dict(records)} if res is not None else {r: dict(got) for r, got in records.items()})
        horizon = HORIZON.set([dt.date.max])
        try:
            t = remap(store, tenant, self.mset, delta, run_date=self.options.run_date, seed=False)
        finally:
            HORIZON.reset(horizon)
        m.stats["chunks" if note else "groups"] = m.stats.get("chunks" if note else "groups", 0) + 1
        m.stats["mapped"] += len(t.closure)
        m.stats["rounds"] += t.rounds
        if note:
            self._note(t, res, set(delta[res]) if res is not None else set())
        self.timings["map_s"] += time.perf_counter() - t0
        if write:
            self._write(t, writer, journal, progress, should_stop)

    def _note(self, t: Any, res: str | None, own: set[str]) -> None:
        """What the report needs of a chunk (names, coverage, errors); its rows into the store."""
        from engine.sync.runner import _failed_sources, _map_error_rows

        store, tenant, m = self.store, self.tenant, self.m
        for res_, rid in t.closure:  # mapped again: what an earlier chunk named is superseded
            m.subjects.pop(f"{res_}/{rid}", None)
        # a failed record's names (its unit, its property) come from records of earlier chunks too
        m.subjects.update(subject_facts(t.records, _failed_sources(t.mapped), fetch=self._source))
        for name in list(m.subjects)[MAX_SUBJECTS:]:  # bounded, as a whole run's
            del m.subjects[name]
        # what records of earlier chunks produce only now (a rental contract whose unit came in
        # this chunk) is counted here: their own chunk could not count it
        healed = {(o.source_resource, o.source_id) for got in t.mapped.outputs.values() for ref, o in got.items()
                  if o.source_resource in self.passed and hash((o.kind, ref)) not in m.covered}
        part = own_part(self.mset, t.mapped, str(res), own, healed, m.covered)
        m.coverage = merge_coverage(m.coverage, compute_coverage(self.mset, part))
        m.covered.update(hash((kind, ref)) for kind, got in part.outputs.items() for ref in got)
        for key in t.closure:  # a record mapped again: its earlier errors are superseded
            m.errors.pop(key, None)
        for row in _map_error_rows(self.mset, t.mapped):
            if row.get("resource") and row.get("sourceId"):
                m.errors.setdefault((str(row["resource"]), str(row["sourceId"])), []).append(row)
            else:
                m.loose_errors.append(row)
        store.save_deps(tenant, flat(t.rows), t.until, whole=False, mapping_hash=self.fingerprint,
                        replaced=t.replaced)

    def _write(self, t: Any, writer: Writer, journal: Any, progress: Progress | None,
               should_stop: Callable[[], bool] | None) -> None:
        """Plan a mapped chunk against the state (and casavi's records when reconciling) and apply it;
        archives are only noted (``archive_step``)."""
        from engine.sync.runner import _desired, _map_error_rows

        store, tenant, m = self.store, self.tenant, self.m
        t1 = time.perf_counter()
        desired = _desired(t.mapped)
        known = store.records_of_sources(tenant, t.replaced)
        known.update(store.records_by_keys(tenant, [(d.kind, d.ref_id) for d in desired
                                                    if (d.kind, d.ref_id) not in known]))
        rows = _map_error_rows(self.mset, t.mapped)
        produced = {(d.kind, d.ref_id): (d.source_resource, d.source_id) for d in desired}
        # the loser of a duplicate reference id fails under the winner's id: that id is written
        # all the same, so its dependents (the winner's contracts) are not blocked by the loser
        # (co-claimants are always mapped together: the closure takes them all in)
        def by_other(row: dict[str, Any]) -> bool:  # produced, by another record than the failed one
            got = produced.get((row["kind"], row["targetId"]))
            return got is not None and got != (row.get("resource"), row.get("sourceId"))

        failed = [r for r in rows if r.get("kind") and r.get("targetId")]
        m.won.difference_update(hash((r["kind"], r["targetId"])) for r in failed if not by_other(r))
        m.won.update(hash((r["kind"], r["targetId"])) for r in failed if by_other(r))
        errored = {(str(e.resource), str(e.source_id)) for e in t.mapped.errors if e.resource and e.source_id}
        plan = build_plan(desired, known, kinds=self.order, map_errors=rows, errored_sources=errored,
                          current=self._current_for(desired, known), archive_max_share=1.0,
                          allow_archive=True, record_holds=self.holds)
        release_held(self.m, plan)
        for row in plan.errors[len(rows):]:  # payloads JSON cannot carry (a group may map a record twice)
            got = m.errors.setdefault((str(row.get("resource")), str(row.get("sourceId"))), [])
            if row not in got:
                got.append(row)
        archives = [a for a in plan.actions if a.action == ARCHIVE] + plan.held_archives
        # casavi refused it earlier in this run: not sent again (a run tries a record once); what
        # it is now (a responsibility a later role joined) is what the run failed to write, as in
        # a whole run: the report's names and the refused payload's hash (engine.sync.failures)
        later = {(a.kind, a.ref_id): a for a in plan.actions if a.action != ARCHIVE and (a.kind, a.ref_id) in m.failed_keys}
        if later:
            m.failed_actions = [as_now(a, later.get((a.kind, a.ref_id))) for a in m.failed_actions]
        plan.actions = [a for a in plan.actions if a.action != ARCHIVE and (a.kind, a.ref_id) not in m.failed_keys]
        plan.held_archives, plan.guard_trips = [], []
        # a record an earlier chunk of this run wrote, written again now (a responsibility that a
        # later role joins): one record, counted once, by its first write -- as a whole run counts it
        self.again = {(a.kind, a.ref_id) for a in plan.actions if a.action == UPDATE and (k := known.get(
            (a.kind, a.ref_id))) is not None and k.updated_run == m.run_id and k.status in ("written", "pending")}
        count_plan(self.m, plan, desired, self.again)
        m.candidates.update((a.kind, a.ref_id) for a in archives)
        # records left alone because their source failed to map: the archive step must see them,
        # for they are archived with a record they refer to (a contract whose ownership fails,
        # with its unit that left SCALARA), or an active record would refer to an archived one
        m.candidates.update(key for key, k in known.items() if k.status != "archived" and key not in produced
                            and (str(k.source_resource), str(k.source_id)) in errored)
        self.timings["plan_s"] += time.perf_counter() - t1

        t2 = time.perf_counter()
        outputs = t.mapped.outputs

        # records of earlier chunks (a contract's unit) lead a write to its property, as in a
        # whole run: from the state store, what they refer to read from the payload written
        outside = store.records_by_keys(tenant, {d for a in plan.actions for d in a.depends_on
                                                 if outputs.get(d[0], {}).get(d[1]) is None})

        def lookup(kind: str, ref_id: str) -> tuple[tuple[Key, ...], Mapping[str, Any]] | None:
            out = outputs.get(kind, {}).get(ref_id)
            if out is not None:
                return (out.depends_on, out.payload)
            k = outside.get((kind, ref_id))
            if k is None:
                outside.update(store.records_by_keys(tenant, [(kind, ref_id)]))
                k = outside.get((kind, ref_id))
            if k is None or k.payload is None:
                return None
            return tuple(references(kind, k.payload)), k.payload

        plan.actions = self._address_moves(plan.actions)
        with store.batch():
            for a in plan.adopt:
                journal.written(a)
            result = apply_plan(plan, writer, journal, order=self.order, concurrency=self.options.concurrency,
                                progress=progress, should_stop=should_stop,
                                blocked=[*m.blocked(), *((r["kind"], r["targetId"], r["reason"]) for r in rows
                                                         if r.get("kind") and r.get("targetId") and not by_other(r))],
                                write_order=self.options.write_order, lookup=lookup,
                                max_ahead=self.options.max_ahead)
        self._merge(plan, result)
        for o in result.outcomes:  # a unit that did not move: its property keeps the old address
            if not o.ok and (o.kind, o.ref_id) in self.moving:
                self.stuck.add(self.moving[(o.kind, o.ref_id)])
        # step 1 written: pending until step 2 is, so that a failed unit or a crash in between
        # makes the next run (a targeted day too) finish the move -- as apply does in a whole run
        written = {(o.kind, o.ref_id) for o in result.outcomes if o.ok and o.kind == PROPERTIES}
        first = [a for a in plan.actions if a.kind == PROPERTIES and a.ref_id in self.finals
                 and (a.kind, a.ref_id) in written]
        if first:
            with store.batch():
                journal.pending(first)
        self.timings["apply_s"] += time.perf_counter() - t2

    def _address_moves(self, actions: list[Action]) -> list[Action]:
        """A property that drops addresses is written in two steps (engine.sync.addresses), its
        units moving in between -- here in later chunks: step 1 (the new addresses and the dropped
        ones) now, step 2 once every chunk is done (``final_addresses``), unless a unit moving away
        from a dropped address failed. Written at once, the property would drop an address its
        units still have (casavi refuses that, run after run)."""
        out: list[Action] = []
        for a in actions:
            if a.kind == PROPERTIES and a.ref_id in self.finals:
                continue  # mapped again by a later chunk: step 1 is written, step 2 waits for the end
            if a.kind == PROPERTIES and a.action in (UPDATE, RESTORE) and a.payload is not None:
                steps, finals = split_address_moves([a, *self._all_units_move(a)])
                if finals:
                    self.finals[a.ref_id] = (finals[0].action, set(_streets(a.before)) - set(_streets(a.payload)))
                    out.append(steps[0])
                    continue
            if a.kind == UNITS and a.before and (a.payload or {}).get("address") != a.before.get("address"):
                final = self.finals.get(str((a.payload or {}).get("propertyId")))
                if final is not None and a.before.get("address") in final[1]:
                    self.moving[(a.kind, a.ref_id)] = str((a.payload or {}).get("propertyId"))
            out.append(a)
        return out

    @staticmethod
    def _all_units_move(prop: Action) -> list[Action]:
        """Stand-ins for the units of ``prop`` (in later chunks) moving away from each address it
        drops: what makes split_address_moves write it in two steps."""
        return [Action(UNITS, f"\x00{street}", UPDATE, {"propertyId": prop.ref_id, "address": None}, None,
                       None, None, before={"address": street})
                for street in _streets(prop.before) if street not in _streets(prop.payload)]

    def final_addresses(self, writer: Writer, journal: Any, progress: Progress | None,
                        should_stop: Callable[[], bool] | None) -> None:
        """Step 2 of the address moves: the properties whose units all moved drop the old address
        (counted once, by step 1; a property whose unit failed keeps it, the next run tries again)."""
        finals = [final for ref_id, (final, _) in self.finals.items()
                  if ref_id not in self.stuck and (PROPERTIES, ref_id) not in self.m.failed_keys]
        if not finals:
            return
        self.again = {(a.kind, a.ref_id) for a in finals}
        with self.store.batch():
            result = apply_plan(Plan(kinds=self.order, actions=finals), writer, journal, order=self.order,
                                concurrency=self.options.concurrency, progress=progress, should_stop=should_stop,
                                write_order=self.options.write_order)
        result.properties_done, result.properties_total = [], 0  # counted with step 1
        self._merge(Plan(kinds=self.order), result)
        self.again = set()

    def _source(self, resource: str, rid: str) -> dict[str, Any] | None:
        return self.store.source_records_by_id(self.tenant, resource, [rid]).get(rid)

    def _current_for(self, desired: Iterable[Any], known: Mapping[Key, Any]) -> dict[Key, dict[str, Any]] | None:
        """casavi's records for a chunk's plan when reconciling: responsibilities by their pair."""
        if self.current is None:
            return None
        view = Overlay(self.current)
        for key, k in known.items():  # written by an earlier chunk: casavi holds what we sent
            if k.updated_run == self.m.run_id and k.status == "written" and k.payload is not None:
                view.extra[key] = k.payload
        for d in desired:
            if d.kind == RESPONSIBILITIES:
                pair = (str(d.payload.get("propertyId")), str(d.payload.get("contactId")))
                if self.pairs and pair in self.pairs:
                    view.extra.setdefault((RESPONSIBILITIES, d.ref_id), self.pairs[pair])
        for (kind, ref_id), k in known.items():
            if kind == RESPONSIBILITIES and k.payload and self.pairs:
                pair = (str(k.payload.get("propertyId")), str(k.payload.get("contactId")))
                if pair in self.pairs:
                    view.extra.setdefault((RESPONSIBILITIES, ref_id), self.pairs[pair])
        return view

    def _merge(self, plan: Plan, result: ApplyResult) -> None:
        m = self.m
        by_key = {(a.kind, a.ref_id): a for a in plan.actions}
        ok: list[Outcome] = []
        for o in result.outcomes:
            if o.ok:
                if (o.kind, o.ref_id) not in self.again:
                    tally_add(m.result.tally, o.kind, o.action)
                ok.append(o)
                m.failed_keys.pop((o.kind, o.ref_id), None)
                continue
            m.result.outcomes.append(o)
            # what a later chunk's dependents are told, in apply's words (a skipped record's own
            # reason would nest: "depends on units u, which failed (skipped: depends on ...)")
            m.failed_keys[(o.kind, o.ref_id)] = ("a record it depends on failed" if o.action == SKIPPED
                                                 else str((o.error or {}).get("reason") or "not written"))
            if (o.kind, o.ref_id) in by_key:
                m.failed_actions.append(by_key[(o.kind, o.ref_id)])
        if ok:
            self.store.record_outcomes(m.run_id, [StateOutcome(o.kind, o.ref_id, o.source_resource, o.source_id,
                                                               o.action, "ok", None) for o in ok])
        m.result.write_order = result.write_order
        # a property's records are written over several chunks: it is counted once, complete
        # after its last chunk (its records and failures summed), in the order they completed
        for done in result.properties_done:
            before = m.properties.pop(done.anchor, None)
            if before is not None:
                done = PropertyDone(done.anchor, done.name or before.name, done.at,
                                    before.records + done.records, before.failed + done.failed)
            m.properties[done.anchor] = done
        m.open_properties = result.properties_total - len(result.properties_done)  # stopped midway
        m.result.properties_done = list(m.properties.values())
        m.result.properties_total = len(m.properties) + m.open_properties
        if result.aborted is not None:
            m.result.aborted = result.aborted
        m.result.stopped = m.result.stopped or result.stopped

    # -- archives, once every chunk is mapped
    def archive_step(self, writer: Writer, journal: Any, progress: Progress | None,
                     should_stop: Callable[[], bool] | None) -> None:
        store, tenant, m = self.store, self.tenant, self.m
        t0 = time.perf_counter()
        self.again = set()
        candidates = set(m.candidates)
        # records whose stored source is gone -- unless another source made them this run (one
        # responsibility from two equal roles of a contact: the one it was stored with went)
        candidates.update(key for key in store.orphan_records(tenant, chunk_resources(self.mset))
                          if hash(key) not in m.counted)
        self.archives = Plan(kinds=self.order)
        if not candidates:
            return
        known = store.records_by_keys(tenant, candidates)
        existing = self.existing
        referenced = self._referenced(candidates)
        holds = {kind: KindHold("SCALARA returned no records for this kind; nothing is archived")
                 for kind in self.empty_kinds}
        errored = {key for key, rows in m.errors.items() if rows}
        plan_archives(self.archives, known, set(), errored, self._current_for((), known), referenced=referenced,
                      kind_holds=holds, max_share=self.options.archive_max_share, floor=self.options.archive_floor,
                      allow_archive=self.options.allow_archive, existing=existing)
        for a in self.archives.actions:
            tally_add(m.plan_tally, a.kind, a.action)
        self.timings["plan_s"] += time.perf_counter() - t0
        if not self.archives.actions:
            return
        t1 = time.perf_counter()
        with store.batch():
            result = apply_plan(self.archives, writer, journal, order=self.order,
                                concurrency=self.options.concurrency, progress=progress, should_stop=should_stop,
                                blocked=m.blocked(), write_order=self.options.write_order)
        self._merge(self.archives, result)
        self.timings["apply_s"] += time.perf_counter() - t1

    def _referenced(self, candidates: set[Key]) -> dict[Key, Key]:
        """Candidates a record that stays active refers to, with one such record: every record of
        the tenant not archived and not a candidate stays (the state holds its payload)."""
        out: dict[Key, Key] = {}
        for kind, ref_id, payload in self.store.active_payloads(self.tenant):
            key = (kind, ref_id)
            if key in candidates:
                continue
            for target in references(kind, payload):
                if target in candidates:
                    out.setdefault(target, key)
        return out

    def after_fallback(self, plan: Plan, result: ApplyResult) -> tuple[ChunkedPlan, ChunkedResult]:
        """The whole-tenant plan and result of a run whose chunks stopped midway (Fallback), with
        what the chunks before wrote: the whole plan finds those records unchanged, yet this run
        wrote them (a whole run counts them as written, their properties as complete)."""
        m = self.m
        tally = {kind: dict(row) for kind, row in m.plan_tally.items()}
        unchanged = dict(plan.unchanged)
        for kind, row in tally.items():
            unchanged[kind] = max(0, unchanged.get(kind, 0) - sum(row.values()))
        merged = ChunkedPlan(**{f.name: getattr(plan, f.name) for f in dataclasses.fields(Plan)}, tally=tally,
                             wrote=m.wrote)
        merged.unchanged = unchanged
        retried = {(o.kind, o.ref_id) for o in result.outcomes}  # sent again by the whole plan: reported once
        m.result.outcomes = [o for o in m.result.outcomes if (o.kind, o.ref_id) not in retried]
        self.again = set()
        self._merge(plan, result)
        return merged, m.result

    # -- what the report and the session see
    def merged_plan(self) -> ChunkedPlan:
        m = self.m
        archives = getattr(self, "archives", Plan(kinds=self.order))
        plan = ChunkedPlan(kinds=self.order, actions=list(m.failed_actions), unchanged=dict(m.unchanged),
                           errors=m.error_rows(), guard_trips=list(archives.guard_trips),
                           held_archives=list(archives.held_archives), held=list(m.held.values()),
                           tally={k: dict(v) for k, v in m.plan_tally.items()}, wrote=m.wrote)
        for a in m.failed_actions:  # counted in the tally already
            tally_add(plan.tally, a.kind, a.action, -1)
        return plan


