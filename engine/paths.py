"""Where the shipped files live: `mappings/` and `schemas/` sit beside the `engine/` package."""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = PACKAGE_DIR.parent
MAPPINGS_DIR = PROJECT_ROOT / "mappings"
SCHEMAS_DIR = PROJECT_ROOT / "schemas"
CATALOG_DIR = PACKAGE_DIR / "catalog"
MAPPING_SCHEMA = SCHEMAS_DIR / "mapping.schema.json"
