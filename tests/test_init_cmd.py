"""`casavi-sync init DIR`: a consultant's mapping project that validates and tests green on its own."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from ruamel.yaml import YAML

from engine import __version__
from engine.cli import main
from engine.mapping_tests import run_tests
from engine.paths import MAPPINGS_DIR
from engine.validate import validate_paths


def cli(*args: str) -> Result:
    result = CliRunner().invoke(main, list(args))
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "kunde-a"
    result = cli("init", str(folder), "--name", "Hausverwaltung Nord")
    assert result.exit_code == 0, result.output
    return folder


def test_init_writes_the_defaults_their_tests_and_the_tooling(project: Path) -> None:
    shipped = sorted(p.name for p in MAPPINGS_DIR.glob("*.yaml"))
    assert sorted(p.name for p in (project / "mappings").iterdir()) == shipped
    for name in shipped:
        assert (project / "mappings" / name).read_bytes() == (MAPPINGS_DIR / name).read_bytes()
    for rel in ("README.md", ".gitignore", ".vscode/settings.json", ".pre-commit-config.yaml",
                ".github/workflows/mappings.yml", "schemas/mapping.schema.json", "schemas/mapping-test.schema.json"):
        assert (project / rel).is_file(), rel
    readme = (project / "README.md").read_text(encoding="utf-8")
    assert "Hausverwaltung Nord" in readme and __version__ in readme and "{" not in readme.replace("```", "")


def test_the_project_validates_and_tests_green_on_its_own(project: Path) -> None:
    assert validate_paths([project / "mappings"]).valid
    result = run_tests([project / "mappings"])
    assert result.ok and len(result.cases) >= 25


def test_every_file_binds_a_schema_that_is_in_the_project(project: Path) -> None:
    for path in (project / "mappings").glob("*.yaml"):
        first = path.read_text(encoding="utf-8").splitlines()[0]
        relative = first.split("$schema=", 1)[1]
        assert (path.parent / relative).resolve().is_file(), path.name
    settings = json.loads((project / ".vscode" / "settings.json").read_text(encoding="utf-8"))
    for schema, globs in settings["yaml.schemas"].items():
        assert (project / schema).is_file(), schema
        assert any(g.startswith("mappings/") for g in globs)


def _commands(project: Path) -> list[list[str]]:
    yaml = YAML(typ="safe", pure=True)
    hooks = yaml.load((project / ".pre-commit-config.yaml").read_text(encoding="utf-8"))["repos"][0]["hooks"]
    workflow = yaml.load((project / ".github" / "workflows" / "mappings.yml").read_text(encoding="utf-8"))
    steps = [s["run"] for s in workflow["jobs"]["check"]["steps"] if "run" in s]
    assert __version__ in workflow["env"]["CASAVI_SYNC_PACKAGE"]
    commands = [shlex.split(h["entry"]) for h in hooks] + [shlex.split(s) for s in steps if s.startswith("casavi-sync")]
    assert ["casavi-sync", "validate", "--format", "github", "mappings"] in commands
    assert ["casavi-sync", "test", "--format", "github", "mappings"] in commands
    return commands


def test_the_pre_commit_hooks_and_the_ci_steps_pass_in_the_project(project: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(project)
    monkeypatch.delenv("CASAVI_SYNC_MAPPINGS")  # the project's own mappings, as in CI
    commands = _commands(project)
    assert len(commands) == 4
    for command in commands:
        assert command[0] == "casavi-sync"
        result = cli(*command[1:])
        assert result.exit_code == 0, (command, result.output)


def test_init_never_overwrites(project: Path) -> None:
    units = project / "mappings" / "units.yaml"
    units.write_text("# my work\n", encoding="utf-8")
    again = cli("init", str(project))
    assert again.exit_code == 3
    assert again.output.startswith("error: ") and "never overwrites" in again.output
    assert len(again.output.strip().splitlines()) == 1
    assert units.read_text(encoding="utf-8") == "# my work\n"


def test_init_on_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x", encoding="utf-8")
    result = cli("init", str(target))
    assert result.exit_code == 3 and "is a file" in result.output


def test_init_into_an_existing_empty_folder_works(tmp_path: Path) -> None:
    result = cli("init", str(tmp_path))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mappings" / "units.test.yaml").is_file()
    assert "casavi-sync validate mappings" in result.output
