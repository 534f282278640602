"""`casavi-sync validate` and `casavi-sync schema` through click's CliRunner: formats, exit codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from engine.paths import MAPPING_SCHEMA
from tests.conftest import MAPPINGS_DIR


@pytest.fixture()
def mappings(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, target, ignore=shutil.ignore_patterns("*.test.yaml"))
    return target


@pytest.fixture()
def broken(mappings: Path) -> Path:
    """units.yaml with one error (unknown casavi field) and contracts.yaml with one warning."""
    units = mappings / "units.yaml"
    units.write_text(units.read_text().replace("      address:", "      adress:"))
    contracts = mappings / "contracts.yaml"
    contracts.write_text(contracts.read_text().replace("ref_id('rent', id, unit, tenant)", "ref_id('rent', id, unit)"))
    return mappings


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def test_default_validates_the_shipped_mappings() -> None:
    code, out = run("validate")
    assert code == 0
    assert out == "5 files valid\n"


def test_text_format(broken: Path) -> None:
    code, out = run("validate", str(broken))
    assert code == 1
    units = broken / "units.yaml"
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(str(units)))
    assert lines[0].startswith(str(broken / "contracts.yaml"))  # sorted by file
    assert lines[start:start + 5] == [
        f"{units}:22:7: error: casavi units have no field 'adress'; did you mean 'address'? [unknown-target-field]",
        "          adress: \"join_nonempty(' ', [building.street, building.houseNumber])\"",
        "          ^",
        "  at $.rules[0].fields.adress",
        "  hint: fields of casavi units: propertyId, name, number, address, usage, note, customFields",
    ]
    assert "warning: the id does not use the loop variable(s) 'tenant'" in out
    assert out.endswith("1 error, 1 warning in 2 files\n")


def test_text_format_source_line_and_caret_align(broken: Path) -> None:
    _, out = run("validate", str(broken / "units.yaml"))
    lines = out.splitlines()
    source, caret = lines[1], lines[2]
    assert caret.index("^") == source.index("adress")
    assert out.endswith("1 error in 1 file\n")


def test_warnings_only_exit_zero(broken: Path) -> None:
    code, out = run("validate", str(broken / "contracts.yaml"))
    assert code == 0
    assert out.endswith("1 file valid (1 warning)\n")


def test_json_format(broken: Path) -> None:
    code, out = run("validate", "--format", "json", str(broken))
    assert code == 1
    doc = json.loads(out)
    assert doc["valid"] is False
    assert doc["counts"] == {"files": 5, "errors": 1, "warnings": 1}
    assert [Path(f).name for f in doc["files"]] == [
        "contacts.yaml", "contracts.yaml", "properties.yaml", "responsibilities.yaml", "units.yaml"]
    error = next(d for d in doc["diagnostics"] if d["severity"] == "error")
    assert error == {
        "file": str(broken / "units.yaml"), "line": 22, "col": 7, "path": "$.rules[0].fields.adress",
        "code": "unknown-target-field", "severity": "error",
        "message": "casavi units have no field 'adress'; did you mean 'address'?",
        "hint": "fields of casavi units: propertyId, name, number, address, usage, note, customFields",
    }


def test_json_format_valid() -> None:
    code, out = run("validate", "--format", "json", str(MAPPINGS_DIR))
    assert code == 0
    doc = json.loads(out)
    assert doc["valid"] is True and doc["diagnostics"] == []
    assert doc["counts"] == {"files": 5, "errors": 0, "warnings": 0}


def test_github_format(broken: Path) -> None:
    code, out = run("validate", "--format", "github", str(broken))
    assert code == 1
    lines = out.splitlines()
    units = str(broken / "units.yaml").replace(":", "%3A").replace(",", "%2C")
    assert (f"::error file={units},line=22,col=7,title=casavi-sync unknown-target-field::"
            "casavi units have no field 'adress'; did you mean 'address'?%0Aat $.rules[0].fields.adress"
            "%0Ahint: fields of casavi units: propertyId, name, number, address, usage, note, customFields") in lines
    assert any(line.startswith("::warning file=") and "title=casavi-sync for-each-id::" in line for line in lines)
    assert lines[-1] == "::notice title=casavi-sync validate::1 error, 1 warning in 2 files"


def test_github_format_escapes_percent_and_newlines(mappings: Path) -> None:
    units = mappings / "units.yaml"
    units.write_text(units.read_text().replace("number: number\n", "number: \"fmt('100%', number) ==\"\n"))
    _, out = run("validate", "--format", "github", str(units))
    line = next(x for x in out.splitlines() if "jmespath-syntax" in x)
    message = line.split("::", 2)[2]
    assert "\n" not in message and "%0A" in message
    assert "%" not in message.replace("%0A", "").replace("%25", "")


def test_nonexistent_path_is_a_usage_error(tmp_path: Path) -> None:
    code, out = run("validate", str(tmp_path / "nope"))
    assert code == 2
    assert "does not exist" in out


def test_bad_format_is_a_usage_error() -> None:
    code, out = run("validate", "--format", "xml")
    assert code == 2
    assert "xml" in out


@pytest.mark.parametrize("content", [b"\x00\x01binary", b"a: [\n", b"", b"a: &x 1\nb: *x\n"])
def test_broken_files_exit_1_without_traceback(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(content)
    code, out = run("validate", str(path))
    assert code == 1
    assert "Traceback" not in out
    assert out.startswith(f"{path}:")


def test_schema_prints_the_schema() -> None:
    code, out = run("schema")
    assert code == 0
    assert json.loads(out) == json.loads(MAPPING_SCHEMA.read_text(encoding="utf-8"))


def test_schema_path() -> None:
    code, out = run("schema", "--path")
    assert code == 0
    assert Path(out.strip()) == MAPPING_SCHEMA
    assert Path(out.strip()).is_file()


def test_an_empty_folder_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(tmp_path)])
    assert result.exit_code == 2 and "no mapping files" in result.output
