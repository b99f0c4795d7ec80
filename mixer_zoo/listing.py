"""``mixer-zoo list``: what the zoo holds, as a table (or JSON)."""
from __future__ import annotations

import argparse
import json
from typing import Dict, List

from .manifest import weights_entries
from .report import format_table
from .zoo import ARCHITECTURES, TIMM_EQUIVALENTS


def param_count(arch: str, num_classes: int = 1000) -> int:
    """Exact parameter count of an architecture, in closed form (no model is built)."""
    a = ARCHITECTURES[arch]
    c, p, t, d = a["embed_dim"], a["patch_size"], a["tokens_mlp_dim"], a["channels_mlp_dim"]
    n = (224 // p) ** 2
    stem = 3 * p * p * c + c
    block = 4 * c + (n * t + t + t * n + n) + (c * d + d + d * c + c)
    head = c * num_classes + num_classes if num_classes > 0 else 0
    return stem + a["num_blocks"] * block + 2 * c + head


def architecture_rows() -> List[Dict[str, object]]:
    tags: Dict[str, List[str]] = {}
    for entry in weights_entries().values():
        if entry.get("hf_hub_id"):
            tags.setdefault(entry["architecture"], []).append(entry["tag"])
    rows = []
    for arch, a in ARCHITECTURES.items():
        rows.append(dict(
            model=arch, patch=a["patch_size"], depth=a["num_blocks"], width=a["embed_dim"],
            tokens_mlp=a["tokens_mlp_dim"], channels_mlp=a["channels_mlp_dim"],
            params=param_count(arch), timm=TIMM_EQUIVALENTS.get(arch, "-"),
            weights=", ".join(tags.get(arch, [])) or "-",
        ))
    return rows


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    rows = architecture_rows()
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0
