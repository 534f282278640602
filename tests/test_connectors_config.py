"""Connector configuration: defaults, operator file, env overrides, and clear ConfigErrors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from engine.connectors import load_connector_config
from engine.connectors.config import CONNECTOR_SCHEMA, DEFAULT_CONFIG
from engine.errors import ConfigError


def test_defaults_follow_the_contract() -> None:
    cfg = load_connector_config(env={})
    assert cfg.scalara.base_url == "https://api.scalara.de/export/v1"
    assert cfg.casavi.base_url == "https://api.mycasavi.com"
    assert sorted(cfg.scalara.resources) == sorted(
        ["properties", "buildings", "units", "contacts", "ownerships", "usages", "property-roles"])
    assert cfg.scalara.page_size == 500
    assert (cfg.scalara.rate_limit.rate_per_s, cfg.scalara.rate_limit.burst) == (10, 20)
    assert (cfg.casavi.rate_limit.rate_per_s, cfg.casavi.rate_limit.burst) == (20, 40)
    assert cfg.casavi.write_concurrency == 8
    assert cfg.casavi.endpoints["upsert"].method == "PUT"
    assert cfg.casavi.endpoints["archive"].render(kind_path="/v2/units", id="u1") == "/v2/units/u1/archive"
    assert cfg.casavi.retry.retry_statuses == {429, 502, 503, 504}
    assert cfg.casavi.reference_id_pattern.fullmatch("unit-1.a_b")
    assert cfg.sources == (str(DEFAULT_CONFIG),)


def test_operator_file_is_deep_merged(tmp_path: Path) -> None:
    ops = tmp_path / "ops.yaml"
    ops.write_text("casavi:\n  rate_limit: {burst: 5}\n  retry: {retry_statuses: [503]}\n"
                   "scalara:\n  resources: {extra: /extra}\n", encoding="utf-8")
    cfg = load_connector_config(ops, env={})
    assert cfg.casavi.rate_limit.burst == 5
    assert cfg.casavi.rate_limit.rate_per_s == 20            # untouched sibling survives
    assert cfg.casavi.retry.retry_statuses == {503}           # lists replace
    assert cfg.scalara.resources["extra"] == "/extra"
    assert cfg.scalara.resources["units"] == "/units"
    assert cfg.sources[-1] == str(ops)


def test_env_names_the_file_and_overrides_urls(tmp_path: Path) -> None:
    ops = tmp_path / "ops.yaml"
    ops.write_text("casavi: {base_url: 'https://from-file.example'}\n", encoding="utf-8")
    env = {"CASAVI_SYNC_CONNECTOR_CONFIG": str(ops)}
    assert load_connector_config(env=env).casavi.base_url == "https://from-file.example"
    env |= {"CASAVI_SYNC_CASAVI_URL": "http://127.0.0.1:8081", "CASAVI_SYNC_SCALARA_URL": "http://127.0.0.1:8080/x"}
    cfg = load_connector_config(env=env)
    assert cfg.casavi.base_url == "http://127.0.0.1:8081"
    assert cfg.scalara.base_url == "http://127.0.0.1:8080/x"
    assert cfg.sources[-2:] == ("env CASAVI_SYNC_SCALARA_URL", "env CASAVI_SYNC_CASAVI_URL")


def test_path_argument_beats_env_file(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("casavi: {write_concurrency: 2}\n", encoding="utf-8")
    b.write_text("casavi: {write_concurrency: 3}\n", encoding="utf-8")
    cfg = load_connector_config(a, env={"CASAVI_SYNC_CONNECTOR_CONFIG": str(b)})
    assert cfg.casavi.write_concurrency == 2


# (operator yaml, env, expected location prefix, expected JSON path, expected words)
INVALID: list[tuple[str, dict[str, str], str, str, str]] = [
    ("casavi:\n  rate_limit:\n    burst: 0\n", {}, "ops.yaml:3:12", "$.casavi.rate_limit.burst",
     "less than the minimum of 1"),
    ("casavi:\n  rate_limt: {burst: 3}\n", {}, "ops.yaml:", "$.casavi", "'rate_limt' was unexpected"),
    ("scalara:\n  retry:\n    max_attempts: many\n", {}, "ops.yaml:3:19", "$.scalara.retry.max_attempts",
     "is not of type 'integer'"),
    ("casavi:\n  endpoints:\n    upsert: {method: PUT, path: '{kind_path}/{ref}'}\n", {},
     "ops.yaml:3:33", "$.casavi.endpoints.upsert.path", "unknown placeholder {ref}"),
    ("casavi:\n  reference_id_pattern: '^[a-z'\n", {}, "ops.yaml:2:25", "$.casavi.reference_id_pattern",
     "not a valid regular expression"),
    ("scalara:\n  pagination: {page_size: 501}\n", {}, "ops.yaml:2:27", "$.scalara.pagination.page_size",
     "greater than the maximum of 500"),
    ("", {"CASAVI_SYNC_CASAVI_URL": "ftp://files.example"}, "env CASAVI_SYNC_CASAVI_URL",
     "$.casavi.base_url", "does not match"),
    ("casavi:\n  retry: {jitter: some}\n", {}, "ops.yaml:2:19", "$.casavi.retry.jitter", "is not one of"),
]


@pytest.mark.parametrize(("text", "env", "where", "path", "words"), INVALID,
                         ids=[case[3] + "-" + case[4].split()[0] for case in INVALID])
def test_invalid_config_names_file_and_path(tmp_path: Path, text: str, env: dict[str, str], where: str,
                                           path: str, words: str) -> None:
    ops = tmp_path / "ops.yaml"
    ops.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_connector_config(ops, env=env)
    lines = str(info.value).splitlines()
    assert lines[0] == "invalid connector configuration:"
    hit = [line for line in lines[1:] if path + ":" in line]
    assert hit, str(info.value)
    assert hit[0].strip().startswith(where.replace("ops.yaml", str(ops))), hit[0]
    assert words in hit[0]


def test_all_problems_are_reported_one_line_each(tmp_path: Path) -> None:
    ops = tmp_path / "ops.yaml"
    ops.write_text("casavi:\n  write_concurrency: 0\nscalara:\n  rate_limit: {burst: -1}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_connector_config(ops, env={})
    lines = str(info.value).splitlines()[1:]
    assert len(lines) == 2
    assert any("$.casavi.write_concurrency:" in line for line in lines)
    assert any("$.scalara.rate_limit.burst:" in line for line in lines)


@pytest.mark.parametrize(("text", "words"), [
    (None, "connector config file not found"),
    ("casavi: [1, 2\n", "ops.yaml:2:1"),
    ("- just\n- a list\n", "must be a mapping"),
])
def test_unreadable_files(tmp_path: Path, text: str | None, words: str) -> None:
    ops = tmp_path / "ops.yaml"
    if text is not None:
        ops.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        load_connector_config(ops, env={})


def test_empty_operator_file_changes_nothing(tmp_path: Path) -> None:
    ops = tmp_path / "ops.yaml"
    ops.write_text("# nothing yet\n", encoding="utf-8")
    assert load_connector_config(ops, env={}).casavi == load_connector_config(env={}).casavi


def _walk(node: Any, path: str = "$") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)] if isinstance(node, dict) else []
    if isinstance(node, dict):
        for key in ("properties", "$defs"):
            for name, child in node.get(key, {}).items():
                found += _walk(child, f"{path}.{name}")
        if isinstance(node.get("additionalProperties"), dict):
            found += _walk(node["additionalProperties"], f"{path}.*")
    return found


def test_schema_is_valid_and_documents_every_key() -> None:
    schema = json.loads(CONNECTOR_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"].endswith("2020-12/schema")
    for path, node in _walk(schema)[1:]:
        if "$ref" not in node:
            assert node.get("description"), f"{path} lacks a description"
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, f"{path} allows unknown keys"


def test_every_default_value_line_is_tagged_or_generic() -> None:
    """The API names in default.yaml carry their provenance tag ([doc]/[seen]/[assumed])."""
    untagged = []
    generic = ("timeouts:", "retry:", "rate_limit:", "max_attempts", "base_delay_s", "max_delay_s",
               "retry_after_cap_s", "jitter:", "retry_statuses", "max_pages", "max_idle_pages", "max_empty_pages",
               "refresh_before_s",
               "default_lifetime_s", "write_concurrency", "scalara:", "casavi:", "auth:", "pagination:",
               "params:", "tombstone:", "errors:", "burst:")
    section_tagged = False
    for line in DEFAULT_CONFIG.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if line.startswith("  ") and not line.startswith("    "):
            section_tagged = "[" in line
        has_tag = any(tag in line for tag in ("[doc]", "[seen]", "[assumed]"))
        if not has_tag and not section_tagged and not stripped.startswith(generic):
            untagged.append(stripped)
    assert untagged == []
