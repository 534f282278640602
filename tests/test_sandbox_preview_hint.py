"""The sandbox's copy-paste preview command must work in whatever folder it is pasted into."""

from __future__ import annotations

import shlex
from pathlib import Path

from engine.cli.sandbox_cmd import _preview_plan


def test_hint_names_the_project_mappings_by_absolute_path(tmp_path: Path) -> None:
    (tmp_path / "my project" / "mappings").mkdir(parents=True)
    hint = _preview_plan(tmp_path / "my project")
    words = shlex.split(hint.split("#")[0])
    assert words[:3] == ["casavi-sync", "plan", "--details"]
    folder = Path(words[words.index("--mappings") + 1])
    assert folder.is_absolute() and folder.is_dir()          # pasted anywhere, it still finds them


def test_hint_without_a_project_folder_explains_the_placeholder(tmp_path: Path) -> None:
    hint = _preview_plan(tmp_path)
    assert "--mappings mappings " not in hint                # the relative path that failed elsewhere
    assert "--mappings PROJECT/mappings" in hint and "PROJECT: your mapping project folder" in hint
