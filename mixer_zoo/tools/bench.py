"""``mixer-zoo bench``: parameters, FLOPs, throughput and memory per variant, side by side with timm.

Every figure for our model is measured in the same process as the figures for timm's own ``MlpMixer``
(and, when asked, mmpretrain's ``MlpMixer``, our model exported to onnxruntime / OpenVINO, int8 models) holding
the *same weights*. Timed steps alternate between the implementations, repeat after repeat, because this kind
of machine drifts by +-15 % between runs; the speed-up is the median of the per-repeat ratios, so drift that
hits both sides of a pair cancels.
"""
from __future__ import annotations

import contextlib
import datetime
import gc
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..formats.mmpretrain_layout import timm_to_stock_classifier
from ..model.architectures import ARCHITECTURES, TIMM_EQUIVALENTS
from ..model.kernels import chosen_paths, fixed_path, forced_cpu_path  # noqa: F401  (forced_cpu_path re-exported)
from ..util.hardware import PeakMemory, cpu_isa, hardware_name, matmul_peak_flops, resolve_device, sync
from ..util.report import format_table
from ..weights.manifest import weights_entries
from .runtimes import deployed_models, weight_bytes

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "int8": torch.float32,
          "int8-static": torch.float32}
"""Autocast dtype of the eager contenders (int8 runs time fp32 eager models beside the quantized ones)."""

SUMMARY_COLUMNS = (
    "model", "impl", "runtime", "dtype", "cpu_path", "param_count", "infer_gmacs", "infer_batch_size",
    "infer_samples_per_sec", "infer_step_time", "speedup_vs_timm", "train_samples_per_sec", "train_speedup_vs_timm",
    "infer_mfu", "infer_peak_mem_mb", "train_peak_mem_mb",
)
"""The columns of the terminal table (``--json``/``--csv`` carry every field)."""

MMPRETRAIN_ARCHS = {512: "s", 768: "b", 1024: "l"}
"""mmpretrain's ``MlpMixer`` has the paper's S, B and L widths (any patch size), not H."""


# ---- counts -----------------------------------------------------------------------------------------


def counted_macs(model_name: str, batch_size: int = 1, **kwargs: Any) -> int:
    """MACs per image counted by PyTorch's FLOP counter on a meta-device copy (nothing is computed)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(model_name, **kwargs).eval()
    size = model.pretrained_cfg.get("input_size", (3, 224, 224))
    x = torch.empty(batch_size, *size, device="meta")
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    total = counter.get_total_flops()
    return total // (2 * batch_size)


# ---- contenders ---------------------------------------------------------------------------------------

@dataclass
class Contender:
    """One implementation of one architecture, with the weights all contenders share."""

    impl: str  # "mixer_zoo", "timm", "mmpretrain"
    model_name: str
    module: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    runtime: str = "eager"  # or the runtime of an exported file: "onnxruntime", "openvino"
    dtype: Optional[str] = None  # None: the run's dtype


def build_mmpretrain_mixer(arch: str, num_classes: int = 1000) -> nn.Module:
    """mmpretrain's own Mixer classifier for an architecture, as its ``mlp-mixer`` configs build it."""
    import warnings

    with warnings.catch_warnings():  # mmcv-lite warns that it lacks CUDA ops that a Mixer never uses
        warnings.simplefilter("ignore", UserWarning)
        from mmpretrain.registry import MODELS
        import mmpretrain.models  # noqa: F401  (registers the model types)

    a = ARCHITECTURES[arch]
    return MODELS.build(dict(
        type="ImageClassifier",
        backbone=dict(type="MlpMixer", arch=MMPRETRAIN_ARCHS[a["embed_dim"]], patch_size=a["patch_size"],
                      img_size=224),
        neck=dict(type="GlobalAveragePooling", dim=1),
        head=dict(type="LinearClsHead", num_classes=num_classes, in_channels=a["embed_dim"]),
    ))


