"""The ``mixer-zoo`` console script, run as a user runs it."""
import json
import os
import subprocess
import sys
from pathlib import Path


CLI = Path(sys.executable).with_name("mixer-zoo")


def run_cli(*args):
    cmd = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "mixer_zoo.cli"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=os.environ.copy())


def test_list_prints_every_architecture_with_exact_params():
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    assert "mixer_h14_zoo" in result.stdout and "432,350,952" in result.stdout
    rows = json.loads(run_cli("list", "--json").stdout)
    assert {r["model"]: r["params"] for r in rows}["mixer_b16_zoo"] == 59_880_472


def test_unknown_subcommand_exits_non_zero():
    result = run_cli("frobnicate")
    assert result.returncode != 0 and "invalid choice" in result.stderr
