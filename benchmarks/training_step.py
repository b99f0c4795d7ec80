"""A training step, ours vs timm's ``MlpMixer``, same weights, interleaved -> benchmarks/results/<machine>/.

    python benchmarks/training_step.py                         # B/16 and S/32 at batch 16, S/32 at 64, both GELUs
    python benchmarks/training_step.py --isa-cap avx2          # an AVX-512 CPU running its AVX2 kernels

One step is forward, cross-entropy, backward and an SGD update, as ``mixer-zoo bench`` times it (inference is
timed at batch 1 only, to keep the run short). The minor page faults of a step are counted too, each
implementation alone in a fresh process (what the allocator keeps depends on what ran before): on the CPU ours
keeps its activation buffers between steps (``model/block_training.py``), timm's allocator faults them in anew.
"""
import argparse
import os
import resource
import subprocess
import sys
from pathlib import Path

from mixer_zoo.tools.bench import benchmark_architecture
from mixer_zoo.util.hardware import ISA_CAPS, cpu_isa, cpu_model_name, machine_folder_name, reexec_with_isa_cap
from mixer_zoo.util.report import format_table, write_csv, write_json

RESULTS = Path(__file__).resolve().parent / "results"
COLUMNS = ["model", "act_layer", "train_batch_size", "train_step_time", "train_speedup_vs_timm", "train_peak_mem_mb",
           "minor_faults_per_step"]


def step_faults(arch: str, act: str, batch: int, impl: str, steps: int = 3) -> int:
    """Median minor page faults of a warm training step of ``impl`` (``mixer_zoo`` or ``timm``), here: the
    step ``mixer-zoo bench`` times."""
    import contextlib

    import torch

    from mixer_zoo.tools.bench import build_contenders, training_step

    contender = next(c for c in build_contenders(arch, torch.device("cpu"), act_layer=act) if c.impl == impl)
    contender.module.train()
    size = contender.module.stem.img_size[0]  # timm's PatchEmbed and ours both name it so
    step = training_step(contender, torch.randn(batch, 3, size, size), torch.randint(0, 1000, (batch,)),
                         contextlib.nullcontext)
    faults = []
    for i in range(steps + 1):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        if i:  # the first step allocates what any implementation keeps (weights' momentum)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return sorted(faults)[len(faults) // 2]


def step_faults_fresh(arch: str, act: str, batch: int, impl: str) -> int:
    """:func:`step_faults` in a new process (the ISA cap's environment is inherited)."""
    done = subprocess.run([sys.executable, __file__, "--count-faults", f"{arch}:{act}:{batch}:{impl}"],
                          check=True, capture_output=True, text=True)
    return int(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="mixer_b16_zoo:16,mixer_s32_zoo:16,mixer_s32_zoo:64",
                        help="model:train_batch pairs")
    parser.add_argument("--gelus", default="gelu,gelu_tanh")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--isa-cap", choices=sorted(ISA_CAPS), help="cap ATen/oneDNN/MKL at this ISA (fresh process)")
    parser.add_argument("--count-faults", metavar="MODEL:GELU:BATCH:IMPL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count_faults:
        arch, act, batch, impl = args.count_faults.split(":")
        print(step_faults(arch, act, int(batch), impl))
        return
    reexec_with_isa_cap(args.isa_cap)
    import torch

    torch.set_num_threads(min(torch.get_num_threads(), 16))
    print(f"{cpu_model_name()} ({cpu_isa()}, torch CPU capability {torch.backends.cpu.get_cpu_capability()})")
    rows = []
    for config in args.configs.split(","):
        arch, batch = config.split(":")
        for act in args.gelus.split(","):
            got = benchmark_architecture(arch, device="cpu", batch_size=1, repeats=args.repeats, warmup=2,
                                         train=True, train_batch_size=int(batch), act_layer=act, progress=False)
            for row in got:
                row["minor_faults_per_step"] = step_faults_fresh(arch, act, int(batch), row["impl"])
                row["load_avg_1m"] = round(os.getloadavg()[0], 2)  # other work on the machine
            rows.extend(got)
            print(format_table(got, COLUMNS))
    print(format_table(rows, COLUMNS + ["load_avg_1m"]))
    out = RESULTS / machine_folder_name()
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "training_step.json", rows)
    write_csv(out / "training_step.csv", rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
