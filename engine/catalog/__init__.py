"""What the engine knows of both APIs' data models (loaded from the YAML files beside this one).

``scalara.yaml`` lists the SCALARA export resources and their fields; ``casavi.yaml`` the casavi
kinds, their fields, required fields and allowed values. Both are configuration, not code: when
the real API turns out to differ, a connector adapts these files.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from typing import Any

from engine.paths import CATALOG_DIR


@cache
def _load(name: str) -> dict[str, Any]:
    """The YAML file's data; from its JSON twin (``<name>.json``, written by ``write_json_twin``)
    when that was made from exactly this text: parsing YAML costs a tenth of a second on every
    CLI start, reading JSON a millisecond. An edited YAML file is simply parsed."""
    text = (CATALOG_DIR / name).read_text(encoding="utf-8")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    twin = CATALOG_DIR / (name + ".json")
    try:
        cached = json.loads(twin.read_text(encoding="utf-8"))
        if isinstance(cached, dict) and cached.get("sha256") == digest and isinstance(cached.get("data"), dict):
            found: dict[str, Any] = cached["data"]
            return found
    except (OSError, ValueError):
        pass
    return _parse(text)


def _parse(text: str) -> dict[str, Any]:
    from ruamel.yaml import YAML

    data: dict[str, Any] = YAML(typ="safe", pure=True).load(text)
    return data


def write_json_twin(name: str) -> None:
    """Regenerate ``<name>.json`` after editing a catalog YAML file (tests check they agree)."""
    text = (CATALOG_DIR / name).read_text(encoding="utf-8")
    doc = {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "data": _parse(text)}
    (CATALOG_DIR / (name + ".json")).write_text(json.dumps(doc, ensure_ascii=False, indent=1) + "\n",
                                                 encoding="utf-8")


def scalara_resources() -> dict[str, Any]:
    """resource name -> {"fields": {field: {"type", "nullable", "values", "references"}}, ...}."""
    resources: dict[str, Any] = _load("scalara.yaml")["resources"]
    return resources


def casavi_kinds() -> dict[str, Any]:
    """kind name -> {"fields": {field: {"type", "required", "values", ...}}, "required_one_of"?}."""
    kinds: dict[str, Any] = _load("casavi.yaml")["kinds"]
    return kinds


def reference_id_rule() -> dict[str, Any]:
    rule: dict[str, Any] = _load("casavi.yaml")["reference_id"]
    return rule


def notice_catalog(language: str = "de") -> dict[str, Any]:
    """The texts of the customer's data-quality notice (``notice.<language>.yaml``)."""
    return _load(f"notice.{language}.yaml")
