"""One Mixer block: LayerNorm -> token-mixing MLP -> residual, LayerNorm -> channel-mixing MLP -> residual.

A float32 CPU training step runs :class:`.block_training.MixerBlockTraining` (timm's kernels, buffers kept
between steps); traced or exported graphs, autocast, dropout and CUDA run timm's own ops. In eager inference
token mixing is ``W @ x`` batched over the images (no transposed copy), the residuals enter the GEMMs as their
beta=1 input, the work goes a few images at a time into buffers the model keeps between calls (float32 CPU), and
the channel-mixing kernel (oneDNN-fused or plain) is the one measured faster on the machine at hand.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

from .block_training import BufferPool, MixerBlockTraining
from .kernels import channel_mlp_fused, channel_mlp_plain, channel_path, gelu_

BLOCK_CHUNK_BYTES = 16 << 20
"""Inference runs a block over as many images at a time as keep either MLP's hidden activations within this."""
POOL_MIN_BYTES = 4 << 20
"""Inference takes its buffers from the pool once a chunk's larger hidden activation reaches this. Smaller ones
come back from the heap without page faults (none at B/16 or S/32 batch 1, whose largest is 2.4 MB), where the
pool's bookkeeping cost 1-2%; at S/32 batch 16 (8 MB) the allocator faulted 3-34k pages per forward."""
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


def _drop_path_scale(x: torch.Tensor, p: float, training: bool) -> Optional[torch.Tensor]:
    """Stochastic depth's per-image scale of a residual branch (0 or 1/(1-p)); None when it is off."""
    if p == 0.0 or not training:
        return None
    return x.new_empty([x.shape[0]] + [1] * (x.dim() - 1)).bernoulli_(1.0 - p).div_(1.0 - p)


def _drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch, rescale the rest."""
    keep = _drop_path_scale(x, p, training)
    return x if keep is None else x * keep


def _eager_only() -> bool:
    """True in plain eager mode: not tracing (jit, FX, export, dynamo) nor ONNX-exporting, where the fused op
    cannot be recorded; those graphs get the plain ops, which the compilers fuse themselves."""
    return not (torch.jit.is_tracing() or is_fx_symbolic_tracing() or torch.compiler.is_compiling()
                or torch.onnx.is_in_onnx_export())


class Mlp(nn.Module):
    """Two dense layers; the parameters only (the block decides how they meet the activations)."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features, device=device, dtype=dtype)
        self.fc2 = nn.Linear(hidden_features, in_features, device=device, dtype=dtype)
        self.drop = drop


