"""``mixer-zoo bench``: argument parsing over :mod:`mixer_zoo.tools.bench`."""
from __future__ import annotations

import argparse

DTYPE_NAMES = ("bf16", "fp32", "int8", "int8-static")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="mixer_s32_zoo,mixer_b16_zoo",
                        help="comma-separated architectures, or 'all' (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda[:N]")
    parser.add_argument("--dtype", default="fp32", choices=DTYPE_NAMES,
                        help="bf16 runs under autocast; int8 adds ours quantized (in --runtime, default "
                        "onnxruntime) and timm's under torch.ao dynamic int8 beside the fp32 eager models; int8-static: ours calibrated "
                        "(on random images here: speed only)")
    parser.add_argument("--runtime", default="eager",
                        help="comma-separated: eager, onnxruntime, openvino; each adds ours exported to ONNX and "
                        "run there, in the same interleaved run as the eager models (inference only)")
    parser.add_argument("--compile", action="store_true", help="torch.compile every implementation")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-batch-size", type=int, default=None, help="default: --batch-size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per implementation")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per implementation, alternating")
    parser.add_argument("--no-train", action="store_true", help="skip the training-step benchmark")
    parser.add_argument("--no-timm", action="store_true", help="skip timm's own MlpMixer")
    parser.add_argument("--mmpretrain", action="store_true", help="also time mmpretrain's MlpMixer (S/B/L)")
    parser.add_argument("--act-layer", choices=("gelu", "gelu_tanh"), default="gelu",
                        help="GELU of every contender (default: gelu, timm's)")
    parser.add_argument("--cpu-path", choices=("auto", "fused", "plain"),
                        help="force our CPU channel-mixing kernel (default: the one measured faster here)")
    parser.add_argument("--load-time", action="store_true",
                        help="also time create_model(pretrained=True) from one warm safetensors file, ours vs timm")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", metavar="PATH", help="write every field as JSON")
    parser.add_argument("--csv", metavar="PATH", help="write every field as CSV (timm's column names)")
    parser.add_argument("--plot", metavar="PATH", help="PNG of throughput vs GMACs")
    parser.add_argument("--update-manifest", action="store_true",
                        help="record our figures in metrics.measured.benchmark of each entry of the architecture")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..tools.bench import benchmark_manifest_updates, benchmark_models, parse_model_list, summary_table
    from ..tools.load_time import LOAD_TIME_COLUMNS, load_time_vs_timm
    from ..tools.plots import plot_results
    from ..tools.runtimes import parse_deployments
    from ..util.report import format_table, write_csv, write_json
    from ..weights.manifest import update_measured_metrics

    names = parse_model_list(args.models)
    deployed = parse_deployments(args.dtype, args.runtime)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = benchmark_models(names, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                            warmup=args.warmup, repeats=args.repeats, compile=args.compile, train=not args.no_train,
                            timm_twin=not args.no_timm, mmpretrain=args.mmpretrain,
                            train_batch_size=args.train_batch_size, act_layer=args.act_layer,
                            cpu_path=args.cpu_path, deployed=deployed)
    print(f"mixer-zoo bench on {rows[0]['hardware']}: {args.dtype}, batch {args.batch_size}, "
          f"median of {args.repeats} alternating repeats")
    print(summary_table(rows))
    if args.load_time:
        loads = [load_time_vs_timm(name) for name in names]
        print(format_table(loads, LOAD_TIME_COLUMNS))
        by_arch = {r["model"]: r for r in loads}
        for row in rows:
            if row["impl"] == "mixer_zoo" and row["arch"] in by_arch:
                row.update({k: by_arch[row["arch"]][k] for k in ("first_load_s", "load_s", "timm_load_s")})
    if args.json:
        write_json(args.json, rows)
    if args.csv:
        write_csv(args.csv, rows)
    if args.plot:
        plot_results(rows, args.plot, title=f"{rows[0]['hardware']} - {args.dtype}, batch {args.batch_size}")
    if args.update_manifest:
        print(f"updated {update_measured_metrics(benchmark_manifest_updates(rows))}")
    return 0
