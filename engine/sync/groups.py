"""Property groups of a chunked run: which SCALARA records belong to which property, from the
dependency rows, so that the writes go property by property (issue 14) in bounded memory.

Why: a chunked run maps resource by resource (engine.sync.chunked); writing in that order would
finish no property before the last resource. Once every record is mapped, the rows say who read
whose identity (``r`` rows): a unit read its property's, a contract its unit's and its contact's.
Walking those rows backwards from each record of the root mapping (the one whose kind every other
kind refers to: properties) gives that property's records; the protected records they refer to
(contacts, ``only_if_referenced_by``) go with them. The second pass then plans and applies group
after group, smallest properties first, as a whole run orders them.

A record reached from no property (a unit whose property is missing, a mapping that refers to no
property) ends in the leftovers, taken last in chunks. Memory: the sizes of the properties and a
set of 64-bit hashes of the records placed (about 60 bytes per record).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

from engine.compile import MappingSet
from engine.sync.targeted import SEP, Shape, rkey

Key = tuple[str, str]


class GroupStore(Protocol):
    def dep_holders(self, tenant: str, deps: Iterable[str]) -> dict[str, list[tuple[str, str, str | None]]]: ...
    def deps_of(self, tenant: str, keys: Iterable[Key]) -> dict[Key, list[tuple[str, str | None]]]: ...
    def source_page(self, tenant: str, resource: str, after: str | None, limit: int) -> list[tuple[str, Any]]: ...
    def source_records_by_id(self, tenant: str, resource: str, ids: Iterable[str]) -> dict[str, Any]: ...


def root_mapping(mset: MappingSet, first_kind: str) -> str | None:
    """The mapping of the kind every other refers to (properties), when exactly one makes it and
    it has records of its own (a rule without ``for_each``)."""
    names = [n for n, p in mset.mappings.items() if p.target == first_kind]
    if len(names) != 1 or not any(not r.for_each for r in mset.mappings[names[0]].rules):
        return None
    return names[0]


class Groups:
    """Groups of records, a property (or several small ones) at a time, about ``budget`` records each."""

    def __init__(self, store: GroupStore, tenant: str, mset: MappingSet, root: str, budget: int) -> None:
        self.store, self.tenant, self.mset, self.root = store, tenant, mset, root
        self.budget = max(1, budget)
        self.shape = Shape.of(mset)
        self.readers: dict[str, list[str]] = {}  # resource -> mappings whose identity it gives
        for name, sources in self.shape.identity_sources.items():
            for res in sources:
                self.readers.setdefault(res, []).append(name)
        self.placed: set[int] = set()
        # sources of protected mappings: a contact goes with every property that refers to it
        self.shared = {src for name in self.shape.protected for src in self.shape.all_sources[name]}

    def _roots(self) -> Iterator[list[Key]]:
        for res in self.shape.identity_sources[self.root]:
            after: str | None = None
            while page := self.store.source_page(self.tenant, res, after, 50):  # ~5,000 records walked at once
                yield [(res, rid) for rid, _ in page]
                after = page[-1][0]

    def members(self, roots: list[Key], *, protected: bool = True) -> dict[Key, list[Key]]:
        """root -> its records (the root first), walking the ``r`` rows backwards; then (unless
        ``protected`` is False) the protected records they refer to. A record reached from two
        roots goes with the first."""
        owner: dict[Key, Key] = {r: r for r in roots}
        out: dict[Key, list[Key]] = {r: [r] for r in roots}
        frontier = list(roots)
        while frontier:
            asked: dict[str, Key] = {}
            for key in frontier:
                for name in self.readers.get(key[0], ()):
                    asked[rkey(name, key[1])] = key
            got = self.store.dep_holders(self.tenant, list(asked))
            frontier = []
            for dep, holders in got.items():
                parent = asked[dep]
                for res, rid, _ in holders:
                    k = (res, rid)
                    if k not in owner and k[0] in self.shape.rule_sources:
                        owner[k] = owner[parent]
                        out[owner[parent]].append(k)
                        frontier.append(k)
        if protected:
            for key, refs in self._protected(list(owner)).items():
                out[owner[key]].extend(refs)
        return out

    def _protected(self, keys: list[Key]) -> dict[Key, list[Key]]:
        """The protected records (contacts) each of ``keys`` refers to: they go out with it."""
        out: dict[Key, list[Key]] = {}
        if not self.shape.protected:
            return out
        heads = {SEP.join(("r", name)) + SEP: name for name in self.shape.protected}
        for key, rows in self.store.deps_of(self.tenant, keys).items():
            for dep, _ in rows:
                for head, name in heads.items():
                    if dep.startswith(head):
                        sid = dep[len(head):]
                        out.setdefault(key, []).extend((src, sid) for src in self.shape.all_sources[name])
        return out

    def groups(self) -> Iterator[dict[str, list[str]]]:
        """resource -> ids per group: properties smallest first (ties by id), then the leftovers."""
        sizes: list[tuple[int, Key]] = []
        for roots in self._roots():
            sizes.extend((len(got), root) for root, got in self.members(roots, protected=False).items())
        sizes.sort()
        batch: list[Key] = []
        total = 0
        for n, root in sizes:
            batch.append(root)
            total += n
            if total >= self.budget:
                yield self._group(batch)
                batch, total = [], 0
        if batch:
            yield self._group(batch)

    def _group(self, roots: list[Key]) -> dict[str, list[str]]:
        keys = [key for got in self.members(roots).values() for key in got]
        waiting = self._waiting(keys)
        out: dict[str, list[str]] = {}
        for res, rid in keys:
            h = hash((res, rid))
            if (h in self.placed and res not in self.shared) or (res, rid) in waiting:
                continue
            self.placed.add(h)
            out.setdefault(res, []).append(rid)
        return {res: list(dict.fromkeys(ids)) for res, ids in out.items()}

    def _waiting(self, keys: list[Key]) -> set[Key]:
        """Records of ``keys`` that refer (``r`` rows) to a record of the snapshot neither placed
        before nor in this group (a rental of this property over a unit of a later one): they
        wait for the group that holds it (its walk reaches them again), or for the leftovers.
        Written now, they would go out before what they refer to, which casavi refuses. A
        reference to a record SCALARA does not have waits for nothing."""
        shared = self.shared
        here = {hash(k) for k in keys}
        needs: dict[Key, list[list[Key]]] = {}
        heads = {SEP.join(("r", name)) + SEP: name for name in self.shape.identity_sources
                 if name not in self.shape.protected}
        for key, rows in self.store.deps_of(self.tenant, [k for k in keys if k[0] not in shared]).items():
            for dep, _ in rows:
                for head, name in heads.items():
                    if dep.startswith(head):
                        sid = dep[len(head):]
                        needs.setdefault(key, []).append([(src, sid) for src in self.shape.identity_sources[name]])
        elsewhere: dict[str, set[str]] = {}
        for alts in needs.values():
            for res, rid in (t for alt in alts for t in alt):
                if hash((res, rid)) not in self.placed and hash((res, rid)) not in here:
                    elsewhere.setdefault(res, set()).add(rid)
        live = {(res, rid) for res, ids in elsewhere.items()
                for rid, rec in self.store.source_records_by_id(self.tenant, res, ids).items()
                if not (isinstance(rec, dict) and rec.get("deleted") is True)}
        waiting: set[Key] = set()
        changed = True
        while changed:  # a record waits with what it refers to
            changed = False
            for key, alts in needs.items():
                if key in waiting or hash(key) in self.placed:
                    continue
                for alt in alts:
                    if not any(hash(t) in self.placed or hash(t) in here for t in alt) and any(
                            t in live or t in waiting for t in alt):
                        waiting.add(key)
                        here.discard(hash(key))
                        changed = True
                        break
        return waiting

    def leftovers(self, resources: Iterable[str]) -> Iterator[dict[str, list[str]]]:
        """The records no group took, ``budget`` at a time, resource by resource, each with the
        protected records it refers to (a contract's contacts go out before it)."""
        for res in resources:
            after: str | None = None
            ids: list[str] = []
            while page := self.store.source_page(self.tenant, res, after, 2000):
                after = page[-1][0]
                ids.extend(rid for rid, _ in page if hash((res, rid)) not in self.placed)
                while len(ids) >= self.budget:
                    yield self._with_protected(res, ids[:self.budget])
                    ids = ids[self.budget:]
            if ids:
                yield self._with_protected(res, ids)

    def _with_protected(self, res: str, ids: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {res: ids}
        for refs in self._protected([(res, rid) for rid in ids]).values():
            for src, sid in refs:
                out.setdefault(src, []).append(sid)
        return {r: list(dict.fromkeys(got)) for r, got in out.items()}
