"""``weights_manifest.json``: the one place where facts about released checkpoints are written.

timm pretrained cfgs, mmpretrain metafiles and model cards are all generated from it. Lookups read the file
named by ``$MIXER_ZOO_MANIFEST`` when set (at lookup time, so a test or a private mirror can point the zoo
at its own manifest), else the one shipped in the package.
"""
from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

from ..util.report import atomic_write_text

MANIFEST_PATH = Path(__file__).resolve().parent.parent / "weights_manifest.json"
SCHEMA_PATH = Path(__file__).resolve().parent / "manifest_schema.json"
MANIFEST_ENV = "MIXER_ZOO_MANIFEST"

LABEL_SET_CLASSES = {"imagenet-1k": 1000, "imagenet-21k": 21843, "imagenet-21k-p": 11221, "cifar-10": 10}
"""How many outputs a head trained on each label set has (Google's ImageNet-21k has 21843 classes)."""
LABEL_NAMES = {"cifar-10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")}
"""Class names in logit order of the label sets timm has no list for (the order of CIFAR-10's ``batches.meta``)."""

PathLike = Union[str, Path]


RELEASE_URL_PREFIXES = {
    "jax_npz": ("https://storage.googleapis.com/mixer_models/",),
    "timm_pth": ("https://github.com/rwightman/pytorch-image-models/releases/download/",
                 "https://github.com/huggingface/pytorch-image-models/releases/download/"),
    "mindspore_ckpt": ("https://download.mindspore.cn/vision/",),
}
"""Where each source format is released (Google's bucket; timm's GitHub releases; MindSpore's download site):
``manifest check`` accepts a source URL only there."""

GOOGLE_TAG_PREFIXES = ("goog_", "sam_", "gsam_")
"""Tags of Google's JAX weights; ``sam_in1k``/``gsam_in1k`` follow timm's name for Google's SAM ViTs."""


class ManifestError(ValueError):
    """The manifest (or a name looked up in it) is not what the code expects."""


def manifest_path(path: Optional[PathLike] = None) -> Path:
    """The manifest in effect: ``path``, else ``$MIXER_ZOO_MANIFEST``, else the packaged file."""
    return Path(path or os.environ.get(MANIFEST_ENV) or MANIFEST_PATH)


def _read_json(path: str) -> Any:
    """The manifest file parsed, or a one-line :class:`ManifestError` naming it."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ManifestError(f"{path}: weights manifest not found") from None
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise ManifestError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


@functools.lru_cache(maxsize=None)
def _load_cached(path: str) -> Any:
    """An override manifest is validated against the schema before anything is looked up in it (so a
    schema-breaking file is one error naming file and key, and an ``http://`` source is never downloaded);
    the packaged one is validated by the test suite."""
    if Path(path).resolve() == MANIFEST_PATH.resolve():
        return _read_json(path)
    return validate_manifest(path)


def load_manifest(path: Optional[PathLike] = None) -> Dict[str, Any]:
    """The parsed manifest (cached; treat as read-only)."""
    return _load_cached(str(manifest_path(path)))


def weights_entries(path: Optional[PathLike] = None) -> Dict[str, Dict[str, Any]]:
    """``{"arch.tag": entry}`` in manifest order (the first tag of an architecture is its default)."""
    manifest = load_manifest(path)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("weights"), dict):
        raise ManifestError(f"{manifest_path(path)}: top-level key 'weights' must be an object")
    return manifest["weights"]


def get_entry(name: str, path: Optional[PathLike] = None) -> Dict[str, Any]:
    """The entry of ``arch.tag``; a bare ``arch`` means its default tag."""
    entries = weights_entries(path)
    if name in entries:
        return entries[name]
    if "." not in name:
        for entry in entries.values():
            if entry["architecture"] == name:
                return entry
    known = ", ".join(entries)
    raise ManifestError(f"unknown weights tag {name!r} in {manifest_path(path)}; known tags: {known}")


def entry_for_hub_id(hub_id: str, path: Optional[PathLike] = None) -> Optional[Dict[str, Any]]:
    """The entry published as ``hub_id`` (a revision after ``@`` is ignored), if any."""
    repo = hub_id.split("@", 1)[0]
    return next((e for e in weights_entries(path).values() if e.get("hf_hub_id") == repo), None)


# ---- validation -------------------------------------------------------------------------------------------------

def _json_pointer(parts: Any) -> str:
    return "/" + "/".join(str(p) for p in parts) if parts else "(top level)"


def validate_manifest(path: Optional[PathLike] = None) -> Dict[str, Any]:
    """Check the manifest against ``manifest_schema.json``; the first violation is a one-line
    :class:`ManifestError` naming the file and the JSON pointer of the offending key."""
    try:
        import jsonschema
    except ImportError:
        raise ManifestError("validating the manifest needs jsonschema: pip install jsonschema") from None
    target = manifest_path(path)
    manifest = _read_json(str(target))  # from disk, not the lookup cache: the file may have just changed
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(manifest), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        first = jsonschema.exceptions.best_match(errors)
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ManifestError(f"{target}: {_json_pointer(first.absolute_path)}: {first.message}{more}")
    return manifest


def update_measured_metrics(updates: Dict[str, Dict[str, Dict[str, Any]]], path: Optional[Path] = None) -> Path:
    """Write ``{"arch.tag": {group: values}}`` into each entry's ``metrics.measured[group]``, atomically.

    The file is re-read just before writing (not the cached copy) and keeps its formatting.
    """
    target = manifest_path(path).resolve()  # the manifest in effect; write through the package's symlink
    manifest = validate_manifest(target)  # from disk, not the cache: it is about to be rewritten
    weights = manifest["weights"]
    for key, groups in updates.items():
        if key not in weights:
            raise ManifestError(f"{target}: no weights entry {key!r} to record measured metrics in")
        metrics = weights[key].setdefault("metrics", {})
        if not isinstance(metrics.get("measured", {}), dict):
            raise ManifestError(f"{target}: {key}.metrics.measured must be an object")
        metrics.setdefault("measured", {}).update(groups)
    atomic_write_text(target, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    _load_cached.cache_clear()  # later reads in this process see what was written
    return target


def record_converted(updates: Mapping[str, Mapping[str, Any]], manifest: Optional[PathLike] = None) -> Path:
    """Write ``{"arch.tag": {"sha256", "size_bytes"}}`` into ``converted`` of each entry, atomically; a
    recorded sha256 is never overwritten with a different one."""
    target = manifest_path(manifest).resolve()  # write through the package's symlink
    data = validate_manifest(target)
    for key, converted in updates.items():
        if key not in data["weights"]:
            raise ManifestError(f"{target}: no weights entry {key!r} to record the converted file in")
        old = data["weights"][key]["converted"]["sha256"]
        if old and old != converted["sha256"]:
            raise ManifestError(f"{target}: {key}.converted.sha256 is {old}, the new conversion gives "
                                f"{converted['sha256']}; refusing to overwrite a recorded hash")
        data["weights"][key]["converted"] = dict(sha256=converted["sha256"], size_bytes=converted["size_bytes"])
    atomic_write_text(target, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    _load_cached.cache_clear()
    return target
