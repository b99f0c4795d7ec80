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


def test_errors_are_one_line_naming_the_file_and_debug_shows_the_traceback(tmp_path, capsys):
    from mixer_zoo.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    src = tmp_path / "x.npz"
    src.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty zip: no arrays
    assert main(["convert", str(src), "--out", str(tmp_path / "out")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and str(src) in lines[0], lines
    assert main(["manifest", "check", "--manifest", str(blocker / "m.json")]) == 2  # an OSError: ENOTDIR
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"mixer-zoo manifest: error: {blocker / 'm.json'}: Not a directory"], lines
    for argv in (["--debug", "convert", str(src), "--out", str(tmp_path / "out")],
                 ["convert", str(src), "--out", str(tmp_path / "out"), "--debug"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" in err and err.strip().splitlines()[-1].startswith("mixer-zoo convert: error: ")


def test_an_os_error_names_its_file():
    from mixer_zoo.cli import error_line

    assert error_line(OSError(28, "No space left on device", "/data/out/model.safetensors")) == \
        "/data/out/model.safetensors: No space left on device"
    assert error_line(KeyError("weights")) == "weights"
    assert error_line(ValueError("first\nsecond")) == "first (...)"


def test_version():
    from mixer_zoo import __version__

    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"mixer-zoo {__version__}"


def test_help_version_and_list_import_no_heavy_library():
    """What keeps them under a second (torch, timm and mmengine take seconds to import). Checked by what gets
    imported rather than by a clock, which a loaded machine would fail; README gives the measured times."""
    code = ("import sys\nfrom mixer_zoo.cli import main\n"
            "for argv in (['--help'], ['--version'], ['list'], ['list', '--json'], ['list', '--help']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'timm', 'mmengine', 'mmpretrain', 'numpy') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    assert "mixer_h14_zoo" in result.stdout and "--version" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_every_subcommand_configures_its_parser():
    """``--help`` configures only the named subcommand; the full parser still builds every one."""
    from mixer_zoo.cli import SUBCOMMANDS, build_parser

    parser = build_parser()
    for name in SUBCOMMANDS:
        sub = parser._subparsers._group_actions[0].choices[name]
        assert any(a.dest not in ("help", "debug") for a in sub._actions), name


def test_usage_errors_are_one_line():
    for argv, words in ((["frobnicate"], "invalid choice: 'frobnicate'"), ([], "required: COMMAND"),
                        (["list", "--no-such-flag"], "unrecognized arguments: --no-such-flag")):
        result = run_cli(*argv)
        assert result.returncode == 2 and result.stderr.count("\n") == 1 and words in result.stderr, result.stderr
