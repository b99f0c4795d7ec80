"""The MLP-Mixer (Tolstikhin et al., 2021), with timm's ``MlpMixer`` state-dict layout.

Activations are ``(B, N, C)`` as in timm; how a block computes in inference is :mod:`.block`'s business. The
parameters keep timm's names and shapes (``fc1.weight`` is ``(out, in)``), so a checkpoint loads into this
class and into timm's alike.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .block import GELU_APPROXIMATIONS, MixerBlock, _eager_only, gelu_approximation  # noqa: F401  (re-exported)


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> linear embedding (a strided conv), as ``stem.proj`` in timm."""

    def __init__(self, img_size: Tuple[int, int], patch_size: int, in_chans: int, embed_dim: int,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        self.img_size = img_size
        self.in_chans = in_chans
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size, device=device,
                              dtype=dtype)

    def feat_ratio(self, as_scalar: bool = True) -> Union[int, Tuple[int, int]]:
        return self.patch_size[0] if as_scalar else self.patch_size

    @torch.jit.unused
    def _check_input(self, shape: List[int]) -> None:
        torch._assert(len(shape) == 4, "expected images of shape (B, C, H, W)")
        if shape[1] != self.in_chans:
            raise ValueError(f"input has {shape[1]} channels; the model expects {self.in_chans}")
        if tuple(shape[2:]) != self.img_size:
            raise ValueError(f"input size {tuple(shape[2:])} does not match the model's img_size {self.img_size}: "
                             "the token-mixing MLP is built for a fixed number of patches")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return tokens in ``(B, N, C)`` layout."""
        if not torch.jit.is_scripting():
            if _eager_only():  # eager users get a ValueError; graphs get the same checks as assert ops below
                self._check_input(list(x.shape))
                return self.proj(x).flatten(2).transpose(1, 2)
        torch._assert(x.dim() == 4, "expected images of shape (B, C, H, W)")
        torch._assert(x.shape[1] == self.in_chans,
                      f"input has {x.shape[1]} channels; the model expects {self.in_chans}")
        for dim in (2, 3):  # two asserts: FX cannot trace ``and`` between shape proxies
            torch._assert(x.shape[dim] == self.img_size[dim - 2],
                          f"input size ({x.shape[2]}, {x.shape[3]}) does not match the model's img_size "
                          f"{self.img_size}: the token-mixing MLP is built for a fixed number of patches")
        return self.proj(x).flatten(2).transpose(1, 2)


def _to_2tuple(size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    if len(size) == 3:  # timm's input_size (C, H, W)
        size = size[1:]
    if len(size) != 2:
        raise ValueError(f"img_size must be an int or (H, W), got {size!r}")
    return size


class Mixer(nn.Module):
    """MLP-Mixer with timm's ``MlpMixer`` parameter names and model API.

    ``act_layer`` picks the GELU: ``"gelu"`` (exact, erf; what timm uses) or ``"gelu_tanh"`` (the tanh
    approximation that Flax's ``nn.gelu`` computes, so what Google's JAX checkpoints were trained with).
    ``norm_eps`` is the LayerNorms' epsilon: 1e-6 as Flax and timm, 1e-7 for MindSpore's ``nn.LayerNorm``.
    ``device``/``dtype`` are the factory kwargs timm passes; on ``device="meta"`` nothing is allocated and
    :meth:`load_state_dict` then takes the checkpoint's tensors as they are.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        img_size: Union[int, Sequence[int]] = 224,
        in_chans: int = 3,
        patch_size: int = 16,
        num_blocks: int = 8,
        embed_dim: int = 512,
        tokens_mlp_dim: Optional[int] = None,
        channels_mlp_dim: Optional[int] = None,
        act_layer: Union[str, type, Callable, None] = "gelu",
        drop_rate: float = 0.0,
        proj_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
        norm_eps: float = 1e-6,
        device: Optional[Union[str, torch.device]] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        img_size = _to_2tuple(img_size)
        if patch_size <= 0 or img_size[0] % patch_size or img_size[1] % patch_size:
            raise ValueError(
                f"img_size {img_size} is not divisible by patch_size {patch_size}: "
                f"use a multiple of {patch_size} (e.g. {max(1, img_size[0] // patch_size) * patch_size})")
        if global_pool not in ("", "avg"):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        dd = dict(device=device, dtype=dtype)
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.act_layer = {v: k for k, v in GELU_APPROXIMATIONS.items()}[gelu_approximation(act_layer)]
        self.grad_checkpointing = False
        self.drop_rate = drop_rate

        self.stem = PatchEmbed(img_size, patch_size, in_chans, embed_dim, **dd)
        tokens_mlp_dim = tokens_mlp_dim or embed_dim // 2
        channels_mlp_dim = channels_mlp_dim or embed_dim * 4
        approximate = GELU_APPROXIMATIONS[self.act_layer]
        # Stochastic depth rises linearly with depth (the paper's and timm's usual rule).
        rates = [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
        self.blocks = nn.Sequential(*[
            MixerBlock(embed_dim, self.stem.num_patches, tokens_mlp_dim, channels_mlp_dim,
                       approximate, proj_drop_rate, rates[i], norm_eps, **dd)
            for i in range(num_blocks)
        ])
        for block in self.blocks[1:]:  # one pool: a block's backward reuses the next one's buffers, and in
            # inference two output buffers serve all blocks in turn
            block.buffer_pool = self.blocks[0].buffer_pool
        self.feature_info = [
            dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=patch_size) for i in range(num_blocks)]
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps, **dd)
        self.head = nn.Linear(embed_dim, num_classes, **dd) if num_classes > 0 else nn.Identity()
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Flax-like init: lecun-normal stem, xavier MLPs with tiny biases, zero head (as the paper)."""
        fan_in = self.stem.proj.weight[0].numel()
        nn.init.trunc_normal_(self.stem.proj.weight, std=math.sqrt(1.0 / fan_in) / 0.87962566103423978)
        nn.init.zeros_(self.stem.proj.bias)
        for block in self.blocks:
            for mlp in (block.mlp_tokens, block.mlp_channels):
                for fc in (mlp.fc1, mlp.fc2):
                    nn.init.xavier_uniform_(fc.weight)
                    nn.init.normal_(fc.bias, std=1e-6)
        if isinstance(self.head, nn.Linear):
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    @torch.jit.ignore
    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False) -> Any:
        """As ``nn.Module``'s, but a model built on the meta device takes the checkpoint's tensors (``assign``):
        that is how ``pretrained=True`` skips the random init the weights would overwrite."""
        on_meta = any(p.is_meta for p in self.parameters())
        return super().load_state_dict(state_dict, strict=strict, assign=assign or on_meta)

    # ---- timm model API -------------------------------------------------------------------------
    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> Dict[str, object]:
        return dict(stem=r"^stem", blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        if global_pool is not None:
            if global_pool not in ("", "avg"):
                raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.num_classes = num_classes
        weight = self.stem.proj.weight
        self.head = (nn.Linear(self.embed_dim, num_classes, device=weight.device, dtype=weight.dtype)
                     if num_classes > 0 else nn.Identity())
        self.head.train(self.training)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> normalised tokens ``(B, N, C)``."""
        x = self.stem(x)
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            for block in self.blocks:
                x = checkpoint(block, x, use_reentrant=False)
        else:
            x = self.blocks(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: Optional[Union[int, List[int]]] = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """Block outputs as timm returns them: ``NCHW`` maps or ``NLC`` tokens."""
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take_indices, max_index = _feature_take_indices(len(self.blocks), indices)
        batch = x.shape[0]
        x = self.stem(x)
        blocks = self.blocks[:max_index + 1] if stop_early else self.blocks
        intermediates = []
        for i, block in enumerate(blocks):
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
            if i in take_indices:
                y = self.norm(x) if norm else x
                if output_fmt == "NCHW":
                    h, w = self.stem.grid_size
                    y = y.reshape(batch, h, w, -1).permute(0, 3, 1, 2).contiguous()
                intermediates.append(y)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self,
        indices: Union[int, List[int]] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> List[int]:
        take_indices, max_index = _feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take_indices


def materialize_meta_(model: nn.Module, device: Union[str, torch.device] = "cpu") -> nn.Module:
    """Give parameters still on the meta device after a pretrained load real storage: a new classifier head
    (zero, as the paper initialises heads) or a norm (ones/zeros); anything else the checkpoint should have held.

    Works on the model and on timm's feature wrappers around it."""
    for name, module in model.named_modules():
        if any(p.is_meta for p in module.parameters(recurse=False)):
            module.to_empty(device=device, recurse=False)
            if isinstance(module, nn.Linear) and name.split(".")[-1] == "head":
                nn.init.zeros_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                module.reset_parameters()
            else:
                raise RuntimeError(f"{name}: no weights in the checkpoint; build without pretrained=True or load "
                                   "a complete checkpoint")
    return model


def _feature_take_indices(num_blocks: int, indices: Optional[Union[int, List[int]]]) -> Tuple[List[int], int]:
    """timm's convention: an int takes the last n blocks, a list picks blocks (negative from the end)."""
    if indices is None:
        indices = num_blocks
    if isinstance(indices, int):
        if not 0 < indices <= num_blocks:
            raise ValueError(f"cannot take the last {indices} of {num_blocks} blocks")
        take = list(range(num_blocks - indices, num_blocks))
    else:
        take = []
        for i in indices:
            j = i + num_blocks if i < 0 else i
            if not 0 <= j < num_blocks:
                raise ValueError(f"block index {i} is out of range for {num_blocks} blocks")
            take.append(j)
    return take, max(take)
