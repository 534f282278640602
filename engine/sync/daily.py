"""The state store side of a targeted day (engine.sync.targeted): which records to load, how to
plan with only some of them known, and storing what each mapped record read.

Why a module of its own: the runner plans from plain data; a targeted day needs the state store
(dependency rows, the record states of the closure only, counts of the rest), and a whole-tenant
mapping must leave the rows a later targeted day starts from.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.compile import MappingSet
from engine.functions import HORIZON
from engine.mapscope import Scope
from engine.state import StateStore
from engine.sync.extract import Extraction, mapping_fingerprint
from engine.sync.plan import Known, build_plan
from engine.sync.targeted import Fallback, Targeted, flat, remap, until_of, whole_rows

if TYPE_CHECKING:
    from engine.sync.runner import Prepared

Record = dict[str, Any]


class Link:
    """One tenant's state store, for a run that maps (wholly or targeted)."""

    def __init__(self, store: StateStore, tenant: str, mset: MappingSet, *, saving: bool,
                 statuses: Mapping[tuple[str, str], int]) -> None:
        self.store, self.tenant, self.mset, self.saving = store, tenant, mset, saving
        self.statuses = statuses
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = mapping_fingerprint(self.mset)
        return self._fingerprint

    def why_not_targeted(self, previous: Any, run_date: str) -> str:
        """"" when a day's changes may be mapped alone, else why not."""
        if self.store.deps_hash(self.tenant) != self.fingerprint:
            return "no dependency rows for this mapping set, or the run that wrote them did not finish"
        if previous.mapped_date is None or run_date < previous.mapped_date:
            return "the run date is before the last run's"
        return ""

    def known_all(self) -> Mapping[tuple[str, str], Known]:
        return self.store.records(self.tenant)

    def full_records(self, delta: Mapping[str, Mapping[str, Record | None]],
                     resources: list[str]) -> dict[str, list[Record]]:
        """The whole snapshot with ``delta`` applied (staged or not)."""
        out: dict[str, list[Record]] = {}
        for res in resources:
            snapshot = self.store.source_records(self.tenant, res)
            for rid, rec in delta.get(res, {}).items():
                if rec is None:
                    snapshot.pop(rid, None)
                else:
                    snapshot[rid] = rec
            out[res] = list(snapshot.values())
        return out

    def save_whole(self, records: Mapping[str, list[Record]], scope: Scope) -> None:
        if not self.saving:
            return
        until = until_of(scope)
        self.store.save_deps(self.tenant, whole_rows(self.mset, records, scope), until, whole=True,
                             mapping_hash=self.fingerprint)

    def save(self, t: Targeted) -> str | None:
        """Store a targeted day's rows; the tenant's first date a date function could flip."""
        if not self.saving:
            return None
        self.store.save_deps(self.tenant, flat(t.rows), t.until, whole=False, mapping_hash=self.fingerprint,
                             replaced=t.replaced)
        first = self.store.deps_first_until(self.tenant)
        return dt.date.fromordinal(first).isoformat() if first is not None else dt.date.max.isoformat()


def prepare_targeted(mset: MappingSet, link: Link, extraction: Extraction, options: Any,
                     holds: Mapping[tuple[str, str], Any] | None, extraction_s: float) -> Prepared:
    """Map and plan only the closure of the day's changes (engine.sync.targeted); Fallback when it
    cannot be computed safely."""
    from engine.coverage import compute_coverage
    from engine.observe.notice import subject_facts
    from engine.sync.runner import Prepared, _desired, _failed_sources, _map_error_rows, kind_order

    assert extraction.delta is not None
    timings: dict[str, float] = {"extract_s": extraction_s}
    t1 = time.perf_counter()
    total = sum(extraction.counts.values())
    # records the last run held back from archiving are decided again, with their sources
    held = link.store.deps_held(link.tenant)
    held_sources = [(s.source_resource, s.source_id) for s in link.store.records_by_keys(link.tenant, held).values()
                    if s.source_resource is not None and s.source_id is not None]
    horizon = HORIZON.set([dt.date.max])
    try:
        t = remap(link.store, link.tenant, mset, extraction.delta, run_date=options.run_date,
                  max_records=max(2000, total // 3), also=held_sources)
    finally:
        HORIZON.reset(horizon)
    mapped = t.mapped
    subjects = subject_facts(t.records, _failed_sources(mapped),  # names from outside the closure too
                             fetch=lambda res, rid: link.store.source_records_by_id(link.tenant, res, [rid]).get(rid))
    coverage = compute_coverage(mset, mapped)
    timings["map_s"] = time.perf_counter() - t1

    order = kind_order(mset)
    desired = _desired(mapped)
    known = link.store.records_of_sources(link.tenant, t.replaced)
    known.update(link.store.records_by_keys(link.tenant, [k for k in held if k not in known]))
    known.update(link.store.records_by_keys(link.tenant, [(d.kind, d.ref_id) for d in desired
                                                          if (d.kind, d.ref_id) not in known]))
    existing = link.store.existing_counts(link.tenant)
    written: dict[str, int] = {}
    for (kind, status), n in link.statuses.items():
        if status == "written":
            written[kind] = written.get(kind, 0) + n
    for (kind, _), state in known.items():
        if state.status == "written":
            written[kind] -= 1
    empty_kinds = {p.target for p in mset.mappings.values()
                   if any(extraction.counts.get(rule.source, 0) == 0 for rule in p.rules)}
    errored = {(str(e.resource), str(e.source_id)) for e in mapped.errors if e.resource and e.source_id}
    plan = build_plan(desired, known, kinds=order, map_errors=_map_error_rows(mset, mapped), errored_sources=errored,
                      current=None, empty_kinds=empty_kinds, archive_max_share=options.archive_max_share,
                      archive_floor=options.archive_floor, allow_archive=options.allow_archive, record_holds=holds,
                      existing=existing)
    for kind, n in written.items():  # records outside the closure: what casavi has is still desired
        plan.unchanged[kind] = plan.unchanged.get(kind, 0) + n
    timings["plan_s"] = time.perf_counter() - t1 - timings["map_s"]
    stable = link.save(t)
    if stable is not None:
        extraction.stable_until = stable
    extraction.targeted = {"mode": "targeted", **t.stats}
    return Prepared(plan, mapped, extraction.counts, False, order, timings, coverage, extraction,
                    subjects=subjects)


__all__ = ["Fallback", "Link", "prepare_targeted"]
