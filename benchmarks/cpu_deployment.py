"""CPU deployment: our Mixer exported (ONNX fp32, int8) and run in onnxruntime / OpenVINO, against timm's fp32
eager ``MlpMixer`` in the same interleaved run -> benchmarks/results/<machine>/deployment_*.

    # once: the model trained on real images (the shipped from-scratch config, ~8 min on 2 cores), as a timm folder
    python benchmarks/cifar10_scratch.py --threads 2 --work-dir /work/art15/c10 \\
        --convert-to /work/art15/c10_32px --name cpu_cifar10_scratch_32px_run3
    python benchmarks/cpu_deployment.py --model /work/art15/c10_32px

Speed (``--speed-models``, default B/16 and S/32 at 224 px, batch 1 and 16): random weights, every path timed
alternately with timm's fp32 eager model through ``mixer_zoo.tools.bench`` (what ``mixer-zoo bench --dtype int8
--runtime ...`` prints). Accuracy: only a model trained on real images says anything, so it is measured on
``--model``, the Mixer trained from scratch on the real CIFAR-10 images, over the 2,000 real test images: top-1
of every path, its drop from our fp32 eager model and its top-1 agreement with it, next to the throughput of that
path on that model (batch 16, interleaved with timm's fp32 eager twin holding the same weights).
Every row names the CPU model and its ISA flags.
"""
import argparse
import os
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from mixer_zoo.mmpretrain import load_split
from mixer_zoo.tools.bench import benchmark_architecture, time_interleaved
from mixer_zoo.tools.export import calibration_images, export_model, load_model, preprocessing_of
from mixer_zoo.tools.plots import plot_accuracy_vs_throughput, plot_results
from mixer_zoo.tools.quantize import timm_twin, torch_dynamic_int8
from mixer_zoo.tools.runtimes import normalise_images, score_paths
from mixer_zoo.tools.sessions import open_onnx
from mixer_zoo.util.hardware import cpu_isa_flags, cpu_model_name, hardware_name, machine_folder_name
from mixer_zoo.util.report import format_table, write_csv, write_json

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "cifar10-real"
SPEED_COLUMNS = ["model", "impl", "runtime", "dtype", "infer_batch_size", "infer_samples_per_sec", "speedup_vs_timm"]
ACCURACY_COLUMNS = ["path", "top1", "top1_drop", "agreement", "max_rel_logit_diff", "infer_samples_per_sec",
                    "speedup_vs_timm"]


def available_runtimes(asked: str) -> list:
    names = [r for r in asked.split(",") if r]
    if "openvino" in names:
        try:
            import openvino  # noqa: F401
        except ImportError:
            print("openvino is not installed: its rows are skipped (pip install 'mixer-zoo[openvino]')")
            names.remove("openvino")
    return names


def eager(module: torch.nn.Module):
    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()
    return run


