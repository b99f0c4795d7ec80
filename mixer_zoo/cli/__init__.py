"""Layer 7, ``mixer-zoo``: the command line. One module per subcommand parses its arguments and calls the
library (:mod:`mixer_zoo.tools` and below), which it imports only when the subcommand runs.

A subcommand module provides ``configure_parser(parser)`` and ``run(args) -> int``; it is listed in
``SUBCOMMANDS`` (name -> module path, one-line help) and is imported only when the command line names it.

Imports are lazy so that ``mixer-zoo --help``, ``--version`` and ``list`` answer in well under a second (torch,
timm and mmengine take seconds to import): ``mixer-zoo --help`` reads only ``SUBCOMMANDS``; ``mixer-zoo CMD ...``
imports CMD's module alone, whose top level imports only the standard library and light project modules; the
heavy libraries are imported inside ``run()`` (and ``import mixer_zoo`` itself defers torch and timm).
A new subcommand follows the same rules (``tests/test_cli.py`` times ``--help`` and ``list``).

Errors: anything a user can cause (bad input, a damaged file, OS errors such as a read-only folder or a full
disk) ends as one line ``mixer-zoo CMD: error: FILE: what`` on stderr and exit code 2; an unexpected error is
one line too, exit code 1. ``--debug`` (or ``MIXER_ZOO_DEBUG=1``) shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback
from typing import List, Optional

SUBCOMMANDS = {
    # name: (module, one-line help)
    "list": ("mixer_zoo.cli.listing", "list the zoo's architectures (and weights tags) with parameter counts"),
    "demo": ("mixer_zoo.cli.demo", "the offline end-to-end job on an embedded default: convert -> local Hub cache -> pretrained=True -> benchmark"),
    "train": ("mixer_zoo.cli.train", "train / fine-tune from an mmpretrain config with mmengine's Runner (torchrun: --launcher pytorch)"),
    "test": ("mixer_zoo.cli.test", "evaluate a checkpoint (file or zoo://arch.tag) with an mmpretrain config"),
    "convert": ("mixer_zoo.cli.convert", "convert a JAX .npz / MindSpore .ckpt / .pth / manifest tag to a timm folder (and back)"),
    "bench": ("mixer_zoo.cli.bench", "params, FLOPs, throughput and memory per variant, side by side with timm"),
    "eval": ("mixer_zoo.cli.evaluate", "ImageNet top-1/top-5 of a weights tag on a validation directory (CIFAR-10 with --cifar10)"),
    "manifest": ("mixer_zoo.cli.manifest", "validate weights_manifest.json against its schema and cross-check it with the code"),
    "publish": ("mixer_zoo.cli.publish", "upload a converted folder as a timm-compatible Hugging Face Hub repo (--dry-run validates)"),
    "convert-all": ("mixer_zoo.cli.convert_all", "convert (and publish) every manifest tag, skipping what is up to date"),
    "cache": ("mixer_zoo.cli.cache", "verify or clean every cached copy of a tag's files (Hub snapshot, download)"),
    "timm": ("mixer_zoo.cli.timm_scripts", "run timm's own train.py / validate.py / inference.py / benchmark.py with the zoo's models registered"),
    "export": ("mixer_zoo.cli.export", "export a tag or converted folder to ONNX, int8 ONNX, TorchScript or pt2, preprocessing recorded beside it"),
}


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse's parser, except that a usage error is one line, as every other error of the CLI."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def named_subcommand(argv: List[str]) -> Optional[str]:
    """The subcommand on a command line: its first word that is not an option (the top level takes no values)."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in SUBCOMMANDS else None


def build_parser(argv: Optional[List[str]] = None) -> argparse.ArgumentParser:
    """The parser; with ``argv``, only the subcommand it names gets its arguments (and its module imported)."""
    from .._version import __version__

    parser = OneLineErrorParser(prog="mixer-zoo", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = named_subcommand(argv) if argv is not None else None
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an error")
        if argv is None or name == chosen:
            importlib.import_module(module).configure_parser(p)
    return parser


class CLIError(Exception):
    """A user-facing failure: printed as one line, exit code 2."""


USER_ERRORS = (CLIError, ValueError, KeyError, RuntimeError, OSError)
"""What bad input, damaged files and the system (permissions, a full disk) raise; OSError covers the
file-not-found, permission, read-only and no-space errors, each naming its file."""


def error_line(error: BaseException) -> str:
    """One line for an error: ``FILE: reason`` for OS errors, the message's first line otherwise."""
    if isinstance(error, OSError) and error.filename is not None:
        where = f"{error.filename} -> {error.filename2}" if error.filename2 else f"{error.filename}"
        return f"{where}: {error.strerror or type(error).__name__}"
    if isinstance(error, KeyError) and error.args:
        text = str(error.args[0])
    else:
        text = str(error).strip() or type(error).__name__
    lines = text.splitlines() or [type(error).__name__]
    return lines[0] + (" (...)" if len(lines) > 1 else "")


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("MIXER_ZOO_DEBUG", "") not in ("", "0")
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except KeyboardInterrupt:
        print(f"mixer-zoo {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `mixer-zoo list | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except USER_ERRORS as e:
        if debug:
            traceback.print_exc()
        print(f"mixer-zoo {args.command}: error: {error_line(e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug, not the user's doing: still one line, and the way to see more
        if debug:
            traceback.print_exc()
        print(f"mixer-zoo {args.command}: internal error: {type(e).__name__}: {error_line(e)} "
              "(run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
