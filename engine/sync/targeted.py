"""Targeted re-mapping: on an incremental day, map only the SCALARA records a change touches.

Why: a day on which 1% of the records changed should cost about 1% of a full run, in time and in
memory. The interpreter maps a part of a tenant when told what the rest supplies
(engine.interpret.Scope); every mapped record leaves rows in the state store saying what it read
and produced (engine.state.deps). From those rows this module finds the *closure* of a day's
changes -- every record whose output a full re-map could give differently -- maps exactly those,
and hands back the rows to store. The result equals a full re-map's for every record (the
randomized equivalence test in tests/test_incremental.py compares casavi and the state stores).

A record joins the closure when:

- it changed, was added or deleted (and, for a mapping whose records come from several
  resources, its namesakes there: one identity table per mapping);
- it failed to map last time, has pending or failed casavi records or a known failure (the plan
  carries nothing over: every unsettled record is decided again);
- a date function could map it differently by the run date (its ``until``);
- it looked up a changed record's match value, before or after the change (hits and misses);
- it refers (``ref``) to a record whose identity changed: reference id, failure reason, or none;
- it claims a reference id a closure record claims or claimed (uniqueness, merged records);
- it is a protected record (``only_if_referenced_by``) whose referrers changed what they refer to.

Everything the mapped records need from records outside the closure is supplied from the rows:
identities for their refs, lookup candidates by match value, references to protected records. A
round that finds it needed more than it was given, or that the closure grew, maps again; rounds
end when nothing changes. When the closure cannot be computed safely, ``Fallback`` is raised and
the caller maps the whole tenant.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from engine.compile import MappingSet
from engine.interpret import MapResult, map_records
from engine.mapscope import Dep, Scope

Record = dict[str, Any]
Key = tuple[str, str]
Row = tuple[str, str | None]
SEP = "\x1f"
MAX_ROUNDS = 12


class Fallback(Exception):
    """The closure cannot be computed safely: map the whole tenant (the reason says why)."""


class DepsStore(Protocol):
    def deps_of(self, tenant: str, keys: Iterable[Key]) -> dict[Key, list[Row]]: ...
    def dep_holders(self, tenant: str, deps: Iterable[str]) -> dict[str, list[tuple[str, str, str | None]]]: ...
    def deps_due(self, tenant: str, day: int) -> list[Key]: ...
    def unsettled_sources(self, tenant: str) -> list[Key]: ...
    def source_records_by_id(self, tenant: str, resource: str, ids: Iterable[str]) -> dict[str, Record]: ...


# -- encoding ------------------------------------------------------------------------------------


def canon(value: Any) -> str:
    """A lookup value as text, equal exactly when Python's dict finds them equal (1 == 1.0 == True)."""
    if isinstance(value, str):
        return "s" + value
    if isinstance(value, float):
        if value != value:
            return "nan"
        return "n" + (str(int(value)) if value.is_integer() else repr(value))
    return "n" + str(int(value))


def _short(key: str) -> str:
    """Keys stay indexable: a long one keeps its head and a hash of all but its tag letter (so
    a "k" and an "l" key of the same value still correspond)."""
    if len(key) <= 240:
        return key
    return key[:160] + "\x1e" + hashlib.sha256(key[1:].encode("utf-8")).hexdigest()


def encode(dep: Dep) -> Row:
    tag = dep[0]
    if tag == "l":
        return _short(SEP.join(("l", dep[1], dep[2], canon(dep[3])))), None
    if tag == "f":
        return _short(SEP.join(("f", dep[1]))), str(dep[2])
    if tag == "e":
        return "e", None
    return _short(SEP.join((tag, *(str(p) for p in dep[1:])))), None


def match_rows(resource: str, record: Record, fields: Iterable[str]) -> list[Row]:
    """The "k" rows of a lookup resource's record: the match values lookups find it by."""
    rows: list[Row] = []
    for name in sorted(fields):
        value = record.get(name)
        if isinstance(value, str | int | float | bool):
            rows.append((_short(SEP.join(("k", resource, name, canon(value)))), None))
    return rows


