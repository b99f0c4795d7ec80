"""Layer 7, ``mixer-zoo``: the command line. One module per subcommand parses its arguments and calls the
library (:mod:`mixer_zoo.tools` and below), which it imports only when the subcommand runs.

A subcommand module provides ``configure_parser(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

SUBCOMMANDS = {
    # name: (module, one-line help)
    "list": ("mixer_zoo.cli.listing", "list the zoo's architectures (and weights tags) with parameter counts"),
    "demo": ("mixer_zoo.cli.demo", "the offline end-to-end job on an embedded default: convert -> local Hub cache -> pretrained=True -> benchmark"),
    "train": ("mixer_zoo.cli.train", "train / fine-tune from an mmpretrain config with mmengine's Runner (torchrun: --launcher pytorch)"),
    "test": ("mixer_zoo.cli.test", "evaluate a checkpoint (file or zoo://arch.tag) with an mmpretrain config"),
    "convert": ("mixer_zoo.cli.convert", "convert a JAX .npz / .pth / manifest tag to a timm folder (and back)"),
    "bench": ("mixer_zoo.cli.bench", "params, FLOPs, throughput and memory per variant, side by side with timm"),
    "eval": ("mixer_zoo.cli.evaluate", "ImageNet top-1/top-5 of a weights tag on a validation directory"),
    "manifest": ("mixer_zoo.cli.manifest", "validate weights_manifest.json against its schema and cross-check it with the code"),
    "publish": ("mixer_zoo.cli.publish", "upload a converted folder as a timm-compatible Hugging Face Hub repo (--dry-run validates)"),
    "convert-all": ("mixer_zoo.cli.convert_all", "convert (and publish) every manifest tag, skipping what is up to date"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mixer-zoo", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).configure_parser(p)
    return parser


class CLIError(Exception):
    """A user-facing failure: printed as one line, exit code 2."""


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except (CLIError, ValueError, FileNotFoundError, KeyError, RuntimeError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"mixer-zoo {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
