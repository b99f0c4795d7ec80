"""``weights_manifest.json``: the one place where facts about released checkpoints are written.

timm pretrained cfgs, mmpretrain metafiles and model cards are all generated from it.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Dict, Optional

MANIFEST_PATH = Path(__file__).resolve().parent / "weights_manifest.json"


class ManifestError(ValueError):
    """The manifest (or a name looked up in it) is not what the code expects."""


@functools.lru_cache(maxsize=None)
def _load_cached(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ManifestError(f"{path}: weights manifest not found") from None
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None


def load_manifest(path: Optional[Path] = None) -> Dict[str, Any]:
    """The parsed manifest (cached; treat as read-only)."""
    return _load_cached(str(path or MANIFEST_PATH))


def weights_entries(path: Optional[Path] = None) -> Dict[str, Dict[str, Any]]:
    """``{"arch.tag": entry}`` in manifest order (the first tag of an architecture is its default)."""
    return load_manifest(path)["weights"]


def get_entry(name: str, path: Optional[Path] = None) -> Dict[str, Any]:
    """The entry of ``arch.tag``; a bare ``arch`` means its default tag."""
    entries = weights_entries(path)
    if name in entries:
        return entries[name]
    if "." not in name:
        for key, entry in entries.items():
            if entry["architecture"] == name:
                return entry
    known = ", ".join(entries)
    raise ManifestError(f"unknown weights tag {name!r} in {path or MANIFEST_PATH}; known tags: {known}")