def rkey(mapping: str, sid: str) -> str:
    """The row of a record that read the identity of ``sid`` in ``mapping`` (a ref)."""
    return _short(SEP.join(("r", mapping, sid)))


def _parts(key: str, n: int) -> list[str]:
    if "\x1e" in key:
        raise Fallback("a dependency key too long to read back (a very long id or value)")
    parts = key.split(SEP, n)
    if len(parts) != n + 1:
        raise Fallback(f"an unreadable dependency row ({key[:40]!r})")
    return parts


# -- the shape of the mapping set ------------------------------------------------------------------


@dataclass
class Shape:
    rule_sources: set[str]
    lookup_fields: dict[str, set[str]]     # lookup resource -> match fields
    identity_sources: dict[str, list[str]]  # mapping -> sources of its rules without for_each
    all_sources: dict[str, list[str]]       # mapping -> sources of all its rules
    protected: dict[str, tuple[str, tuple[str, ...]]]  # mapping -> (its kind, referrer mappings)

    @classmethod
    def of(cls, mset: MappingSet) -> Shape:
        shape = cls(set(), {}, {}, {}, {})
        for name, plan in mset.mappings.items():
            shape.identity_sources[name] = list(dict.fromkeys(r.source for r in plan.rules if not r.for_each))
            shape.all_sources[name] = list(dict.fromkeys(r.source for r in plan.rules))
            for rule in plan.rules:
                shape.rule_sources.add(rule.source)
                for lk in rule.lookups:
                    shape.lookup_fields.setdefault(lk.resource, set()).add(lk.match)
            if plan.only_if_referenced_by:
                shape.protected[name] = (plan.target, tuple(plan.only_if_referenced_by))
        return shape


def whole_rows(mset: MappingSet, records: Mapping[str, Iterable[Any]],
               scope: Scope) -> Iterator[tuple[str, str, str, str | None]]:
    """The rows of a whole-tenant mapping (every record of every resource), as (resource, id,
    dep, detail); the scope's deps are dropped as they are encoded."""
    deps = scope.deps
    while deps:
        (res, rid), got = deps.popitem()
        for dep, detail in dict.fromkeys(encode(d) for d in got):
            yield res, rid, dep, detail
    for res, fields in Shape.of(mset).lookup_fields.items():
        for rec in records.get(res) or ():
            if isinstance(rec, dict) and rec.get("deleted") is not True and isinstance(rec.get("id"), str | int):
                for dep, detail in match_rows(res, rec, fields):
                    yield res, str(rec["id"]), dep, detail


def flat(rows: Mapping[Key, list[Row]]) -> Iterator[tuple[str, str, str, str | None]]:
    return ((res, rid, dep, detail) for (res, rid), got in rows.items() for dep, detail in got)


def until_of(scope: Scope) -> dict[Key, int]:
    return _until(scope)


def _until(scope: Scope) -> dict[Key, int]:
    return {key: day.toordinal() for key, day in scope.until.items() if key != ("", "") and day < dt.date.max}


# -- the closure -----------------------------------------------------------------------------------


@dataclass
class Targeted:
    mapped: MapResult
    records: dict[str, list[Record]]        # the records mapped
    closure: set[Key]
    rows: dict[Key, list[Row]]              # rows to store (replacing those of ``replaced``)
    until: dict[Key, int]
    replaced: set[Key]
    rounds: int
    stats: dict[str, int] = field(default_factory=dict)


