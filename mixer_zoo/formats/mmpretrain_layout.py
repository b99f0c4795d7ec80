"""mmpretrain ``ImageClassifier`` checkpoints <-> timm's layout. Two backbones occur: the zoo's ``MixerZoo``
(``backbone.<timm key>``, what ``mixer-zoo train`` writes and what the shipped configs build) and mmpretrain's
own ``MlpMixer`` (``backbone.layers.*``, through the key table); both have a ``LinearClsHead`` (``head.fc.*``).
One function per direction and backbone (``mmpretrain_to_timm`` reads either)."""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch

from .keys import MMPRETRAIN_TO_TIMM, TIMM_TO_MMPRETRAIN, ConversionError, rename_keys, timm_order

ZOO_CLASSIFIER_TO_TIMM = [(r"backbone\.(.+)", r"\1"), (r"head\.fc\.(weight|bias)", r"head.\1")]
"""A ``MixerZoo`` classifier keeps timm's names under ``backbone.``; only the head moves."""
TIMM_TO_ZOO_CLASSIFIER = [(r"head\.(weight|bias)", r"head.fc.\1"), (r"(.+)", r"backbone.\1")]

STOCK_ARCHS = {
    "s": dict(embed_dims=512, num_layers=8, tokens_mlp_dims=256, channels_mlp_dims=2048),
    "b": dict(embed_dims=768, num_layers=12, tokens_mlp_dims=384, channels_mlp_dims=3072),
    "l": dict(embed_dims=1024, num_layers=24, tokens_mlp_dims=512, channels_mlp_dims=4096),
}
"""mmpretrain 1.2's ``MlpMixer.arch_zoo`` (tests compare it with the installed one); any patch size goes with them."""


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


def timm_to_zoo_classifier(state_dict: Mapping[str, Any], source: str = "<state dict>") -> Dict[str, torch.Tensor]:
    """timm layout -> ``ImageClassifier(backbone=MixerZoo, head=LinearClsHead)`` keys: what the zoo's configs,
    ``zoo://`` and ``local-dir:`` load."""
    if "stem.proj.weight" not in state_dict:
        raise ConversionError(f"{source}: not a Mixer state dict in timm layout (no 'stem.proj.weight'); "
                              f"first keys: {list(state_dict)[:3]}")
    return rename_keys(state_dict, TIMM_TO_ZOO_CLASSIFIER, source, "timm Mixer")


def timm_to_stock_classifier(state_dict: Mapping[str, Any], source: str = "<state dict>") -> Dict[str, torch.Tensor]:
    """timm layout -> ``ImageClassifier(backbone=MlpMixer, head=LinearClsHead)`` keys (mmpretrain's own Mixer)."""
    return rename_keys(state_dict, TIMM_TO_MMPRETRAIN, source, "timm Mixer")


def stock_arch_for(dims: Mapping[str, int], source: str = "<state dict>") -> str:
    """The ``MlpMixer`` arch name (``s``, ``b``, ``l``) of these widths, or a ConversionError naming the file."""
    for name, arch in STOCK_ARCHS.items():
        if (arch["embed_dims"], arch["num_layers"], arch["tokens_mlp_dims"], arch["channels_mlp_dims"]) == (
                dims["embed_dim"], dims["num_blocks"], dims["tokens_mlp_dim"], dims["channels_mlp_dim"]):
            return name
    raise ConversionError(
        f"{source}: mmpretrain's MlpMixer has no arch of width {dims['embed_dim']}, depth {dims['num_blocks']}, "
        f"token MLP {dims['tokens_mlp_dim']}, channel MLP {dims['channels_mlp_dim']} (its archs: S, B, L); "
        "write the MixerZoo layout instead (the default)")


def classifier_config(backbone: str, dims: Mapping[str, int], num_classes: int, act_layer: str,
                      arch: Optional[str] = None, source: str = "<state dict>",
                      norm_eps: float = 1e-6) -> Dict[str, Any]:
    """The ``model`` of an mmpretrain config that converted weights fit exactly: same keys and shapes, and the same
    function (GELU flavour, LayerNorm epsilon, token average) as the timm model they come from."""
    head = dict(type="LinearClsHead", num_classes=num_classes, in_channels=dims["embed_dim"])
    if backbone == "MixerZoo":
        shape = arch or {k: dims[k] for k in ("patch_size", "num_blocks", "embed_dim", "tokens_mlp_dim",
                                              "channels_mlp_dim")}
        eps = {} if norm_eps == 1e-6 else {"norm_eps": norm_eps}  # MindSpore's weights: 1e-7
        return dict(type="ImageClassifier", head=head,
                    backbone=dict(type="MixerZoo", arch=shape, img_size=dims["img_size"], act_layer=act_layer, **eps))
    if backbone == "MlpMixer":
        gelu = dict(type="GELU", approximate="tanh") if act_layer == "gelu_tanh" else dict(type="GELU")
        return dict(type="ImageClassifier", head=head, neck=dict(type="GlobalAveragePooling", dim=1),
                    backbone=dict(type="MlpMixer", arch=stock_arch_for(dims, source), patch_size=dims["patch_size"],
                                  img_size=dims["img_size"], norm_cfg=dict(type="LN", eps=norm_eps), act_cfg=gelu))
    raise ConversionError(f"unknown mmpretrain backbone {backbone!r}; choose MixerZoo or MlpMixer")


TIMM_TO_CLASSIFIER = {"MixerZoo": timm_to_zoo_classifier, "MlpMixer": timm_to_stock_classifier}
"""The conversion for each backbone's classifier (``--to mmpretrain --backbone NAME``)."""