def build_contenders(arch: str, device: torch.device, timm_twin: bool = True, mmpretrain: bool = False,
                     seed: int = 0, act_layer: str = "gelu") -> List[Contender]:
    """Ours plus the other implementations of ``arch``, every one loaded with our random weights.

    All use the same GELU (``act_layer``; mmpretrain's only has the exact one), so every contender computes
    the same function.
    """
    import timm
    from timm.layers import GELUTanh

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown model {arch!r}; choose from {', '.join(ARCHITECTURES)} or 'all'")
    torch.manual_seed(seed)
    ours = timm.create_model(arch, act_layer=act_layer)
    with torch.no_grad():  # a zero head would make every logit equal; give it values like a trained one
        nn.init.normal_(ours.head.weight, std=0.02)
    weights = ours.state_dict()
    contenders = [Contender("mixer_zoo", arch, ours, ours)]
    if timm_twin and arch in TIMM_EQUIVALENTS:
        twin = timm.create_model(TIMM_EQUIVALENTS[arch], act_layer=GELUTanh if act_layer == "gelu_tanh" else nn.GELU)
        twin.load_state_dict(weights, strict=True)
        contenders.append(Contender("timm", TIMM_EQUIVALENTS[arch], twin, twin))
    if mmpretrain and act_layer == "gelu" and ARCHITECTURES[arch]["embed_dim"] in MMPRETRAIN_ARCHS:
        mm = build_mmpretrain_mixer(arch)
        mm.load_state_dict(timm_to_stock_classifier(weights), strict=True)
        a = ARCHITECTURES[arch]
        name = f"mmpretrain:mlp-mixer-{MMPRETRAIN_ARCHS[a['embed_dim']]}{a['patch_size']}"
        contenders.append(Contender("mmpretrain", name, mm,
                                    lambda x, m=mm: m(x, mode="tensor")))
    for c in contenders:
        c.module.to(device)
    return contenders


# ---- timing -------------------------------------------------------------------------------------------

def _inference_step(c: Contender, x: torch.Tensor, autocast: Any) -> Callable[[], None]:
    def step() -> None:
        with torch.inference_mode(), autocast():
            c.forward(x)
    return step


def training_step(c: Contender, x: torch.Tensor, target: torch.Tensor, autocast: Any) -> Callable[[], None]:
    """One timed training step of ``c``: forward, cross-entropy, backward, SGD with momentum, grads set to None."""
    optimizer = torch.optim.SGD(c.module.parameters(), lr=1e-4, momentum=0.9)  # the same for every contender

    def step() -> None:
        with autocast():
            loss = F.cross_entropy(c.forward(x).float(), target)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return step


def time_interleaved(steps: Sequence[Callable[[], None]], device: torch.device, repeats: int,
                     progress: Optional[Any] = None) -> List[List[float]]:
    """Seconds per call of each step, ``repeats`` times, alternating the steps (and their order)."""
    times: List[List[float]] = [[] for _ in steps]
    order = list(range(len(steps)))
    for r in range(repeats):
        for i in (order if r % 2 == 0 else order[::-1]):
            sync(device)
            start = time.perf_counter()
            steps[i]()
            sync(device)
            times[i].append(time.perf_counter() - start)
            if progress is not None:
                progress.update(1)
    return times


def _median_ratio(reference: List[float], other: List[float]) -> float:
    """Median of per-repeat speed ratios (reference time / other time): drift cancels within a pair."""
    return statistics.median(r / o for r, o in zip(reference, other))


def _phase(contenders: List[Contender], make_step: Callable[[Contender], Callable[[], None]], device: torch.device,
           warmup: int, repeats: int, progress: Optional[Any]) -> List[Dict[str, Any]]:
    steps = [make_step(c) for c in contenders]
    peaks = []
    for c, step in zip(contenders, steps):
        with PeakMemory(device) as mem:  # the first warm-up call includes one-time allocations
            step()
        param_bytes = weight_bytes(c.module)
        peaks.append(None if mem.extra_bytes is None else (param_bytes + mem.extra_bytes) / 2 ** 20)
        for _ in range(warmup - 1):
            step()
        if progress is not None:
            progress.update(warmup)
    times = time_interleaved(steps, device, repeats, progress)
    timm_times = next((t for c, t in zip(contenders, times) if c.impl == "timm"), None)
    return [dict(step_s=statistics.median(t), times=t, peak_mb=m,
                 speedup=None if timm_times is None else _median_ratio(timm_times, t))
            for t, m in zip(times, peaks)]


