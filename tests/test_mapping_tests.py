"""Mapping tests (``*.test.yaml``): those of the fixture mappings (tests/fixtures/mappings/, a frozen
copy of the shipped ones) run here, one pytest item per case, and ``casavi-sync test`` is checked on
golden cases of broken and failing test files. The shipped ones: tests/test_shipped_mappings.py.

Golden cases: ``tests/mapping_test_cases/<name>.test.yaml`` is run against the fixture mappings;
``<name>.expected`` holds what it reports (file problems as ``line:col: severity: message [code]``
plus hint, then each case as ``ok``/``FAIL`` with its differences). Regenerate with
``CASAVI_UPDATE_GOLDEN=1 pytest tests/test_mapping_tests.py`` and review the diff.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from jsonschema import Draft202012Validator
from ruamel.yaml import YAML

import engine.cli.test_cmd  # noqa: F401  (registers the command until engine/cli/__init__ imports it)
from engine import paths
from engine.catalog import casavi_kinds, scalara_resources
from engine.cli import main
from engine.errors import Diagnostic
from engine.mapping_tests import TestRunResult, collect, run_case, run_suite, run_tests
from engine.mapping_tests.load import SCHEMA_LINE, TEST_SCHEMA
from engine.mapping_tests.report import render_case, render_text
from engine.validate import validate_paths
from tests.conftest import MAPPINGS_DIR

CASES = Path(__file__).parent / "mapping_test_cases"
SHIPPED_FILES = sorted(MAPPINGS_DIR.glob("*.test.yaml"))
SHIPPED = collect([MAPPINGS_DIR])
SCHEMA: dict[str, Any] = json.loads(TEST_SCHEMA.read_text(encoding="utf-8"))


# -- the shipped mapping tests, one pytest item per case --------------------------------------------


@pytest.mark.parametrize("case", SHIPPED.cases, ids=lambda c: f"{Path(c.file).name}::{c.name}")
def test_shipped_case(case: Any) -> None:
    result = run_case(case)
    if not result.passed:
        pytest.fail(render_case(result), pytrace=False)


def test_shipped_test_files_have_no_problems_at_all() -> None:
    assert SHIPPED.diagnostics == []
    names = {Path(f).name for f in SHIPPED.files}
    assert names == {f"{kind}.test.yaml" for kind in casavi_kinds()}
    assert len(SHIPPED.cases) >= 25


def test_shipped_tests_cover_the_edge_cases_of_the_api() -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in SHIPPED_FILES)
    for needle in ("co-owners", "future owner change", "flat and a parking space with two tenants",
                   "vacancy and self use", "company", "without e-mail", "umlauts and ß", "no link",
                   "building does not exist", "Mehrhausanlage", "owner, tenant and board member",
                   "all four property roles", "ended role", "SEV"):
        assert needle in text, needle


def test_shipped_tests_run_well_under_a_second() -> None:
    start = time.process_time()
    result = run_tests([MAPPINGS_DIR])
    elapsed = time.process_time() - start
    assert result.ok, [c.problems for c in result.failed]
    assert elapsed < 1.0, f"{elapsed:.2f} s CPU"


def test_a_changed_mapping_fails_its_test_with_a_field_path(tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, folder)
    units = folder / "units.yaml"
    units.write_text(units.read_text(encoding="utf-8").replace("PARKING: PRIVATE", "PARKING: COMMERCIAL"),
                     encoding="utf-8")
    result = run_tests([folder / "units.test.yaml"])
    assert not result.ok and not result.diagnostics
    messages = [p.message for c in result.failed for p in c.problems]
    assert messages == ['units/u-u3.usage: expected "PRIVATE", got "COMMERCIAL"']
    failed = result.failed[0]
    line = (folder / "units.test.yaml").read_text(encoding="utf-8").splitlines()[failed.problems[0].line - 1]
    assert "u-u3:" in line and "usage: PRIVATE" in line
    # the text report and the pytest item point at that line, not at the case
    at = f"{folder / 'units.test.yaml'}:{failed.problems[0].line}:{failed.problems[0].col}: units/u-u3.usage"
    assert at in render_text(result) and at in render_case(failed)
    assert failed.problems[0].line != failed.line


@pytest.mark.slow  # a pytest subprocess (~1.5 s)
def test_pytest_collects_a_mapping_test_file_as_the_readme_says(tmp_path: Path) -> None:
    """`pytest mappings/units.test.yaml`: one item per case, a failure at the differing expected value."""
    import importlib.metadata
    import subprocess
    import sys

    folder = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, folder)
    tests = folder / "units.test.yaml"
    text = tests.read_text(encoding="utf-8")
    line_no = next(i for i, line in enumerate(text.splitlines(), 1) if "usage: PRIVATE" in line)
    lines = text.splitlines(keepends=True)
    lines[line_no - 1] = lines[line_no - 1].replace("usage: PRIVATE", "usage: COMMERCIAL")
    tests.write_text("".join(lines), encoding="utf-8")
    installed = any(e.name == "casavi_sync" for e in importlib.metadata.entry_points(group="pytest11"))
    plugin = [] if installed else ["-p", "engine.mapping_tests.pytest_plugin"]  # an older editable install
    proc = subprocess.run([sys.executable, "-m", "pytest", "mappings/units.test.yaml", "-p", "no:cacheprovider",
                           "-p", "no:recording", *plugin], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 failed, 5 passed" in proc.stdout
    assert f"units.test.yaml:{line_no}:" in proc.stdout and 'expected "COMMERCIAL", got "PRIVATE"' in proc.stdout


def test_validate_skips_test_files() -> None:
    result = validate_paths([MAPPINGS_DIR])
    assert SHIPPED_FILES and not any(f.endswith(".test.yaml") for f in result.files)


# -- the schema --------------------------------------------------------------------------------------


def _nodes(node: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if not isinstance(node, dict):
        return out
    out.append((where, node))
    for name, sub in node.get("properties", {}).items():
        out.extend(_nodes(sub, f"{where}.{name}"))
    for key in ("items", "additionalProperties"):
        out.extend(_nodes(node.get(key), f"{where}.{key}"))
    for n, sub in enumerate(node.get("anyOf", [])):
        if len(sub) > 1:
            out.extend(_nodes(sub, f"{where}.anyOf[{n}]"))
    return out


def test_schema_is_draft_2020_12_and_documents_every_node() -> None:
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(SCHEMA)
    nodes = _nodes({k: v for k, v in SCHEMA.items() if k != "$defs"}, "$")
    for name, sub in SCHEMA["$defs"].items():
        nodes.extend(_nodes(sub, f"$defs.{name}"))
    for where, node in nodes:
        if set(node) <= {"$ref"} or (set(node) <= {"required"}):
            continue
        assert node.get("description"), f"{where} has no description"
        assert node.get("examples"), f"{where} has no examples"
        if "properties" in node:
            assert node.get("additionalProperties") is False, f"{where} accepts unknown keys"
    for example in SCHEMA["examples"]:
        assert list(Draft202012Validator(SCHEMA).iter_errors(example)) == []


def test_schema_lists_the_catalogs() -> None:
    defs = SCHEMA["$defs"]
    assert list(defs["given"]["properties"]) == list(scalara_resources())
    assert list(defs["expect"]["properties"]) == list(casavi_kinds())
    assert list(defs["expect_absent"]["properties"]) == list(casavi_kinds())
    assert defs["expect_errors"]["items"]["properties"]["resource"]["enum"] == list(scalara_resources())


@pytest.mark.parametrize("path", sorted(paths.MAPPINGS_DIR.glob("*.test.yaml")), ids=lambda p: p.name)
def test_shipped_test_file_binds_and_matches_the_schema(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    first = text.splitlines()[0]
    assert first == SCHEMA_LINE
    assert (path.parent / first.split("$schema=", 1)[1]).resolve() == TEST_SCHEMA.resolve()
    data = YAML(typ="safe", pure=True).load(text)
    plain = json.loads(json.dumps(data, default=str))  # YAML dates as text, as the runner sees them
    assert list(Draft202012Validator(SCHEMA).iter_errors(plain)) == []


# -- golden cases of broken and failing test files ----------------------------------------------------


def _golden_cases() -> list[Path]:
    return sorted(CASES.glob("*.test.yaml"))


def _render(diag: Diagnostic) -> str:
    lines = [f"{diag.line}:{diag.col}: {diag.severity}: {diag.message} [{diag.code}]", f"  at {diag.path}"]
    if diag.hint:
        lines.append(f"  hint: {diag.hint}")
    return "\n".join(lines)


def render_golden(result: TestRunResult) -> str:
    blocks = [_render(d) for d in result.diagnostics]
    for case in result.cases:
        blocks.append(("ok   " if case.passed else "FAIL ") + case.name)
        blocks.extend(f"  {p.line}:{p.col}: {p.message}" for p in case.problems)
    return "\n".join(blocks) + "\n"


@pytest.mark.parametrize("case", _golden_cases(), ids=lambda p: p.name.removesuffix(".test.yaml"))
def test_golden_case(case: Path) -> None:
    result = run_suite(collect([case], mappings=MAPPINGS_DIR))
    actual = render_golden(result)
    expected_file = case.with_name(case.name.removesuffix(".test.yaml") + ".expected")
    if os.environ.get("CASAVI_UPDATE_GOLDEN"):
        expected_file.write_text(actual, encoding="utf-8")
    assert expected_file.exists(), f"missing {expected_file.name}; run with CASAVI_UPDATE_GOLDEN=1 and review"
    assert actual == expected_file.read_text(encoding="utf-8")
    assert not result.ok or any(d.severity == "warning" for d in result.diagnostics)
    assert all(d.file == str(case) for d in result.diagnostics)


def test_golden_cases_cover_many_distinct_mistakes() -> None:
    codes: set[str] = set()
    failures = 0
    for expected in CASES.glob("*.expected"):
        for line in expected.read_text(encoding="utf-8").splitlines():
            if not line.startswith(" ") and line.endswith("]"):
                codes.add(line.rsplit("[", 1)[1].rstrip("]"))
            failures += line.startswith("FAIL ")
    assert len(_golden_cases()) >= 20
    assert len(codes) >= 15, sorted(codes)
    assert failures >= 5


# -- the command ---------------------------------------------------------------------------------------


def _cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["test", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_cli_runs_the_shipped_tests_by_default() -> None:
    code, out, _ = _cli()
    assert code == 0
    assert out.count("  ok    ") == len(SHIPPED.cases)
    assert out.rstrip().endswith(f"5 files, {len(SHIPPED.cases)} cases: {len(SHIPPED.cases)} passed")


def test_cli_failure_text_exit_code_and_quiet() -> None:
    code, out, _ = _cli("--quiet", str(CASES / "failing-payload.test.yaml"), "--mappings", str(MAPPINGS_DIR))
    assert code == 1
    assert "  ok    " not in out
    assert "  FAIL  every kind of payload difference  (" in out
    assert f'        {CASES / "failing-payload.test.yaml"}:16:16: units/u-u1.usage: expected "COMMERCIAL", got "PRIVATE"' in out
    assert out.rstrip().endswith("1 file, 1 case: 0 passed, 1 failed")


def test_cli_file_problems_are_positioned_like_validate() -> None:
    path = CASES / "unknown-target-field.test.yaml"
    code, out, _ = _cli(str(path), "--mappings", str(MAPPINGS_DIR))
    assert code == 1
    assert f"{path}:12:14: error: casavi units have no field 'adress'; did you mean 'address'? " \
           "[unknown-target-field]" in out
    assert "\n                 ^\n" in out  # the caret under the column, as validate draws it


def test_cli_json_document() -> None:
    code, out, _ = _cli("--format", "json", str(CASES / "failing-records.test.yaml"), "--mappings",
                        str(MAPPINGS_DIR))
    assert code == 1
    doc = json.loads(out)
    assert doc["ok"] is False
    assert doc["counts"] == {"files": 1, "cases": 2, "passed": 0, "failed": 2, "errors": 0, "warnings": 0}
    problem = doc["cases"][1]["problems"][0]
    assert problem["kind"] == "units" and problem["id"] == "u-u1" and problem["line"] > 0
    assert problem["actual"]["name"] == "WE 01"


def test_cli_github_annotations_point_at_the_expectation() -> None:
    path = CASES / "failing-payload.test.yaml"
    code, out, _ = _cli("--format", "github", str(path), "--mappings", str(MAPPINGS_DIR))
    assert code == 1
    lines = out.splitlines()
    usage = next(line for line in lines if "usage" in line)
    assert usage.startswith(f"::error file={path},line=16,col=16,title=casavi-sync test%3A every kind of ")
    assert lines[-1] == "::notice title=casavi-sync test::1 file, 1 case: 0 passed, 1 failed"


def test_cli_usage_errors_exit_2(tmp_path: Path) -> None:
    assert _cli("no/such/folder")[0] == 2
    assert _cli("--format", "xml")[0] == 2
    code, _, err = _cli(str(tmp_path))
    assert code == 2 and "no mapping tests" in err


def test_invalid_mappings_are_reported_and_their_tests_not_run(tmp_path: Path) -> None:
    folder = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, folder)
    units = folder / "units.yaml"
    units.write_text(units.read_text(encoding="utf-8").replace("address:", "adress:"), encoding="utf-8")
    result = run_tests([folder])
    assert not result.ok and result.cases == []
    codes = [d.code for d in result.diagnostics]
    assert "unknown-target-field" in codes and "invalid-mappings" in codes
    assert any(d.file.endswith("units.yaml") and d.line > 0 for d in result.diagnostics)


def test_a_mapping_file_given_as_a_test_is_refused() -> None:
    result = run_tests([MAPPINGS_DIR / "units.yaml"])
    assert [d.code for d in result.diagnostics] == ["not-a-test-file"]
    assert not result.ok
