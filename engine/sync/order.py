"""Property by property: which property each write belongs to, and when each property is complete.

A large run (the initial import above all) is written property by property so that the customer
sees complete properties from the first minute instead of all properties, then all contacts, ...
Every write action is put in the *group* of one property (the anchor):

- a property is its own group; a record that references others belongs to the property its
  references lead to (a unit to its property, a contract through its unit, a responsibility to
  its property); when they lead to several properties, to the last of them in the run's order;
- the smallest property goes first (shortest job first: at every moment as many properties as
  possible are complete; on the sandbox's tenants sizes vary from 4 to 400 records);
- a record that leads to no property (a contact) belongs to the first group whose records
  need it, so a contact shared by several properties is written once, before the first record
  that refers to it; one needed by nothing goes to a last group without a property.

References are followed through the plan's actions and, for records the run does not write (an
unchanged unit), through ``lookup`` (the mapped records). Groups never refer forward: every
action's group is at or after the groups of the actions it depends on, so a scheduler that
works on a bounded window of groups can never wait on a group it has not started.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.sync.plan import Action

ANCHOR = "properties"

Key = tuple[str, str]
# (kind, reference id) -> (what the record references, its payload), or None when not mapped
Lookup = Callable[[str, str], "tuple[tuple[Key, ...], Mapping[str, Any]] | None"]


@dataclass
class Group:
    index: int
    anchor: str | None  # the property's reference id; None for the last group of unattached records
    name: str | None
    actions: list[Action] = field(default_factory=list)


def _no_lookup(kind: str, ref_id: str) -> None:
    return None


def group_actions(actions: Sequence[Action], order: Sequence[str], lookup: Lookup | None = None) -> list[Group]:
    """Write actions grouped by property, groups in the order the run will finish them (smallest
    property first); within a group, actions in kind order (``order``), then plan order."""
    find = lookup or _no_lookup
    rank = {k: i for i, k in enumerate(order)}
    by_key: dict[Key, Action] = {(a.kind, a.ref_id): a for a in actions}
    in_order = sorted(actions, key=lambda a: rank.get(a.kind, len(rank)))  # stable: plan order within a kind
    position: dict[str, int] = {}
    names: dict[str, str | None] = {}

    def deps(key: Key) -> tuple[Key, ...]:
        a = by_key.get(key)
        if a is not None:
            return a.depends_on
        found = find(*key)
        return found[0] if found else ()

    anchors_memo: dict[Key, frozenset[str]] = {}
    single: dict[str, frozenset[str]] = {}  # one shared set per property (most records lead to one)
    none: frozenset[str] = frozenset()

    def anchors(key: Key, depth: int = 0) -> frozenset[str]:
        if key[0] == ANCHOR:
            got = single.get(key[1])
            if got is None:
                got = single[key[1]] = frozenset((key[1],))
            return got
        got = anchors_memo.get(key)
        if got is not None:
            return got
        found = none
        if depth < 16:  # references are acyclic (the validator checks); this only bounds a bad lookup
            for d in deps(key):
                sub = anchors(d, depth + 1)
                if sub and sub is not found:
                    found = found | sub if found else sub
        anchors_memo[key] = found
        return found

    def name_of(ref_id: str) -> str | None:
        a = by_key.get((ANCHOR, ref_id))
        payload = a.payload if a is not None else None
        if payload is None:
            found = find(ANCHOR, ref_id)
            payload = dict(found[1]) if found else None
        value = (payload or {}).get("name")
        return str(value) if value is not None else None

    found_of: dict[Key, frozenset[str]] = {}
    for a in in_order:
        found = found_of[(a.kind, a.ref_id)] = anchors((a.kind, a.ref_id))
        for ref in (found if len(found) < 2 else sorted(found)):
            if ref not in position:
                position[ref] = len(position)
                names[ref] = name_of(ref)
    # Smallest property first (its own records; shared contacts left out): at every moment of the
    # run as many properties as possible are complete. Ties keep the plan's order.
    size = dict.fromkeys(position, 0)
    for found in found_of.values():
        if len(found) == 1:
            for ref in found:
                size[ref] += 1
        elif found:
            size[max(found, key=position.__getitem__)] += 1
    position = {ref: i for i, ref in enumerate(sorted(position, key=lambda r: (size[r], position[r])))}
    group_of: dict[Key, int] = {}
    for key, found in found_of.items():
        if len(found) == 1:
            for ref in found:
                group_of[key] = position[ref]
        elif found:
            group_of[key] = max(position[r] for r in found)
    last = len(position)
    # Unattached records go with the first group that needs them: dependents first (reverse order).
    needed_by: dict[Key, int] = {}
    for a in reversed(in_order):
        key = (a.kind, a.ref_id)
        if key not in group_of:
            group_of[key] = needed_by.get(key, last)
        for d in a.depends_on:
            if d in by_key:
                needed_by[d] = min(needed_by.get(d, last), group_of[key])
    # Never refer forward: an action is at or after every action it depends on.
    for a in in_order:
        key = (a.kind, a.ref_id)
        at = group_of[key]
        for d in a.depends_on:
            if group_of.get(d, -1) > at:
                at = group_of[key] = group_of[d]

    groups = [Group(i, ref, names[ref]) for ref, i in sorted(position.items(), key=lambda kv: kv[1])]
    groups.append(Group(last, None, None))
    for a in in_order:
        groups[group_of[(a.kind, a.ref_id)]].actions.append(a)
    return [g for g in groups if g.actions]


@dataclass
class PropertyDone:
    anchor: str
    name: str | None
    at: dt.datetime
    records: int
    failed: int

    def as_dict(self, started: dt.datetime | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"id": self.anchor, "name": self.name,
                             "completedAt": self.at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                             "records": self.records, "failed": self.failed}
        if started is not None:
            d["afterS"] = round((self.at - started).total_seconds(), 3)
        return d


class Completion:
    """Counts settled records per group; knows which properties are complete and which is current."""

    def __init__(self, groups: Sequence[Group]) -> None:
        self.groups = list(groups)
        self.group_of: dict[Key, int] = {}
        self.remaining: list[int] = []
        self.failed: list[int] = []
        for pos, g in enumerate(self.groups):
            for a in g.actions:
                self.group_of[(a.kind, a.ref_id)] = pos
            self.remaining.append(len(g.actions))
            self.failed.append(0)
        self.properties_total = sum(1 for g in self.groups if g.anchor is not None)
        self.done: list[PropertyDone] = []
        self.records_done = 0
        self.records_total = sum(self.remaining)
        self._first_open = 0

    def settled(self, action: Action, ok: bool) -> bool:
        """Count one settled (or skipped) action; True when its group became complete."""
        pos = self.group_of.get((action.kind, action.ref_id))
        if pos is None:
            return False
        self.records_done += 1
        self.remaining[pos] -= 1
        if not ok:
            self.failed[pos] += 1
        if self.remaining[pos]:
            return False
        g = self.groups[pos]
        if g.anchor is not None:
            self.done.append(PropertyDone(g.anchor, g.name, dt.datetime.now(dt.UTC), len(g.actions), self.failed[pos]))
        while self._first_open < len(self.groups) and not self.remaining[self._first_open]:
            self._first_open += 1
        return True

    def is_complete(self, pos: int) -> bool:
        return not self.remaining[pos]

    @property
    def first_open(self) -> int:
        """The first group not complete yet (len(groups) when all are)."""
        return self._first_open

    def current(self) -> Group | None:
        pos = self._first_open
        return self.groups[pos] if pos < len(self.groups) else None

    def detail(self) -> dict[str, Any]:
        """What progress shows besides record counts: properties complete, and the current one."""
        cur = self.current()
        return {"properties": {
            "done": len(self.done), "total": self.properties_total,
            "current": {"id": cur.anchor, "name": cur.name} if cur is not None and cur.anchor else None,
        }, "records": {"done": self.records_done, "total": self.records_total}}
