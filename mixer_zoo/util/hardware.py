"""The machine a figure is measured on: device choice, CPU model and ISA, peak memory and matmul peak.

Every benchmark row names its hardware, so a speed claim can be traced to the CPU it was made on.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import platform
import re
import sys
import time
from typing import Optional

import torch


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when there is one, else CPU; asking for CUDA without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
    return dev


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")


def _cpu_flags() -> list:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []


def cpu_isa_flags() -> str:
    """The vector extensions of this CPU that matter for float32/bf16 GEMMs, space-separated."""
    flags = _cpu_flags()
    return " ".join(flag for flag in ISA_FLAGS if flag in flags) or "unknown"


ISA_CAPS = {"avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}
"""Environment that makes ATen, oneDNN and MKL run their AVX2 code on a wider CPU, so one machine measures both paths.

Each library reads its variable once, when torch loads: a cap only takes effect in a fresh process
(:func:`reexec_with_isa_cap`)."""


def isa_cap() -> Optional[str]:
    """The ISA this process's math libraries were capped at by :data:`ISA_CAPS`, or None."""
    for isa, env in ISA_CAPS.items():
        if all(os.environ.get(name, "").lower() == value.lower() for name, value in env.items()):
            return isa
    return None


def cpu_isa() -> str:
    """The widest vector ISA the kernels use: ``amx``, ``avx512``, ``avx2`` or ``other`` (/proc/cpuinfo, then the cap).

    Under an :data:`ISA_CAPS` cap that is narrower than the CPU, e.g. ``avx2 (capped, cpu avx512)``.
    """
    flags = _cpu_flags()
    native = next((isa for isa, flag in (("amx", "amx_tile"), ("avx512", "avx512f"), ("avx2", "avx2"))
                   if flag in flags), "other")
    cap = isa_cap()
    return f"{cap} (capped, cpu {native})" if cap and cap != native and native != "other" else native


def reexec_with_isa_cap(isa: Optional[str]) -> None:
    """Run this command line again in place with the libraries capped at ``isa`` (no-op if None or already so)."""
    if isa is None or isa_cap() == isa:
        return
    if isa not in ISA_CAPS:
        raise ValueError(f"unknown ISA cap {isa!r}; known: {', '.join(ISA_CAPS)}")
    env = dict(os.environ, **ISA_CAPS[isa])
    argv = getattr(sys, "orig_argv", None) or [sys.executable] + sys.argv  # orig_argv keeps ``-m module``
    os.execve(sys.executable, [sys.executable] + argv[1:], env)


def machine_folder_name() -> str:
    """``<cpu model>-<isa>-<threads>t`` as a folder name: results from different CPUs sit side by side."""
    name = f"{cpu_model_name()} {cpu_isa()} {torch.get_num_threads()}t".lower()
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")


def hardware_name(device: torch.device) -> str:
    """What the figures were measured on, in words (goes into every result row and the manifest)."""
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"{cpu_model_name()} ({cpu_isa()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"
    return f"{what}, torch {torch.__version__}"


def _read_status_kib(field: str) -> Optional[int]:
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakMemory:
    """Peak memory of a piece of work, in bytes above what was in use when it began.

    CUDA: ``max_memory_allocated``. CPU: the process RSS high-water mark, reset through
    ``/proc/self/clear_refs`` after ``malloc_trim`` hands cached free memory back, so memory that the
    allocator recycles from earlier work is counted again when it is touched.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.extra_bytes: Optional[int] = None

    def __enter__(self) -> "PeakMemory":
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        try:
            with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
                f.write("5")  # resets VmHWM to the current RSS
            self._start = _read_status_kib("VmRSS")
        except OSError:
            self._start = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.extra_bytes = torch.cuda.max_memory_allocated(self.device) - self._start
        elif self._start is not None:
            peak = _read_status_kib("VmHWM")
            self.extra_bytes = None if peak is None else max(0, peak - self._start) * 1024


def matmul_peak_flops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """FLOP/s of a large square matmul: the reference for model FLOP utilisation (MFU)."""
    n = 8192 if device.type == "cuda" else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
