"""Ours vs timm's ``MlpMixer`` on every CPU path, same weights, interleaved -> benchmarks/results/<machine>/.

    python benchmarks/model_paths.py                      # B/16 and S/32, batch 1/16/64, both GELUs, each path
    python benchmarks/model_paths.py --models mixer_s32_zoo --batches 16 --paths plain --repeats 3
    python benchmarks/model_paths.py --isa-cap avx2           # an AVX-512 CPU running its AVX2 kernels

Each configuration runs ours with the channel-mixing kernel forced (``fused``: oneDNN, ``plain``: GEMMs) and
with the measured choice (``auto``), against timm in the same run; a training step and the pretrained load
time (L/16, H/14 from one warm safetensors file) are timed too. The machine's CPU model and ISA name the
folder, so results from an AVX2 and an AVX-512 machine sit side by side. ``--isa-cap avx2`` reruns the script with
ATen, oneDNN and MKL capped at AVX2, so an AVX-512 machine measures the AVX2 code paths as well.
"""
import argparse
import os
from pathlib import Path

from mixer_zoo.tools.bench import benchmark_architecture
from mixer_zoo.tools.load_time import LOAD_TIME_COLUMNS, load_time_vs_timm
from mixer_zoo.tools.plots import plot_results
from mixer_zoo.util.hardware import (ISA_CAPS, cpu_isa, cpu_model_name, machine_folder_name, matmul_peak_flops,
                                     reexec_with_isa_cap)
from mixer_zoo.util.report import format_table, write_csv, write_json

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ["model", "act_layer", "infer_batch_size", "cpu_path", "infer_samples_per_sec", "speedup_vs_timm",
           "infer_mfu", "train_speedup_vs_timm"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mixer_b16_zoo,mixer_s32_zoo")
    parser.add_argument("--batches", default="1,16,64")
    parser.add_argument("--gelus", default="gelu,gelu_tanh")
    parser.add_argument("--paths", default="fused,plain,auto")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-batch-size", type=int, default=16)
    parser.add_argument("--load-models", default="mixer_l16_zoo,mixer_h14_zoo", help="'' to skip load timing")
    parser.add_argument("--isa-cap", choices=sorted(ISA_CAPS), help="cap ATen/oneDNN/MKL at this ISA (fresh process)")
    args = parser.parse_args()
    reexec_with_isa_cap(args.isa_cap)
    import torch

    torch.set_num_threads(min(torch.get_num_threads(), 16))
    out = RESULTS / machine_folder_name()
    peak = matmul_peak_flops(torch.device("cpu"), torch.float32)
    print(f"{cpu_model_name()} ({cpu_isa()}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}): "
          f"fp32 matmul peak {peak / 1e9:.0f} GFLOP/s")
    rows = []
    for arch in filter(None, args.models.split(",")):
        for act in args.gelus.split(","):
            for batch in (int(b) for b in args.batches.split(",")):
                for path in args.paths.split(","):
                    train = path == "auto" and batch == int(args.batches.split(",")[0])
                    got = benchmark_architecture(arch, device="cpu", batch_size=batch, repeats=args.repeats,
                                                 warmup=2, train=train, train_batch_size=args.train_batch_size,
                                                 peak_flops=peak, act_layer=act, cpu_path=path, progress=False)
                    for row in got:
                        row["forced_path"] = path
                        row["matmul_peak_gflops"] = round(peak / 1e9, 1)
                        row["load_avg_1m"] = round(os.getloadavg()[0], 2)  # other work on the machine
                    rows.extend(got)
                    print(format_table(got, [c for c in COLUMNS if any(c in r for r in got)]))
    ours = [r for r in rows if r["impl"] == "mixer_zoo"]
    print(format_table(ours, ["model", "act_layer", "infer_batch_size", "forced_path", "cpu_path", "speedup_vs_timm",
                              "train_speedup_vs_timm", "infer_mfu", "load_avg_1m"]))
    out.mkdir(parents=True, exist_ok=True)
    if rows:
        write_json(out / "model_paths.json", rows)
        write_csv(out / "model_paths.csv", rows)
        plot_results(ours, str(out / "model_paths.png"),
                     title=f"{cpu_model_name()} ({cpu_isa()})")
    loads = [load_time_vs_timm(a) for a in args.load_models.split(",") if a]
    if loads:
        print(format_table(loads, LOAD_TIME_COLUMNS))
        write_json(out / "load_time.json", loads)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
