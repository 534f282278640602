"""Where the shipped files live: `mappings/` and `schemas/` sit beside the `engine/` package."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
MAPPINGS_DIR = PROJECT_ROOT / "mappings"
SCHEMAS_DIR = PROJECT_ROOT / "schemas"
CATALOG_DIR = PACKAGE_DIR / "catalog"
MAPPING_SCHEMA = SCHEMAS_DIR / "mapping.schema.json"


def is_mapping_file(path: Path) -> bool:
    """A mapping spec (``*.yaml``/``*.yml``), not a mapping test (``*.test.yaml``)."""
    name = path.name
    return name.endswith((".yaml", ".yml")) and not name.endswith((".test.yaml", ".test.yml"))


def mapping_files(folder: Path = MAPPINGS_DIR) -> list[Path]:
    """The mapping specs of a folder, sorted (mapping tests beside them are left out)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_mapping_file(p))
