"""The MLP-Mixer (Tolstikhin et al., 2021), with timm's ``MlpMixer`` state-dict layout.

Activations run through the blocks in *token-major* layout ``(N, B, C)`` rather than timm's ``(B, N, C)``:
token mixing is then one GEMM ``W @ x`` over a ``(N, B*C)`` view and channel mixing one GEMM over a
``(N*B, C)`` view, so neither pays for a transpose or a copy. The parameters keep timm's names and
shapes (``fc1.weight`` is ``(out, in)``), so a checkpoint loads into this class and into timm's alike.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

GELU_APPROXIMATIONS = {"gelu": "none", "gelu_tanh": "tanh"}
"""GELU flavours by the names timm's ``get_act_layer`` and ``config.json`` use."""


def gelu_approximation(act_layer: Union[str, type, Callable, None]) -> str:
    """Map an ``act_layer`` (timm name, ``nn.GELU``, timm's ``GELUTanh``) to F.gelu's ``approximate``."""
    if act_layer is None:
        return "none"
    if isinstance(act_layer, str):
        if act_layer not in GELU_APPROXIMATIONS:
            raise ValueError(f"act_layer must be one of {sorted(GELU_APPROXIMATIONS)}, got {act_layer!r}")
        return GELU_APPROXIMATIONS[act_layer]
    instance = act_layer() if isinstance(act_layer, type) else act_layer
    if isinstance(instance, nn.GELU):
        return instance.approximate
    name = type(instance).__name__.lower()
    if name in ("gelutanh", "gelu_tanh"):
        return "tanh"
    if name == "gelu":
        return "none"
    raise ValueError(f"the Mixer uses GELU; act_layer {act_layer!r} is not a GELU")


def _drop_path(x: torch.Tensor, p: float, training: bool, batch_dim: int) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch, rescale the rest."""
    if p == 0.0 or not training:
        return x
    shape = [1] * x.ndim
    shape[batch_dim] = x.shape[batch_dim]
    keep = x.new_empty(shape).bernoulli_(1.0 - p).div_(1.0 - p)
    return x * keep


def _mkldnn_linear_gelu_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


_FUSED_CPU = _mkldnn_linear_gelu_available()


class Mlp(nn.Module):
    """Two dense layers; the parameters only (the block decides how they meet the activations)."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = drop


class MixerBlock(nn.Module):
    """LN -> token-mixing MLP -> residual, LN -> channel-mixing MLP -> residual, on ``(N, B, C)``."""

    def __init__(
        self,
        dim: int,
        seq_len: int,
        tokens_dim: int,
        channels_dim: int,
        approximate: str = "none",
        drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_tokens = Mlp(seq_len, tokens_dim, drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp_channels = Mlp(dim, channels_dim, drop)
        self.approximate = approximate
        self.drop_path = drop_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters()))
        if self.training or needs_grad:
            return self._forward_autograd(x)
        return self._forward_inplace(x)

    def _forward_autograd(self, x: torch.Tensor) -> torch.Tensor:
        n, b, c = x.shape
        tok, chn = self.mlp_tokens, self.mlp_channels
        y = self.norm1(x).reshape(n, b * c)
        h = F.gelu(torch.addmm(tok.fc1.bias[:, None], tok.fc1.weight, y), approximate=self.approximate)
        h = F.dropout(h, tok.drop, self.training)
        y = torch.addmm(tok.fc2.bias[:, None], tok.fc2.weight, h)
        y = F.dropout(y, tok.drop, self.training).view(n, b, c)
        x = x + _drop_path(y, self.drop_path, self.training, batch_dim=1)

        y = self.norm2(x)
        h = F.gelu(F.linear(y, chn.fc1.weight, chn.fc1.bias), approximate=self.approximate)
        h = F.dropout(h, chn.drop, self.training)
        y = F.dropout(F.linear(h, chn.fc2.weight, chn.fc2.bias), chn.drop, self.training)
        return x + _drop_path(y, self.drop_path, self.training, batch_dim=1)

    def _forward_inplace(self, x: torch.Tensor) -> torch.Tensor:
        """Inference: residuals accumulate into a copy of ``x`` through the GEMMs' beta=1 input."""
        n, b, c = x.shape
        tok, chn = self.mlp_tokens, self.mlp_channels
        y = self.norm1(x).view(n, b * c)
        h = torch.addmm(tok.fc1.bias[:, None], tok.fc1.weight, y)
        h = F.gelu(h, approximate=self.approximate)
        x = torch.addmm(x.view(n, b * c), tok.fc2.weight, h).add_(tok.fc2.bias[:, None]).view(n, b, c)

        y = self.norm2(x).view(n * b, c)
        if _FUSED_CPU and y.device.type == "cpu" and y.dtype == torch.float32 and not torch.compiler.is_compiling():
            # oneDNN applies the bias and GELU in the GEMM's epilogue, and the residual in the second's.
            # Eager only: torch.compile cannot trace this op, and fuses the plain ops below itself.
            h = torch.ops.mkldnn._linear_pointwise(y, chn.fc1.weight, chn.fc1.bias, "gelu", [], self.approximate)
            out = torch.ops.mkldnn._linear_pointwise.binary(h, x.view(n * b, c), chn.fc2.weight, chn.fc2.bias, "add")
            return out.view(n, b, c)
        h = F.gelu(F.linear(y, chn.fc1.weight, chn.fc1.bias), approximate=self.approximate)
        return torch.addmm(chn.fc2.bias, h, chn.fc2.weight.t()).add_(x.view(n * b, c)).view(n, b, c)


