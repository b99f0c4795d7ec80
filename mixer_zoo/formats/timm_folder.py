"""A converted folder in timm's Hub format: ``model.safetensors`` (float32, timm layout), ``config.json`` and
``README.md``, which ``timm.create_model("local-dir:DIR", pretrained=True)`` loads.

One conversion at a time writes a folder (a ``filelock`` lock named after it, in the cache's ``.locks``).
Everything is written into a staging folder on the output's own file system and moved into place only at the
end, so a failure leaves nothing behind: a new folder is staged beside it and renamed in one step; an
existing one (``--force``, an empty mount point, ``--out .``) is staged inside it and its files are replaced
with ``config.json`` last, the old one removed first, so old config never describes new weights. Staging left
by a killed run is removed by the next one. ``model.safetensors`` and ``config.json`` carry integrity records
(:mod:`mixer_zoo.weights.integrity`) that loading checks.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import torch

from .._version import __version__
from ..model.architectures import SHAPE_ARGS
from ..util.files import fsync_dir, fsync_file, is_temp_name, lock_file_for, locked, named, umask_mode
from ..weights.download import LOCKS, cache_dir
from ..weights.integrity import CONTENT_KEY, PENDING, content_sha256, seal_config, seal_safetensors
from ..weights.manifest import weights_entries
from ..weights.model_card import render_model_card
from ..zoo import pretrained_cfg_from_entry
from .keys import ConversionError, PathLike

CONVERTER_VERSION = f"mixer-zoo-convert {__version__}"
STAGING_PREFIX = ".mixer-zoo-staging."
STAGING_SUFFIX = ".partial"
COMMIT_ORDER = ("model.safetensors", "README.md", "config.json")
"""config.json last: timm reads it first, so a folder without it is visibly incomplete."""


def _inner_staging(name: str) -> bool:
    return name.startswith(STAGING_PREFIX) and name.endswith(STAGING_SUFFIX)


def _sibling_staging(name: str, out_name: str) -> bool:
    """``.NAME.<8 random>.partial``: what ``tempfile.mkdtemp`` made beside the output for it (and nothing else)."""
    return re.fullmatch(rf"\.{re.escape(out_name)}\.[A-Za-z0-9_]{{8}}{re.escape(STAGING_SUFFIX)}", name) is not None


def check_output_folder(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConversionError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and not force and any(not (_inner_staging(p.name) or is_temp_name(p.name))
                                              for p in out_dir.iterdir()):
        raise ConversionError(f"{out_dir}: output folder exists and is not empty (use --force to overwrite)")


def remove_stale_staging(out_dir: Path) -> int:
    """Staging folders a killed conversion of ``out_dir`` left, inside it and beside it (only under its lock)."""
    out_dir = out_dir.resolve()
    places = [(out_dir, _inner_staging), (out_dir.parent, lambda n: _sibling_staging(n, out_dir.name))]
    removed = 0
    for folder, match in places:
        with contextlib.suppress(OSError):
            for item in folder.iterdir():
                if match(item.name) and item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item, ignore_errors=True)
                    removed += 1
    return removed


def _commit_into(stage: Path, out_dir: Path) -> None:
    names = [n for n in os.listdir(stage) if n not in COMMIT_ORDER] + [n for n in COMMIT_ORDER if (stage / n).exists()]
    if "config.json" in names and os.path.lexists(out_dir / "config.json"):
        os.unlink(out_dir / "config.json")  # the old config must never describe the new weights
    for name in names:
        os.replace(stage / name, out_dir / name)
    fsync_dir(out_dir)


@contextlib.contextmanager
def staging_folder(out_dir: PathLike, force: bool = False, quiet: bool = False) -> Iterator[Path]:
    """A temporary folder on ``out_dir``'s file system to write into; its files move into ``out_dir`` only if
    the block succeeds, otherwise it is deleted and ``out_dir`` is untouched."""
    out_dir = Path(out_dir)
    check_output_folder(out_dir, force)
    resolved = out_dir.resolve()
    with locked(lock_file_for(resolved, cache_dir() / LOCKS, "convert-"), str(out_dir), quiet=quiet):
        remove_stale_staging(resolved)
        check_output_folder(out_dir, force)  # again: another conversion may have finished meanwhile
        existed = resolved.is_dir()
        try:
            if existed:
                stage = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, suffix=STAGING_SUFFIX, dir=resolved))
            else:
                resolved.parent.mkdir(parents=True, exist_ok=True)
                stage = Path(tempfile.mkdtemp(prefix=f".{resolved.name}.", suffix=STAGING_SUFFIX, dir=resolved.parent))
            os.chmod(stage, umask_mode(0o777))
        except OSError as e:
            raise named(e, out_dir) from None
        try:
            yield stage
            for item in stage.iterdir():
                fsync_file(item)
            if existed:
                _commit_into(stage, resolved)
            else:
                os.replace(stage, resolved)
                fsync_dir(resolved.parent)
        except OSError as e:
            raise named(e, out_dir) from None
        finally:
            shutil.rmtree(stage, ignore_errors=True)


PREPROCESSING = {
    "jax_npz": (dict(crop_pct=1.0, interpolation="bilinear", mean=[0.5] * 3, std=[0.5] * 3),
                "vision_transformer vit_jax/input_pipeline.py (evaluation resizes to the input size, no crop, "
                "bilinear; pixels (x - 127.5) / 127.5)"),
    "mindspore_ckpt": (dict(crop_pct=1.0, interpolation="bilinear", mean=[126.1 / 255, 123.7 / 255, 114.6 / 255],
                            std=[62.9 / 255, 61.9 / 255, 66.7 / 255]),
                       "mindspore-courses/applications mlpMixer/src/eval.py (Resize to the input size, bilinear, no "
                       "crop; Normalize mean (126.1, 123.7, 114.6) std (62.9, 61.9, 66.7) on 0-255 pixels)"),
    "mmpretrain_native": (dict(crop_pct=1.0, interpolation="bilinear", mean=[0.5] * 3, std=[0.5] * 3),
                          "mmpretrain CIFAR test pipelines (the image at its own size, no crop); pixels "
                          "(x - 127.5) / 127.5 as mixer-zoo's mmpretrain configs"),
}
"""Evaluation preprocessing of a checkpoint the manifest does not know, by where it comes from: what its
source's own evaluation pipeline does. Sources not listed get Google's 224 px ImageNet cfg (timm's)."""


def source_preprocessing(layout: Optional[str], img_size: int) -> Tuple[Dict[str, Any], str]:
    """``(crop_pct/interpolation/mean/std, where that comes from)`` for a file of ``layout`` at ``img_size``."""
    if layout in ("jax_npz", "mindspore_ckpt"):
        return PREPROCESSING[layout]
    if layout == "mmpretrain" and img_size != 224:  # mmpretrain's Mixer configs are 224 px ImageNet ones
        return PREPROCESSING["mmpretrain_native"]
    google = next(e for e in weights_entries().values() if e.get("source"))
    return ({k: google[k] for k in ("crop_pct", "interpolation", "mean", "std")},
            "timm's cfg of Google's ImageNet Mixers (resize to 256/224, centre crop)")


def model_args_for(dims: Mapping[str, int], num_classes: int, act_layer: str,
                   norm_eps: Optional[float] = None) -> Dict[str, Any]:
    """The whole shape, so that any Mixer (not only the paper's sizes) is rebuilt from ``config.json`` alone; a
    LayerNorm epsilon other than the model's default (MindSpore's 1e-7) is recorded with it."""
    args = dict({k: int(dims[k]) for k in SHAPE_ARGS}, num_classes=num_classes, act_layer=act_layer)
    return args if norm_eps is None else dict(args, norm_eps=float(norm_eps))


def timm_config(arch: str, num_classes: int, act_layer: str, pretrained_cfg: Mapping[str, Any],
                dims: Mapping[str, int], norm_eps: Optional[float] = None) -> Dict[str, Any]:
    """``config.json`` as timm's own ``save_for_hf`` / ``push_to_hf_hub`` write it: timm's
    ``save_config_for_hf`` run on the model the folder holds (built on the meta device), so ``model_args`` records
    the whole shape and the GELU and ``pretrained_cfg`` the input size, preprocessing, licence and paper, without
    where the weights came from. Two fields stay as mixer-zoo needs them: ``model_args.img_size`` is the int the
    zoo's architectures take, and ``pretrained_cfg.hf_hub_filename`` names ``model.safetensors`` so that an
    ``hf-hub:`` load never falls back to a pickle."""
    import tempfile

    import timm
    from timm.models._hub import save_config_for_hf

    model_args = model_args_for(dims, num_classes, act_layer, norm_eps)
    size = model_args["img_size"]
    cfg = {k: v for k, v in pretrained_cfg.items() if k not in ("hf_hub_id", "url", "file", "source", "state_dict")}
    cfg.update(architecture=arch, num_classes=num_classes, input_size=(3, size, size))
    model = timm.create_model(arch, pretrained_cfg=cfg, device="meta", **model_args)
    with tempfile.TemporaryDirectory(prefix="mixer-zoo-config-") as tmp:
        save_config_for_hf(model, str(Path(tmp) / "config.json"), model_args=model_args)
        config = json.loads((Path(tmp) / "config.json").read_text(encoding="utf-8"))
    config["model_args"]["img_size"] = size
    config["pretrained_cfg"]["hf_hub_filename"] = "model.safetensors"
    return config


def pretrained_cfg_for(arch: str, entry: Mapping[str, Any]) -> Dict[str, Any]:
    """timm pretrained cfg (preprocessing, licence, paper) for a manifest entry, tag included."""
    return dict(pretrained_cfg_from_entry(entry), architecture=arch, tag=entry["tag"])


def google_release_match(arch: str, num_classes: int, file_name: str) -> Dict[str, Any]:
    """What the manifest says about Google's npz releases of this file name, architecture and head: their common
    licence and training data (matched by name and shape, not by hash), or ``{}`` when none or they disagree."""
    from ..weights.model_card import trained_on

    found = [e for e in weights_entries().values() if (e.get("source") or {}).get("format") == "jax_npz"
             and e["architecture"] == arch and e["num_classes"] == num_classes
             and e["source"]["url"].rsplit("/", 1)[-1] == file_name]
    if not found or len({e["license"] for e in found}) != 1:
        return {}
    seen = [trained_on(e) for e in found]
    urls = ", ".join(e["source"]["url"] for e in found)
    return dict(license=found[0]["license"], trained_on=seen[0] if all(s == seen[0] for s in seen) else [],
                label_set=found[0]["label_set"], urls=urls)


def local_entry(arch: str, num_classes: int, act_layer: str, src: PathLike, dims: Mapping[str, int],
                num_params: int, layout: Optional[str] = None, norm_eps: Optional[float] = None) -> Dict[str, Any]:
    """A manifest-like entry for a file the manifest does not know, describing that file: its shape, input size
    and parameter count (from its tensors), and its source's evaluation preprocessing. A Google npz takes the
    licence (and training data, where they agree) that the manifest records for Google's releases of that file
    name; anything else claims no licence and no training data. A 10-class MindSpore file is taken for CIFAR-10,
    the only task of MindSpore's Mixer release."""
    google = next((e for e in weights_entries().values() if e.get("source") and e["architecture"] == arch), None)
    google = google or next(e for e in weights_entries().values() if e.get("source"))
    size = int(dims["img_size"])
    preprocessing, where = source_preprocessing(layout, size)
    name = Path(src).name
    match = google_release_match(arch, num_classes, name) if layout == "jax_npz" else {}
    if match:
        provenance = dict(trained_on=match["trained_on"], certainty="likely", sources=[match["urls"]],
                          notes=f"{name} has the name, architecture and head of Google's release(s) listed below; "
                                "the manifest's licence and training data for them apply if it is one of them "
                                "(matched by name and shape, not by hash).")
    else:
        provenance = dict(trained_on=[], certainty="unknown", sources=[f"the local file {name}"],
                          notes=f"Converted from the local file {name}; what it was trained on is not recorded.")
    label_set = google["label_set"] if num_classes == google["num_classes"] else None
    if layout == "mindspore_ckpt" and num_classes == 10:
        label_set = "cifar-10"
    extra = {} if norm_eps is None else dict(norm_eps=float(norm_eps))
    entry = dict(
        architecture=arch, tag="local", act_layer=act_layer, **extra,
        source=dict(url=None, file=name, format=layout, sha256=None), hf_hub_id=None,
        num_classes=num_classes, label_set=label_set,
        num_params=int(num_params), model_args=model_args_for(dims, num_classes, act_layer, norm_eps),
        input_size=[3, size, size], **preprocessing, preprocessing_source=where, license="unknown",
        paper={"name": "MLP-Mixer: An all-MLP Architecture for Vision", "arxiv": "2105.01601"},
        description=f"Converted from the local file {name}.", metrics={"reported": {}, "measured": {}},
        provenance=provenance)
    if match:
        entry.update(license=match["license"], label_set=match["label_set"],
                     license_source=f"the manifest's licence for Google's release of {name}")
    return entry


def describe_file(entry: Mapping[str, Any], dims: Mapping[str, int], num_params: int, source: str) -> Dict[str, Any]:
    """A manifest entry checked against the file converted for it: a file of another input size or parameter
    count is not the one the entry describes."""
    size = int(dims["img_size"])
    if list(entry["input_size"][1:]) != [size, size]:
        raise ConversionError(f"{source}: the file is a {size} px model but the manifest entry "
                              f"{entry['architecture']}.{entry['tag']} says input_size {entry['input_size']}")
    if entry.get("num_params") is not None and entry["num_params"] != num_params:
        raise ConversionError(f"{source}: the file has {num_params:,} parameters but the manifest entry "
                              f"{entry['architecture']}.{entry['tag']} says {entry['num_params']:,}")
    return dict(entry, model_args=model_args_for(dims, entry["num_classes"], entry["act_layer"], entry.get("norm_eps")))


def write_config_and_card(stage: Path, arch: str, num_classes: int, act_layer: str,
                          pretrained_cfg: Mapping[str, Any], entry: Mapping[str, Any], metadata: Mapping[str, str],
                          dims: Mapping[str, int], weights_content: Optional[str] = None) -> None:
    """``config.json`` (sealed to the weights already in ``stage``) and ``README.md``."""
    config = timm_config(arch, num_classes, act_layer, pretrained_cfg, dims, entry.get("norm_eps"))
    config = seal_config(config, weights_content or content_sha256(stage / "model.safetensors")[0])
    (stage / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (stage / "README.md").write_text(render_model_card(entry, extra=dict(metadata)), encoding="utf-8")


def source_metadata(src: PathLike, sha256: Optional[str], layout: str) -> Dict[str, str]:
    meta = {"format": "pt", "source_file": Path(src).name, "source_layout": layout, "converter": CONVERTER_VERSION}
    if sha256:
        meta["source_sha256"] = sha256
    return meta


def write_converted_folder(state_dict: Mapping[str, torch.Tensor], dims: Mapping[str, int], out_dir: PathLike,
                           arch: str, num_classes: int, act_layer: str, pretrained_cfg: Mapping[str, Any],
                           metadata: Mapping[str, str], entry: Optional[Mapping[str, Any]] = None,
                           force: bool = False) -> Path:
    """Write ``model.safetensors`` + ``config.json`` + ``README.md`` for a timm-layout state dict, atomically.

    ``dims`` is what :func:`check_timm_state_dict` returned for it: the caller has validated it already."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state_dict.items()}
    num_params = sum(t.numel() for t in tensors.values())
    source = metadata.get("source_file", "state_dict")
    entry = (describe_file(entry, dims, num_params, source) if entry else
             local_entry(arch, num_classes, act_layer, source, dims, num_params, metadata.get("source_layout")))
    pretrained_cfg = pretrained_cfg or pretrained_cfg_for(arch, entry)
    with staging_folder(out_dir, force) as stage:
        weights = stage / "model.safetensors"
        save_file(tensors, str(weights), metadata={**{k: str(v) for k, v in metadata.items()}, CONTENT_KEY: PENDING})
        content = seal_safetensors(weights)
        write_config_and_card(stage, arch, num_classes, act_layer, pretrained_cfg, entry, metadata, dims, content)
    return out_dir
