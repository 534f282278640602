"""Golden cases of `casavi-sync validate`: one broken mapping per mistake a consultant makes.

Each case is data in ``tests/validate_cases/``:

* ``<mapping>--<mistake>.yaml`` replaces the shipped ``mappings/<mapping>.yaml`` in a copy of the
  shipped set, and only that file is validated (the others are its context, as in the editor);
* ``<name>.yaml`` (no ``--``) is added to the copy as a new file and validated alone;
* a folder ``<name>/`` is laid over the copy (same names replace) and the whole copy is validated;

and ``<case>.expected`` holds the exact diagnostics, one block each::

    12:5: error: unknown key 'fileds'; did you mean 'fields'? [unknown-key]
      at $.rules[0].fileds
      hint: allowed keys here: ...

(folder cases prefix each first line with the file name). After an intended change of wording,
regenerate with ``CASAVI_UPDATE_GOLDEN=1 pytest tests/test_validate_cases.py`` and review the diff.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from engine.errors import Diagnostic
from engine.paths import mapping_files
from engine.validate import validate_paths
from tests.conftest import MAPPINGS_DIR

CASES = Path(__file__).parent / "validate_cases"
SHIPPED = {p.stem for p in mapping_files(MAPPINGS_DIR)}


def _cases() -> list[Path]:
    return sorted(p for p in CASES.iterdir() if p.is_dir() or p.suffix == ".yaml")


def _render(diag: Diagnostic, prefix: str) -> str:
    lines = [f"{prefix}{diag.line}:{diag.col}: {diag.severity}: {diag.message} [{diag.code}]",
             f"  at {diag.path}"]
    if diag.hint:
        lines.append(f"  hint: {diag.hint}")
    return "\n".join(lines)


def run_case(case: Path, workdir: Path) -> str:
    mappings = workdir / "mappings"
    shutil.copytree(MAPPINGS_DIR, mappings, ignore=shutil.ignore_patterns("*.test.yaml"))
    if case.is_dir():
        for item in sorted(case.iterdir()):
            shutil.copyfile(item, mappings / item.name)
        result = validate_paths([mappings])
        blocks = [_render(d, Path(d.file).name + ":") for d in result.diagnostics]
    else:
        base = case.stem.split("--")[0]
        target = mappings / (f"{base}.yaml" if "--" in case.stem and base in SHIPPED else case.name)
        target.write_bytes(case.read_bytes())
        result = validate_paths([target])
        assert all(d.file == str(target) for d in result.diagnostics)
        blocks = [_render(d, "") for d in result.diagnostics]
    return "\n".join(blocks) + "\n" if blocks else ""


@pytest.mark.parametrize("case", _cases(), ids=lambda p: p.stem)
def test_golden_case(case: Path, tmp_path: Path) -> None:
    actual = run_case(case, tmp_path)
    expected_file = case.with_name(case.stem + ".expected") if case.is_file() else case.with_name(
        case.name + ".expected")
    if os.environ.get("CASAVI_UPDATE_GOLDEN"):
        expected_file.write_text(actual, encoding="utf-8")
    assert expected_file.exists(), f"missing {expected_file.name}; run with CASAVI_UPDATE_GOLDEN=1 and review"
    assert actual == expected_file.read_text(encoding="utf-8")
    assert actual, "a golden case must produce at least one diagnostic"


def test_there_are_many_distinct_mistakes() -> None:
    codes: set[str] = set()
    for expected in CASES.glob("*.expected"):
        for line in expected.read_text(encoding="utf-8").splitlines():
            if not line.startswith(" ") and line.endswith("]"):
                codes.add(line.rsplit("[", 1)[1].rstrip("]"))
    assert len(_cases()) >= 30
    assert len(codes) >= 25, sorted(codes)
