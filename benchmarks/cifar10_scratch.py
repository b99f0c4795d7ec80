"""A small Mixer trained from scratch on the real CIFAR-10 images through ``mixer-zoo train``, then ``mixer-zoo test``
on the real test set -> benchmarks/results/ (curve and final numbers as JSON + CSV + PNG, with the hardware).

    python benchmarks/cifar10_scratch.py --threads 2 --name cpu_cifar10_scratch_32px
    python benchmarks/cifar10_scratch.py --convert-to /tmp/research/cifar_mixer/mixer_cifar10_32px

The training is the shipped ``scratch/cifar10_32px.py`` config run by mmengine, exactly as a user runs it;
the curve is read back from mmengine's own logs. ``--convert-to`` converts the last checkpoint with
``mixer-zoo convert`` into a timm folder (``model.safetensors`` + ``config.json``).
"""
import os

# On a CPU shared with other jobs, OpenMP threads that spin while waiting at a barrier burn the time the other
# thread needs (measured here: 2 spinning threads cost twice the CPU time of one thread, for no speed-up).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from mixer_zoo.cli import main as cli_main  # noqa: E402
from mixer_zoo.mmpretrain import load_split  # noqa: E402
from mixer_zoo.mmpretrain.launch import load_config  # noqa: E402
from mixer_zoo.tools.training_curve import epoch_curve, plot_training_curve, step_losses  # noqa: E402
from mixer_zoo.util.hardware import cpu_isa_flags  # noqa: E402
from mixer_zoo.util.hardware import cpu_model_name  # noqa: E402
from mixer_zoo.util.report import format_table, write_csv, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "cifar10-real"
CONFIG = "scratch/cifar10_32px.py"


def load_average() -> float:
    """Runnable processes, 1-minute average: above the core count, the run shared the CPU with others."""
    return os.getloadavg()[0]


def cpu_seconds() -> float:
    """CPU time of this process (user + system, all threads): what the run cost, whatever else ran beside it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(DATA), help="folder holding cifar-10-batches-py/")
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--work-dir", help="mmengine work dir (default: a temporary folder)")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    parser.add_argument("--convert-to", metavar="DIR", help="convert the last checkpoint into this timm folder")
    parser.add_argument("--name", default="cpu_cifar10_scratch_32px", help="file name stem under benchmarks/results/")
    parser.add_argument("--report-only", action="store_true",
                        help="no training: test and report the run already in --work-dir")
    args = parser.parse_args()

    if not (Path(args.data_root) / "cifar-10-batches-py").is_dir():
        raise SystemExit(f"{args.data_root}: no cifar-10-batches-py/ (the real images live in ../shared/data)")
    if args.report_only and not args.work_dir:
        raise SystemExit("--report-only needs the --work-dir of a finished run")
    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="cifar10_scratch_"))
    roots = [f"{loader}.dataset.data_root={args.data_root}"
             for loader in ("train_dataloader", "val_dataloader", "test_dataloader")]
    common = ["--work-dir", str(work_dir), "--threads", str(args.threads)]

    timing_file = work_dir / "benchmark_timing.json"
    if not args.report_only:
        load_before = load_average()
        cpu_before = cpu_seconds()
        start = time.perf_counter()
        if cli_main(["train", args.config, *common, "--cfg-options", *roots, *args.cfg_options]) != 0:
            raise SystemExit("mixer-zoo train failed")
        timing = dict(train_wall_s=round(time.perf_counter() - start, 1),
                      train_cpu_s=round(cpu_seconds() - cpu_before, 1), load_average_1min_before=round(load_before, 2),
                      load_average_1min_after=round(load_average(), 2))
        timing_file.write_text(json.dumps(timing))
    timing = json.loads(timing_file.read_text())

    # The last epoch's weights: the only held-out images are the test set, so no epoch is picked by them.
    checkpoint = max(work_dir.glob("epoch_*.pth"), key=lambda p: int(p.stem.split("_")[-1]))
    metrics_file = work_dir / "test_metrics.json"
    if cli_main(["test", args.config, str(checkpoint), *common, "--json", str(metrics_file),
                 "--cfg-options", *roots]) != 0:
        raise SystemExit("mixer-zoo test failed")
    test = json.loads(metrics_file.read_text())[0]

    cfg = load_config(argparse.Namespace(config=args.config, cfg_options=args.cfg_options, work_dir=str(work_dir),
                                         launcher="none"))
    epochs = epoch_curve(work_dir)
    steps = step_losses(work_dir)
    hardware = f"{cpu_model_name()} ({os.cpu_count()} cores), {cpu_isa_flags()}"
    summary = dict(
        config=args.config, cfg_options=" ".join(args.cfg_options),
        model=dict(cfg.model.backbone.arch, img_size=cfg.model.backbone.img_size),
        batch_size=cfg.train_dataloader.batch_size, train_images=len(load_split(args.data_root, "train")[1]),
        epochs=len(epochs), checkpoint=checkpoint.name, test_top1=float(test["accuracy/top1"]),
        test_top5=float(test["accuracy/top5"]), **timing, hardware=hardware, threads=args.threads,
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"), torch=torch.__version__)
    steps_per_epoch = -(-summary["train_images"] // summary["batch_size"])  # the last batch is a partial one
    print(format_table(epochs))
    print(format_table([{k: v for k, v in summary.items() if k != "model"}]))

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / f"{args.name}.json", [dict(summary, curve=epochs)])
    write_csv(RESULTS / f"{args.name}.csv", [dict(e, **{k: v for k, v in summary.items() if k != "model"})
                                              for e in epochs])
    shape = summary["model"]
    plot_training_curve(
        epochs, steps, RESULTS / f"{args.name}.png", steps_per_epoch=steps_per_epoch,
        title=(f"Mixer patch {shape['patch_size']}, {shape['num_blocks']} blocks, width {shape['embed_dim']}, "
               f"MLPs {shape['tokens_mlp_dim']}/{shape['channels_mlp_dim']}, {shape['img_size']} px, from scratch on "
               f"{summary['train_images']:,} real CIFAR-10 images: test top-1 {summary['test_top1']:.2f}%\n"
               f"{timing['train_wall_s']:.0f} s wall ({timing['train_cpu_s']:.0f} s CPU), {hardware}, "
               f"{args.threads} threads, CPU shared: load average {timing['load_average_1min_before']:.1f} -> "
               f"{timing['load_average_1min_after']:.1f}"))
    print(f"wrote {RESULTS / args.name}.{{json,csv,png}}; checkpoint {checkpoint}")

    if args.convert_to:
        if cli_main(["convert", str(checkpoint), "--out", args.convert_to, "--force"]) != 0:
            raise SystemExit("mixer-zoo convert failed")


if __name__ == "__main__":
    main()
