"""``mixer-zoo eval``: argument parsing over :mod:`mixer_zoo.tools.evaluate`."""
from __future__ import annotations

import argparse
import os

from .bench import DTYPE_NAMES


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", help="weights tag(s), comma-separated (arch alone means its default tag)")
    parser.add_argument("--imagenet-val", required=True, metavar="DIR",
                        help="class-per-folder (WordNet ids) validation tree, or a flat folder with --label-file")
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
                        help="record top-1/top-5 in the tag's metrics.measured.imagenet_val")


def run(args: argparse.Namespace) -> int:
    from ..tools.evaluate import evaluate
    from ..tools.plots import plot_results
    from ..util.report import format_table, write_csv, write_json
    from ..weights.manifest import update_measured_metrics

    names = [n.strip() for n in args.names.split(",") if n.strip()]
    if args.checkpoint and len(names) != 1:
        raise ValueError("--checkpoint goes with exactly one weights tag")
    rows = [evaluate(n, args.imagenet_val, args.label_file, args.checkpoint, args.batch_size, args.workers,
                     args.device, args.dtype) for n in names]
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # rank 0 reports for everyone
    print(format_table(rows, ["model", "top1", "top5", "images", "param_count", "infer_gmacs", "dtype"]))
    if args.json:
        write_json(args.json, rows)
    if args.csv:
        write_csv(args.csv, rows)
    if args.plot:
        plot_results(rows, args.plot, y="top1", x="infer_gmacs", title=f"top-1 on {args.imagenet_val}")
    if args.update_manifest:
        fields = ("top1", "top5", "images", "dataset", "dtype", "hardware", "date")
        path = update_measured_metrics({r["model"]: {"imagenet_val": {f: r[f] for f in fields}} for r in rows})
        print(f"updated {path}")
    return 0