class PatchEmbed(nn.Module):
    """Non-overlapping patches -> linear embedding (a strided conv), as ``stem.proj`` in timm."""

    def __init__(self, img_size: Tuple[int, int], patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (img_size[0] // patch_size, img_size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def feat_ratio(self, as_scalar: bool = True) -> Union[int, Tuple[int, int]]:
        return self.patch_size[0] if as_scalar else self.patch_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return tokens in ``(N, B, C)`` layout."""
        if tuple(x.shape[-2:]) != self.img_size:
            raise ValueError(
                f"input size {tuple(x.shape[-2:])} does not match the model's img_size {self.img_size}: "
                "the token-mixing MLP is built for a fixed number of patches")
        return self.proj(x).flatten(2).permute(2, 0, 1).contiguous()


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
    ) -> None:
        super().__init__()
        img_size = _to_2tuple(img_size)
        if patch_size <= 0 or img_size[0] % patch_size or img_size[1] % patch_size:
            raise ValueError(
                f"img_size {img_size} is not divisible by patch_size {patch_size}: "
                f"use a multiple of {patch_size} (e.g. {max(1, img_size[0] // patch_size) * patch_size})")
        if global_pool not in ("", "avg"):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        self.num_features = self.head_hidden_size = self.embed_dim = embed_dim
        self.act_layer = {v: k for k, v in GELU_APPROXIMATIONS.items()}[gelu_approximation(act_layer)]
        self.grad_checkpointing = False
        self.drop_rate = drop_rate

        self.stem = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        tokens_mlp_dim = tokens_mlp_dim or embed_dim // 2
        channels_mlp_dim = channels_mlp_dim or embed_dim * 4
        approximate = GELU_APPROXIMATIONS[self.act_layer]
        # Stochastic depth rises linearly with depth (the paper's and timm's usual rule).
        rates = [drop_path_rate * i / max(num_blocks - 1, 1) for i in range(num_blocks)]
        self.blocks = nn.Sequential(*[
            MixerBlock(embed_dim, self.stem.num_patches, tokens_mlp_dim, channels_mlp_dim,
                       approximate, proj_drop_rate, rates[i])
            for i in range(num_blocks)
        ])
        self.feature_info = [
            dict(module=f"blocks.{i}", num_chs=embed_dim, reduction=patch_size) for i in range(num_blocks)]
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
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

    def _run_block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint(block, x, use_reentrant=False)
        return block(x)

    def _blocks_token_major(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = self._run_block(block, x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> normalised tokens ``(B, N, C)`` (timm's layout)."""
        return self.norm(self._blocks_token_major(x)).transpose(0, 1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=1)
        x = F.dropout(x, self.drop_rate, self.training)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self._blocks_token_major(x))
        if self.global_pool == "avg":
            x = x.mean(dim=0)  # pool over tokens directly in token-major layout
        else:
            x = x.transpose(0, 1)
        x = F.dropout(x, self.drop_rate, self.training)
        return self.head(x)

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
            x = self._run_block(block, x)
            if i in take_indices:
                y = (self.norm(x) if norm else x).transpose(0, 1)
                if output_fmt == "NCHW":
                    h, w = self.stem.grid_size
                    y = y.reshape(batch, h, w, -1).permute(0, 3, 1, 2)
                intermediates.append(y.contiguous())
        if intermediates_only:
            return intermediates
        return self.norm(x).transpose(0, 1), intermediates

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
