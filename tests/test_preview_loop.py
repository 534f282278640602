"""The consultant's preview loop (docs/consultant-guide.md) end to end: `casavi-sync sandbox` in
its own process, its printed `export` lines pasted into the environment, tenant add / activate /
connect without the initial import, the released mappings imported, then `plan --details` and
`explain` with a changed mapping show the change and write nothing."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from engine.cli import main
from tests.conftest import MAPPINGS_DIR, fast_connector_config


@pytest.fixture
def sandbox_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    code = "from engine.cli import main; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "sandbox", "--properties", "1", "--seed", "3",
                             "--rate-limit", "0", "--port-scalara", "0", "--port-casavi", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    assert proc.stdout is not None
    exports: dict[str, str] = {}
    deadline = time.monotonic() + 20
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line or line.startswith("Serving"):
                break
            if line.startswith("export "):  # exactly what a person pastes into a shell
                name, _, value = line.removeprefix("export ").strip().partition("=")
                exports[name] = shlex.split(value)[0]
        yield {**exports, "CASAVI_SYNC_CONNECTOR_CONFIG": str(fast_connector_config(tmp_path))}
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def cli(env: dict[str, str], *args: str) -> Result:
    result = CliRunner().invoke(main, list(args), env=env)
    assert "Traceback" not in result.output
    return result


@pytest.mark.slow
def test_the_preview_loop_of_the_guide(sandbox_env: dict[str, str], tmp_path: Path) -> None:
    env = sandbox_env
    assert set(env) >= {"CASAVI_SYNC_SCALARA_URL", "CASAVI_SYNC_CASAVI_URL", "CASAVI_SYNC_SCALARA_TOKEN",
                        "CASAVI_SYNC_CASAVI_KEY", "CASAVI_SYNC_CASAVI_SECRET", "CASAVI_SYNC_STATE"}
    assert Path(env["CASAVI_SYNC_STATE"]).parent.is_dir() and not Path(env["CASAVI_SYNC_STATE"]).exists()
    released, changed = tmp_path / "released", tmp_path / "mappings"
    shutil.copytree(MAPPINGS_DIR, released)
    shutil.copytree(MAPPINGS_DIR, changed)
    units = changed / "units.yaml"
    units.write_text(units.read_text(encoding="utf-8").replace(
        "          etage: floor\n", "          etage: floor\n          ort: building.city\n"), encoding="utf-8")

    assert cli(env, "tenant", "add").exit_code == 0
    assert cli(env, "tenant", "activate").exit_code == 0
    connected = cli(env, "connect", "--no-initial-import")
    assert connected.exit_code == 0 and "run 1" not in connected.output
    before = cli(env, "plan", "--mappings", str(released), "--format", "json")
    assert before.exit_code == 4  # nothing imported by connect: everything still to create

    assert cli(env, "run", "--quiet", "--mappings", str(released)).exit_code in (0, 1)
    assert cli(env, "plan", "--quiet", "--mappings", str(released)).exit_code == 0  # casavi = released

    env_mappings = {**env, "CASAVI_SYNC_MAPPINGS": str(changed)}  # --mappings from the environment
    plan = cli(env_mappings, "plan", "--details")
    assert plan.exit_code == 4
    updates = [line for line in plan.output.splitlines() if line.startswith("update ")]
    assert updates and all(line.startswith("update units ") for line in updates)
    assert plan.output.count("customFields.ort: (absent) -> ") == len(updates)
    source_id = updates[0].split("SCALARA units ", 1)[1].rstrip(")")
    explained = cli(env, "explain", "units", source_id, "--mappings", str(changed))
    assert explained.exit_code == 0, explained.output
    assert "ort = `building.city`" in explained.output and "next run: update units/" in explained.output
    assert cli(env, "plan", "--quiet", "--mappings", str(released)).exit_code == 0  # plan wrote nothing
