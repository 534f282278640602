"""The catalog's JSON twins (read instead of parsing YAML at every start) match their YAML files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from engine.paths import CATALOG_DIR

YAMLS = sorted(p.name for p in CATALOG_DIR.glob("*.yaml"))


@pytest.mark.parametrize("name", YAMLS)
def test_every_catalog_file_has_a_json_twin_made_from_its_current_text(name: str) -> None:
    text = (CATALOG_DIR / name).read_text(encoding="utf-8")
    twin = json.loads((CATALOG_DIR / (name + ".json")).read_text(encoding="utf-8"))
    hint = f"run: python -c \"from engine.catalog import write_json_twin; write_json_twin('{name}')\""
    assert twin["sha256"] == hashlib.sha256(text.encode("utf-8")).hexdigest(), hint
    assert twin["data"] == YAML(typ="safe", pure=True).load(text), hint


def test_an_edited_yaml_file_wins_over_a_stale_twin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import engine.catalog as catalog

    (tmp_path / "scalara.yaml").write_text("resources: {things: {fields: {}}}\n", encoding="utf-8")
    (tmp_path / "scalara.yaml.json").write_text((CATALOG_DIR / "scalara.yaml.json").read_text(encoding="utf-8"),
                                               encoding="utf-8")
    monkeypatch.setattr(catalog, "CATALOG_DIR", tmp_path)
    catalog._load.cache_clear()
    try:
        assert catalog.scalara_resources() == {"things": {"fields": {}}}
    finally:
        catalog._load.cache_clear()


def test_the_cli_starts_without_the_heavy_modules() -> None:
    """Every command pays for what `import engine.cli` imports: YAML, HTTP, schemas, the state store
    and the interpreter are imported by the commands that use them (validate cold <= 0.3 s)."""
    import subprocess
    import sys

    heavy = ("httpx", "jsonschema", "ruamel.yaml", "engine.interpret", "engine.state", "engine.sync.runner",
             "engine.connectors", "cryptography", "psycopg", "prometheus_client")
    code = f"import sys, engine.cli; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_validate_loads_the_connector_config_without_the_http_clients(tmp_path: Path) -> None:
    """validate checks ref_id prefixes against the configured pattern (the connector config), which
    must not pull in httpx and the clients: validate's cold start is a benchmark target (<= 0.3 s)."""
    import subprocess
    import sys


    code = ("import sys\nfrom engine.cli import main\n"
            "try:\n    main(['validate', '--format', 'json'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            "print([m for m in ('httpx', 'engine.connectors.casavi', 'engine.interpret') if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    *report, loaded = done.stdout.strip().splitlines()
    result = json.loads("\n".join(report))
    assert result["valid"] is True and result["counts"]["files"] >= 5  # the prefixes were checked
    assert loaded == "[]"
