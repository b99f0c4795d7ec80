"""The channel-mixing kernels of CPU inference and the measured choice between them.

oneDNN's fused ``_linear_pointwise`` (bias + GELU, bias + residual in the GEMM epilogues) is faster than plain
GEMMs on AVX-512 CPUs and slower on AVX2-only ones, so which one runs is decided by timing both on the
first call for each device, dtype, shape and GELU, not by guessing from the ISA.
"""
from __future__ import annotations

import contextlib
import os
import time
from typing import Dict, Iterator, Optional, Tuple

import torch
from torch import nn

from ..util.env import environ


def _mkldnn_linear_pointwise_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


PATH_ENV = "MIXER_ZOO_CPU_PATH"
"""``fused`` / ``plain`` force the channel-mixing kernel of eager CPU inference; ``auto`` (default) measures."""
CPU_PATHS = ("auto", "fused", "plain")

TIMING_ROUNDS = (3, 9)
TIMING_SECONDS = 0.3
"""The choice times both kernels alternately for at least 3 rounds, and for up to 9 while under 0.3 s: a
median of 3 picked the slower kernel at ~10% apart on a shared 2-core VM (S/32, batch 16)."""
_FUSED_AVAILABLE = _mkldnn_linear_pointwise_available()
_CHOSEN_PATH: Dict[Tuple[str, str, int, int, int, str], str] = {}
"""Measured winner per (device, dtype, rows, width, hidden, GELU): filled on first use, once per process."""


def gelu_(h: torch.Tensor, approximate: str) -> torch.Tensor:
    """GELU in place. The tanh form as ``x * sigmoid(2u)`` (the same function, since 0.5(1 + tanh u) =
    sigmoid(2u)) on float32 CPU: ATen's tanh kernel costs 0.8-1.4 ns per element here, this 0.4-0.7 (AVX-512,
    AVX2), and it stays within ~12 ulp of the exact value where ATen's loses thousands to cancellation in the
    negative tail."""
    if approximate == "tanh" and h.dtype == torch.float32 and h.device.type == "cpu":
        u = h.square().mul_(0.07135481627260025).add_(1.5957691216057308).mul_(h)  # 2u = 2 sqrt(2/pi) (x + 0.044715 x^3)
        return h.mul_(u.sigmoid_())
    return torch.ops.aten.gelu_(h, approximate=approximate)


def channel_mlp_plain(y: torch.Tensor, x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                      b2: torch.Tensor, approximate: str, hidden: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``x + fc2(gelu(fc1(y)))`` on ``(rows, C)`` views, written into ``x``: the residual is the second GEMM's C
    (beta=1) and GELU runs in place, so the block allocates nothing beyond the hidden activations, which go
    into ``hidden`` when given (a float32 buffer; not under autocast, whose casts apply to out-of-place ops)."""
    h = torch.addmm(b1, y, w1.t()) if hidden is None else torch.addmm(b1, y, w1.t(), out=hidden)
    gelu_(h, approximate)
    if h.dtype != w2.dtype or x.dtype != w2.dtype:  # autocast: it casts out-of-place ops only
        return x.add_(torch.addmm(b2, h, w2.t()))
    return torch.addmm(x, h, w2.t(), out=x).add_(b2)  # out=x rather than addmm_: FLOP counters see it


def channel_mlp_fused(y: torch.Tensor, x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor,
                      b2: torch.Tensor, approximate: str) -> torch.Tensor:
    """The same through oneDNN: bias+GELU in the first GEMM's epilogue, bias+residual in the second's."""
    h = torch.ops.mkldnn._linear_pointwise(y, w1, b1, "gelu", [], approximate)
    return torch.ops.mkldnn._linear_pointwise.binary(h, x, w2, b2, "add")


def fixed_path(device_type: str, dtype: torch.dtype) -> Optional[str]:
    """The kernel when nothing is to be timed: ``plain`` where the fused op cannot run (no oneDNN op, not a
    float32 CPU tensor), else the one ``$MIXER_ZOO_CPU_PATH`` forces; None when ``auto`` must measure."""
    forced = os.environ.get(PATH_ENV, "auto")
    if forced not in CPU_PATHS:
        raise ValueError(f"${PATH_ENV} must be auto, fused or plain, got {forced!r}")
    if not _FUSED_AVAILABLE or device_type != "cpu" or dtype != torch.float32:
        return "plain"
    return None if forced == "auto" else forced


def channel_path(y: torch.Tensor, x: torch.Tensor, fc1: nn.Linear, fc2: nn.Linear, approximate: str) -> str:
    """``fused`` or ``plain``: whichever is faster *here*, timed once per device, dtype, shape and GELU.

    oneDNN's fused kernels win on AVX-512 CPUs and lose on AVX2-only ones (measured on both), so the choice
    cannot be made from the ISA name alone; ``$MIXER_ZOO_CPU_PATH`` forces one for benchmarks.
    """
    fixed = fixed_path(y.device.type, y.dtype)
    if fixed is not None:
        return fixed
    key = (str(y.device), str(y.dtype), y.shape[0], y.shape[1], fc1.out_features, approximate)
    if key not in _CHOSEN_PATH:
        weights = (fc1.weight, fc1.bias, fc2.weight, fc2.bias, approximate)
        runs = {name: (lambda f=f: f(y, x.clone(), *weights))  # a copy: the plain kernel writes into x
                for name, f in (("fused", channel_mlp_fused), ("plain", channel_mlp_plain))}
        times: Dict[str, list] = {name: [] for name in runs}
        with torch.no_grad():  # the kernels are inference-only (the plain one writes through out=)
            began = time.perf_counter()
            for repeat in range(TIMING_ROUNDS[1] + 1):  # round 0 warms up (oneDNN builds its primitive)
                for name, run in runs.items():  # alternating, so drift on a shared machine hits both alike
                    start = time.perf_counter()
                    run()
                    if repeat:
                        times[name].append(time.perf_counter() - start)
                if repeat >= TIMING_ROUNDS[0] and time.perf_counter() - began > TIMING_SECONDS:
                    break
        _CHOSEN_PATH[key] = min(times, key=lambda name: min(times[name]))  # best of each: interference only adds
    return _CHOSEN_PATH[key]


def chosen_paths() -> Dict[Tuple[str, str, int, int, int, str], str]:
    """The choices measured so far in this process (benchmarks report them)."""
    return dict(_CHOSEN_PATH)


@contextlib.contextmanager
def forced_cpu_path(path: Optional[str]) -> Iterator[None]:
    """Run a block with ``$MIXER_ZOO_CPU_PATH`` set to ``path`` (None: leave the measured choice)."""
    if path is None:
        yield
        return
    if path not in CPU_PATHS:
        raise ValueError(f"cpu path must be auto, fused or plain, got {path!r}")
    with environ({PATH_ENV: path}):
        yield
