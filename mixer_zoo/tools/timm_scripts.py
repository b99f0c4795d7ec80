"""timm's own scripts (``train.py``, ``validate.py``, ``inference.py``, ``benchmark.py``) with the zoo's models.

timm's scripts know only the models registered before they parse ``--model``, and nothing imports mixer-zoo
in them, so ``mixer_s32_zoo`` and any ``local-dir:`` / ``hf-hub:`` folder of a zoo model are "Unknown model"
there. :func:`run_script` runs a script as ``python SCRIPT ARGS`` would, after the zoo is registered.

The scripts are part of timm's source, not of its wheel. They are found in a folder the user names (a
checkout of timm's repository at the installed version), in ``$MIXER_ZOO_TIMM_SCRIPTS``, or in the cache where
:func:`fetch_scripts` puts them after taking them from the source distribution of the installed timm on PyPI.
"""
from __future__ import annotations

import os
import runpy
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from ..util.files import atomic_write
from ..util.report import first_line
from ..weights.download import cache_dir

PathLike = Union[str, Path]

SCRIPTS = ("train.py", "validate.py", "inference.py", "benchmark.py")
SCRIPTS_ENV = "MIXER_ZOO_TIMM_SCRIPTS"
"""A folder holding timm's scripts (a source checkout of the installed timm version)."""


class ScriptsError(ValueError):
    """A timm script cannot be found or obtained."""


def timm_version() -> str:
    import timm

    return timm.__version__


def scripts_cache_dir(version: Optional[str] = None) -> Path:
    """Where :func:`fetch_scripts` keeps the scripts of one timm version."""
    return cache_dir() / "timm-scripts" / (version or timm_version())


def script_dirs(scripts_dir: Optional[PathLike] = None) -> List[Path]:
    """The folders searched for a script given by name, in order."""
    dirs = [Path(scripts_dir)] if scripts_dir else []
    if os.environ.get(SCRIPTS_ENV):
        dirs.append(Path(os.environ[SCRIPTS_ENV]))
    return dirs + [scripts_cache_dir()]


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
    raise ScriptsError(
        f"{name}: timm script not found in {', '.join(map(str, dirs))}; timm's wheel does not ship its scripts: "
        f"give the path of a timm {timm_version()} source checkout (--scripts-dir DIR or ${SCRIPTS_ENV}) or run "
        f"`mixer-zoo timm --fetch` to take them from timm's source distribution on PyPI")


def extract_scripts(sdist: PathLike, dest: PathLike, names: Sequence[str] = SCRIPTS) -> Dict[str, Path]:
    """Copy the top-level ``names`` of a timm source distribution (``timm-VERSION.tar.gz``) into ``dest``.

    Only regular files directly under the archive's single top folder are read (no links, nothing else is
    extracted); each is written atomically."""
    sdist, dest = Path(sdist), Path(dest)
    found: Dict[str, Path] = {}
    try:
        with tarfile.open(sdist, "r:*") as tar:
            members = {}
            for member in tar.getmembers():
                parts = member.name.split("/")
                if len(parts) == 2 and parts[1] in names:
                    members[parts[1]] = member
            missing = [n for n in names if n not in members]
            if missing:
                raise ScriptsError(f"{sdist}: timm's source distribution has no {', '.join(missing)} "
                                   "(only a source checkout of timm's repository has them)")
            links = [m.name for m in members.values() if not m.isfile()]
            if links:
                raise ScriptsError(f"{sdist}: {links[0]} is not a regular file")
            contents = {name: tar.extractfile(members[name]).read() for name in names}
    except (tarfile.TarError, EOFError, OSError) as e:
        if isinstance(e, OSError) and e.filename:
            raise  # the file itself is missing or unreadable: the OS error names it
        raise ScriptsError(f"{sdist}: not a readable source distribution: {first_line(e)}") from None
    for name, data in contents.items():
        found[name] = atomic_write(dest / name, lambda f, data=data: f.write(data))
    return found


def fetch_scripts(dest: Optional[PathLike] = None, version: Optional[str] = None, sdist: Optional[PathLike] = None,
                  timeout: float = 600) -> Dict[str, Path]:
    """timm's scripts of ``version`` (the installed one) from its source distribution, into ``dest`` (the cache).

    The source distribution comes from PyPI through pip (``pip download --no-binary :all:``), or is ``sdist``."""
    version = version or timm_version()
    dest = Path(dest) if dest else scripts_cache_dir(version)
    if sdist:
        return extract_scripts(sdist, dest)
    with tempfile.TemporaryDirectory(prefix="mixer-zoo-timm-sdist-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               "--dest", tmp, f"timm=={version}"]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ScriptsError(f"pip download timm=={version}: no answer within {timeout:.0f} s") from None
        if done.returncode != 0:
            lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
            raise ScriptsError(f"pip download timm=={version} failed: {lines[-1] if lines else done.returncode}")
        archives = sorted(Path(tmp).glob("timm-*.tar.gz")) + sorted(Path(tmp).glob("timm-*.zip"))
        if not archives:
            raise ScriptsError(f"pip download timm=={version} gave no source distribution")
        return extract_scripts(archives[0], dest)


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