def benchmark_architecture(arch: str, device: str = "auto", dtype: str = "fp32", batch_size: int = 16,
                           warmup: int = 2, repeats: int = 5, compile: bool = False, train: bool = True,
                           timm_twin: bool = True, mmpretrain: bool = False, train_batch_size: Optional[int] = None,
                           peak_flops: Optional[float] = None, progress: bool = True, act_layer: str = "gelu",
                           cpu_path: Optional[str] = None, deployed: Sequence[Any] = ()) -> List[Dict[str, Any]]:
    """One result row per implementation of ``arch`` (ours first), with timm's results-CSV names.

    ``cpu_path`` (``fused``/``plain``) forces our channel-mixing kernel for the whole run, so both paths
    can be shown on one machine; by default the measured choice runs and the row names it. ``deployed``
    adds ours exported to each ``(runtime, dtype)`` (e.g. ``("onnxruntime", "int8")``): inference only."""
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if batch_size < 1 or warmup < 1 or repeats < 1:
        raise ValueError("batch size, warm-up and repeats must all be at least 1")
    dev = resolve_device(device)
    contenders = build_contenders(arch, dev, timm_twin=timm_twin, mmpretrain=mmpretrain, act_layer=act_layer)
    twin = next((c for c in contenders if c.impl == "timm"), None)
    contenders += [Contender(impl, (twin if impl == "timm" else contenders[0]).model_name, m, m, runtime, kind)
                   for impl, runtime, kind, m in deployed_models(contenders[0].module, twin and twin.module, deployed)]
    train = train and not deployed and not dtype.startswith("int8")
    with forced_cpu_path(cpu_path):
        return _benchmark_contenders(arch, dev, contenders, dtype, batch_size, warmup, repeats, compile, train,
                                     train_batch_size, peak_flops, progress, act_layer)


def _benchmark_contenders(arch: str, dev: torch.device, contenders: List[Contender], dtype: str, batch_size: int,
                          warmup: int, repeats: int, compile: bool, train: bool, train_batch_size: Optional[int],
                          peak_flops: Optional[float], progress: bool, act_layer: str) -> List[Dict[str, Any]]:
    from tqdm.auto import tqdm

    if compile:
        for c in contenders:
            c.forward = torch.compile(c.forward) if c.runtime == "eager" and c.dtype is None else c.forward
    low = DTYPES[dtype]
    autocast = (lambda: torch.autocast(dev.type, dtype=low)) if low != torch.float32 else contextlib.nullcontext
    img_size = contenders[0].module.stem.img_size[0]
    train_batch_size = train_batch_size or batch_size
    x = torch.randn(batch_size, 3, img_size, img_size, device=dev)
    xt = torch.randn(train_batch_size, 3, img_size, img_size, device=dev)
    target = torch.randint(0, 1000, (train_batch_size,), device=dev)
    macs = counted_macs(arch, act_layer=act_layer)
    phases = 2 if train else 1
    bar = tqdm(total=phases * len(contenders) * (warmup + repeats), desc=f"bench {arch}", unit="step",
               disable=not progress, leave=False)
    with bar:
        for c in contenders:
            c.module.eval()
        infer = _phase(contenders, lambda c: _inference_step(c, x, autocast), dev, warmup, repeats, bar)
        trained = None
        if train:
            for c in contenders:
                c.module.train()
            trained = _phase(contenders, lambda c: training_step(c, xt, target, autocast), dev, warmup, repeats,
                             bar)
    hardware = hardware_name(dev)
    params = sum(p.numel() for p in contenders[0].module.parameters())  # every contender holds the same weights
    rows = []
    for i, c in enumerate(contenders):
        step = infer[i]["step_s"]
        row: Dict[str, Any] = dict(
            model=c.model_name, impl=c.impl, runtime=c.runtime, arch=arch, device=dev.type,
            dtype=c.dtype or ("fp32" if dtype.startswith("int8") else dtype), compiled=compile and c.runtime == "eager",
            act_layer=act_layer, isa=cpu_isa() if dev.type == "cpu" else "-", param_count=params,
            cpu_path=_path_taken(c, dev, dtype, batch_size) if (c.impl, c.runtime) == ("mixer_zoo", "eager") else "-",
            infer_gmacs=round(macs / 1e9, 3), infer_gflops=round(2 * macs / 1e9, 3),
            infer_batch_size=batch_size, infer_img_size=img_size,
            infer_samples_per_sec=round(batch_size / step, 3), infer_step_time=round(step * 1e3, 2),
            speedup_vs_timm=_round(infer[i]["speedup"], 3),
            infer_tflops_per_sec=round(2 * macs * batch_size / step / 1e12, 4),
            infer_mfu=None if peak_flops is None else round(2 * macs * batch_size / step / peak_flops, 4),
            infer_peak_mem_mb=_round(infer[i]["peak_mb"], 1),
            infer_step_times_ms=[round(t * 1e3, 2) for t in infer[i]["times"]],
        )
        if trained is not None:
            tstep = trained[i]["step_s"]
            row.update(
                train_batch_size=train_batch_size, train_img_size=img_size,
                train_samples_per_sec=round(train_batch_size / tstep, 3), train_step_time=round(tstep * 1e3, 2),
                train_speedup_vs_timm=_round(trained[i]["speedup"], 3),
                train_peak_mem_mb=_round(trained[i]["peak_mb"], 1),
                train_step_times_ms=[round(t * 1e3, 2) for t in trained[i]["times"]],
            )
        row.update(repeats=repeats, warmup=warmup, hardware=hardware,
                   date=datetime.date.today().isoformat())
        rows.append(row)
    del contenders
    gc.collect()
    return rows


