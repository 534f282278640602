"""What the engine knows of both APIs' data models (loaded from the YAML files beside this one).

``scalara.yaml`` lists the SCALARA export resources and their fields; ``casavi.yaml`` the casavi
kinds, their fields, required fields and allowed values. Both are configuration, not code: when
the real API turns out to differ, a connector adapts these files.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from ruamel.yaml import YAML

from engine.paths import CATALOG_DIR


@cache
def _load(name: str) -> dict[str, Any]:
    yaml = YAML(typ="safe", pure=True)
    data: dict[str, Any] = yaml.load((CATALOG_DIR / name).read_text(encoding="utf-8"))
    return data


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
