"""One record's story, live: the trace of ``casavi-sync explain`` against the tenant's SCALARA data.

Reads every SCALARA resource the mappings use (plus the one asked about), then explains how the
record becomes casavi records and what the next run does with them, from the state store's view.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from engine.ops.context import Context

if TYPE_CHECKING:
    from engine.sync.apply import Progress


def explain_live(ctx: Context, resource: str, scalara_id: str, *, run_date: dt.date | None = None,
                 progress: Progress | None = None, mset: Any = None) -> dict[str, Any]:
    """The explain document (see engine.explain); RecordError when there is no such record."""
    from engine.explain import explain_record
    from engine.sync.runner import extract, source_resources

    mset = mset or ctx.mapping_set()
    with ctx.store() as store:
        scalara, casavi = ctx.clients(store)
        with scalara, casavi:
            wanted = source_resources(mset)
            if resource not in wanted:
                wanted.append(resource)
            records, _ = extract(scalara, wanted, progress)
        by_source: dict[tuple[str, str], list[Any]] | None = None

        def state_rows(res: str, sid: str) -> list[Any]:
            nonlocal by_source
            if by_source is None:
                by_source = {}
                for row in store.records(ctx.tenant).values():
                    if row.source_resource and row.source_id:
                        by_source.setdefault((row.source_resource, row.source_id), []).append(row)
            return by_source.get((res, sid), [])

        doc: dict[str, Any] = explain_record(
            mset, records, resource, scalara_id, run_date=run_date,
            state_of=lambda kind, ref_id: store.get_record(ctx.tenant, kind, ref_id), state_rows=state_rows)
    return doc
