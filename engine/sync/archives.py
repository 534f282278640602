"""Which records no longer produced from SCALARA are archived, which are held back, and why.

The rule every run keeps: **afterwards, no active casavi record refers to an archived or missing
one** (a contract to its unit and contact, a unit to its property, a responsibility to its property
and contact: the ``references`` of the casavi catalog).

A record is an archive *candidate* when the state knows it, it is not archived, and this run did not
produce it. Three things make a candidate stay (be *held*):

* its kind is held as a whole: the mass-archive guard (more than ``max_share`` of the kind,
  ``--allow-archive`` overrides it), SCALARA returned no records of a kind it is made from, or a read
  it is made from was incomplete (records without a usable id: no override, the picture is wrong);
* it is tied to a held record: a held record's references are held (a held contract keeps its unit
  and contact), and so are the candidates that refer to a held record (a held property keeps its
  units, and they their contracts), so a removal is held or carried out as a whole;
* a record this run still produces refers to it.

A record whose SCALARA source failed to map is left alone, unless it refers to a record that is
archived now: then it is archived too (a contract never stays active on an archived unit). Each
archive waits for the records that referred to the archived one (their archive, or the update that
points them elsewhere): when one of those fails, the archive is skipped for this run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.sync.plan import Action, Known, Plan

Key = tuple[str, str]  # (kind, reference id)


@cache
def reference_fields() -> Mapping[str, tuple[tuple[str, str], ...]]:
    """kind -> ((payload field, referenced kind), ...), from the casavi catalog."""
    from engine.catalog import casavi_kinds

    return {kind: tuple((name, spec["references"]) for name, spec in model["fields"].items()
                        if spec.get("references"))
            for kind, model in casavi_kinds().items()}


def references(kind: str, payload: Mapping[str, Any] | None) -> list[Key]:
    """The records ``payload`` (of ``kind``) refers to."""
    if not payload:
        return []
    out: list[Key] = []
    for name, target in reference_fields().get(kind, ()):
        value = payload.get(name)
        if isinstance(value, str) and value:
            out.append((target, value))
    return out


@dataclass(frozen=True)
class KindHold:
    """A whole kind whose candidates are held, and whether ``--allow-archive`` lifts it."""

    reason: str
    overridable: bool = True


def _label(key: Key) -> str:
    return f"{key[0]} {key[1]}"


def _some(keys: Sequence[Key], limit: int = 3) -> str:
    shown = ", ".join(_label(k) for k in keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def plan_archives(
    plan: Plan,
    known: Mapping[Key, Known],
    seen: set[Key],
    errored_sources: set[tuple[str, str]],
    current: Mapping[Key, dict[str, Any]] | None,
    *,
    referenced: Mapping[Key, Key],
    kind_holds: Mapping[str, KindHold],
    max_share: float,
    floor: int,
    allow_archive: bool,
    existing: Mapping[str, int] | None = None,
) -> None:
    """Add archive actions, held archives and guard trips to ``plan`` (see the module docstring).

    ``referenced`` maps a record to one record produced this run that refers to it.
    """
    from engine.sync.plan import ARCHIVE, Action, GuardTrip

    candidates: dict[Key, Action] = {}
    counted: dict[str, int] = {}
    kept: dict[Key, Known] = {}   # not produced, but their SCALARA record failed to map
    for key, state in known.items():
        if state.status == "archived":
            continue
        if state.status == "failed" and state.previous_status is None and state.payload_hash is None:
            continue  # never in casavi (refused, or skipped after what it needs was refused): nothing to archive
        counted[key[0]] = counted.get(key[0], 0) + 1
        if key in seen:
            continue
        if current is not None and key not in current:
            continue  # already gone from casavi
        if (state.source_resource, state.source_id) in errored_sources:
            kept[key] = state
            continue
        candidates[key] = Action(key[0], key[1], ARCHIVE, None, None, state.source_resource, state.source_id,
                                 before=state.payload, reason="no longer produced from SCALARA")
    if not candidates:
        return
    existing = dict(existing) if existing is not None else counted

    # a record left alone because its source failed to map is archived with what it refers to
    refs: dict[Key, list[Key]] = {key: references(key[0], a.before) for key, a in candidates.items()}
    kept_refs = {key: references(key[0], state.payload) for key, state in kept.items()}
    changed = True
    while changed and kept_refs:
        changed = False
        for key, targets in list(kept_refs.items()):
            hit = next((t for t in targets if t in candidates), None)
            if hit is None:
                continue
            state = kept[key]
            del kept_refs[key]
            candidates[key] = Action(key[0], key[1], ARCHIVE, None, None, state.source_resource, state.source_id,
                                     before=state.payload, reason=f"refers to {_label(hit)}, which is archived")
            refs[key] = targets
            changed = True

    # kinds held as a whole
    per_kind: dict[str, list[Key]] = {}
    for key in candidates:
        per_kind.setdefault(key[0], []).append(key)
    whole: dict[str, KindHold] = {}
    for kind, keys in per_kind.items():
        total = existing.get(kind, 0)
        hold = kind_holds.get(kind)
        if hold is None and total and len(keys) > floor and len(keys) / total > max_share:
            hold = KindHold(f"would archive {len(keys)} of {total} ({len(keys) / total:.0%}), "
                            f"more than the allowed {max_share:.0%}")
        if hold is not None and (not allow_archive or not hold.overridable):
            whole[kind] = hold

    held: dict[Key, str] = {}
    for key in candidates:
        if key[0] in whole:
            held[key] = whole[key[0]].reason
        elif key in referenced:
            held[key] = f"{_label(referenced[key])}, produced this run, still refers to it"

    # holds spread along references, both ways, among the candidates
    dependents: dict[Key, list[Key]] = {}
    for key, targets in refs.items():
        for t in targets:
            dependents.setdefault(t, []).append(key)
    tied: dict[Key, Key] = {}                # held only because of this held record
    queue = list(held)
    while queue:
        x = queue.pop()
        for y in (*refs.get(x, ()), *dependents.get(x, ())):
            if y in candidates and y not in held:
                held[y] = f"tied to {_label(x)}, which is held"
                tied[y] = x
                queue.append(y)

    # guard trips: one per kind, saying why
    for kind in plan.kinds:
        keys = per_kind.get(kind, [])
        if not keys:
            continue
        if kind in whole:
            plan.guard_trips.append(GuardTrip(kind, len(keys), existing.get(kind, 0), whole[kind].reason,
                                              whole[kind].overridable))
            continue
        because = [tied[k] for k in keys if k in tied]
        pinned = [k for k in keys if k in held and k not in tied]
        if because or pinned:
            why = []
            if because:
                why.append(f"tied to held records ({_some(sorted(set(because)))})")
            if pinned:
                why.append(f"still referred to by records produced this run ({_some([referenced[k] for k in pinned])})")
            reason = (f"{len(because) + len(pinned)} held: {' and '.join(why)}; "
                      "no active record may refer to an archived one")
            lifts = not pinned and all(h.overridable for h in whole.values())
            plan.guard_trips.append(GuardTrip(kind, len(because) + len(pinned), existing.get(kind, 0), reason,
                                              lifts))

    # archives wait for the records that referred to them: their archive, or the update re-pointing them
    repointed: dict[Key, list[Key]] = {}
    for a in plan.actions:
        if a.before:
            now = set(references(a.kind, a.payload))
            for t in references(a.kind, a.before):
                if t not in now:
                    repointed.setdefault(t, []).append((a.kind, a.ref_id))
    for key, action in candidates.items():
        if key in held:
            action.reason = f"held: {held[key]}"
            plan.held_archives.append(action)
            continue
        waits = [d for d in dependents.get(key, ()) if d not in held] + repointed.get(key, [])
        action.depends_on = tuple(dict.fromkeys(waits))
        plan.actions.append(action)


def affected_kinds(mset: Any, resources: Iterable[str]) -> set[str]:
    """casavi kinds whose records are made from any of ``resources``: read by a rule (source or
    lookup), or through a reference to, or ``only_if_referenced_by``, a mapping so made."""
    bad = set(resources)
    hit: set[str] = set()          # mapping names
    plans = mset.mappings
    for name, plan in plans.items():
        if any(rule.source in bad or any(lk.resource in bad for lk in rule.lookups) for rule in plan.rules):
            hit.add(name)
    changed = True
    while changed:
        changed = False
        for name, plan in plans.items():
            if name in hit:
                continue
            if set(plan.references()) & hit or set(plan.only_if_referenced_by) & hit:
                hit.add(name)
                changed = True
    return {plans[name].target for name in hit}
