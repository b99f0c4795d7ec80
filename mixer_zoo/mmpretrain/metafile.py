"""The mmpretrain model-index, and the per-tag evaluation configs, generated from ``weights_manifest.json``.

The model-index is built at import time (so measured metrics added to the manifest show up at once) and
registered with mmpretrain's ``ModelHub``: ``list_models("*zoo*")``, ``get_model(name, pretrained=True)`` and
``ImageClassificationInferencer(name)`` then know every tag. The evaluation configs are files, because
users run them and mmengine reads configs from disk; ``python -m mixer_zoo.mmpretrain --write``
regenerates them and a test checks they match the manifest.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from .._version import __version__
from ..model.architectures import ARCHITECTURES, closed_form_macs, param_count  # metafiles call MACs "FLOPs"
from ..util.report import atomic_write_text
from ..weights.download import cache_dir
from ..weights.manifest import weights_entries
from .weights import SCHEME

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
EVAL_CONFIG_DIR = CONFIG_DIR / "eval"
COLLECTION = "MixerZoo"
DATASET_NAMES = {"imagenet-1k": "ImageNet-1k", "imagenet-21k": "ImageNet-21k", "cifar-10": "CIFAR-10"}
EVAL_DATASETS = {
    # label set -> (mmpretrain dataset type, data_root, split)
    "imagenet-1k": ("ImageNet", "data/imagenet", "val"),
    "imagenet-21k": ("ImageNet21k", "data/imagenet21k", "val"),
    "cifar-10": ("ZooCIFAR10", "data/cifar10", "test"),
}
MEASURED_GROUPS = {"cifar-10": ("cifar10_test", "cifar10_top")}
"""Label set -> (measured group, reported key prefix) of its accuracy; ImageNet's otherwise."""


def mm_model_name(key: str) -> str:
    """``mixer_b16_zoo.goog_in21k_ft_in1k`` -> ``mixer-b16-zoo_goog-in21k-ft-in1k`` (mmpretrain's naming)."""
    arch, _, tag = key.partition(".")
    return f"{arch.replace('_', '-')}_{tag.replace('_', '-')}"


def model_names() -> Dict[str, str]:
    """``{mmpretrain name: "arch.tag"}`` for every manifest entry."""
    return {mm_model_name(key): key for key in weights_entries()}


def _results(entry: Dict[str, Any]) -> Optional[List[Dict[str, Any]]]:
    """Top-1/top-5 on the entry's evaluation set (ImageNet, or CIFAR-10's test split) from the manifest: our
    measured figures first, else the published ones."""
    group, prefix = MEASURED_GROUPS.get(entry.get("label_set"), ("imagenet_val", "imagenet_top"))
    metrics = entry.get("metrics") or {}
    measured = (metrics.get("measured") or {}).get(group) or {}
    reported = metrics.get("reported") or {}
    if measured.get("top1") is not None:
        top1, top5 = measured["top1"], measured.get("top5")
    elif reported.get(f"{prefix}1") is not None:
        top1, top5 = reported[f"{prefix}1"], reported.get(f"{prefix}5")
    else:
        return None
    scores = {"Top 1 Accuracy": float(top1)}
    if top5 is not None:
        scores["Top 5 Accuracy"] = float(top5)
    dataset = "CIFAR-10" if entry.get("label_set") == "cifar-10" else "ImageNet-1k"
    return [dict(Task="Image Classification", Dataset=dataset, Metrics=scores)]


