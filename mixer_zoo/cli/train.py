"""``python -m mixer_zoo.train CONFIG`` (or ``mixer-zoo train``): train with mmengine's Runner.

One process: ``python -m mixer_zoo.train CONFIG``. Several processes or nodes:
``torchrun --nproc_per_node 8 -m mixer_zoo.train CONFIG --launcher pytorch`` (gloo on CPU, nccl on GPUs).
CONFIG is a file, a path under the shipped ``mixer_zoo/mmpretrain/configs`` (``finetune/cifar10.py``) or a
zoo model name.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional


LAUNCHERS = ("none", "pytorch", "slurm", "mpi")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of both commands (no mmengine import here: ``mixer-zoo list`` must not need it)."""
    parser.add_argument("--work-dir", metavar="DIR", help="logs and checkpoints (default: work_dirs/<config name>)")
    parser.add_argument("--data-root", metavar="DIR",
                        help="the dataset's folder for every dataloader (CIFAR-10: the folder holding "
                        "cifar-10-batches-py/; default: the config's data_root, data/cifar10)")
    parser.add_argument("--cfg-options", nargs="+", metavar="KEY=VALUE",
                        help="override config entries, e.g. train_cfg.max_iters=100 model.backbone.arch=mixer_s16_zoo")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="none",
                        help="'pytorch' under torchrun for several processes or nodes")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch's intra-op threads per process (default: torch's choice, one per core)")
    parser.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="config file, shipped config (finetune/cifar10.py) or zoo model name")
    parser.add_argument("--resume", nargs="?", const="auto", metavar="CHECKPOINT",
                        help="resume from CHECKPOINT, or from the work dir's latest one when no path is given")
    parser.add_argument("--load-from", metavar="CHECKPOINT", help="initial weights (a file or zoo://arch.tag)")
    parser.add_argument("--amp", action="store_true", help="automatic mixed precision (AmpOptimWrapper)")
    parser.add_argument("--auto-scale-lr", action="store_true",
                        help="scale the lr linearly with the total batch size (config's auto_scale_lr)")
    parser.add_argument("--no-validate", action="store_true", help="skip validation during training")
    add_common_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ..mmpretrain.launch import (build_runner, checkpoint_arg, config_assertions_as_errors, finish_distributed,
                                     load_config, set_threads)

    cfg = load_config(args)
    set_threads(args.threads)
    if args.load_from:
        cfg.load_from = checkpoint_arg(args.load_from)
    if args.resume == "auto":
        cfg.resume, cfg.load_from = True, None  # mmengine picks the work dir's last checkpoint
    elif args.resume:
        cfg.resume, cfg.load_from = True, checkpoint_arg(args.resume)
    if args.amp:
        cfg.optim_wrapper.type = "AmpOptimWrapper"
        cfg.optim_wrapper.setdefault("loss_scale", "dynamic")
    if args.auto_scale_lr:
        if "auto_scale_lr" not in cfg:
            raise RuntimeError(f"{args.config}: --auto-scale-lr needs auto_scale_lr=dict(base_batch_size=...) in the config")
        cfg.auto_scale_lr.enable = True
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    succeeded = False
    try:
        with config_assertions_as_errors(cfg):
            build_runner(cfg).train()
        succeeded = True
    finally:
        finish_distributed(succeeded)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    from . import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
