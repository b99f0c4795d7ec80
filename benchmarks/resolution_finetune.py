"""A Mixer trained at 32 px on the real CIFAR-10 images, expanded to 64 px as the paper fine-tunes at a higher
resolution: test accuracy at step 0 and while fine-tuning at 64 px -> benchmarks/results/ (JSON + CSV + PNG, with
the hardware, the wall and CPU time of each stage and the load average of the shared machine).

    python benchmarks/resolution_finetune.py --threads 2                     # trains the 32 px model first
    python benchmarks/resolution_finetune.py --from-folder c10_32px          # or starts from a converted folder

Each stage is what a user runs: ``mixer-zoo train scratch/cifar10_32px.py`` (the 32 px model, 8 epochs),
``mixer-zoo convert`` (its checkpoint -> a timm folder), ``mixer-zoo convert --img-size 64`` (the expanded start,
built by ``timm.create_model('local-dir:...', pretrained=True, img_size=64)``), ``mixer-zoo test`` (top-1 at 32 px,
and at step 0 at 64 px through the 64 px config: bilinear upsampling as vision_transformer, and nearest) and
``mixer-zoo train finetune/cifar10_64px.py``. A control fine-tunes the 32 px model at 32 px with the same steps,
so that what the resolution adds is told apart from what more training adds. In torch, on all test images:
the expanded model's logits against the mean of the base model's on the 2x2 tiles (the identity the expansion
guarantees) for tiled, nearest- and bilinear-upsampled inputs.
"""
import os

# On a CPU shared with other jobs, OpenMP threads that spin while waiting burn the time the other thread needs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import timm  # noqa: E402
import torch  # noqa: E402

from mixer_zoo.cli import main as cli_main  # noqa: E402
from mixer_zoo.mmpretrain import CONFIG_DIR, load_split  # noqa: E402
from mixer_zoo.tools.higher_resolution import INPUTS, plot_resolution_finetune, step0_rows  # noqa: E402
from mixer_zoo.tools.training_curve import step_losses, validation_curve  # noqa: E402
from mixer_zoo.util.hardware import cpu_isa, cpu_isa_flags, cpu_model_name  # noqa: E402
from mixer_zoo.util.report import format_table, write_csv, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DATA = ROOT.parent / "shared" / "data" / "cifar10-real"
SCRATCH, FINETUNE = "scratch/cifar10_32px.py", "finetune/cifar10_64px.py"
BASE_SIZE, SIZE = 32, 64

CONTROL_32PX = f"""# the 64 px fine-tuning run's recipe and steps, at 32 px: what the same training gives without the resolution
_base_ = [{str(CONFIG_DIR / FINETUNE)!r}]
model = dict(backbone=dict(arch=dict(tokens_mlp_dim=64), img_size=32))
train_dataloader = dict(dataset=dict(pipeline=[dict(type='RandomCrop', crop_size=32, padding=4),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'), dict(type='PackInputs')]))
val_dataloader = dict(dataset=dict(pipeline=[dict(type='PackInputs')]))
test_dataloader = val_dataloader
"""


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Stages:
    """Wall time, CPU time and the 1-minute load average around each stage (the machine is shared)."""

    def __init__(self) -> None:
        self.rows = []

    @contextlib.contextmanager
    def __call__(self, name: str):
        print(f"\n=== {name} ({time.strftime('%H:%M:%S')}, load average {os.getloadavg()[0]:.1f})", flush=True)
        load, cpu, start = os.getloadavg()[0], cpu_seconds(), time.perf_counter()
        yield
        self.rows.append(dict(stage=name, wall_s=round(time.perf_counter() - start, 1),
                              cpu_s=round(cpu_seconds() - cpu, 1), load_before=round(load, 2),
                              load_after=round(os.getloadavg()[0], 2)))
        print(f"=== {name}: {self.rows[-1]['wall_s']} s wall, {self.rows[-1]['cpu_s']} s CPU", flush=True)


def run(*argv: str) -> None:
    if cli_main([str(a) for a in argv]) != 0:
        raise SystemExit(f"mixer-zoo {argv[0]} failed")


def test_top(config: str, checkpoint: str, work_dir: Path, common: list, options: list) -> dict:
    """``mixer-zoo test``: top-1/top-5 on the real test images."""
    out = work_dir / "metrics.json"
    run("test", config, checkpoint, "--work-dir", work_dir, "--json", out, *common, "--cfg-options", *options)
    metrics = json.loads(out.read_text())[0]
    return dict(top1=float(metrics["accuracy/top1"]), top5=float(metrics["accuracy/top5"]))


