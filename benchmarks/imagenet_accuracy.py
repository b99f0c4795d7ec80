"""Top-1 / top-5 of every released ImageNet-1k weights tag on a validation directory -> benchmarks/results/.

    python benchmarks/imagenet_accuracy.py --imagenet-val /data/imagenet/val --name imagenet_val
    torchrun --nproc_per_node 8 benchmarks/imagenet_accuracy.py --imagenet-val /data/imagenet/val --name imagenet_val

Weights come from the Hugging Face Hub (or its offline cache). Writes ``<name>.csv``, ``<name>.json`` and a
``<name>.png`` of top-1 against GMACs.
"""
import argparse
import os
from pathlib import Path

from mixer_zoo.tools.evaluate import evaluate
from mixer_zoo.tools.plots import plot_results
from mixer_zoo.weights.manifest import weights_entries
from mixer_zoo.util.report import format_table, write_csv, write_json

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imagenet-val", required=True)
    parser.add_argument("--label-file")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--name", required=True, help="file name stem under benchmarks/results/")
    args = parser.parse_args()
    tags = [key for key, e in weights_entries().items() if e["hf_hub_id"] and e["label_set"] == "imagenet-1k"]
    rows = [evaluate(tag, args.imagenet_val, args.label_file, batch_size=args.batch_size, workers=args.workers,
                     device=args.device, dtype=args.dtype) for tag in tags]
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_table(rows, ["model", "top1", "top5", "images", "param_count", "infer_gmacs"]))
        write_csv(RESULTS / f"{args.name}.csv", rows)
        write_json(RESULTS / f"{args.name}.json", rows)
        plot_results(rows, str(RESULTS / f"{args.name}.png"), y="top1", x="infer_gmacs",
                     title=f"ImageNet-1k top-1 on {args.imagenet_val}")


if __name__ == "__main__":
    main()