class MixerBlock(nn.Module):
    """LN -> token-mixing MLP -> residual, LN -> channel-mixing MLP -> residual, on ``(B, N, C)`` as timm.

    In eager inference token mixing is ``W @ x`` batched over images (no transposed copy) and the residuals
    enter the GEMMs as their beta=1 input. An eager float32 CPU training step is one autograd Function with
    its buffers in ``buffer_pool`` (the model's blocks share one); graphs and the other cases run timm's ops
    (``Linear`` over the transposed tokens).
    """

    def __init__(
        self,
        dim: int,
        seq_len: int,
        tokens_dim: int,
        channels_dim: int,
        approximate: str = "none",
        drop: float = 0.0,
        drop_path: float = 0.0,
        norm_eps: float = 1e-6,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        dd = dict(device=device, dtype=dtype)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps, **dd)
        self.mlp_tokens = Mlp(seq_len, tokens_dim, drop, **dd)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps, **dd)
        self.mlp_channels = Mlp(dim, channels_dim, drop, **dd)
        self.approximate = approximate
        self.drop_path = drop_path
        self.chunk_bytes = BLOCK_CHUNK_BYTES
        self.buffer_pool = BufferPool()

    def train(self, mode: bool = True) -> "MixerBlock":
        if not mode:
            self.buffer_pool.clear()  # inference keeps no training buffers
        return super().train(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():
            if not torch.jit.is_scripting():
                if self._pooled_training_applies(x):
                    return self._forward_pooled(x)
            return self._forward_autograd(x)
        if not torch.jit.is_scripting():
            if not _eager_only():
                return self._forward_autograd(x)  # one pure-op graph for tracers, whatever the grad mode
        return self._forward_inference(x)

    def _forward_autograd(self, x: torch.Tensor) -> torch.Tensor:
        tok, chn = self.mlp_tokens, self.mlp_channels
        h = F.gelu(F.linear(self.norm1(x).transpose(1, 2), tok.fc1.weight, tok.fc1.bias), approximate=self.approximate)
        h = F.dropout(h, tok.drop, self.training)
        y = F.dropout(F.linear(h, tok.fc2.weight, tok.fc2.bias), tok.drop, self.training).transpose(1, 2)
        x = x + _drop_path(y, self.drop_path, self.training)

        h = F.gelu(F.linear(self.norm2(x), chn.fc1.weight, chn.fc1.bias), approximate=self.approximate)
        h = F.dropout(h, chn.drop, self.training)
        y = F.dropout(F.linear(h, chn.fc2.weight, chn.fc2.bias), chn.drop, self.training)
        return x + _drop_path(y, self.drop_path, self.training)

    @torch.jit.unused
    def _pooled_training_applies(self, x: torch.Tensor) -> bool:
        """The pooled Function runs eager float32 CPU steps without dropout or autocast; graphs, CUDA (whose
        caching allocator already keeps memory), other dtypes and dropout take timm's ops."""
        dropout = self.training and (self.mlp_tokens.drop > 0 or self.mlp_channels.drop > 0)
        return (_eager_only() and x.device.type == "cpu" and x.dtype == torch.float32 and x.dim() == 3
                and not dropout and not torch.is_autocast_enabled("cpu")
                and not torch._C._are_functorch_transforms_active()  # vmap/grad transforms need setup_context
                and all(p.dtype == torch.float32 and p.device.type == "cpu" for p in self.parameters()))

    @torch.jit.unused
    def _forward_pooled(self, x: torch.Tensor) -> torch.Tensor:
        tok, chn = self.mlp_tokens, self.mlp_channels
        self.buffer_pool.new_step(self)
        return MixerBlockTraining.apply(
            x, _drop_path_scale(x, self.drop_path, self.training), _drop_path_scale(x, self.drop_path, self.training),
            self.buffer_pool, self.approximate, self.norm1.eps,
            self.norm1.weight, self.norm1.bias, tok.fc1.weight, tok.fc1.bias, tok.fc2.weight, tok.fc2.bias,
            self.norm2.weight, self.norm2.bias, chn.fc1.weight, chn.fc1.bias, chn.fc2.weight, chn.fc2.bias)

    def hidden_bytes_per_image(self, element_size: int = 4) -> int:
        """Bytes of the larger of the two MLPs' hidden activations for one image."""
        tokens, token_hidden = self.mlp_tokens.fc1.in_features, self.mlp_tokens.fc1.out_features
        width, channel_hidden = self.mlp_channels.fc1.in_features, self.mlp_channels.fc1.out_features
        return max(token_hidden * width, tokens * channel_hidden) * element_size

    def images_per_chunk(self, element_size: int = 4) -> int:
        """How many images eager inference takes through the block at a time: as many as keep the larger of
        the two MLPs' hidden activations within ``chunk_bytes``."""
        return max(1, self.chunk_bytes // self.hidden_bytes_per_image(element_size))

    @torch.jit.unused
    def _pooled_inference_applies(self, x: torch.Tensor) -> bool:
        """Eager float32 CPU inference without autocast takes its buffers from ``buffer_pool``; other dtypes,
        autocast (whose casts allocate anyway) and CUDA (whose caching allocator keeps memory) allocate. The
        GEMM weights stand for all parameters (a dtype mix fails in either path): walking all twelve costs 20 µs
        a block, 1% of S/32 at batch 1."""
        w1, w3 = self.mlp_tokens.fc1.weight, self.mlp_channels.fc1.weight
        return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
                and w1.dtype == w3.dtype == torch.float32 and w1.device.type == w3.device.type == "cpu")

    def _forward_inference(self, x: torch.Tensor) -> torch.Tensor:
        """Both MLPs over a few images at a time, so each chunk's LayerNorm output and hidden activations stay
        in cache. In eager float32 CPU inference whose chunks reach ``POOL_MIN_BYTES``, the block's output and
        hidden activations come from ``buffer_pool`` (shared by the model's blocks): an allocator that hands
        freed memory back to the kernel makes each call page-fault them in again. The pool hands out only
        storages nothing else holds, so the block's input and any output a caller keeps are never written."""
        b, n, c = x.shape[0], x.shape[1], x.shape[2]
        tok, chn = self.mlp_tokens, self.mlp_channels
        t, hidden = tok.fc1.weight.shape[0], chn.fc1.weight.shape[0]
        pooled = False
        buffers: List[torch.Tensor] = []  # pooled: the output and the token-hidden chunk buffer
        channel_hidden: Optional[torch.Tensor] = None  # pooled, plain kernel: the channel-hidden chunk buffer
        step = min(b, self.images_per_chunk(x.element_size()))  # a ragged last chunk takes a prefix of each
        if not torch.jit.is_scripting():
            pooled = (step * self.hidden_bytes_per_image(x.element_size()) >= POOL_MIN_BYTES
                      and self._pooled_inference_applies(x))
            if pooled:
                self.buffer_pool.new_step(self)
                buffers = [self.buffer_pool.empty(shape, x) for shape in ((b, n, c), (step, t, c))]
        out = buffers[0] if pooled else torch.empty((b, n, c), dtype=x.dtype, device=x.device)
        path = "plain"
        for start in range(0, b, step):
            k = min(step, b - start)
            xs, rows = x[start:start + k], out[start:start + k]
            y = self.norm1(xs)  # allocated: ATen's LayerNorm has no out= kernel (``.out`` allocates, then copies)
            if pooled:
                h = torch.baddbmm(tok.fc1.bias.view(1, t, 1), tok.fc1.weight.expand(k, t, n), y, out=buffers[1][:k])
            else:
                h = torch.baddbmm(tok.fc1.bias.view(1, t, 1), tok.fc1.weight.expand(k, t, n), y)
            gelu_(h, self.approximate)
            if h.dtype == out.dtype == tok.fc2.weight.dtype:
                torch.baddbmm(xs, tok.fc2.weight.expand(k, n, t), h, out=rows)
            else:  # autocast casts out-of-place ops only; the residual keeps the input's dtype, as in timm
                torch.add(xs, torch.bmm(tok.fc2.weight.expand(k, n, t), h), out=rows)
            rows.add_(tok.fc2.bias.unsqueeze(1))
            rows = rows.view(k * n, c)
            y = self.norm2(rows)
            if not torch.jit.is_scripting():
                if start == 0:
                    path = channel_path(y, rows, chn.fc1, chn.fc2, self.approximate)
                    if pooled and path == "plain":
                        channel_hidden = self.buffer_pool.empty((step * n, hidden), x)
                if path == "fused":
                    rows.copy_(channel_mlp_fused(y, rows, chn.fc1.weight, chn.fc1.bias, chn.fc2.weight,
                                                 chn.fc2.bias, self.approximate))
                    continue
            channel_mlp_plain(y, rows, chn.fc1.weight, chn.fc1.bias, chn.fc2.weight, chn.fc2.bias, self.approximate,
                              None if channel_hidden is None else channel_hidden[:k * n])
        return out