class _Closure:
    def __init__(self, store: DepsStore, tenant: str, mset: MappingSet,
                 delta: Mapping[str, Mapping[str, Record | None]]) -> None:
        self.store, self.tenant, self.mset = store, tenant, mset
        self.shape = Shape.of(mset)
        self.delta = delta
        self.members: set[Key] = set()
        self.old: dict[Key, set[Row]] = {}
        self.bodies: dict[Key, Record | None] = {}
        self.held: dict[str, list[tuple[str, str, str | None]]] = {}
        # what the mapped records were given from outside the closure
        self.asked_ids: set[tuple[str, str]] = set()
        self.ids: dict[str, dict[str, str]] = {}
        self.failed: dict[str, dict[str, str]] = {}
        self.asked_lookups: set[str] = set()
        self.candidates: dict[str, dict[str, Record]] = {}
        self.asked_refs: set[tuple[str, str]] = set()     # (protected mapping, reference id)
        self.asked_attempts: set[tuple[str, str]] = set()  # (protected mapping, SCALARA id)

    # -- store access, cached
    def holders(self, deps: Iterable[str]) -> dict[str, list[tuple[str, str, str | None]]]:
        wanted = [d for d in set(deps) if d not in self.held]
        if wanted:
            got = self.store.dep_holders(self.tenant, wanted)
            for d in wanted:
                self.held[d] = got.get(d, [])
        return {d: self.held[d] for d in deps}

    def holder_keys(self, deps: Iterable[str]) -> set[Key]:
        return {(res, rid) for found in self.holders(list(deps)).values() for res, rid, _ in found}

    def load_bodies(self, keys: Iterable[Key]) -> None:
        by_res: dict[str, list[str]] = {}
        for key in keys:
            if key in self.bodies:
                continue
            res, rid = key
            changes = self.delta.get(res)
            if changes is not None and rid in changes:
                self.bodies[key] = changes[rid]
            else:
                by_res.setdefault(res, []).append(rid)
        for res, ids in by_res.items():
            got = self.store.source_records_by_id(self.tenant, res, ids)
            for rid in ids:
                self.bodies[(res, rid)] = got.get(rid)

    def add(self, keys: Iterable[Key]) -> bool:
        grew = False
        todo = list(keys)
        while todo:
            key = todo.pop()
            if key in self.members or key[0] not in self.shape.rule_sources:
                continue
            self.members.add(key)
            grew = True
            for sources in self.shape.identity_sources.values():  # one identity table per mapping
                if key[0] in sources and len(sources) > 1:
                    todo.extend((src, key[1]) for src in sources if src != key[0])
        return grew

    # -- seeds
    def seed(self, run_day: dt.date) -> None:
        changed = {(res, rid) for res, recs in self.delta.items() for rid in recs}
        self.add(changed)
        self.add(self.holder_keys(["e"]))
        self.add(self.store.deps_due(self.tenant, run_day.toordinal()))
        self.add(self.store.unsettled_sources(self.tenant))
        # lookups of changed records: readers of their match values, before and after
        looked = [k for k in changed if k[0] in self.shape.lookup_fields]
        before = self.store.deps_of(self.tenant, looked)
        keys: set[str] = set()
        for key in looked:
            keys.update("l" + dep[1:] for dep, _ in before.get(key, ()) if dep.startswith("k" + SEP))
            rec = self.delta[key[0]][key[1]]
            if rec is not None:
                keys.update("l" + dep[1:] for dep, _ in match_rows(key[0], rec, self.shape.lookup_fields[key[0]]))
        self.add(self.holder_keys(keys))

    def load_old(self) -> bool:
        """Stored rows of new members; their co-claimants join. True when the closure grew."""
        grew = False
        while True:
            fresh = [k for k in self.members if k not in self.old]
            if not fresh:
                return grew
            got = self.store.deps_of(self.tenant, fresh)
            claims: set[str] = set()
            for key in fresh:
                rows = set(got.get(key, ()))
                self.old[key] = rows
                claims.update(dep for dep, _ in rows if dep.startswith("o" + SEP))
            grew |= self.add(self.holder_keys(claims))

    # -- supplies
    def supply(self, reads: Iterable[Dep]) -> bool:
        """Give the mapping what records outside the closure hold. True when something was added."""
        added = False
        shape = self.shape
        for dep in reads:
            tag = dep[0]
            if tag == "r":
                added |= self._ask_identity(dep[1], dep[2])
            elif tag == "l":
                added |= self._ask_lookup(encode(dep)[0])
        for name in shape.protected:
            for key in self.members:
                if key[0] in shape.all_sources[name] and (name, key[1]) not in self.asked_attempts:
                    self.asked_attempts.add((name, key[1]))
                    self.holders([rkey(name, key[1])])
                    added = True
        return added

    def ask_claims(self, claims: Iterable[tuple[str, str]]) -> bool:
        """References to protected records (kind, reference id) from outside the closure."""
        added = False
        for name, (kind, referrers) in self.shape.protected.items():
            for claim_kind, rid in claims:
                if claim_kind == kind and (name, rid) not in self.asked_refs:
                    self.asked_refs.add((name, rid))
                    self.holders([_short(SEP.join(("d", r, kind, rid))) for r in referrers])
                    added = True
        return added

    def _ask_identity(self, mapping: str, sid: str) -> bool:
        if (mapping, sid) in self.asked_ids or mapping not in self.shape.identity_sources:
            return False
        self.asked_ids.add((mapping, sid))
        keys = [(src, sid) for src in self.shape.identity_sources[mapping] if (src, sid) not in self.members]
        if not keys:
            return False
        got = self.store.deps_of(self.tenant, keys)
        head = SEP.join(("i", mapping)) + SEP
        for key in keys:
            for dep, detail in got.get(key, ()):
                if dep.startswith(head):
                    self.ids.setdefault(mapping, {}).setdefault(sid, _parts(dep, 2)[2])
                elif dep == SEP.join(("f", mapping)) and detail is not None:
                    self.failed.setdefault(mapping, {}).setdefault(sid, detail)
        return True

    def _ask_lookup(self, lkey: str) -> bool:
        if lkey in self.asked_lookups:
            return False
        self.asked_lookups.add(lkey)
        res = lkey.split(SEP, 2)[1]  # the head of a long key is kept: the resource is readable
        kkey = "k" + lkey[1:]
        found = [rid for r, rid, _ in self.holders([kkey])[kkey] if r == res]
        changes = self.delta.get(res, {})
        ids = [rid for rid in found if rid not in changes]
        ids += [rid for rid, rec in changes.items() if rec is not None
                and (kkey, None) in match_rows(res, rec, self.shape.lookup_fields.get(res, ()))]
        self.load_bodies((res, rid) for rid in ids)
        pool = self.candidates.setdefault(res, {})
        for rid in ids:
            body = self.bodies.get((res, rid))
            if body is not None:
                pool[rid] = body
        return True

    def outside(self, dep: str) -> set[str]:
        return {rid for res, rid, _ in self.held.get(dep, ()) if (res, rid) not in self.members}

    def scope(self) -> Scope:
        referenced: dict[str, set[str]] = {}
        attempted: dict[str, set[str]] = {}
        for name, (kind, referrers) in self.shape.protected.items():
            refs = referenced.setdefault(name, set())
            for pname, rid in self.asked_refs:
                if pname == name and any(self._outside_holders(_short(SEP.join(("d", r, kind, rid))))
                                         for r in referrers):
                    refs.add(rid)
            tried = attempted.setdefault(name, set())
            for pname, sid in self.asked_attempts:
                if pname == name and self._outside_holders(rkey(name, sid)):
                    tried.add(sid)
        def given(table: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
            """Identities of records outside the closure (a member's own comes from mapping it)."""
            return {m: {sid: v for sid, v in got.items()
                        if not any((src, sid) in self.members for src in self.shape.identity_sources[m])}
                    for m, got in table.items()}

        return Scope(lookups={res: list(pool.values()) for res, pool in self.candidates.items()},
                     ids=given(self.ids), failed=given(self.failed), referenced=referenced, attempted=attempted)

    def _outside_holders(self, dep: str) -> bool:
        return any((res, rid) not in self.members for res, rid, _ in self.held.get(dep, ()))

    # -- after a round
    def grow(self, new: Mapping[Key, set[Row]]) -> bool:
        """Records whose output this round's differences can change join. True when any did."""
        touched: set[str] = set()
        join: set[Key] = set()
        protected = self.shape.protected
        for key in self.members:
            for dep, _ in self.old.get(key, set()) ^ new.get(key, set()):
                tag = dep[0]
                if tag in ("i", "f"):
                    touched.add(rkey(_parts(dep, 2 if tag == "i" else 1)[1], key[1]))
                elif tag == "d":
                    parts = _parts(dep, 3)
                    touched.add(_short(SEP.join(("o", parts[2], parts[3]))))
                elif tag == "o":
                    touched.add(dep)
                elif tag == "r":
                    parts = _parts(dep, 2)
                    if parts[1] in protected:
                        join.update((src, parts[2]) for src in self.shape.all_sources[parts[1]])
        join |= self.holder_keys(touched)
        return self.add(join)


def remap(store: DepsStore, tenant: str, mset: MappingSet, delta: Mapping[str, Mapping[str, Record | None]], *,
          run_date: dt.date | None, max_records: int | None = None, also: Iterable[Key] = (),
          seed: bool = True) -> Targeted:
    """Map the closure of ``delta`` (resource -> id -> record, None: deleted) and nothing else;
    ``also``: records to map in any case (those whose archive the last run held back).

    ``seed`` False (a chunk of a whole-tenant run, engine.sync.chunked): the closure starts from
    the changed records alone -- not from earlier failures, due dates or unsettled records (the
    run maps every record anyway), nor from the readers of a changed lookup record (the chunks
    see every lookup record from the start)."""
    day = run_date or dt.date.today()
    cl = _Closure(store, tenant, mset, delta)
    cl.add(also)
    if seed:
        cl.seed(day)
    else:
        cl.add((res, rid) for res, recs in delta.items() for rid in recs)
    reads: list[Dep] = []
    claims: set[tuple[str, str]] = set()
    rounds = 0
    while True:
        rounds += 1
        if rounds > MAX_ROUNDS:
            raise Fallback(f"the closure did not settle in {MAX_ROUNDS} rounds")
        cl.load_old()
        if max_records is not None and len(cl.members) > max_records:
            raise Fallback(f"the changes touch {len(cl.members)} records: mapping them all is cheaper")
        for stored in cl.old.values():
            for dep, _ in stored:
                if dep[0] == "r":
                    parts = _parts(dep, 2)
                    reads.append(("r", parts[1], parts[2]))
                elif dep[0] == "l":
                    cl._ask_lookup(dep)
                elif dep[0] == "o":
                    parts = _parts(dep, 2)
                    claims.add((parts[1], parts[2]))
        cl.supply(reads)
        cl.ask_claims(claims)
        cl.load_bodies(cl.members)
        records: dict[str, list[Record]] = {}
        for key in sorted(cl.members):
            body = cl.bodies.get(key)
            if body is not None:
                records.setdefault(key[0], []).append(body)
        scope = cl.scope()
        mapped = map_records(mset, records, run_date=run_date, scope=scope)
        new = {key: {encode(d) for d in scope.deps.get(key, ())} for key in cl.members}
        reads = [d for deps in scope.deps.values() for d in deps if d[0] in ("r", "l")]
        claims = {(str(d[1]), str(d[2])) for deps in scope.deps.values() for d in deps if d[0] == "o"}
        grew = cl.grow(new)
        asked = cl.supply(reads) | cl.ask_claims(claims)
        if not grew and not asked:
            break
    shape = cl.shape
    changed = {(res, rid) for res, recs in delta.items() for rid in recs}
    rows: dict[Key, list[Row]] = {}
    for key in cl.members | changed:
        body = cl.bodies.get(key) if key in cl.bodies else delta.get(key[0], {}).get(key[1])
        if body is None:
            continue
        got = sorted(new.get(key, set())) if key in cl.members else []
        if key[0] in shape.lookup_fields:
            got += match_rows(key[0], body, shape.lookup_fields[key[0]])
        if got:
            rows[key] = got
    until = {k: v for k, v in _until(scope).items() if k in cl.members}
    return Targeted(mapped, records, set(cl.members), rows, until, cl.members | changed, rounds,
                    {"closure": len(cl.members), "changed": len(changed), "rounds": rounds})
