"""The connectors' configuration: every API detail that might differ in reality, in one file.

Neither SCALARA's export API nor casavi's write API is fully published, so paths, parameter and
envelope names, header names, retry and rate limits live in ``default.yaml`` (beside this module)
instead of in code. An operator adapts them without touching Python::

    # /etc/casavi-sync/connectors.yaml  (CASAVI_SYNC_CONNECTOR_CONFIG points here)
    scalara:
      pagination: {page_size: 200}
    casavi:
      rate_limit: {rate_per_s: 5, burst: 10}

Order of precedence: ``default.yaml`` < operator file (deep-merged: mappings merge key by key,
lists and scalars replace) < env ``CASAVI_SYNC_SCALARA_URL`` / ``CASAVI_SYNC_CASAVI_URL``. The
merged result is validated against ``schemas/connector.schema.json`` plus a few semantic checks
(path-template placeholders, the reference-id regex); every problem becomes one line
``file:line:col: $.json.path: message`` of a single ``ConfigError``, never a traceback.
"""

from __future__ import annotations

import copy
import json
import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jsonschema
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from engine.errors import ConfigError
from engine.loader import to_plain
from engine.paths import CONNECTOR_DEFAULTS, CONNECTOR_SCHEMA

DEFAULT_CONFIG = CONNECTOR_DEFAULTS
ENV_CONFIG_FILE = "CASAVI_SYNC_CONNECTOR_CONFIG"
ENV_SCALARA_URL = "CASAVI_SYNC_SCALARA_URL"
ENV_CASAVI_URL = "CASAVI_SYNC_CASAVI_URL"

# Placeholders each kind of path template may use (checked at load time, not at first request).
_SCALARA_RECORD_FIELDS = frozenset({"path", "id"})
_CASAVI_ENDPOINT_FIELDS = {
    "get": frozenset({"kind_path", "id"}),
    "upsert": frozenset({"kind_path", "id"}),
    "archive": frozenset({"kind_path", "id"}),
    "restore": frozenset({"kind_path", "id"}),
    "delete": frozenset({"kind_path", "id"}),
    "responsibility_put": frozenset({"property_id", "contact_id"}),
    "responsibility_delete": frozenset({"property_id", "contact_id"}),
}


@dataclass(frozen=True)
class Timeouts:
    connect_s: float
    read_s: float
    write_s: float
    pool_s: float


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    base_delay_s: float
    max_delay_s: float
    retry_after_cap_s: float
    jitter: str
    retry_statuses: frozenset[int]


@dataclass(frozen=True)
class RateLimit:
    rate_per_s: float
    burst: int


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str

    def render(self, **values: str) -> str:
        return self.path.format(**values)


@dataclass(frozen=True)
class ScalaraConfig:
    base_url: str
    auth_header: str
    auth_scheme: str
    me_path: str | None                 # optional account endpoint; None = not configured
    resources: Mapping[str, str]
    record_path: str
    page_size_param: str
    page_size: int
    cursor_param: str
    items_key: str
    next_cursor_key: str
    max_pages: int
    max_idle_pages: int
    max_empty_pages: int
    updated_since_param: str
    include_deleted_param: str
    true_value: str
    tombstone_flag_field: str
    tombstone_deleted_at_field: str
    error_code_key: str
    error_message_key: str
    rejected_token_code: str
    timeouts: Timeouts
    retry: RetryPolicy
    rate_limit: RateLimit
    incremental: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))  # IncrementalPolicy's fields


@dataclass(frozen=True)
class CasaviConfig:
    base_url: str
    auth_method: str
    auth_path: str
    key_field: str
    secret_field: str
    token_field: str
    expires_field: str
    token_header: str
    refresh_before_s: float
    default_lifetime_s: float
    kinds: Mapping[str, str]
    items_key: str
    next_link: tuple[str, ...]
    page_param: str
    first_page: int
    max_pages: int
    max_idle_pages: int
    include_archived_param: str
    modified_after_param: str
    true_value: str
    endpoints: Mapping[str, Endpoint]
    created_status: int
    rejected_statuses: frozenset[int]
    error_message_key: str
    errors_key: str
    error_field_key: str
    error_code_key: str
    top_error_code_keys: tuple[str, ...]
    reference_id_pattern: re.Pattern[str]
    write_concurrency: int
    timeouts: Timeouts
    retry: RetryPolicy
    rate_limit: RateLimit


@dataclass(frozen=True)
class ConnectorConfig:
    scalara: ScalaraConfig
    casavi: CasaviConfig
    sources: tuple[str, ...]          # where the values came from, lowest precedence first


# ---------------------------------------------------------------------------------------------
# loading


