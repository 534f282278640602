"""`run` with mappings that make NaN/Infinity: refused by validation, or a per-record plan error;
never "internal error"."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from engine.cli import main
from tests.conftest import MAPPINGS_DIR, fast_connector_config


@pytest.mark.slow  # a sandbox and a run (~1.5 s)
def test_run_with_nonfinite_values_never_ends_in_an_internal_error(tmp_path: Path) -> None:
    from engine.sandbox import FaultConfig, Sandbox

    folder = tmp_path / "mappings"
    folder.mkdir()
    for f in MAPPINGS_DIR.glob("*.yaml"):
        if not f.name.endswith(".test.yaml"):
            shutil.copy(f, folder / f.name)
    units = (folder / "units.yaml").read_text(encoding="utf-8")
    assert "      number: number\n" in units
    with Sandbox(properties=1, seed=2, scalara_faults=FaultConfig(), casavi_faults=FaultConfig()) as sb:
        env = {"CASAVI_SYNC_STATE": str(tmp_path / "state.db"), "CASAVI_SYNC_SCALARA_URL": sb.scalara_url,
               "CASAVI_SYNC_CASAVI_URL": sb.casavi_url,
               "CASAVI_SYNC_CONNECTOR_CONFIG": str(fast_connector_config(tmp_path))}
        cli = CliRunner()
        assert cli.invoke(main, ["tenant", "add", "--key-stdin", "--secret-stdin"], env=env,
                          input=f"{sb.casavi_key}\n{sb.casavi_secret}\n").exit_code == 0
        assert cli.invoke(main, ["tenant", "activate"], env=env).exit_code == 0
        assert cli.invoke(main, ["connect", "--no-initial-import", "--token-stdin"], env=env,
                          input=sb.generate_scalara_token() + "\n").exit_code == 0

        for value, code in (("{const: .nan}", 3), ('"`1e999`"', 3), ("\"to_number('1e999')\"", 1)):
            (folder / "units.yaml").write_text(units.replace("      number: number\n", f"      number: {value}\n"),
                                               encoding="utf-8")
            result = cli.invoke(main, ["run", "--mappings", str(folder)], env=env)
            assert result.exit_code == code, (value, result.output)
            assert "internal error" not in result.output and "Traceback" not in result.output
            if code == 3:
                assert "NaN or Infinity" in result.output
            else:     # computed at run time: each unit is a plan error, nothing of it is sent
                assert "JSON cannot carry" in result.output
