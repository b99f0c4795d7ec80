"""``mixer-zoo timm SCRIPT ARGS...``: timm's own ``train.py``, ``validate.py``, ``inference.py`` and
``benchmark.py`` with the zoo's models registered (:mod:`mixer_zoo.tools.timm_scripts`). Importing this module
imports nothing else."""
from __future__ import annotations

import argparse


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scripts-dir", metavar="DIR",
                        help="folder with timm's scripts, e.g. a checkout of timm's repository at the installed "
                             "version (default: $MIXER_ZOO_TIMM_SCRIPTS)")
    parser.add_argument("script", metavar="SCRIPT",
                        help="train.py, validate.py, inference.py, benchmark.py (found in --scripts-dir), or a path")
    parser.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                        help="the script's own arguments, e.g. --model local-dir:FOLDER --pretrained --device cpu")


def run(args: argparse.Namespace) -> int:
    from ..tools.timm_scripts import run_script

    return run_script(args.script, args.args, args.scripts_dir)
