#!/usr/bin/env python
"""timm weights (a converted folder, .safetensors or .pth) -> an .npz in Google's official key layout.

    python converters/torch_to_jax.py SRC --out FILE.npz [--force]

The work is done by ``mixer_zoo.tools.convert``; this is ``mixer-zoo convert --to npz`` under its own name.
"""
import sys

from mixer_zoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", "--to", "npz", *sys.argv[1:]]))
