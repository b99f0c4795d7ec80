#!/usr/bin/env python
"""Official JAX Mixer checkpoint (local .npz or manifest tag), MindSpore .ckpt or .pth -> timm folder
(model.safetensors, config.json, README.md).

    python converters/jax_to_torch.py SRC --out DIR [--arch ARCH] [--verify] [--force]

The work is done by ``mixer_zoo.tools.convert``; this is ``mixer-zoo convert`` under its own name.
"""
import sys

from mixer_zoo.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
