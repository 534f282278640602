"""Which mapping set a tenant uses, assigning one, and checking every tenant's set.

Precedence, first that applies: ``--mappings`` given on the command line (a preview), the
tenant's own set (``tenant set NAME --mappings DIR``), ``$CASAVI_SYNC_MAPPINGS``, the mappings
shipped in the package. Every run records which set it used (path, origin, content hash) in its
report and in the history, so "which mappings produced this?" always has an answer.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import ConfigError, SpecError
from engine.ops.context import Context
from engine.paths import ENV_MAPPINGS, MAPPINGS_DIR, is_mapping_file
from engine.state.mapsets import MappingSetRef


def content_hash(path: Path) -> str:
    """sha256 of the mapping files (name and bytes, in name order) of a folder, or of one file."""
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file() and is_mapping_file(p))
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode("utf-8") + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()


def short(content: str) -> str:
    return content[:12]


@dataclass(frozen=True)
class Resolved:
    path: Path
    origin: str  # --mappings | tenant | CASAVI_SYNC_MAPPINGS | shipped

    def ref(self) -> MappingSetRef:
        return MappingSetRef(str(self.path), content_hash(self.path), self.origin)


def resolve(ctx: Context, store: Any | None) -> Resolved:
    """The mapping set ctx.tenant uses now (see the module's precedence)."""
    if ctx.mappings_path is not None:
        return Resolved(ctx.mappings_path, "--mappings")
    if store is not None and store.get_tenant(ctx.tenant) is not None:
        own = store.tenant_mappings(ctx.tenant)
        if own is not None:
            return Resolved(Path(own.path), "tenant")
    env = os.environ if ctx.env is None else ctx.env
    configured = env.get(ENV_MAPPINGS, "").strip()
    if configured:
        return Resolved(Path(configured), ENV_MAPPINGS)
    return Resolved(MAPPINGS_DIR, "shipped")


# Compiled sets by (folder, content hash): a long-running process (serve, a fleet worker) runs
# hundreds of tenants a day on the same few sets; validating and compiling one costs 0.2-0.7 s.
# A changed file changes the hash, so an edited set is compiled afresh. Compiled sets are
# immutable, so threads share them.
_COMPILED: dict[tuple[str, str], Any] = {}
_COMPILED_MAX = 16
_compiled_lock = threading.Lock()


def load(resolved: Resolved, tenant: str | None = None) -> Any:
    """Validate and compile a mapping set (SpecError with every diagnostic when invalid)."""
    from engine.compile import compile_mappings
    from engine.validate import load_mapping_set

    where = resolved.path
    owner = f" (the mapping set of tenant '{tenant}')" if tenant and resolved.origin == "tenant" else ""
    if not where.exists():
        raise ConfigError(f"mapping folder {where}{owner} does not exist")
    key = (str(where.resolve()), content_hash(where))
    with _compiled_lock:
        cached = _COMPILED.get(key)
    if cached is not None:
        return cached
    specs = load_mapping_set([where])
    if not specs:
        raise ConfigError(f"no mapping files (*.yaml) in {where}{owner}; point --mappings at the mappings folder")
    compiled = compile_mappings(specs)
    with _compiled_lock:
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.pop(next(iter(_COMPILED)))
        _COMPILED[key] = compiled
    return compiled


def assign(ctx: Context, folder: Path | None) -> MappingSetRef | None:
    """Give ctx.tenant its own mapping set (validated first: an invalid set is never assigned),
    or with None take it back to the deployment's mappings."""
    from engine.validate import validate_paths

    with ctx.store() as store:
        store.tenant(ctx.tenant)  # ConfigError with did-you-mean if unknown
        if folder is None:
            store.set_tenant_mappings(ctx.tenant, None)
            return None
        where = folder.expanduser().resolve()
        if not where.is_dir():
            raise ConfigError(f"{folder} is not a folder; a tenant's mappings are a folder of *.yaml files")
        result = validate_paths([where])
        if not result.files:
            raise ConfigError(f"no mapping files (*.yaml) in {folder}")
        if not result.valid:
            raise SpecError([d for d in result.diagnostics if d.severity == "error"])
        content = content_hash(where)
        store.set_tenant_mappings(ctx.tenant, str(where), content)
        assigned: MappingSetRef | None = store.tenant_mappings(ctx.tenant)
        return assigned


def check_all(ctx: Context) -> dict[str, MappingSetRef]:
    """Validate and compile the mapping set of every tenant (serve's start): tenant -> set used.

    Raises SpecError / ConfigError naming the first tenant whose set is invalid or missing.
    """
    used: dict[str, MappingSetRef] = {}
    with ctx.store() as store:
        tenants = [t.name for t in store.list_tenants()]
        resolved = {name: resolve(ctx.for_tenant(name), store) for name in tenants}
    compiled: dict[Path, MappingSetRef] = {}
    for name, where in resolved.items():
        if where.path not in compiled:
            try:
                load(where, name)
            except SpecError as exc:
                raise SpecError(exc.diagnostics, f"the mapping set of tenant '{name}'") from None
            compiled[where.path] = where.ref()
        ref = compiled[where.path]
        used[name] = MappingSetRef(ref.path, ref.content_hash, where.origin)
    return used


@dataclass(frozen=True)
class MappingChange:
    """The set ctx.tenant uses now, and the one its newest finished run used (None: none recorded)."""

    current: MappingSetRef
    previous: MappingSetRef | None

    @property
    def changed(self) -> bool:
        return self.previous is not None and self.previous.content_hash != self.current.content_hash


def since_last_run(ctx: Context) -> MappingChange:
    with ctx.store() as store:
        current = resolve(ctx, store).ref()
        previous = store.last_run_mappings(ctx.tenant) if store.get_tenant(ctx.tenant) else None
    return MappingChange(current, previous)


def rewrites(actions: Any) -> dict[str, int]:
    """kind -> how many records a plan updates (what a mapping change rewrites in casavi)."""
    counts: dict[str, int] = {}
    for action in actions:
        if action.action == "update":
            counts[action.kind] = counts.get(action.kind, 0) + 1
    return counts


def describe_change(change: MappingChange, updates: dict[str, int]) -> str | None:
    """One line for `plan` when the mapping set differs from the last run's; None when it does not."""
    if not change.changed or change.previous is None:
        return None
    what = ", ".join(f"{n} {kind}" for kind, n in sorted(updates.items())) or "no records"
    return (f"mappings changed since run {change.previous.run_id} (content {short(change.previous.content_hash)} "
            f"-> {short(change.current.content_hash)}, now {change.current.path}): the next run rewrites {what} "
            f"(this change and any SCALARA changes together)")
