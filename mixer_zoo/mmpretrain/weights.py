"""Zoo weights for mmpretrain: the ``zoo://arch.tag`` checkpoint scheme.

``zoo://mixer_b16_zoo.goog_in21k_ft_in1k`` resolves the tag's Hub repo through huggingface_hub's cache
(so ``HF_HUB_OFFLINE=1`` and a pre-filled cache work), reads ``model.safetensors`` (no unpickling) and
returns an mmpretrain ``ImageClassifier`` checkpoint: ``backbone.<timm key>`` and ``head.fc.*``. It works
wherever mmengine takes a checkpoint: ``load_from``, ``init_cfg=dict(type="Pretrained", ...)``,
``get_model(..., pretrained=True)`` and ``mixer_zoo.test CONFIG zoo://...``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import torch
from mmengine.runner import CheckpointLoader
from safetensors.torch import load_file

from ..formats.mmpretrain_layout import timm_to_zoo_classifier
from ..util.report import error_summary
from ..weights.hub_cache import WEIGHTS_FILE, WeightsError, verify_cached_weights
from ..weights.manifest import ManifestError, get_entry, manifest_path

SCHEME = "zoo://"


def hub_weights_file(name: str) -> Path:
    """Local path of the tag's ``model.safetensors``, from the huggingface_hub cache (downloaded if allowed).

    The resolution timm's ``pretrained=True`` uses for a tag (its ``hf_hub_id`` through huggingface_hub's
    cache, offline mode honoured), then ``mixer_zoo.weights.hub_cache``'s sha256 check against the manifest.
    """
    from huggingface_hub import hf_hub_download

    entry = get_entry(name)
    key = f"{entry['architecture']}.{entry['tag']}"
    repo = entry.get("hf_hub_id")
    if not repo:
        raise ManifestError(f"{manifest_path()}: {key} has no hf_hub_id: no weights are published for it")
    try:
        path = hf_hub_download(repo_id=repo, filename=WEIGHTS_FILE)
    except Exception as e:  # offline and not cached, no such repo, network: one line naming tag and repo
        raise WeightsError(f"weights of {key}: cannot get {WEIGHTS_FILE} from Hub repo {repo} "
                           f"({error_summary(e)}); go online or fill the Hugging Face cache") from None
    verify_cached_weights(repo, key)
    return Path(path)


def dataset_meta(entry: Dict[str, Any]) -> Dict[str, Any]:
    """Class names for the tag's label set, where mmpretrain knows them (get_model and the inferencer show them)."""
    if entry.get("label_set") == "imagenet-1k" and entry.get("num_classes") == 1000:
        from mmpretrain.datasets.categories import IMAGENET_CATEGORIES

        return {"classes": list(IMAGENET_CATEGORIES)}
    if entry.get("label_names") and len(entry["label_names"]) == entry.get("num_classes"):
        return {"classes": list(entry["label_names"])}  # CIFAR-10's, from the manifest
    return {}


def load_zoo_checkpoint(name: str, map_location: Optional[str] = None) -> Dict[str, Any]:
    """The checkpoint of ``arch.tag`` (or bare ``arch``: its default tag) in mmpretrain classifier layout."""
    entry = get_entry(name)
    path = hub_weights_file(name)
    state_dict = load_file(str(path), device=str(map_location) if isinstance(map_location, (str, torch.device)) else "cpu")
    meta = {"zoo_weights": f"{entry['architecture']}.{entry['tag']}", "dataset_meta": dataset_meta(entry)}
    return {"state_dict": timm_to_zoo_classifier(state_dict, str(path)), "meta": meta}


@CheckpointLoader.register_scheme(prefixes=SCHEME, force=True)
def load_from_zoo(filename: str, map_location: Optional[str] = None) -> Dict[str, Any]:
    """mmengine checkpoint loader for ``zoo://arch.tag``."""
    return load_zoo_checkpoint(filename[len(SCHEME):], map_location)


LOCAL_DIR = "local-dir:"
"""``local-dir:FOLDER``: a converted folder (``model.safetensors`` in timm layout), spelt as timm spells it."""


def load_local_dir_checkpoint(folder: str) -> Dict[str, Any]:
    """A converted folder (or a timm-layout ``.safetensors`` file) as an mmpretrain classifier checkpoint: the
    tensors are checked as a Mixer (keys, shapes, finite values) before anything is loaded into a model."""
    from ..formats.keys import check_timm_state_dict
    from ..formats.torch_files import load_timm_weights

    state_dict = load_timm_weights(folder)
    check_timm_state_dict(state_dict, str(folder))
    return {"state_dict": timm_to_zoo_classifier(state_dict, str(folder)), "meta": {"source": str(folder)}}


@CheckpointLoader.register_scheme(prefixes=LOCAL_DIR, force=True)
def load_from_local_dir(filename: str, map_location: Optional[str] = None) -> Dict[str, Any]:
    """mmengine checkpoint loader for ``local-dir:FOLDER`` (``load_from``, ``init_cfg``, ``mixer-zoo test``)."""
    return load_local_dir_checkpoint(filename[len(LOCAL_DIR):])
