"""``mixer-zoo demo``: argument parsing over :mod:`mixer_zoo.tools.demo`."""
from __future__ import annotations

import argparse
import contextlib
import tempfile
from pathlib import Path

from ..tools.demo import DEMO_TAG


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", help="keep every file the demo writes here (default: a temporary folder)")
    parser.add_argument("--tag", default=DEMO_TAG, help=f"the weights tag to convert and load (default {DEMO_TAG})")
    parser.add_argument("--bench-models", default="mixer_s32_zoo,mixer_b16_zoo",
                        help="architectures for the ours-vs-timm table, comma-separated ('' for none)")
    parser.add_argument("--batch-size", type=int, default=16, help="benchmark batch size (default 16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed benchmark repeats (median reported)")
    parser.add_argument("--skip-variants", action="store_true", help="skip the forward pass of every architecture")


def run(args: argparse.Namespace) -> int:
    from ..tools.bench import parse_model_list
    from ..tools.demo import run_pipeline

    models = parse_model_list(args.bench_models) if args.bench_models.strip() else []
    print("mixer-zoo demo: convert -> local Hub cache -> pretrained=True -> benchmark, offline on CPU")
    with contextlib.ExitStack() as stack:
        if args.work_dir:
            work = Path(args.work_dir)
            work.mkdir(parents=True, exist_ok=True)
            if any(work.iterdir()):
                raise ValueError(f"{work}: --work-dir must be empty or new (the demo does not overwrite files)")
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mixer-zoo-demo-")))
        run_pipeline(work.resolve(), args.tag, models, args.batch_size, args.repeats, not args.skip_variants)
    print("\ndemo finished: every step passed")
    return 0
