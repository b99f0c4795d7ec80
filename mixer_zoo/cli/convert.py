"""``mixer-zoo convert`` (and ``converters/*.py``): argument parsing over :mod:`mixer_zoo.tools.convert`."""
from __future__ import annotations

import argparse
import zipfile
from pathlib import Path


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="a JAX .npz, a MindSpore .ckpt, a .pth (timm or mmpretrain layout), "
                        "a manifest tag (arch.tag), or with --to npz/mindspore/mmpretrain a converted folder or "
                        ".safetensors")
    parser.add_argument("--out", required=True, help="output folder (or file with --to npz/mindspore/mmpretrain)")
    parser.add_argument("--arch", help="architecture (inferred from the shapes when omitted)")
    parser.add_argument("--to", choices=("timm", "npz", "mindspore", "mmpretrain"), default="timm",
                        help="timm: a folder timm loads with local-dir: (default); npz: official JAX layout; "
                        "mindspore: a .ckpt with the MindSpore release's names; mmpretrain: an ImageClassifier "
                        "checkpoint (see --backbone)")
    parser.add_argument("--backbone", choices=("MixerZoo", "MlpMixer"),
                        help="with --to mmpretrain: the backbone the checkpoint is for: MixerZoo, the zoo's (default; "
                        "what the shipped configs build), or MlpMixer, mmpretrain's own (S, B, L widths only)")
    parser.add_argument("--act-layer", choices=("gelu", "gelu_tanh"),
                        help="GELU flavour recorded in config.json (default: the tag's; gelu_tanh for a JAX npz "
                        "or a MindSpore .ckpt)")
    parser.add_argument("--img-size", type=int, metavar="PX",
                        help="with a converted folder as SRC: the same model at K times its size (integer K), every "
                        "token-mixing MLP expanded block-diagonally (MLP-Mixer, Supplementary C), to fine-tune there")
    parser.add_argument("--verify", action="store_true", help="compare logits with the Flax reference ([jax] extra)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..formats.keys import ConversionError
    from ..tools.convert import (convert_ckpt, convert_npz, convert_state_dict_file, convert_tag, export_mindspore,
                                 export_mmpretrain, export_npz)

    src = Path(args.src)
    if args.backbone and args.to != "mmpretrain":
        raise ConversionError(f"--backbone {args.backbone} applies to --to mmpretrain only")
    if args.img_size is not None:
        if args.to != "timm" or not src.is_dir():
            raise ConversionError(f"{src}: --img-size expands a converted folder (config.json + model.safetensors) "
                                  "into a new timm folder; convert the file first")
        from ..tools.higher_resolution import expand_folder

        out = expand_folder(src, args.out, args.img_size, force=args.force)
        print(f"wrote {out}/model.safetensors, config.json, README.md ({args.img_size} px)")
        return 0
    if args.to == "npz":
        print(f"wrote {export_npz(src, args.out, force=args.force)}")
        return 0
    if args.to == "mindspore":
        print(f"wrote {export_mindspore(src, args.out, force=args.force)}")
        return 0
    if args.to == "mmpretrain":
        model = export_mmpretrain(src, args.out, force=args.force, backbone=args.backbone or "MixerZoo",
                                  act_layer=args.act_layer)
        print(f"wrote {args.out}; it loads exactly into model={model!r}")
        return 0
    torch_file = src.suffix in (".pth", ".pt", ".bin") or src.name.endswith(".pth.tar")  # .pth.tar: timm train.py
    if args.verify and (torch_file or src.suffix == ".ckpt"):
        raise ConversionError(f"{src}: --verify compares against the JAX model and needs an .npz source")
    if src.suffix == ".ckpt":
        out = convert_ckpt(src, args.out, arch=args.arch, force=args.force, act_layer=args.act_layer,
                           progress=not args.quiet)
    elif src.suffix == ".npz" or src.is_file() and zipfile.is_zipfile(src) and not torch_file:
        out = convert_npz(src, args.out, arch=args.arch, verify=args.verify, force=args.force,
                          act_layer=args.act_layer, progress=not args.quiet)
    elif torch_file:
        out = convert_state_dict_file(src, args.out, arch=args.arch, force=args.force, act_layer=args.act_layer)
    elif not src.exists() and "/" not in args.src:
        out = convert_tag(args.src, args.out, verify=args.verify, force=args.force, progress=not args.quiet)
    else:
        raise FileNotFoundError(f"{src}: no such .npz/.ckpt/.pth file or manifest tag")
    print(f"wrote {out}/model.safetensors, config.json, README.md")
    return 0