def model_entry(key: str, entry: Dict[str, Any]) -> Dict[str, Any]:
    """One ``Models:`` item of the model-index."""
    arch = entry["architecture"]
    model: Dict[str, Any] = {
        "Name": mm_model_name(key),
        "In Collection": COLLECTION,
        "Config": f"eval/{mm_model_name(key)}.py",
        "Weights": f"{SCHEME}{key}" if entry.get("hf_hub_id") else None,  # None: nothing published
        "Metadata": {
            "FLOPs": closed_form_macs(arch, entry["num_classes"], entry["input_size"][-1]),
            "Parameters": param_count(arch, entry["num_classes"]),
            "Training Data": DATASET_NAMES.get(entry["label_set"], entry["label_set"]),
            "Weights Tag": key,
            "Hub": entry.get("hf_hub_id"),
            "GELU": entry["act_layer"],
        },
        "Paper": {"Title": entry["paper"]["name"], "URL": f"https://arxiv.org/abs/{entry['paper']['arxiv']}"},
    }
    results = _results(entry)
    if results:
        model["Results"] = results
    source = entry.get("source") or {}
    if source.get("url"):
        code = ("https://github.com/mindspore-courses/applications/tree/master/mlpMixer"
                if source.get("format") == "mindspore_ckpt" else "https://github.com/google-research/vision_transformer")
        model["Converted From"] = {"Weights": source["url"], "Code": code}
    return model


def build_model_index() -> Dict[str, Any]:
    """The model-index (collection + one model per manifest entry) as a dict."""
    return {
        "Collections": [{
            "Name": COLLECTION,
            "Metadata": {"Architecture": ["MLP", "Layer Normalization", "GELU"]},
            "Paper": {"Title": "MLP-Mixer: An all-MLP Architecture for Vision", "URL": "https://arxiv.org/abs/2105.01601"},
            "Code": {"URL": "https://pypi.org/project/mixer-zoo/", "Version": __version__},
        }],
        "Models": [model_entry(key, entry) for key, entry in weights_entries().items()],
    }


def model_index_yaml() -> str:
    return yaml.safe_dump(build_model_index(), sort_keys=False, width=120)


def _index_dir() -> Path:
    """Where the generated model-index is written (mmpretrain's ModelHub reads it from a file): beside the
    downloads, in the package's one cache folder."""
    return cache_dir() / "mmpretrain"


def write_model_index(directory: Optional[Path] = None) -> Path:
    """Write the model-index (named by its content hash, so concurrent processes agree) and return its path."""
    text = model_index_yaml()
    name = f"model-index-{hashlib.sha256(text.encode()).hexdigest()[:16]}.yml"
    for folder in ([directory] if directory else [_index_dir(), Path(tempfile.gettempdir()) / "mixer_zoo_mmpretrain"]):
        path = Path(folder) / name
        try:
            if not (path.exists() and path.read_text(encoding="utf-8") == text):
                atomic_write_text(path, text)
            return path
        except OSError:
            if directory:
                raise
    raise OSError(f"cannot write the mmpretrain model-index under {_index_dir()} or the temp folder")


_registered = False


def register_model_index() -> Path:
    """Register every tag with mmpretrain's ``ModelHub`` (once per process)."""
    global _registered
    from mmpretrain.apis import ModelHub

    path = write_model_index()
    if not _registered:
        ModelHub.register_model_index(path, config_prefix=CONFIG_DIR)
        _registered = True
    return path


# ---- per-tag evaluation configs ------------------------------------------------------------------

def eval_config_text(key: str, entry: Dict[str, Any]) -> str:
    """An mmengine config that evaluates ``arch.tag`` with the preprocessing the manifest records."""
    arch = entry["architecture"]
    size = int(entry["input_size"][-1])
    resize = int(math.floor(size / entry["crop_pct"]))  # timm's rule for the resize before the centre crop
    mean = [round(255 * m, 4) for m in entry["mean"]]
    std = [round(255 * s, 4) for s in entry["std"]]
    dataset, data_root, split = EVAL_DATASETS.get(entry["label_set"], EVAL_DATASETS["imagenet-1k"])
    if entry["label_set"] == "cifar-10":
        return _cifar10_eval_config(key, entry, size, mean, std)
    return f'''# ImageNet evaluation of {key}.
# Generated from weights_manifest.json by `python -m mixer_zoo.mmpretrain --write`: do not edit.
_base_ = ['../_base_/models/mixer_zoo.py', '../_base_/datasets/imagenet_eval.py', '../_base_/default_runtime.py']

model = dict(
    backbone=dict(arch='{key}', img_size={size}),  # the tag sets the GELU flavour ({entry["act_layer"]})
    head=dict(num_classes={entry["num_classes"]}, in_channels={ARCHITECTURES[arch]["embed_dim"]}),
    data_preprocessor=dict(num_classes={entry["num_classes"]}, mean={mean}, std={std}, to_rgb=True),
)

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale={resize}, edge='short', interpolation='{entry["interpolation"]}'),
    dict(type='CenterCrop', crop_size={size}),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(type='{dataset}', data_root='{data_root}', split='{split}', pipeline=test_pipeline))
test_dataloader = val_dataloader

load_from = {repr(SCHEME + key) if entry.get("hf_hub_id") else None}
'''


