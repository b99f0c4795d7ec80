"""``mixer-zoo timm SCRIPT ARGS...``: timm's own ``train.py``, ``validate.py``, ``inference.py`` and
``benchmark.py`` with the zoo's models registered (:mod:`mixer_zoo.tools.timm_scripts`); ``--fetch`` takes the
scripts of the installed timm from its source distribution on PyPI. Importing this module imports nothing else."""
from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scripts-dir", metavar="DIR",
                        help="folder with timm's scripts, e.g. a checkout of timm's repository at the installed "
                             "version (default: $MIXER_ZOO_TIMM_SCRIPTS, then what --fetch put in the cache)")
    parser.add_argument("--fetch", action="store_true",
                        help="first download the installed timm version's scripts (its source distribution on PyPI, "
                             "with pip) into the mixer-zoo cache")
    parser.add_argument("script", nargs="?", metavar="SCRIPT",
                        help="train.py, validate.py, inference.py, benchmark.py (or the path of a timm script)")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                        help="the script's own arguments, e.g. --model local-dir:FOLDER --pretrained --device cpu")


def run(args: argparse.Namespace) -> int:
    from ..tools.timm_scripts import fetch_scripts, run_script
    from . import CLIError

    if args.fetch:
        for name, path in fetch_scripts().items():
            print(f"{name}: {path}")
    if not args.script:
        if args.fetch:
            return 0
        raise CLIError("name a timm script (train.py, validate.py, inference.py, benchmark.py) or use --fetch")
    return run_script(args.script, args.args, args.scripts_dir)
