"""mmpretrain's ``MlpMixer`` layout (``backbone.layers.*``, ``head.fc.*``) <-> timm's, through the key table."""
from __future__ import annotations

from typing import Any, Dict, Mapping

import torch

from .keys import MMPRETRAIN_TO_TIMM, TIMM_TO_MMPRETRAIN, rename_keys, timm_order


def is_mmpretrain_layout(state_dict: Mapping[str, Any]) -> bool:
    """mmpretrain ``MlpMixer`` keys (a classifier's ``backbone.*`` or a bare backbone's ``patch_embed.*``)."""
    return any(k.startswith(("backbone.", "patch_embed.")) for k in state_dict)


def mmpretrain_to_timm(state_dict: Mapping[str, Any], source: str = "<state dict>") -> Dict[str, torch.Tensor]:
    """An mmpretrain ``ImageClassifier`` (``MlpMixer`` backbone, ``LinearClsHead``) state dict -> timm layout.
    A bare backbone state dict (no ``backbone.`` prefix) is accepted too; then it has no head."""
    if not any(k.startswith("backbone.") for k in state_dict):
        state_dict = {f"backbone.{k}": v for k, v in state_dict.items()}
    renamed = rename_keys(state_dict, MMPRETRAIN_TO_TIMM, source, "mmpretrain MlpMixer")
    return {k: renamed[k] for k in sorted(renamed, key=timm_order(renamed))}


def timm_to_mmpretrain(state_dict: Mapping[str, Any], source: str = "<state dict>") -> Dict[str, torch.Tensor]:
    """timm layout -> mmpretrain ``ImageClassifier`` keys (``backbone.*``, ``head.fc.*``)."""
    return rename_keys(state_dict, TIMM_TO_MMPRETRAIN, source, "timm Mixer")