def _cifar10_eval_config(key: str, entry: Dict[str, Any], size: int, mean: List[float], std: List[float]) -> str:
    """CIFAR-10 evaluation of a CIFAR tag: the 32 px images resized to the input size (no crop), as its release."""
    arch = entry["architecture"]
    pipeline = "" if (size, entry["interpolation"]) == (224, "bilinear") else f'''
test_pipeline = [
    dict(type='Resize', scale=({size}, {size}), interpolation='{entry["interpolation"]}'),
    dict(type='PackInputs'),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader'''  # the base's test pipeline is this one at 224 px, bilinear
    return f'''# CIFAR-10 evaluation of {key} (test split; data_root holds cifar-10-batches-py/).
# Generated from weights_manifest.json by `python -m mixer_zoo.mmpretrain --write`: do not edit.
_base_ = ['../_base_/models/mixer_zoo.py', '../_base_/datasets/cifar10_224.py', '../_base_/default_runtime.py']

model = dict(
    backbone=dict(arch='{key}', img_size={size}),  # the tag sets the GELU flavour ({entry["act_layer"]}) and LN eps
    head=dict(num_classes={entry["num_classes"]}, in_channels={ARCHITECTURES[arch]["embed_dim"]}),
    data_preprocessor=dict(num_classes={entry["num_classes"]}, mean={mean}, std={std}, to_rgb=False),
)
{pipeline}
val_evaluator = dict(type='Accuracy', topk=(1, 5))
test_evaluator = val_evaluator

load_from = {repr(SCHEME + key) if entry.get("hf_hub_id") else None}
'''


def eval_config_texts() -> Dict[Path, str]:
    return {EVAL_CONFIG_DIR / f"{mm_model_name(k)}.py": eval_config_text(k, e) for k, e in weights_entries().items()}


def stale_eval_configs() -> List[str]:
    """Evaluation configs that are missing, differ from the manifest, or belong to no tag."""
    wanted = eval_config_texts()
    stale = [str(p) for p, text in wanted.items() if not p.exists() or p.read_text(encoding="utf-8") != text]
    stale += [str(p) for p in EVAL_CONFIG_DIR.glob("*.py") if p not in wanted]
    return sorted(stale)


def write_eval_configs() -> List[Path]:
    """Regenerate the evaluation configs from the manifest (removing those of tags no longer there)."""
    wanted = eval_config_texts()
    for path in EVAL_CONFIG_DIR.glob("*.py"):
        if path not in wanted:
            path.unlink()
    for path, text in wanted.items():
        atomic_write_text(path, text)
    return sorted(wanted)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mixer_zoo.mmpretrain", description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"regenerate the evaluation configs under {EVAL_CONFIG_DIR}")
    parser.add_argument("--check", action="store_true", help="exit 1 if the evaluation configs are out of date")
    parser.add_argument("--model-index", metavar="PATH", help="write the model-index YAML to PATH")
    args = parser.parse_args(argv)
    if args.write:
        print(f"wrote {len(write_eval_configs())} configs under {EVAL_CONFIG_DIR}")
    if args.model_index:
        atomic_write_text(args.model_index, model_index_yaml())
        print(f"wrote {args.model_index}")
    if args.check:
        stale = stale_eval_configs()
        if stale:
            print("out of date (run with --write): " + ", ".join(stale), file=sys.stderr)
            return 1
    if not (args.write or args.check or args.model_index):
        print(model_index_yaml(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