def plot(summary: dict, runs: list, path: Path) -> None:
    """The curves of a finished run (also redrawn from its JSON with --replot)."""
    plot_resolution_finetune(
        runs, path, summary["base_top1"], base_label=f"the {BASE_SIZE} px model",
        title=(f"Mixer trained at {BASE_SIZE} px on real CIFAR-10, expanded to {SIZE} px (token MLPs block-diagonal) "
               f"and fine-tuned at {SIZE} px\nstep 0 {summary['step0_bilinear_top1']:.2f}% (bilinear upsampling) -> "
               f"{summary['finetuned_top1']:.2f}% after {summary['fine_tune_steps']} steps; "
               f"{summary['total_wall_s']:.0f} s wall in all\n{summary['hardware']}, {summary['threads']} threads, "
               f"shared CPU: load average {summary['load_average_start']:.1f} -> {summary['load_average_end']:.1f}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default=str(DATA), help="folder holding cifar-10-batches-py/")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--work-dir", help="checkpoints, folders and logs (default: a temporary folder)")
    parser.add_argument("--from-folder", metavar="DIR", help="a converted 32 px folder: skip training it")
    parser.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                        help="overrides for the 64 px fine-tuning config (and the control)")
    parser.add_argument("--no-control", action="store_true", help="skip the 32 px control fine-tuning")
    parser.add_argument("--name", default="cpu_cifar10_resolution_32to64", help="file stem under benchmarks/results/")
    parser.add_argument("--replot", action="store_true", help="only redraw the PNG from the run's JSON")
    args = parser.parse_args()
    if args.replot:
        summary = json.loads((RESULTS / f"{args.name}.json").read_text())[0]
        plot(summary, summary["curves"], RESULTS / f"{args.name}.png")
        return

    if not (Path(args.data_root) / "cifar-10-batches-py").is_dir():
        raise SystemExit(f"{args.data_root}: no cifar-10-batches-py/ (the real images live in ../shared/data)")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="resolution_finetune_"))
    work.mkdir(parents=True, exist_ok=True)
    roots = [f"{loader}.dataset.data_root={args.data_root}"
             for loader in ("train_dataloader", "val_dataloader", "test_dataloader")]
    common = ["--threads", str(args.threads)]
    torch.set_num_threads(args.threads)
    stage = Stages()
    load_start, start = os.getloadavg()[0], time.perf_counter()

    folder32, folder64 = Path(args.from_folder or work / "c10_32px"), work / "c10_64px"
    if not args.from_folder:
        with stage("train the 32 px model (scratch/cifar10_32px.py)"):
            run("train", SCRATCH, "--work-dir", work / "scratch32", *common, "--cfg-options", *roots)
        checkpoint = max((work / "scratch32").glob("epoch_*.pth"), key=lambda p: int(p.stem.split("_")[-1]))
        run("convert", checkpoint, "--out", folder32, "--force", "--quiet")
    with stage(f"expand to {SIZE} px (mixer-zoo convert --img-size {SIZE})"):
        run("convert", folder32, "--img-size", SIZE, "--out", folder64, "--force")

    with stage("test at 32 px and at step 0 at 64 px (mixer-zoo test)"):
        base = test_top(SCRATCH, f"local-dir:{folder32}", work / "test32", common, roots)
        step0 = {interp: test_top(FINETUNE, f"local-dir:{folder64}", work / f"test64_{interp}", common,
                                  roots + [f"test_dataloader.dataset.pipeline.0.interpolation={interp}"])
                 for interp in ("bilinear", "nearest")}

    with stage("step-0 identities in torch (all test images)"):
        images, labels = load_split(args.data_root, "test")
        model32 = timm.create_model(f"local-dir:{folder32}", pretrained=True)
        model64 = timm.create_model(f"local-dir:{folder32}", pretrained=True, img_size=SIZE)
        saved = timm.create_model(f"local-dir:{folder64}", pretrained=True).state_dict()
        assert all(torch.equal(v, saved[k]) for k, v in model64.state_dict().items()), "the saved folder differs"
        identities = step0_rows(model32, model64, images, labels, progress=print)
    print(format_table(identities))

    runs = []
    plans = [("fine-tuned at 64 px", FINETUNE, folder64, step0["bilinear"], SIZE)]
    if not args.no_control:
        control = work / "control_32px.py"
        control.write_text(CONTROL_32PX)
        plans.append(("control: same steps at 32 px", str(control), folder32, base, BASE_SIZE))
    for label, config, start_folder, at_step0, size in plans:
        run_dir = work / label.split(":")[0].replace(" ", "_")
        with stage(f"{label} ({Path(config).name})"):
            run("train", config, "--load-from", f"local-dir:{start_folder}", "--work-dir", run_dir, *common,
                "--cfg-options", *roots, *args.cfg_options)
        curve = [dict(step=0, val_top1=at_step0["top1"], val_top5=at_step0["top5"])] + validation_curve(run_dir)
        runs.append(dict(label=label, config=config, img_size=size, curve=curve, steps=step_losses(run_dir)))

    hardware = f"{cpu_model_name()} ({os.cpu_count()} cores), {cpu_isa_flags()}"
    rows = [dict(run="base model", input=f"{BASE_SIZE} px", pipeline="mixer-zoo test", step=None, **base)]
    rows += [dict(run="expanded, step 0", input=f"{SIZE} px {interp}", pipeline="mixer-zoo test (cv2, uint8)",
                  step=0, **step0[interp]) for interp in step0]
    rows += [dict(run=r["model"], input=r["input"], pipeline="torch (float)", step=0 if r["model"] != "base" else None,
                  top1=r["top1"], top5=r["top5"], same_prediction_as_base=r["same_prediction_as_base"],
                  tile_mean_rel_error=r["tile_mean_rel_error"]) for r in identities]
    rows += [dict(run=r["label"], input=f"{r['img_size']} px", pipeline="mixer-zoo train",
                  step=c["step"], top1=c["val_top1"], top5=c["val_top5"]) for r in runs for c in r["curve"][1:]]
    one_image = 100.0 / len(labels)
    torch_top1 = {r["input"]: r["top1"] for r in identities}
    checks = dict(
        tiles_top1_equals_32px_within_one_image=abs(torch_top1["tiles"] - identities[0]["top1"]) <= one_image,
        tile_mean_identity_max_rel_error=max(r["tile_mean_rel_error"] for r in identities),
        torch_and_mmengine_agree_at_32px=abs(identities[0]["top1"] - base["top1"]) <= one_image,
        step0_bilinear_minus_32px=round(step0["bilinear"]["top1"] - base["top1"], 2),
        step0_nearest_minus_32px=round(step0["nearest"]["top1"] - base["top1"], 2),
        finetuned_minus_step0_bilinear=round(runs[0]["curve"][-1]["val_top1"] - step0["bilinear"]["top1"], 2))
    summary = dict(
        checks=checks, base_top1=base["top1"], step0_bilinear_top1=step0["bilinear"]["top1"], step0_nearest_top1=step0["nearest"]["top1"],
        step0_tiles_top1=next(r["top1"] for r in identities if r["input"] == "tiles"),
        finetuned_top1=runs[0]["curve"][-1]["val_top1"], fine_tune_steps=runs[0]["curve"][-1]["step"],
        control_32px_top1=runs[1]["curve"][-1]["val_top1"] if len(runs) > 1 else None,
        test_images=len(labels), data_root=str(args.data_root), scratch_config=SCRATCH, finetune_config=FINETUNE,
        cfg_options=" ".join(args.cfg_options), from_folder=args.from_folder, inputs=INPUTS,
        total_wall_s=round(time.perf_counter() - start, 1), load_average_start=round(load_start, 2),
        load_average_end=round(os.getloadavg()[0], 2), stages=stage.rows, hardware=hardware, cpu_isa=cpu_isa(),
        threads=args.threads, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"), torch=torch.__version__,
        timm=timm.__version__)
    print(format_table(rows, ["run", "input", "pipeline", "step", "top1", "top5", "same_prediction_as_base",
                              "tile_mean_rel_error"]))
    print(format_table(stage.rows))
    print(format_table([checks]))

    RESULTS.mkdir(parents=True, exist_ok=True)
    write_json(RESULTS / f"{args.name}.json", [dict(summary, results=rows, curves=runs)])
    write_csv(RESULTS / f"{args.name}.csv", rows)
    plot(summary, runs, RESULTS / f"{args.name}.png")
    print(f"wrote {RESULTS / args.name}.{{json,csv,png}}; folders {folder32}, {folder64}")


if __name__ == "__main__":
    main()
