"""The paper's Mixer variants as data (Table 1 of the paper plus GSAM's S/8), with closed-form counts.

Architectures are code-level facts; the weights released for them live in the manifest.
"""
from __future__ import annotations

from typing import Dict

ARCHITECTURES: Dict[str, Dict[str, int]] = {
    "mixer_s8_zoo": dict(patch_size=8, num_blocks=8, embed_dim=512, tokens_mlp_dim=256, channels_mlp_dim=2048),
    "mixer_s16_zoo": dict(patch_size=16, num_blocks=8, embed_dim=512, tokens_mlp_dim=256, channels_mlp_dim=2048),
    "mixer_s32_zoo": dict(patch_size=32, num_blocks=8, embed_dim=512, tokens_mlp_dim=256, channels_mlp_dim=2048),
    "mixer_b16_zoo": dict(patch_size=16, num_blocks=12, embed_dim=768, tokens_mlp_dim=384, channels_mlp_dim=3072),
    "mixer_b32_zoo": dict(patch_size=32, num_blocks=12, embed_dim=768, tokens_mlp_dim=384, channels_mlp_dim=3072),
    "mixer_l16_zoo": dict(patch_size=16, num_blocks=24, embed_dim=1024, tokens_mlp_dim=512, channels_mlp_dim=4096),
    "mixer_l32_zoo": dict(patch_size=32, num_blocks=24, embed_dim=1024, tokens_mlp_dim=512, channels_mlp_dim=4096),
    "mixer_h14_zoo": dict(patch_size=14, num_blocks=32, embed_dim=1280, tokens_mlp_dim=640, channels_mlp_dim=5120),
}

CUSTOM_ARCHITECTURE = "mixer_custom_zoo"
"""The generic architecture: any shape, given as arguments (what converted folders outside the table use)."""
SHAPE_ARGS = ("patch_size", "num_blocks", "embed_dim", "tokens_mlp_dim", "channels_mlp_dim", "img_size")
"""A Mixer's whole shape: what ``config.json`` ``model_args`` record and ``mixer_custom_zoo`` requires."""

TIMM_EQUIVALENTS = {
    "mixer_s16_zoo": "mixer_s16_224", "mixer_s32_zoo": "mixer_s32_224", "mixer_b16_zoo": "mixer_b16_224",
    "mixer_b32_zoo": "mixer_b32_224", "mixer_l16_zoo": "mixer_l16_224", "mixer_l32_zoo": "mixer_l32_224",
}
"""timm's own ``MlpMixer`` entry points for the same architectures (timm has no S/8 or H/14)."""


def param_count(arch: str, num_classes: int = 1000) -> int:
    """Exact parameter count of an architecture, in closed form (no model is built)."""
    a = ARCHITECTURES[arch]
    c, p, t, d = a["embed_dim"], a["patch_size"], a["tokens_mlp_dim"], a["channels_mlp_dim"]
    n = (224 // p) ** 2
    stem = 3 * p * p * c + c
    block = 4 * c + (n * t + t + t * n + n) + (c * d + d + d * c + c)
    head = c * num_classes + num_classes if num_classes > 0 else 0
    return stem + a["num_blocks"] * block + 2 * c + head


def closed_form_macs(arch: str, num_classes: int = 1000, img_size: int = 224) -> int:
    """Multiply-accumulates of one image: the stem, two MLPs per block, the head (no norms)."""
    a = ARCHITECTURES[arch]
    c, p, t, d = a["embed_dim"], a["patch_size"], a["tokens_mlp_dim"], a["channels_mlp_dim"]
    n = (img_size // p) ** 2
    stem = n * c * 3 * p * p
    block = 2 * c * n * t + 2 * n * c * d
    return stem + a["num_blocks"] * block + c * num_classes
