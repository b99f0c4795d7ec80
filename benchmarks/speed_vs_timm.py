"""Ours vs timm's ``MlpMixer`` (and mmpretrain's), same weights, alternating repeats -> benchmarks/results/.

    python benchmarks/speed_vs_timm.py --models mixer_b16_zoo --batch-size 16 --repeats 10 --name cpu_b16_bs16
    python benchmarks/speed_vs_timm.py --models all --batch-size 4 --repeats 3 --no-train --name cpu_all_bs4

Writes ``<name>.csv``, ``<name>.json`` and ``<name>.png``; every row names the hardware and torch version.
"""
import argparse
from pathlib import Path

from mixer_zoo.tools.bench import DTYPES, benchmark_models, parse_model_list, summary_table
from mixer_zoo.tools.plots import plot_results
from mixer_zoo.util.report import write_csv, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mixer_b16_zoo")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--mmpretrain", action="store_true")
    parser.add_argument("--name", required=True, help="file name stem under benchmarks/results/")
    args = parser.parse_args()
    rows = benchmark_models(parse_model_list(args.models), device=args.device, dtype=args.dtype,
                            batch_size=args.batch_size, warmup=args.warmup, repeats=args.repeats,
                            compile=args.compile, train=not args.no_train, mmpretrain=args.mmpretrain)
    print(f"{rows[0]['hardware']}: {args.dtype}, batch {args.batch_size}, median of {args.repeats} alternating repeats")
    print(summary_table(rows))
    write_csv(RESULTS / f"{args.name}.csv", rows)
    write_json(RESULTS / f"{args.name}.json", rows)
    plot_results(rows, str(RESULTS / f"{args.name}.png"),
                 title=f"{rows[0]['hardware']}\n{args.dtype}, batch {args.batch_size}")


if __name__ == "__main__":
    main()
