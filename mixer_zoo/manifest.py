"""``weights_manifest.json``: the one place where facts about released checkpoints are written.

timm pretrained cfgs, mmpretrain metafiles and model cards are all generated from it. Lookups read the file
named by ``$MIXER_ZOO_MANIFEST`` when set (at lookup time, so a test or a private mirror can point the zoo
at its own manifest), else the one shipped in the package.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

MANIFEST_PATH = Path(__file__).resolve().parent / "weights_manifest.json"
SCHEMA_PATH = Path(__file__).resolve().parent / "manifest_schema.json"
MANIFEST_ENV = "MIXER_ZOO_MANIFEST"

LABEL_SET_CLASSES = {"imagenet-1k": 1000, "imagenet-21k": 21843, "imagenet-21k-p": 11221, "cifar-10": 10}
"""How many outputs a head trained on each label set has (Google's ImageNet-21k has 21843 classes)."""

PathLike = Union[str, Path]


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


_load_cached = functools.lru_cache(maxsize=None)(_read_json)


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


def _expected_npz_name(arch: str) -> str:
    """``mixer_b16_zoo`` -> ``Mixer-B_16.npz``, Google's file naming."""
    size = arch.split("_")[1]
    return f"Mixer-{size[0].upper()}_{size[1:]}.npz"


def check_manifest(path: Optional[PathLike] = None, build_models: bool = True) -> List[str]:
    """Schema validation, then cross-checks against the code; returns every problem found (empty: all good).

    Each problem is one line ``FILE: KEY: what is wrong``. With ``build_models`` every entry's ``num_params``
    is compared with a real model built on the meta device (no memory is allocated).
    """
    from .listing import param_count
    from .zoo import ARCHITECTURES

    target = manifest_path(path)
    try:
        manifest = validate_manifest(target)
    except ManifestError as e:
        return [str(e)]
    problems: List[str] = []

    def problem(key: str, message: str) -> None:
        problems.append(f"{target}: {key}: {message}")

    entries = manifest["weights"]
    citations = manifest["citations"]
    hub_ids: Dict[str, str] = {}
    seen_archs: Dict[str, str] = {}
    for key, e in entries.items():
        arch, tag = e["architecture"], e["tag"]
        if key != f"{arch}.{tag}":
            problem(key, f"key must be architecture.tag = {arch}.{tag!s}")
        if arch not in ARCHITECTURES:
            problem(key, f"architecture {arch!r} is not in mixer_zoo.zoo.ARCHITECTURES ({', '.join(ARCHITECTURES)})")
            continue
        seen_archs.setdefault(arch, key)
        want_classes = LABEL_SET_CLASSES[e["label_set"]]
        if e["num_classes"] != want_classes:
            problem(key, f"num_classes {e['num_classes']} but label_set {e['label_set']} has {want_classes} classes")
        counted = param_count(arch, e["num_classes"]) if e["input_size"][1:] == [224, 224] else None
        if counted is not None and e["num_params"] != counted:
            problem(key, f"num_params {e['num_params']} but {arch} with {e['num_classes']} classes has {counted}")
        if build_models:
            import timm
            import torch

            with torch.device("meta"):
                model = timm.create_model(arch, num_classes=e["num_classes"], img_size=e["input_size"][1])
            real = sum(p.numel() for p in model.parameters())
            if real != e["num_params"]:
                problem(key, f"num_params {e['num_params']} but the real model has {real}")
        source, hub_id = e["source"], e["hf_hub_id"]
        if source is None:
            if hub_id is not None:
                problem(key, "hf_hub_id set but there is no source to convert")
            if e["converted"]["sha256"] is not None:
                problem(key, "converted.sha256 set but there is no source")
        else:
            if hub_id is None:
                problem(key, "released weights need an hf_hub_id to be loaded with pretrained=True")
            if source["format"] == "jax_npz":
                name = _expected_npz_name(arch)
                want_url = f"https://storage.googleapis.com/mixer_models/{source['folder']}/{name}"
                if source["url"] != want_url:
                    problem(key, f"source.url {source['url']} but Google's {arch} file in "
                                 f"gs://mixer_models/{source['folder']} is {want_url}")
                if e["act_layer"] != "gelu_tanh":
                    problem(key, "Google's JAX weights were trained with Flax's tanh GELU: act_layer must be gelu_tanh")
            if tag.startswith(GOOGLE_TAG_PREFIXES) and e["act_layer"] != "gelu_tanh":
                problem(key, f"{'/'.join(p + '*' for p in GOOGLE_TAG_PREFIXES)} tags are Google's JAX weights: "
                             "act_layer must be gelu_tanh")
        if hub_id is not None:
            if hub_id.split("/", 1)[1] != key:
                problem(key, f"hf_hub_id {hub_id!r} must end in /{key}")
            if hub_id in hub_ids:
                problem(key, f"hf_hub_id {hub_id!r} is also used by {hub_ids[hub_id]}")
            hub_ids[hub_id] = key
        if (e["converted"]["sha256"] is None) != (e["converted"]["size_bytes"] is None):
            problem(key, "converted.sha256 and converted.size_bytes are set together")
        if e["paper"]["arxiv"] not in citations:
            problem(key, f"paper.arxiv {e['paper']['arxiv']} has no BibTeX in citations")
        if "2105.01601" not in citations:
            problem("citations", "the MLP-Mixer paper (2105.01601) needs its BibTeX")
    for arch in ARCHITECTURES:
        if arch not in seen_archs:
            problem(arch, "architecture has no manifest entry (add one, tag 'untrained' if nothing is released)")
    problems.extend(_check_timm_registry(entries, target))
    return list(dict.fromkeys(problems))


def _check_timm_registry(entries: Dict[str, Dict[str, Any]], target: Path) -> List[str]:
    """The cfgs timm serves were generated from the packaged manifest at import: they must agree with this one."""
    import timm

    problems = []
    published = set(timm.list_models("*_zoo", pretrained=True))
    for key, e in entries.items():
        if e["hf_hub_id"] and key not in published:
            problems.append(f"{target}: {key}: not listed by timm.list_models('*_zoo', pretrained=True)")
            continue
        cfg = timm.get_pretrained_cfg(key)
        if cfg is None:
            problems.append(f"{target}: {key}: timm has no pretrained cfg of that name (re-import mixer_zoo)")
            continue
        for field in ("num_classes", "hf_hub_id", "crop_pct", "interpolation"):
            if getattr(cfg, field) != e[field]:
                problems.append(f"{target}: {key}: timm's pretrained cfg has {field}={getattr(cfg, field)!r}, "
                                f"the manifest {e[field]!r} (re-import mixer_zoo after editing the manifest)")
        if tuple(cfg.mean) != tuple(e["mean"]) or tuple(cfg.std) != tuple(e["std"]):
            problems.append(f"{target}: {key}: timm's pretrained cfg mean/std differ from the manifest")
    return problems


# ---- command line: ``mixer-zoo manifest check`` -------------------------------------------------------------

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


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("check",), help="check: validate against the schema and cross-check with the code")
    parser.add_argument("--manifest", metavar="PATH", help=f"manifest to check (default: ${MANIFEST_ENV} or the packaged one)")
    parser.add_argument("--json", action="store_true", help="print the entries as JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from .report import format_table

    target = manifest_path(args.manifest)
    problems = check_manifest(target)
    if not problems:
        rows = manifest_rows(target)
        print(json.dumps(rows, indent=2) if args.json else format_table(rows))
        print(f"{target}: {len(rows)} weights tags, schema valid, consistent with the code")
        return 0
    for p in problems[:-1]:
        print(p)
    raise ManifestError(problems[-1] + (f" ({len(problems)} problems in all)" if len(problems) > 1 else ""))
