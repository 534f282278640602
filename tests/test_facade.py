"""The package facade: three verbs cover validate -> compile -> map for library users."""

from __future__ import annotations

import engine
import engine.validate  # the stage package of the same stem must not shadow the verbs
from tests.conftest import MAPPINGS_DIR


def test_validate_load_and_map_records() -> None:
    report = engine.validate_mappings([MAPPINGS_DIR])
    assert report.valid and len(report.files) == 5
    mappings = engine.load_mappings([MAPPINGS_DIR])
    result = engine.map_records(mappings, {"properties": [
        {"id": "p1", "number": "7", "name": "Lindenstraße 12", "kind": "WEG", "meaTotal": 1000,
         "managedFrom": "2020-01-01", "managedUntil": None}]})
    assert result.outputs["properties"]["p-p1"].payload["name"] == "Lindenstraße 12"
    assert result.errors == []
