"""A real install: the wheel, built from a copy of the checkout and installed into a fresh venv, runs
`demo`, `validate`, `test`, `schema --path` and `init` from an unrelated folder with no checkout
on sys.path (everything the engine reads at run time ships inside the wheel).

Marked slow (building and installing take tens of seconds); .ci/run runs it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_IGNORE = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", ".pytest_cache", ".mypy_cache",
                                 ".ruff_cache", "build", "dist", ".venv", "reports", "cassettes", "tests")


@pytest.mark.slow
def test_the_wheel_works_from_an_unrelated_folder(tmp_path: Path) -> None:
    source, dist, venv, elsewhere = (tmp_path / n for n in ("src", "dist", "venv", "elsewhere"))
    shutil.copytree(ROOT, source, symlinks=True, ignore=_IGNORE)
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("CASAVI_SYNC_")}
    env.update(HOME=str(tmp_path), XDG_STATE_HOME=str(tmp_path / "state"), PYTHONDONTWRITEBYTECODE="1")

    def run(*cmd: str | Path, ok: tuple[int, ...] = (0,)) -> str:
        done = subprocess.run([str(c) for c in cmd], cwd=elsewhere, env=env, capture_output=True, text=True,
                              timeout=600, check=False)
        assert done.returncode in ok, f"{cmd}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done.stdout

    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", source, "-w", dist)
    wheels = list(dist.glob("casavi_sync-*.whl"))
    assert len(wheels) == 1
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "pip", "install", "--quiet", wheels[0])
    shutil.rmtree(source)  # nothing may come from the copy the wheel was built from

    tool = venv / "bin" / "casavi-sync"
    package = Path(run(venv / "bin" / "python", "-c", "import engine; print(engine.__file__)").strip())
    assert package.is_relative_to(venv) and "site-packages" in package.parts

    schema = Path(run(tool, "schema", "--path").strip())
    assert schema.is_file() and schema.is_relative_to(venv) and schema.name == "mapping.schema.json"
    assert "valid" in run(tool, "validate")
    assert " passed" in run(tool, "test") and "failed" not in run(tool, "test", "--quiet")
    # the console's templates and stylesheet ship in the wheel
    console = run(venv / "bin" / "python", "-c", "from engine.paths import WEB_STATIC; from engine.web.app import ENV; "
                  "print(ENV.get_template('scalara.html').filename, (WEB_STATIC / 'style.css').is_file())")
    assert console.strip().endswith("True") and Path(console.split()[0]).is_relative_to(venv)
    demo = run(tool, "demo", "--properties", "1", "--state", elsewhere / "demo" / "state.db", ok=(0, 1))
    assert "demo finished" in demo

    run(tool, "init", "project")
    assert "valid" in run(tool, "validate", "--format", "github", "project/mappings")
    assert " passed" in run(tool, "test", "project/mappings")
