"""pytest collects mapping tests: ``pytest mappings/units.test.yaml`` (or ``pytest mappings``).

Registered as a pytest plugin by the package (``[project.entry-points.pytest11]`` in pyproject), so
it works wherever casavi-sync is installed: in this checkout and in a consultant's own mapping
project. Each case of a ``*.test.yaml`` becomes one test item, run against the mapping files
beside it, exactly as ``casavi-sync test`` runs it; a failure shows the same differences, each at
the ``file:line:col`` of the expected value that differs.

Which files: a ``*.test.yaml`` named on the command line or in a folder named on it
(``pytest mappings``), and, when pytest runs with no arguments and no ``testpaths`` (a
consultant's project), every one that lies beside mapping files. Other ``*.test.yaml`` files (the
engine's own fixtures and golden cases, under its ``testpaths``) are left alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


def _is_mapping_test(path: Path) -> bool:
    return path.name.endswith((".test.yaml", ".test.yml"))


def _beside_mappings(path: Path) -> bool:
    from engine.paths import is_mapping_file

    return any(p.is_file() and is_mapping_file(p) for p in path.parent.iterdir())


def _named_on_command_line(config: pytest.Config, path: Path) -> bool:
    """The file, or the folder it is in, is an argument of this pytest run."""
    if config.args_source != pytest.Config.ArgsSource.ARGS:
        return False
    wanted = {path.resolve(), path.parent.resolve()}
    for arg in config.args:
        candidate = Path(str(arg).split("::", 1)[0])
        if not candidate.is_absolute():
            candidate = Path(config.invocation_params.dir) / candidate
        if candidate.resolve() in wanted:
            return True
    return False


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if not _is_mapping_test(file_path):
        return None
    config = parent.config
    bare_run = config.args_source == pytest.Config.ArgsSource.INVOCATION_DIR
    if not (_named_on_command_line(config, file_path) or (bare_run and _beside_mappings(file_path))):
        return None
    file: MappingTestFile = MappingTestFile.from_parent(parent, path=file_path)
    return file


class MappingTestFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        from engine.mapping_tests import collect

        suite = collect([self.path])
        if suite.errors:
            yield FileProblems.from_parent(self, name="problems in the test or mapping files",
                                           diagnostics=suite.diagnostics)
        for case in suite.cases:
            yield MappingTestCase.from_parent(self, name=case.name, case=case)


class MappingTestCase(pytest.Item):
    def __init__(self, *, case: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.case = case

    def runtest(self) -> None:
        from engine.mapping_tests import run_case
        from engine.mapping_tests.report import render_case

        result = run_case(self.case)
        if not result.passed:
            raise MappingTestFailure(render_case(result))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, MappingTestFailure):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, max(int(self.case.line) - 1, 0), self.name


class FileProblems(pytest.Item):
    """The test file (or its mappings) cannot be trusted: one failing item listing why."""

    def __init__(self, *, diagnostics: list[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.diagnostics = diagnostics

    def runtest(self) -> None:
        from engine.validate.report import render_diagnostic

        errors = [d for d in self.diagnostics if d.severity == "error"]
        if errors:
            raise MappingTestFailure("\n".join(render_diagnostic(d) for d in errors))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        return str(excinfo.value) if isinstance(excinfo.value, MappingTestFailure) else str(
            super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, self.name


class MappingTestFailure(Exception):
    """A failed mapping test case; its text is the report."""
