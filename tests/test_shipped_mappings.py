"""The shipped default mappings (engine/data/mappings/, `mappings/` in a checkout) are tested here by
their own ``*.test.yaml`` - exactly what ``casavi-sync test`` runs - and by ``validate``; nothing else.

The rest of the engine's suite runs with the frozen copy in tests/fixtures/mappings/, so a
consultant's valid change to mappings/ whose ``*.test.yaml`` are updated keeps ``pytest`` green.
The last test proves it on a copy of the checkout (marked slow: it runs the whole default suite).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.mapping_tests import collect, run_case
from engine.mapping_tests.report import render_case
from engine.paths import MAPPINGS_DIR, mapping_files
from engine.validate import validate_paths
from engine.validate.report import RENDERERS

ROOT = Path(__file__).resolve().parents[1]
SUITE = collect([MAPPINGS_DIR])


@pytest.mark.parametrize("case", SUITE.cases, ids=lambda c: f"{Path(c.file).name}::{c.name}")
def test_shipped_case(case: Any) -> None:
    result = run_case(case)
    if not result.passed:
        pytest.fail(render_case(result), pytrace=False)


def test_the_shipped_mappings_are_valid() -> None:
    result = validate_paths([MAPPINGS_DIR])
    assert result.valid, RENDERERS["text"](result)


def test_every_shipped_mapping_has_its_tests() -> None:
    assert not [d for d in SUITE.diagnostics if d.severity == "error"]
    tested = {Path(f).name.removesuffix(".test.yaml") for f in SUITE.files}
    assert {p.stem for p in mapping_files(MAPPINGS_DIR)} <= tested
    assert SUITE.cases


def test_the_cli_runs_the_shipped_tests_green() -> None:
    result = CliRunner().invoke(main, ["test", "--quiet", str(MAPPINGS_DIR)])
    assert result.exit_code == 0, result.output
    assert f"{len(SUITE.cases)} passed" in result.output


# -- a consultant's change leaves the engine's suite green ------------------------------------------

_IGNORE = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".pytest_cache", ".mypy_cache",
                                 ".ruff_cache", "build", "dist", ".venv", "reports")


def _consultant_change(mappings: Path) -> None:
    """A new unit custom field (the building's postal code) and a test case for it, as a consultant
    would write them: the mapping, the exact expectation of the existing test, and a new case."""
    units = mappings / "units.yaml"
    text = units.read_text(encoding="utf-8")
    assert "          etage: floor\n" in text
    units.write_text(text.replace("          etage: floor\n",
                                  "          etage: floor\n          plz: building.postalCode\n"), encoding="utf-8")
    tests = mappings / "units.test.yaml"
    text = tests.read_text(encoding="utf-8")
    assert "personen: 2, etage: EG}" in text
    text = text.replace("personen: 2, etage: EG}", "personen: 2, etage: EG, plz: '20095'}", 1)
    text += """
- name: the building's postal code is a custom field of the unit (consultant's change)
  date: 2024-06-01
  mappings: [units]
  match: subset
  given:
    buildings:
      - {id: b1, propertyId: p1, label: null, street: Ring, houseNumber: "2", postalCode: "04109", city: Leipzig, country: DE}
    units:
      - {id: u1, propertyId: p1, buildingId: b1, number: WE 1, label: null, type: APARTMENT}
  expect:
    units:
      u-u1: {customFields: {plz: "04109"}}
"""
    tests.write_text(text, encoding="utf-8")


@pytest.mark.slow
def test_a_consultants_change_keeps_the_engine_suite_green(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, symlinks=True, ignore=_IGNORE)
    mappings = checkout / "engine" / "data" / "mappings"
    _consultant_change(mappings)
    env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("CASAVI_SYNC_MAPPINGS", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], cwd=checkout, env=env, capture_output=True, text=True,
                              timeout=900, check=False)

    cli = "from engine.cli import main; main()"
    tested = run("-c", cli, "test", "--quiet", "mappings")
    assert tested.returncode == 0 and "1 failed" not in tested.stdout, tested.stdout + tested.stderr
    where = run("-c", "import engine.paths as p; print(p.MAPPINGS_DIR)")  # the copy's engine runs
    assert where.stdout.strip() == str(mappings), where.stdout

    suite = run("-m", "pytest", "-q", "-rf", "-p", "no:cacheprovider")
    assert "[100%]" in suite.stdout, suite.stdout[-4000:] + suite.stderr[-2000:]  # every selected test ran
    if suite.returncode != 0:
        # A timing-sensitive test of the engine may fail on a loaded machine whatever the mappings
        # say: each failure must pass when run again, or the change broke it.
        failed = [line.split()[1] for line in suite.stdout.splitlines() if line.startswith("FAILED ")]
        assert failed, suite.stdout[-4000:] + suite.stderr[-2000:]
        again = run("-m", "pytest", "-q", "-p", "no:cacheprovider", *failed)
        assert again.returncode == 0, f"{failed} fail after the consultant's change:\n{again.stdout[-4000:]}"
