"""``mixer-zoo bench``: parameters, FLOPs, throughput and memory per variant, side by side with timm.

Every figure for our model is measured in the same process as the figures for timm's own ``MlpMixer``
(and mmpretrain's ``MlpMixer`` when asked) holding the *same weights*. Timed steps alternate between the
implementations, repeat after repeat, because this kind of machine drifts by +-15 % between runs; the
speed-up is the median of the per-repeat ratios, so drift that hits both sides of a pair cancels.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import gc
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .convert import timm_to_mmpretrain
from .manifest import ManifestError, _load_cached, manifest_path, weights_entries
from .report import atomic_write_text, format_table, write_csv, write_json
from .zoo import ARCHITECTURES, TIMM_EQUIVALENTS

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}

SUMMARY_COLUMNS = (
    "model", "impl", "param_count", "infer_gmacs", "infer_batch_size", "infer_samples_per_sec",
    "infer_step_time", "speedup_vs_timm", "train_samples_per_sec", "train_speedup_vs_timm",
    "infer_peak_mem_mb", "train_peak_mem_mb",
)
"""The columns of the terminal table (``--json``/``--csv`` carry every field)."""

MMPRETRAIN_ARCHS = {512: "s", 768: "b", 1024: "l"}
"""mmpretrain's ``MlpMixer`` has the paper's S, B and L widths (any patch size), not H."""


# ---- counts -----------------------------------------------------------------------------------------

def closed_form_macs(arch: str, num_classes: int = 1000, img_size: int = 224) -> int:
    """Multiply-accumulates of one image: the stem, two MLPs per block, the head (no norms)."""
    a = ARCHITECTURES[arch]
    c, p, t, d = a["embed_dim"], a["patch_size"], a["tokens_mlp_dim"], a["channels_mlp_dim"]
    n = (img_size // p) ** 2
    stem = n * c * 3 * p * p
    block = 2 * c * n * t + 2 * n * c * d
    return stem + a["num_blocks"] * block + c * num_classes


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


# ---- hardware and memory ----------------------------------------------------------------------------

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


def hardware_name(device: torch.device) -> str:
    """What the figures were measured on, in words (goes into every result row and the manifest)."""
    if device.type == "cuda":
        what = torch.cuda.get_device_name(device)
    else:
        what = f"{cpu_model_name()} ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"
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
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- contenders ---------------------------------------------------------------------------------------

@dataclass
class Contender:
    """One implementation of one architecture, with the weights all contenders share."""

    impl: str  # "mixer_zoo", "timm", "mmpretrain"
    model_name: str
    module: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]


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
                     seed: int = 0) -> List[Contender]:
    """Ours plus the other implementations of ``arch``, every one loaded with our random weights.

    All use the exact (erf) GELU, timm's choice, so that every contender computes the same function.
    """
    import timm

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown model {arch!r}; choose from {', '.join(ARCHITECTURES)} or 'all'")
    torch.manual_seed(seed)
    ours = timm.create_model(arch, act_layer="gelu")
    with torch.no_grad():  # a zero head would make every logit equal; give it values like a trained one
        nn.init.normal_(ours.head.weight, std=0.02)
    weights = ours.state_dict()
    contenders = [Contender("mixer_zoo", arch, ours, ours)]
    if timm_twin and arch in TIMM_EQUIVALENTS:
        twin = timm.create_model(TIMM_EQUIVALENTS[arch])
        twin.load_state_dict(weights, strict=True)
        contenders.append(Contender("timm", TIMM_EQUIVALENTS[arch], twin, twin))
    if mmpretrain and ARCHITECTURES[arch]["embed_dim"] in MMPRETRAIN_ARCHS:
        mm = build_mmpretrain_mixer(arch)
        mm.load_state_dict(timm_to_mmpretrain(weights), strict=True)
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


def _training_step(c: Contender, x: torch.Tensor, target: torch.Tensor, autocast: Any) -> Callable[[], None]:
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
            _sync(device)
            start = time.perf_counter()
            steps[i]()
            _sync(device)
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
        param_bytes = sum(p.numel() * p.element_size() for p in c.module.parameters())
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
                           peak_flops: Optional[float] = None, progress: bool = True) -> List[Dict[str, Any]]:
    """One result row per implementation of ``arch`` (ours first), with timm's results-CSV names."""
    from tqdm.auto import tqdm

    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if batch_size < 1 or warmup < 1 or repeats < 1:
        raise ValueError("batch size, warm-up and repeats must all be at least 1")
    dev = resolve_device(device)
    contenders = build_contenders(arch, dev, timm_twin=timm_twin, mmpretrain=mmpretrain)
    if compile:
        for c in contenders:
            c.forward = torch.compile(c.forward)
    low = DTYPES[dtype]
    autocast = (lambda: torch.autocast(dev.type, dtype=low)) if low != torch.float32 else contextlib.nullcontext
    img_size = contenders[0].module.stem.img_size[0]
    train_batch_size = train_batch_size or batch_size
    x = torch.randn(batch_size, 3, img_size, img_size, device=dev)
    xt = torch.randn(train_batch_size, 3, img_size, img_size, device=dev)
    target = torch.randint(0, 1000, (train_batch_size,), device=dev)
    macs = counted_macs(arch, act_layer="gelu")
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
            trained = _phase(contenders, lambda c: _training_step(c, xt, target, autocast), dev, warmup, repeats,
                             bar)
    hardware = hardware_name(dev)
    rows = []
    for i, c in enumerate(contenders):
        step = infer[i]["step_s"]
        row: Dict[str, Any] = dict(
            model=c.model_name, impl=c.impl, arch=arch, device=dev.type, dtype=dtype, compiled=compile,
            param_count=sum(p.numel() for p in c.module.parameters()),
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


# ---- plots and the manifest ------------------------------------------------------------------------

def plot_results(rows: Sequence[Dict[str, Any]], path: str, y: str = "infer_samples_per_sec",
                 x: str = "infer_gmacs", title: str = "") -> None:
    """PNG of ``y`` against ``x`` per implementation (atomically written).

    With a single architecture there is no x to spread over, so it draws bars per implementation instead
    (inference and, when measured, training throughput, each labelled with its ratio to timm).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, FuncFormatter

    impls = list(dict.fromkeys(r.get("impl", "mixer_zoo") for r in rows))
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    if len({r.get("arch", r["model"]) for r in rows}) == 1 and y == "infer_samples_per_sec":
        _throughput_bars(ax, rows)
    else:
        markers = {"mixer_zoo": "o", "timm": "s", "mmpretrain": "^"}
        for impl in impls:
            sel = [r for r in rows if r.get("impl", "mixer_zoo") == impl and r.get(x) is not None and r.get(y) is not None]
            ax.scatter([r[x] for r in sel], [r[y] for r in sel], marker=markers.get(impl, "x"), s=50, label=impl)
            if impl == "mixer_zoo":  # neighbours' labels sit at two distances up-right, so they never cross
                offsets = [((10, 8), "left"), ((22, 26), "left")]
                for i, r in enumerate(sorted(sel, key=lambda r: r[x])):
                    ratio = f" x{r['speedup_vs_timm']:.2f}" if r.get("speedup_vs_timm") else ""
                    offset, align = offsets[i % len(offsets)]
                    ax.annotate(r["model"].replace("_zoo", "") + ratio, (r[x], r[y]), fontsize=8, ha=align,
                                xytext=offset, textcoords="offset points", va="center",
                                arrowprops=dict(arrowstyle="-", lw=0.5, color="0.4"))
        ax.set_xscale("log")
        if y.endswith("per_sec"):
            ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # plain numbers, not 6x10^0
            axis.set_major_formatter(FormatStrFormatter("%g"))
            axis.set_minor_formatter(FuncFormatter(_label_2_and_5))
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    ax.set_title(title or f"{y} vs {x}", fontsize=9)
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp.png")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, target)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()


def _label_2_and_5(value: float, _pos: Any) -> str:
    """Minor log-axis labels at 2x and 5x each power of ten only, so they never crowd."""
    import math

    if value <= 0:
        return ""
    return f"{value:g}" if round(value / 10 ** math.floor(math.log10(value))) in (2, 5) else ""


def _throughput_bars(ax: Any, rows: Sequence[Dict[str, Any]]) -> None:
    phases = [p for p in ("infer", "train") if all(r.get(f"{p}_samples_per_sec") for r in rows)]
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        values = [r[f"{p}_samples_per_sec"] for p in phases]
        xs = [j + (i - (len(rows) - 1) / 2) * width for j in range(len(phases))]
        bars = ax.bar(xs, values, width, label=r["model"])
        for bar, p in zip(bars, phases):
            ratio = r.get("speedup_vs_timm" if p == "infer" else "train_speedup_vs_timm")
            label = f"{bar.get_height():.3g}" + (f"\nx{ratio:.2f} timm" if ratio else "")
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                        fontsize=8, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(phases)), [f"{p} (batch {rows[0][p + '_batch_size']})" for p in phases])
    ax.set_ylabel("samples / s (median)")
    ax.margins(y=0.2)
    ax.legend(fontsize=8)


def update_measured_metrics(updates: Dict[str, Dict[str, Dict[str, Any]]], path: Optional[Path] = None) -> Path:
    """Write ``{"arch.tag": {group: values}}`` into each entry's ``metrics.measured[group]``, atomically.

    The file is re-read just before writing (not the cached copy) and keeps its formatting.
    """
    target = manifest_path(path).resolve()  # the manifest in effect; write through the package's symlink
    try:
        manifest = json.loads(target.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ManifestError(f"{target}: cannot read the weights manifest: {e}") from None
    weights = manifest.get("weights", {})
    for key, groups in updates.items():
        if key not in weights:
            raise ManifestError(f"{target}: no weights entry {key!r} to record measured metrics in")
        metrics = weights[key].setdefault("metrics", {})
        if not isinstance(metrics.get("measured", {}), dict):
            raise ManifestError(f"{target}: {key}.metrics.measured must be an object")
        metrics.setdefault("measured", {}).update(groups)
    atomic_write_text(target, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    _load_cached.cache_clear()  # later reads in this process see what was written
    return target


def benchmark_manifest_updates(rows: Sequence[Dict[str, Any]], path: Optional[Path] = None
                               ) -> Dict[str, Dict[str, Dict[str, Any]]]:
    """Our rows -> the ``benchmark`` group of every weights entry of that architecture."""
    fields = ("param_count", "infer_gmacs", "infer_batch_size", "infer_samples_per_sec", "infer_step_time",
              "speedup_vs_timm", "train_samples_per_sec", "train_speedup_vs_timm", "infer_peak_mem_mb",
              "device", "dtype", "compiled", "hardware", "date")
    updates: Dict[str, Dict[str, Dict[str, Any]]] = {}
    for row in rows:
        if row["impl"] != "mixer_zoo":
            continue
        for key, entry in weights_entries(path).items():
            if entry["architecture"] == row["arch"]:
                updates[key] = {"benchmark": {f: row[f] for f in fields if f in row}}
    return updates


# ---- CLI ----------------------------------------------------------------------------------------------

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="mixer_s32_zoo,mixer_b16_zoo",
                        help="comma-separated architectures, or 'all' (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu or cuda[:N]")
    parser.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="bf16 runs under autocast")
    parser.add_argument("--compile", action="store_true", help="torch.compile every implementation")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-batch-size", type=int, default=None, help="default: --batch-size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per implementation")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per implementation, alternating")
    parser.add_argument("--no-train", action="store_true", help="skip the training-step benchmark")
    parser.add_argument("--no-timm", action="store_true", help="skip timm's own MlpMixer")
    parser.add_argument("--mmpretrain", action="store_true", help="also time mmpretrain's MlpMixer (S/B/L)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", metavar="PATH", help="write every field as JSON")
    parser.add_argument("--csv", metavar="PATH", help="write every field as CSV (timm's column names)")
    parser.add_argument("--plot", metavar="PATH", help="PNG of throughput vs GMACs")
    parser.add_argument("--update-manifest", action="store_true",
                        help="record our figures in metrics.measured.benchmark of each entry of the architecture")


def run(args: argparse.Namespace) -> int:
    names = parse_model_list(args.models)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = benchmark_models(names, device=args.device, dtype=args.dtype, batch_size=args.batch_size,
                            warmup=args.warmup, repeats=args.repeats, compile=args.compile, train=not args.no_train,
                            timm_twin=not args.no_timm, mmpretrain=args.mmpretrain,
                            train_batch_size=args.train_batch_size)
    print(f"mixer-zoo bench on {rows[0]['hardware']}: {args.dtype}, batch {args.batch_size}, "
          f"median of {args.repeats} alternating repeats")
    print(summary_table(rows))
    if args.json:
        write_json(args.json, rows)
    if args.csv:
        write_csv(args.csv, rows)
    if args.plot:
        plot_results(rows, args.plot, title=f"{rows[0]['hardware']} - {args.dtype}, batch {args.batch_size}")
    if args.update_manifest:
        print(f"updated {update_measured_metrics(benchmark_manifest_updates(rows))}")
    return 0
