"""A consultant's mapping project: the folder `casavi-sync init DIR` makes, kept in their own git.

It holds a copy of the shipped default mappings with their tests, the schemas the mapping files
point at (``# yaml-language-server: $schema=../schemas/...``), editor settings binding them, a
pre-commit config and a CI workflow that run ``validate`` and ``test``, and a short README. The
project stands alone: it validates and tests green with nothing but an installed casavi-sync.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from engine import __version__
from engine.errors import ConfigError
from engine.paths import MAPPING_SCHEMA, MAPPING_TEST_SCHEMA, MAPPINGS_DIR, PROJECT_TEMPLATES

# template in engine/data/project/ -> where it goes in the project
_TEMPLATES = {
    "README.md": "README.md",
    "gitignore": ".gitignore",
    "vscode-settings.json": ".vscode/settings.json",
    "pre-commit-config.yaml": ".pre-commit-config.yaml",
    "workflow.yml": ".github/workflows/mappings.yml",
}
_NAME = re.compile(r"[^\w .-]+")


@dataclass(frozen=True)
class Project:
    folder: Path
    files: tuple[Path, ...]  # relative to folder, in the order written


def planned_files() -> list[str]:
    """Every file init writes, relative to the project folder."""
    mappings = sorted(f"mappings/{p.name}" for p in MAPPINGS_DIR.iterdir() if p.suffix in (".yaml", ".yml"))
    schemas = [f"schemas/{MAPPING_SCHEMA.name}", f"schemas/{MAPPING_TEST_SCHEMA.name}"]
    return [*mappings, *schemas, *_TEMPLATES.values()]


def init_project(folder: Path, name: str | None = None) -> Project:
    """Write a new mapping project into `folder` (created if missing).

    Refuses, writing nothing, when any file it would write is already there: init never overwrites
    a consultant's work.
    """
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file; init needs a folder (new or empty)")
    clash = [rel for rel in planned_files() if (folder / rel).exists()]
    if clash:
        raise ConfigError(f"{folder} already holds {', '.join(clash[:3])}{' ...' if len(clash) > 3 else ''}; "
                          f"init writes only into a new or empty folder and never overwrites")
    title = _NAME.sub("", name or folder.resolve().name).strip() or "this customer"
    written: list[Path] = []
    try:
        (folder / "mappings").mkdir(parents=True, exist_ok=True)
        for path in sorted(MAPPINGS_DIR.iterdir()):
            if path.suffix in (".yaml", ".yml"):
                shutil.copyfile(path, folder / "mappings" / path.name)
                written.append(Path("mappings") / path.name)
        (folder / "schemas").mkdir(exist_ok=True)
        for schema in (MAPPING_SCHEMA, MAPPING_TEST_SCHEMA):
            shutil.copyfile(schema, folder / "schemas" / schema.name)
            written.append(Path("schemas") / schema.name)
        for template, target in _TEMPLATES.items():
            text = (PROJECT_TEMPLATES / template).read_text(encoding="utf-8")
            text = text.replace("{version}", __version__).replace("{name}", title)
            (folder / target).parent.mkdir(parents=True, exist_ok=True)
            (folder / target).write_text(text, encoding="utf-8")
            written.append(Path(target))
    except OSError as exc:
        raise ConfigError(f"cannot write the project into {folder}: {exc.strerror or exc}") from None
    return Project(folder, tuple(written))
