"""``python -m mixer_zoo.test CONFIG CHECKPOINT`` (or ``mixer-zoo test``): evaluate with mmengine's Runner.

CHECKPOINT is a file written by ``mixer_zoo.train`` or ``zoo://arch.tag``. Under torchrun with
``--launcher pytorch`` the test set is sharded over the processes. Rank 0 prints the metrics as a table
and can write them as JSON or CSV.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from .train import add_common_arguments

    parser.add_argument("config", help="config file, shipped config (eval/<name>.py) or zoo model name")
    parser.add_argument("checkpoint", help="checkpoint file or zoo://arch.tag")
    parser.add_argument("--json", metavar="PATH", help="write the metrics as JSON")
    parser.add_argument("--csv", metavar="PATH", help="write the metrics as CSV")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..mmpretrain.launch import (build_runner, checkpoint_arg, config_assertions_as_errors, finish_distributed,
                                     is_main_process, load_config, set_threads)
    from ..util.report import format_table, write_csv, write_json

    cfg = load_config(args)
    set_threads(args.threads)
    cfg.load_from = checkpoint_arg(args.checkpoint)
    cfg.resume = False
    succeeded = False
    try:
        with config_assertions_as_errors(cfg):
            metrics = build_runner(cfg).test()
        main_process = is_main_process()
        succeeded = True
    finally:
        finish_distributed(succeeded)
    if not main_process:
        return 0
    rows = [dict(config=str(args.config), checkpoint=str(args.checkpoint),
                 **{k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in metrics.items()})]
    print(format_table(rows))
    if args.json:
        write_json(args.json, rows)
    if args.csv:
        write_csv(args.csv, rows)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from . import main as cli_main

    return cli_main(["test", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