def load_connector_config(
    path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> ConnectorConfig:
    """default.yaml, deep-merged with the operator file (argument or env), then env URL overrides.

    The result is immutable and remembered per (file texts, URL overrides): a run asks for it more
    than once, and parsing YAML is most of a CLI start.
    """
    environ = os.environ if env is None else env
    operator_file = path if path is not None else (environ.get(ENV_CONFIG_FILE) or None)
    texts = tuple(_text_or_none(f) for f in (DEFAULT_CONFIG, operator_file))
    key = (str(operator_file), texts, environ.get(ENV_SCALARA_URL), environ.get(ENV_CASAVI_URL))
    cached = _LOADED.get(key)
    if cached is not None:
        return cached
    config = _load(operator_file, environ)
    if len(_LOADED) > 32:
        _LOADED.clear()
    _LOADED[key] = config
    return config


_LOADED: dict[Any, ConnectorConfig] = {}


def _text_or_none(file: str | Path | None) -> str | None:
    if file is None:
        return None
    try:
        return Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None  # _read_layer reports it


def _load(operator_file: str | Path | None, environ: Mapping[str, str]) -> ConnectorConfig:
    layers: list[_Layer] = [_read_layer(DEFAULT_CONFIG)]
    if operator_file is not None:
        layers.append(_read_layer(Path(operator_file)))
    for var, section in ((ENV_SCALARA_URL, "scalara"), (ENV_CASAVI_URL, "casavi")):
        value = environ.get(var)
        if value:
            layers.append(_Layer(f"env {var}", {section: {"base_url": value.strip()}}, None))
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _deep_merge(merged, layer.data)
    problems = _schema_problems(merged) or _semantic_problems(merged)
    if problems:
        lines = [_locate(layers, where) + f": {_json_path(where)}: {message}" for where, message in problems]
        raise ConfigError("invalid connector configuration:\n  " + "\n  ".join(lines))
    return _build(merged, tuple(layer.name for layer in layers))


@dataclass
class _Layer:
    name: str
    data: dict[str, Any]
    tree: Any                         # ruamel round-trip tree (knows lines), None for env layers


def _read_layer(file: Path) -> _Layer:
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"connector config file not found: {file}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read connector config file {file}: {exc.strerror}") from None
    try:
        tree = YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(file)
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"{where}: {problem}") from None
    if tree is None:
        tree = {}
    if not isinstance(tree, Mapping):
        raise ConfigError(f"{file}:1:1: $: the connector config must be a mapping (scalara:, casavi:)")
    return _Layer(str(file), to_plain(tree), tree)


def _deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = _deep_merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


# ---------------------------------------------------------------------------------------------
# validation

_Where = tuple[str | int, ...]


