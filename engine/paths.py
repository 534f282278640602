"""Where the files the engine reads at run time live: the single place that knows locations.

Everything read at run time ships inside the package (and so inside the wheel):

* ``engine/data/mappings/`` - the default SCALARA -> casavi mappings and their ``*.test.yaml``;
* ``engine/data/schemas/``  - JSON Schemas (mapping DSL, mapping tests, connector config) and the
  OpenAPI documents of both APIs;
* ``engine/catalog/``       - what the engine knows of both APIs' data models;
* ``engine/connectors/default.yaml`` - the connector defaults;
* ``engine/web/templates/``, ``engine/web/static/`` - the web console's pages;
* ``engine/data/project/``  - the templates of a consultant's mapping project (``casavi-sync init``).

A developer checkout has ``mappings`` and ``schemas`` links at its top level pointing into
``engine/data/`` so the documented commands (``casavi-sync validate mappings``) keep working there.
Nothing here depends on a checkout: an installed wheel finds the same files beside this module.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_DIR = PACKAGE_DIR / "data"
MAPPINGS_DIR = DATA_DIR / "mappings"
SCHEMAS_DIR = DATA_DIR / "schemas"
CATALOG_DIR = PACKAGE_DIR / "catalog"
CONNECTOR_DEFAULTS = PACKAGE_DIR / "connectors" / "default.yaml"
MAPPING_SCHEMA = SCHEMAS_DIR / "mapping.schema.json"
MAPPING_TEST_SCHEMA = SCHEMAS_DIR / "mapping-test.schema.json"
CONNECTOR_SCHEMA = SCHEMAS_DIR / "connector.schema.json"
OPENAPI_CASAVI = SCHEMAS_DIR / "openapi-casavi.yaml"
OPENAPI_SCALARA = SCHEMAS_DIR / "openapi-scalara.yaml"
WEB_TEMPLATES = PACKAGE_DIR / "web" / "templates"
WEB_STATIC = PACKAGE_DIR / "web" / "static"
PROJECT_TEMPLATES = DATA_DIR / "project"
"""What `casavi-sync init` writes besides the mappings: README, editor settings, pre-commit, CI."""

ENV_MAPPINGS = "CASAVI_SYNC_MAPPINGS"
"""Environment variable naming the mapping folder used when ``--mappings`` is not given."""


def default_mappings() -> Path:
    """The mapping folder used when none is given: ``$CASAVI_SYNC_MAPPINGS``, else the shipped defaults."""
    configured = os.environ.get(ENV_MAPPINGS, "").strip()
    return Path(configured) if configured else MAPPINGS_DIR


def is_mapping_file(path: Path) -> bool:
    """A mapping spec (``*.yaml``/``*.yml``), not a mapping test (``*.test.yaml``)."""
    name = path.name
    return name.endswith((".yaml", ".yml")) and not name.endswith((".test.yaml", ".test.yml"))


def mapping_files(folder: Path = MAPPINGS_DIR) -> list[Path]:
    """The mapping specs of a folder, sorted (mapping tests beside them are left out)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and is_mapping_file(p))
