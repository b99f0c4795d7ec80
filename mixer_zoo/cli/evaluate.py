"""``mixer-zoo eval``: argument parsing over :mod:`mixer_zoo.tools.evaluate` (ImageNet with ``--imagenet-val``,
CIFAR-10 with ``--cifar10``)."""
from __future__ import annotations

import argparse
import os

from .bench import DTYPE_NAMES


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", help="weights tag(s), comma-separated (arch alone means its default tag); with "
                        "--cifar10 also converted folders (mixer-zoo convert --out)")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--imagenet-val", metavar="DIR",
                      help="class-per-folder (WordNet ids) validation tree, or a flat folder with --label-file")
    data.add_argument("--cifar10", metavar="DIR", help="folder holding cifar-10-batches-py/ (or that folder): "
                      "top-1/top-5 on its test_batch, as the MindSpore release's eval.py")
    parser.add_argument("--label-file", metavar="PATH", help="'<image> <wnid or index>' lines for a flat folder")
    parser.add_argument("--checkpoint", metavar="PATH", help="safetensors weights instead of the Hub's (one tag)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=4, help="DataLoader worker processes")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda")
    parser.add_argument("--dtype", default="fp32", choices=DTYPE_NAMES)
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--csv", metavar="PATH", help="write the results as CSV")
    parser.add_argument("--plot", metavar="PATH", help="PNG of top-1 vs GMACs")
    parser.add_argument("--update-manifest", action="store_true",
                        help="record top-1/top-5 in the tag's metrics.measured.imagenet_val (cifar10_test with "
                        "--cifar10; a converted folder records into the tag it was converted from)")


def run(args: argparse.Namespace) -> int:
    from ..tools.evaluate import evaluate, evaluate_cifar10
    from ..tools.plots import plot_results
    from ..util.report import format_table, write_csv, write_json
    from ..weights.manifest import update_measured_metrics

    names = [n.strip() for n in args.names.split(",") if n.strip()]
    if args.checkpoint and len(names) != 1:
        raise ValueError("--checkpoint goes with exactly one weights tag")
    if args.cifar10:
        rows = [evaluate_cifar10(n, args.cifar10, args.checkpoint, args.batch_size, args.workers, args.device,
                                 args.dtype) for n in names]
    else:
        rows = [evaluate(n, args.imagenet_val, args.label_file, args.checkpoint, args.batch_size, args.workers,
                         args.device, args.dtype) for n in names]
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 reports for everyone
    columns = ["model", "top1", "top5", "images", "param_count"] + ([] if args.cifar10 else ["infer_gmacs"])
    print(format_table(rows, columns + ["dtype"]))
    if args.json:
        write_json(args.json, rows)
    if args.csv:
        write_csv(args.csv, rows)
    if args.plot:
        plot_results(rows, args.plot, y="top1", x="param_count" if args.cifar10 else "infer_gmacs",
                     title=f"top-1 on {args.cifar10 or args.imagenet_val}")
    if args.update_manifest:
        fields = ("top1", "top5", "images", "dataset", "dtype", "hardware", "date")
        group = "cifar10_test" if args.cifar10 else "imagenet_val"
        path = update_measured_metrics({r["model"]: {group: {f: r[f] for f in fields}} for r in rows})
        print(f"updated {path}")
    return 0
