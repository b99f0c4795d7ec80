"""timm's own scripts (``train.py``, ``validate.py``, ``inference.py``, ``benchmark.py``) with the zoo's models.

timm's scripts know only the models registered before they parse ``--model``, and nothing imports mixer-zoo
in them, so ``mixer_s32_zoo`` and any ``local-dir:`` / ``hf-hub:`` folder of a zoo model are "Unknown model"
there. :func:`run_script` runs a script as ``python SCRIPT ARGS`` would, after the zoo is registered.

The scripts live only in timm's repository: neither its wheel nor its source distribution on PyPI ships them
(timm 1.0.31's sdist holds ``timm/``, ``tests/`` and the packaging files). A script is given by its path, or by
name and found in a folder the user names, e.g. a checkout of timm at the installed version.
"""
from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path
from typing import List, Optional, Sequence, Union

PathLike = Union[str, Path]

SCRIPTS = ("train.py", "validate.py", "inference.py", "benchmark.py")
SCRIPTS_ENV = "MIXER_ZOO_TIMM_SCRIPTS"
"""A folder holding timm's scripts (a checkout of timm's repository at the installed version)."""


class ScriptsError(ValueError):
    """A timm script cannot be found."""


def timm_version() -> str:
    import timm

    return timm.__version__


def script_dirs(scripts_dir: Optional[PathLike] = None) -> List[Path]:
    """The folders searched for a script given by name, in order: ``scripts_dir``, then ``$MIXER_ZOO_TIMM_SCRIPTS``."""
    dirs = [Path(scripts_dir)] if scripts_dir else []
    if os.environ.get(SCRIPTS_ENV):
        dirs.append(Path(os.environ[SCRIPTS_ENV]))
    return dirs


def find_script(script: PathLike, scripts_dir: Optional[PathLike] = None) -> Path:
    """``script`` itself when it is a file, else ``train.py`` & co. (``.py`` optional) in :func:`script_dirs`."""
    path = Path(script)
    if path.is_file():
        return path.resolve()
    if path.parent != Path("."):
        raise ScriptsError(f"{path}: no such file")
    name = path.name if path.suffix == ".py" else f"{path.name}.py"
    dirs = script_dirs(scripts_dir)
    for folder in dirs:
        if (folder / name).is_file():
            return (folder / name).resolve()
    version = timm_version()
    where = f"not found in {', '.join(map(str, dirs))}" if dirs else "not found (no --scripts-dir, no $" + SCRIPTS_ENV + ")"
    raise ScriptsError(
        f"{name}: timm script {where}; timm's wheel and source distribution do not ship its scripts: take them "
        f"from a checkout of timm {version} (git clone --depth 1 --branch v{version} "
        f"https://github.com/huggingface/pytorch-image-models) and pass --scripts-dir DIR, set ${SCRIPTS_ENV}, "
        "or give the script's path")


def run_script(script: PathLike, argv: Sequence[str] = (), scripts_dir: Optional[PathLike] = None) -> int:
    """Run a timm script as ``python SCRIPT ARGV...`` would (``__main__``, its folder first on ``sys.path``),
    with the zoo's models registered; its exit code (``sys.exit``'s argument) is returned."""
    from .. import zoo  # noqa: F401  (registers the mixer_*_zoo architectures with timm)

    path = find_script(script, scripts_dir)
    saved_argv, saved_path = sys.argv[:], sys.path[:]
    sys.argv = [str(path), *argv]
    sys.path.insert(0, str(path.parent))
    try:
        runpy.run_path(str(path), run_name="__main__")
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return int(e.code or 0)
        print(e.code, file=sys.stderr)
        return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
    return 0
