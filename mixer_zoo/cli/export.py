"""``mixer-zoo export``: argument parsing over :mod:`mixer_zoo.tools.export`."""
from __future__ import annotations

import argparse

FORMAT_NAMES = ("onnx", "int8", "int8-static", "torchscript", "torch-int8", "pt2")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", metavar="TAG|FOLDER",
                        help="a converted folder (mixer-zoo convert) or a weights tag arch.tag")
    parser.add_argument("--format", required=True, choices=FORMAT_NAMES,
                        help="onnx: fp32 ONNX; int8: ONNX, int8 weights + per-batch int8 activations "
                        "(onnxruntime's quantizer); int8-static: ONNX QDQ calibrated on --calibration images; "
                        "torchscript; torch-int8: TorchScript of timm's MlpMixer with these weights under torch.ao "
                        "dynamic int8; pt2: torch.export")
    parser.add_argument("--out", required=True, help="the file to write; its preprocessing goes to OUT.json")
    parser.add_argument("--img-size", type=int, help="export at another input size (default: the weights')")
    parser.add_argument("--num-classes", type=int, help="another class count (a new, zero head)")
    parser.add_argument("--random-weights", action="store_true",
                        help="an architecture name with seeded random weights (speed tests; no download)")
    parser.add_argument("--calibration", metavar="DIR", help="int8-static: a folder of images, or a CIFAR-10 "
                        "data_root (holding cifar-10-batches-py/), whose activations set the int8 ranges")
    parser.add_argument("--calibration-count", type=int, default=256, help="images used for calibration")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")


def run(args: argparse.Namespace) -> int:
    from ..tools.export import export

    record = export(args.source, args.out, args.format, img_size=args.img_size, num_classes=args.num_classes,
                    random_weights=args.random_weights, force=args.force, calibration=args.calibration,
                    calibration_count=args.calibration_count)
    check = record["check"]
    print(f"wrote {args.out} ({record['size_bytes'] / 2 ** 20:.1f} MiB, {record['format']}) and {args.out}.json; "
          f"logits vs eager on {check['images']} images: {check['max_rel_diff']:.2g} relative")
    return 0
