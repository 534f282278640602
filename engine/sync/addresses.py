"""Address moves: a property that drops an address while its units move to a new one.

casavi requires a unit's ``address`` to be one of its property's ``addresses`` (API.md section 2).
When a building's street or house number is corrected in SCALARA, the property's new payload
replaces the old address and its units' payloads name the new one. Written as one property PUT
and then the units, a casavi that keeps an address while units still use it refuses the property
(and the units, whose new address it then lacks), run after run. So such a property is written in
two steps, each leaving casavi consistent:

1. the property with its new addresses *and* the dropped ones (the units' old and new addresses
   are both valid), then its units (the usual order);
2. once every one of those units is written, the property with its final addresses.

If a unit fails, step 2 waits: the property keeps both addresses (and the state records that
payload), so the next run tries again. A crash between the steps leaves the same state.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.sync.plan import RESTORE, UPDATE, Action, payload_hash

PROPERTIES, UNITS = "properties", "units"


@dataclass(frozen=True)
class FinalAddresses:
    """Step 2 for one property: its action as planned, after the units named in ``units``."""

    action: Action
    units: tuple[tuple[str, str], ...]


def _streets(payload: dict[str, Any] | None) -> list[str]:
    addresses = (payload or {}).get("addresses")
    if not isinstance(addresses, list):
        return []
    return [a["street"] for a in addresses if isinstance(a, dict) and isinstance(a.get("street"), str)]


def split_address_moves(writes: Sequence[Action]) -> tuple[list[Action], list[FinalAddresses]]:
    """The writes with step 1 in place of each such property, and the step-2 writes to do after."""
    moving: dict[str, list[tuple[str, tuple[str, str]]]] = {}  # property -> (old address, unit)
    for a in writes:
        prop, old = (a.payload or {}).get("propertyId"), (a.before or {}).get("address")
        if a.kind == UNITS and isinstance(prop, str) and isinstance(old, str) and old != (a.payload or {}).get("address"):
            moving.setdefault(prop, []).append((old, (a.kind, a.ref_id)))
    out: list[Action] = []
    finals: list[FinalAddresses] = []
    for a in writes:
        if a.kind != PROPERTIES or a.ref_id not in moving or a.action not in (UPDATE, RESTORE) or a.payload is None:
            out.append(a)
            continue
        new = _streets(a.payload)
        dropped = [s for s in _streets(a.before) if s not in new]
        units = tuple(unit for old, unit in moving[a.ref_id] if old in dropped)
        if not units:
            out.append(a)
            continue
        both = {**a.payload, "addresses": [*(a.payload.get("addresses") or []), *({"street": s} for s in dropped)]}
        step1 = dataclasses.replace(a, payload=both, payload_hash=payload_hash(both),
                                    update_after_restore=True if a.action == RESTORE else a.update_after_restore,
                                    reason=f"{a.reason}; keeps {', '.join(dropped)} until its units moved")
        out.append(step1)
        final = dataclasses.replace(a, action=UPDATE, before=both, update_after_restore=False)
        finals.append(FinalAddresses(final, units))
    return out, finals