def _path_taken(c: Contender, dev: torch.device, dtype: str, batch_size: int) -> str:
    """Which channel-mixing kernel our model ran: the fixed one, or what the measurement chose for its shape."""
    eager_dtype = torch.float32 if dtype in ("fp32", "int8", "int8-static") else torch.bfloat16  # int8: ours is fp32
    fixed = fixed_path(dev.type, eager_dtype)
    if fixed is not None:
        return fixed
    images = min(batch_size, c.module.blocks[0].images_per_chunk())  # the kernel is timed on one chunk's rows
    shape = (images * c.module.stem.num_patches, c.module.embed_dim)
    gelu = c.module.blocks[0].approximate
    taken = {path for key, path in chosen_paths().items() if key[2:4] == shape and key[5] == gelu}
    return "+".join(sorted(taken)) or "plain"


def _round(value: Optional[float], digits: int) -> Optional[float]:
    return None if value is None else round(value, digits)


def parse_model_list(models: str) -> List[str]:
    names = list(ARCHITECTURES) if models.strip() == "all" else [m.strip() for m in models.split(",") if m.strip()]
    unknown = [m for m in names if m not in ARCHITECTURES]
    if unknown or not names:
        raise ValueError(f"unknown model(s) {', '.join(unknown) or repr(models)}; "
                         f"choose from {', '.join(ARCHITECTURES)} or 'all'")
    return names


def benchmark_models(names: Iterable[str], device: str = "auto", dtype: str = "fp32", batch_size: int = 16,
                     warmup: int = 2, repeats: int = 5, compile: bool = False, train: bool = True,
                     timm_twin: bool = True, mmpretrain: bool = False, mfu: bool = True,
                     progress: bool = True, **kwargs: Any) -> List[Dict[str, Any]]:
    """Benchmark rows for several architectures: what ``mixer-zoo bench`` and the demo print.

    ``mfu`` times one large matmul first so every row can state its model FLOP utilisation.
    """
    dev = resolve_device(device)
    peak = matmul_peak_flops(dev, DTYPES[dtype]) if mfu else None
    rows: List[Dict[str, Any]] = []
    for arch in names:
        rows.extend(benchmark_architecture(arch, device=str(dev), dtype=dtype, batch_size=batch_size, warmup=warmup,
                                           repeats=repeats, compile=compile, train=train, timm_twin=timm_twin,
                                           mmpretrain=mmpretrain, peak_flops=peak, progress=progress, **kwargs))
    return rows


def summary_table(rows: Sequence[Dict[str, Any]]) -> str:
    """The ours-vs-timm table (the columns every row has among ``SUMMARY_COLUMNS``)."""
    columns = [c for c in SUMMARY_COLUMNS if any(c in r for r in rows)]
    return format_table(rows, columns)


# ---- the manifest ------------------------------------------------------------------------------------


def benchmark_manifest_updates(rows: Sequence[Dict[str, Any]], path: Optional[Path] = None
                               ) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Our rows -> the ``benchmark`` group of every weights entry of that architecture."""
    fields = ("param_count", "infer_gmacs", "infer_batch_size", "infer_samples_per_sec", "infer_step_time",
              "speedup_vs_timm", "train_samples_per_sec", "train_speedup_vs_timm", "infer_peak_mem_mb",
              "device", "dtype", "compiled", "hardware", "date")
    updates: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for row in rows:
        if (row["impl"], row.get("runtime", "eager")) != ("mixer_zoo", "eager"):
            continue
        for key, entry in weights_entries(path).items():
            if entry["architecture"] == row["arch"]:
                updates[key] = {"benchmark": {f: row[f] for f in fields if f in row}}
    return updates