def accuracy_rows(folder: str, data_root: Path, runtimes: list, repeats: int, batch_size: int = 16) -> list:
    """Every path on the real-data model: accuracy and agreement on the real test images, and throughput."""
    model = load_model(folder)
    twin = timm_twin(model)
    runs = {"timm fp32 eager": eager(twin), "timm int8 (torch.ao dynamic)": eager(torch_dynamic_int8(twin)),
            "ours fp32 eager": eager(model)}
    calibration = calibration_images(data_root, model, 256)  # training images: the test images stay unseen
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, name in (("onnx", "fp32"), ("int8", "int8 dynamic"), ("int8-static", "int8 static")):
            path = Path(tmp) / f"model-{fmt}.onnx"
            export_model(model, path, fmt, source=folder, calibration=calibration if fmt == "int8-static" else None)
            for runtime in runtimes:  # OpenVINO's static int8 is refused by open_exported: measured here to show why
                runs[f"ours {name} {runtime}"] = open_onnx(path, runtime)
    pixels, labels = load_split(data_root, "test")
    x = normalise_images(pixels, preprocessing_of(model))
    rows = score_paths(runs, "ours fp32 eager", x, labels)
    batch = x[:batch_size]
    steps = [lambda run=run: run(batch) for run in runs.values()]
    for step in steps:
        step()
    times = time_interleaved(steps, torch.device("cpu"), repeats)
    for row, t in zip(rows, times):
        row.update(impl="timm" if row["path"].startswith("timm") else "mixer_zoo",
                   dtype="int8" if "int8" in row["path"] else "fp32", infer_batch_size=batch_size,
                   infer_samples_per_sec=round(batch_size / statistics.median(t), 1),
                   speedup_vs_timm=round(statistics.median(r / o for r, o in zip(times[0], t)), 3))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="converted folder of the model trained on real CIFAR-10 (see above)")
    parser.add_argument("--data-root", default=str(DATA), help="folder holding cifar-10-batches-py/")
    parser.add_argument("--speed-models", default="mixer_b16_zoo,mixer_s32_zoo", help="'' to skip the speed runs")
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--runtimes", default="onnxruntime,openvino")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--name", default="deployment", help="file name stem under benchmarks/results/<machine>/")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    runtimes = available_runtimes(args.runtimes)
    out = RESULTS / machine_folder_name()
    out.mkdir(parents=True, exist_ok=True)
    where = dict(cpu=cpu_model_name(), isa_flags=cpu_isa_flags(), hardware=hardware_name(torch.device("cpu")),
                 threads=torch.get_num_threads(), omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
                 load_average_1min=round(os.getloadavg()[0], 2))
    print(f"{where['hardware']}; ISA flags: {where['isa_flags']}")

    if args.model:
        rows = [dict(r, model=Path(args.model).name, **where)
                for r in accuracy_rows(args.model, Path(args.data_root), runtimes, args.repeats)]
        print("accuracy on the 2,000 real CIFAR-10 test images (model trained from scratch on real images):")
        print(format_table(rows, ACCURACY_COLUMNS))
        write_json(out / f"{args.name}_accuracy.json", rows)
        write_csv(out / f"{args.name}_accuracy.csv", rows)
        plot_accuracy_vs_throughput(rows, str(out / f"{args.name}_accuracy_vs_throughput.png"), title=(
            f"Mixer trained from scratch on real CIFAR-10 ({Path(args.model).name}):\ntop-1 on the 2,000 real test "
            f"images vs batch-16 throughput\n{where['hardware']}\n{where['isa_flags']}"))

    deployed = [(r, d) for r in runtimes for d in ("fp32", "int8", "int8-static")
                if (r, d) != ("openvino", "int8-static")]  # refused: OpenVINO computes that graph wrongly
    speed = []
    for arch in [m for m in args.speed_models.split(",") if m]:
        for batch in (int(b) for b in args.batches.split(",")):
            got = benchmark_architecture(arch, device="cpu", batch_size=batch, repeats=args.repeats, warmup=2,
                                         train=False, deployed=deployed, progress=False)
            got = [dict(r, **where) for r in got]
            print(format_table(got, SPEED_COLUMNS), flush=True)
            speed.extend(got)
            write_json(out / f"{args.name}_speed.json", speed)  # after every configuration: a long run keeps its rows
    if speed:
        best = {}
        for r in speed:
            key = (r["arch"], r["infer_batch_size"])
            if r["impl"] == "mixer_zoo" and r["speedup_vs_timm"] > best.get(key, {}).get("speedup_vs_timm", 0):
                best[key] = r
        print("best path per model and batch (goal: >= 1.8x timm fp32 eager):")
        print(format_table(list(best.values()), SPEED_COLUMNS))
        write_csv(out / f"{args.name}_speed.csv", speed)
        largest = max(r["infer_batch_size"] for r in speed)
        plot_results([r for r in speed if r["infer_batch_size"] == largest], str(out / f"{args.name}_speed.png"),
                     title=f"batch {largest}, {where['hardware']}; {where['isa_flags']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
