"""``mixer-zoo demo``: the offline end-to-end job on an embedded default (no downloads).

Builds every registered architecture through ``timm.create_model`` and runs one forward pass on CPU.
"""
from __future__ import annotations

import argparse
import time

import torch

from .report import format_table
from .zoo import ARCHITECTURES


def forward_every_variant(batch_size: int = 1, seed: int = 0) -> list:
    import timm

    torch.manual_seed(seed)
    x = torch.randn(batch_size, 3, 224, 224)
    rows = []
    for arch in ARCHITECTURES:
        model = timm.create_model(arch).eval()
        start = time.perf_counter()
        with torch.inference_mode():
            logits = model(x)
        rows.append(dict(
            model=arch, params=sum(p.numel() for p in model.parameters()), gelu=model.act_layer,
            output_shape="x".join(map(str, logits.shape)), forward_s=round(time.perf_counter() - start, 3),
            finite=bool(torch.isfinite(logits).all()),
        ))
        print(f"  built and ran {arch}", flush=True)
        del model
    return rows


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=1)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    print("mixer-zoo demo: every architecture, one CPU forward pass at 224x224")
    rows = forward_every_variant(args.batch_size)
    print(format_table(rows))
    return 0 if all(r["finite"] for r in rows) else 1
