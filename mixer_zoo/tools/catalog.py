"""What the zoo holds, as table rows: architectures with their tags, and manifest entries."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..model.architectures import ARCHITECTURES, TIMM_EQUIVALENTS, param_count
from ..weights.manifest import PathLike, weights_entries


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


def manifest_rows(path: Optional[PathLike] = None) -> List[Dict[str, Any]]:
    rows = []
    for key, e in weights_entries(path).items():
        source = e.get("source") or {}
        reported = (e.get("metrics") or {}).get("reported") or {}
        rows.append(dict(
            tag=key, gelu=e["act_layer"], classes=e["num_classes"], params=e["num_params"],
            source=source.get("format") or "-", source_sha256="-" if not source else
            ("unverified" if source.get("sha256") == "unverified" else source["sha256"][:12]),
            converted_sha256=(e["converted"]["sha256"] or "-")[:12], top1=reported.get("imagenet_top1"),
            hub=e.get("hf_hub_id") or "-",
        ))
    return rows