def _schema_problems(data: dict[str, Any]) -> list[tuple[_Where, str]]:
    try:
        schema = json.loads(CONNECTOR_SCHEMA.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {CONNECTOR_SCHEMA}: {exc}") from None
    validator = jsonschema.Draft202012Validator(schema)
    found = []
    for error in validator.iter_errors(data):
        where = tuple(error.absolute_path)
        message = error.message
        if error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            message += f" (allowed: {', '.join(allowed)})" if allowed else ""
        found.append((where, message))
    return sorted(found, key=lambda item: [str(part) for part in item[0]])


def _semantic_problems(data: dict[str, Any]) -> list[tuple[_Where, str]]:
    found: list[tuple[_Where, str]] = []
    record_path = data["scalara"]["record_path"]
    found += _template_problems(("scalara", "record_path"), record_path, _SCALARA_RECORD_FIELDS)
    for name, allowed in _CASAVI_ENDPOINT_FIELDS.items():
        template = data["casavi"]["endpoints"][name]["path"]
        found += _template_problems(("casavi", "endpoints", name, "path"), template, allowed)
    try:
        re.compile(data["casavi"]["reference_id_pattern"])
    except re.error as exc:
        found.append((("casavi", "reference_id_pattern"), f"not a valid regular expression: {exc}"))
    return found


def _template_problems(where: _Where, template: str, allowed: frozenset[str]) -> list[tuple[_Where, str]]:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        return [(where, f"bad path template {template!r}: {exc}")]
    unknown = sorted(names - allowed)
    missing = sorted(allowed - names)
    if unknown:
        return [(where, f"unknown placeholder {{{unknown[0]}}} in {template!r}; allowed: "
                 + ", ".join("{" + n + "}" for n in sorted(allowed)))]
    if missing:
        return [(where, f"path template {template!r} lacks {{{missing[0]}}}")]
    return []


def _json_path(where: _Where) -> str:
    text = "$"
    for part in where:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _locate(layers: list[_Layer], where: _Where) -> str:
    """The layer that supplied the value at ``where`` (deepest match, then highest precedence)."""
    best, best_depth = layers[0], -1
    for layer in layers:
        depth = _match_depth(layer.data, where)
        if depth >= best_depth:
            best, best_depth = layer, depth
    if best.tree is None:
        return best.name
    line, col = _position(best.tree, where[:best_depth])
    return f"{best.name}:{line}:{col}"


def _match_depth(data: Any, where: _Where) -> int:
    node, depth = data, 0
    for part in where:
        in_mapping = isinstance(node, Mapping) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and part < len(node)
        if not (in_mapping or in_list):
            break
        node = node[part]
        depth += 1
    return depth


def _position(tree: Any, where: _Where) -> tuple[int, int]:
    """1-based line/col of the value at ``where`` in a ruamel round-trip tree (0, 0 if unknown)."""
    line, col = 1, 1
    node = tree
    for part in where:
        lc = getattr(node, "lc", None)
        try:
            if isinstance(part, int):
                pos = lc.item(part) if lc is not None else None
            else:
                pos = lc.value(part) if lc is not None else None
        except (KeyError, IndexError, TypeError):
            pos = None
        if pos is not None:
            line, col = pos[0] + 1, pos[1] + 1
        node = node[part]
    return line, col


# ---------------------------------------------------------------------------------------------
# building the frozen objects


def _timeouts(d: Mapping[str, Any]) -> Timeouts:
    return Timeouts(float(d["connect_s"]), float(d["read_s"]), float(d["write_s"]), float(d["pool_s"]))


def _retry(d: Mapping[str, Any]) -> RetryPolicy:
    return RetryPolicy(
        max_attempts=int(d["max_attempts"]),
        base_delay_s=float(d["base_delay_s"]),
        max_delay_s=float(d["max_delay_s"]),
        retry_after_cap_s=float(d["retry_after_cap_s"]),
        jitter=str(d["jitter"]),
        retry_statuses=frozenset(int(s) for s in d["retry_statuses"]),
    )


def _rate(d: Mapping[str, Any]) -> RateLimit:
    return RateLimit(float(d["rate_per_s"]), int(d["burst"]))


def _build(data: dict[str, Any], sources: tuple[str, ...]) -> ConnectorConfig:
    s, c = data["scalara"], data["casavi"]
    scalara = ScalaraConfig(
        base_url=s["base_url"],
        auth_header=s["auth"]["header"],
        auth_scheme=s["auth"]["scheme"],
        me_path=s.get("me_path") or None,
        resources=MappingProxyType(dict(s["resources"])),
        record_path=s["record_path"],
        page_size_param=s["pagination"]["page_size_param"],
        page_size=int(s["pagination"]["page_size"]),
        cursor_param=s["pagination"]["cursor_param"],
        items_key=s["pagination"]["items_key"],
        next_cursor_key=s["pagination"]["next_cursor_key"],
        max_pages=int(s["pagination"]["max_pages"]),
        max_idle_pages=int(s["pagination"].get("max_idle_pages", 10)),
        max_empty_pages=int(s["pagination"].get("max_empty_pages", 1000)),
        updated_since_param=s["params"]["updated_since"],
        include_deleted_param=s["params"]["include_deleted"],
        true_value=s["params"]["true_value"],
        tombstone_flag_field=s["tombstone"]["flag_field"],
        tombstone_deleted_at_field=s["tombstone"]["deleted_at_field"],
        error_code_key=s["errors"]["code_key"],
        error_message_key=s["errors"]["message_key"],
        rejected_token_code=s["errors"]["rejected_token_code"],
        timeouts=_timeouts(s["timeouts"]),
        retry=_retry(s["retry"]),
        rate_limit=_rate(s["rate_limit"]),
        incremental=MappingProxyType(dict(s.get("incremental") or {})),
    )
    auth, page, errors = c["auth"], c["pagination"], c["errors"]
    casavi = CasaviConfig(
        base_url=c["base_url"],
        auth_method=auth["method"],
        auth_path=auth["path"],
        key_field=auth["key_field"],
        secret_field=auth["secret_field"],
        token_field=auth["token_field"],
        expires_field=auth["expires_field"],
        token_header=auth["token_header"],
        refresh_before_s=float(auth["refresh_before_s"]),
        default_lifetime_s=float(auth["default_lifetime_s"]),
        kinds=MappingProxyType(dict(c["kinds"])),
        items_key=page["items_key"],
        next_link=tuple(page["next_link"]),
        page_param=page["page_param"],
        first_page=int(page["first_page"]),
        max_pages=int(page["max_pages"]),
        max_idle_pages=int(page.get("max_idle_pages", 10)),
        include_archived_param=c["params"]["include_archived"],
        modified_after_param=c["params"]["modified_after"],
        true_value=c["params"]["true_value"],
        endpoints=MappingProxyType({k: Endpoint(v["method"], v["path"]) for k, v in c["endpoints"].items()}),
        created_status=int(c["created_status"]),
        rejected_statuses=frozenset(int(x) for x in c["rejected_statuses"]),
        error_message_key=errors["message_key"],
        errors_key=errors["errors_key"],
        error_field_key=errors["field_key"],
        error_code_key=errors["code_key"],
        top_error_code_keys=tuple(errors["error_code_keys"]),
        reference_id_pattern=re.compile(c["reference_id_pattern"]),
        write_concurrency=int(c["write_concurrency"]),
        timeouts=_timeouts(c["timeouts"]),
        retry=_retry(c["retry"]),
        rate_limit=_rate(c["rate_limit"]),
    )
    return ConnectorConfig(scalara=scalara, casavi=casavi, sources=sources)
