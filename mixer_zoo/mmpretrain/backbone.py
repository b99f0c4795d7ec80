"""``MixerZoo``: the zoo's Mixer as an mmpretrain backbone (registered in ``mmpretrain.registry.MODELS``).

The backbone owns the Mixer's ``stem``, ``blocks`` and ``norm`` under timm's names, so inside an
``ImageClassifier`` its weights are ``backbone.<timm key>`` and a zoo checkpoint maps onto it by adding
a prefix. ``arch`` may carry a weights tag (``"mixer_b16_zoo.goog_in21k"``): the tag decides the GELU
flavour, as it does for ``timm.create_model``, and ``pretrained=True`` loads that tag's weights.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
from mmpretrain.models.backbones.base_backbone import BaseBackbone
from mmpretrain.registry import MODELS
from torch.utils.checkpoint import checkpoint

from ..model import ARCHITECTURES, Mixer
from ..weights.manifest import get_entry, weights_entries
from .checkpoints import CheckpointMismatchError, check_fits, checkpoint_state_dict

ARCH_KEYS = ("patch_size", "num_blocks", "embed_dim", "tokens_mlp_dim", "channels_mlp_dim")


def resolve_arch(arch: Union[str, Dict[str, int]]) -> Tuple[Dict[str, int], Optional[str]]:
    """``arch`` -> (hyper-parameters, ``"arch.tag"`` of its weights or None).

    A bare architecture name means its default tag (the manifest's first), as in timm.
    """
    if isinstance(arch, dict):
        missing = [k for k in ARCH_KEYS if k not in arch]
        if missing:
            raise ValueError(f"arch dict is missing {missing}; it needs {list(ARCH_KEYS)}")
        unknown = sorted(set(arch) - set(ARCH_KEYS))
        if unknown:  # otherwise ignored without a word (a misspelt key, or img_size given here)
            raise ValueError(f"arch dict has unknown keys {unknown}; it takes {list(ARCH_KEYS)} (img_size and "
                             "act_layer are MixerZoo arguments)")
        return {k: int(arch[k]) for k in ARCH_KEYS}, None
    name = str(arch)
    base = name.split(".", 1)[0]
    if base not in ARCHITECTURES:
        raise ValueError(f"unknown Mixer architecture {base!r}; known: {', '.join(ARCHITECTURES)}")
    if "." not in name and not any(e["architecture"] == base for e in weights_entries().values()):
        return dict(ARCHITECTURES[base]), None
    entry = get_entry(name)  # raises ManifestError naming the manifest for an unknown tag
    return dict(ARCHITECTURES[base]), f"{entry['architecture']}.{entry['tag']}"


@MODELS.register_module()
class MixerZoo(BaseBackbone):
    """MLP-Mixer backbone with timm's parameter names.

    Args:
        arch: an architecture (``"mixer_b16_zoo"``), an architecture with a weights tag
            (``"mixer_b16_zoo.goog_in21k"``), or a dict of ``patch_size, num_blocks, embed_dim,
            tokens_mlp_dim, channels_mlp_dim``.
        img_size: input resolution (the token-mixing MLPs are built for it).
        act_layer: ``"gelu"`` or ``"gelu_tanh"``; None takes the weights tag's flavour (else ``"gelu"``).
        norm_eps: the LayerNorms' epsilon; None takes the tag's (1e-7 for MindSpore's weights, else 1e-6).
        pretrained: load the tag's weights through ``init_cfg`` (``zoo://arch.tag``, prefix ``backbone.``).
        out_indices: blocks whose output is returned (negative counts from the end).
        out_type: ``"avg_featmap"`` (B, C) tokens averaged, ``"featmap"`` (B, C, H, W), ``"raw"`` (B, N, C).
        final_norm: apply the final LayerNorm to the last block's output (as timm's ``forward_features``).
        with_cp: gradient checkpointing of each block (saves memory when fine-tuning large variants).
    """

    OUT_TYPES = ("avg_featmap", "featmap", "raw")

    def __init__(
        self,
        arch: Union[str, Dict[str, int]] = "mixer_b16_zoo",
        img_size: int = 224,
        in_channels: int = 3,
        act_layer: Optional[str] = None,
        norm_eps: Optional[float] = None,
        pretrained: bool = False,
        out_indices: Union[int, Sequence[int]] = -1,
        out_type: str = "avg_featmap",
        final_norm: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        with_cp: bool = False,
        init_cfg: Optional[Union[Dict[str, Any], list]] = None,
    ) -> None:
        hparams, weights = resolve_arch(arch)
        entry = get_entry(weights) if weights else None
        if pretrained:
            if weights is None:
                raise ValueError(f"pretrained=True needs an arch with weights, e.g. 'mixer_b16_zoo.goog_in21k'; got {arch!r}")
            expected = tuple(entry["input_size"][1:])
            if (img_size, img_size) != expected:
                raise ValueError(
                    f"{weights} was trained at {expected[0]}x{expected[1]}; img_size={img_size} changes the "
                    "token-mixing MLPs' shape: for K times the size convert the tag, expand the folder "
                    "(mixer-zoo convert FOLDER --img-size N --out BIG) and start from local-dir:BIG")
            if init_cfg is None:
                init_cfg = dict(type="Pretrained", checkpoint=f"zoo://{weights}", prefix="backbone.")
        super().__init__(init_cfg)
        if out_type not in self.OUT_TYPES:
            raise ValueError(f"out_type must be one of {self.OUT_TYPES}, got {out_type!r}")
        if act_layer is None:
            act_layer = entry["act_layer"] if entry else "gelu"
        mixer = Mixer(num_classes=0, img_size=img_size, in_chans=in_channels, act_layer=act_layer,
                      drop_rate=0.0, proj_drop_rate=drop_rate, drop_path_rate=drop_path_rate,
                      norm_eps=norm_eps if norm_eps is not None else (entry or {}).get("norm_eps", 1e-6),
                      **hparams)
        self.arch = arch
        self.weights = weights
        self.act_layer = mixer.act_layer
        self.embed_dims = mixer.embed_dim
        self.grid_size = mixer.stem.grid_size
        self.stem, self.blocks, self.norm = mixer.stem, mixer.blocks, mixer.norm
        self.num_layers = len(self.blocks)
        if isinstance(out_indices, int):
            out_indices = [out_indices]
        self.out_indices = []
        for i in out_indices:
            j = i + self.num_layers if i < 0 else i
            if not 0 <= j < self.num_layers:
                raise ValueError(f"out_indices {i} is out of range for {self.num_layers} blocks")
            self.out_indices.append(j)
        self.out_type = out_type
        self.final_norm = final_norm
        self.with_cp = with_cp

    def init_weights(self) -> None:
        """As mmengine's, except that ``init_cfg=dict(type='Pretrained', checkpoint=..., prefix=...)`` must fill
        every backbone weight: mmengine's Pretrained init loads what matches and only logs the rest."""
        cfg = self.init_cfg
        if self._is_init or not (isinstance(cfg, dict) and cfg.get("type") == "Pretrained"):
            super().init_weights()
            return
        from mmengine.runner.checkpoint import CheckpointLoader

        source, prefix = str(cfg["checkpoint"]), cfg.get("prefix") or ""
        state = checkpoint_state_dict(CheckpointLoader.load_checkpoint(source, cfg.get("map_location", "cpu")), source)
        if prefix:
            state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            if not state:
                raise CheckpointMismatchError(f"{source}: no key starts with prefix {prefix!r}")
        check_fits(self.state_dict(), state, f"{source} (prefix {prefix!r})" if prefix else source)
        self.load_state_dict(state, strict=True)
        self._is_init = True

    def train(self, mode: bool = True) -> "MixerZoo":
        """As nn.Module's: returns self (mmpretrain's BaseBackbone.train returns None, breaking ``.eval()`` chains)."""
        super().train(mode)
        return self

    def _format(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``(B, N, C)`` -> the requested output layout."""
        if self.out_type == "avg_featmap":
            return x.mean(dim=1)
        if self.out_type == "raw":
            return x.contiguous()
        h, w = self.grid_size
        return x.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x = self.stem(x)  # (B, N, C), as timm's blocks
        outs = []
        last = self.num_layers - 1
        for i, block in enumerate(self.blocks):
            if self.with_cp and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if i == last and self.final_norm:
                x = self.norm(x)
            if i in self.out_indices:
                outs.append(self._format(x))
        return tuple(outs)

    def get_layer_depth(self, param_name: str, prefix: str = "") -> Tuple[int, int]:
        """Layer id for layer-wise learning-rate decay (mmpretrain's ``LearningRateDecayOptimWrapperConstructor``)."""
        num_layers = self.num_layers + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name.startswith("stem"):
            return 0, num_layers
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1, num_layers
        return num_layers - 1, num_layers
