"""mmpretrain ``ImageClassifier`` checkpoints <-> timm's layout, through the key table. Two backbones occur:
mmpretrain's own ``MlpMixer`` (``backbone.layers.*``) and the zoo's ``MixerZoo`` (``backbone.<timm key>``, what
``mixer-zoo train`` writes); both have a ``LinearClsHead`` (``head.fc.*``)."""
from __future__ import annotations

from typing import Any, Dict, Mapping

import torch

from .keys import MMPRETRAIN_TO_TIMM, TIMM_TO_MMPRETRAIN, rename_keys, timm_order

ZOO_CLASSIFIER_TO_TIMM = [(r"backbone\.(.+)", r"\1"), (r"head\.fc\.(weight|bias)", r"head.\1")]
"""A ``MixerZoo`` classifier keeps timm's names under ``backbone.``; only the head moves."""


def is_mmpretrain_layout(state_dict: Mapping[str, Any]) -> bool:
    """mmpretrain classifier keys (``backbone.*``, either backbone) or a bare ``MlpMixer``'s ``patch_embed.*``."""
    return any(k.startswith(("backbone.", "patch_embed.")) for k in state_dict)


def is_zoo_classifier_layout(state_dict: Mapping[str, Any]) -> bool:
    """A ``MixerZoo`` backbone inside an ``ImageClassifier`` (checkpoints of ``mixer-zoo train``)."""
    return "backbone.stem.proj.weight" in state_dict


def mmpretrain_to_timm(state_dict: Mapping[str, Any], source: str = "<state dict>") -> Dict[str, torch.Tensor]:
    """An mmpretrain ``ImageClassifier`` state dict (``MlpMixer`` or ``MixerZoo`` backbone, ``LinearClsHead``)
    -> timm layout. A bare ``MlpMixer`` state dict (no ``backbone.`` prefix) is accepted too; then it has no head."""
    if is_zoo_classifier_layout(state_dict):
        renamed = rename_keys(state_dict, ZOO_CLASSIFIER_TO_TIMM, source, "mixer-zoo MixerZoo classifier")
    else:
        if not any(k.startswith("backbone.") for k in state_dict):
            state_dict = {f"backbone.{k}": v for k, v in state_dict.items()}
        renamed = rename_keys(state_dict, MMPRETRAIN_TO_TIMM, source, "mmpretrain MlpMixer")
    return {k: renamed[k] for k in sorted(renamed, key=timm_order(renamed))}


def timm_to_mmpretrain(state_dict: Mapping[str, Any], source: str = "<state dict>") -> Dict[str, torch.Tensor]:
    """timm layout -> mmpretrain ``ImageClassifier`` keys (``backbone.*``, ``head.fc.*``)."""
    return rename_keys(state_dict, TIMM_TO_MMPRETRAIN, source, "timm Mixer")
