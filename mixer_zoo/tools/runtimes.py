"""Exported Mixers in their runtimes (onnxruntime, OpenVINO) and int8 models, as benchmark contenders and as
classifiers scored against the fp32 eager model on the same images."""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..formats.keys import PathLike
from .quantize import torch_dynamic_int8
from .sessions import RUNTIMES, open_onnx

class RuntimeModel(nn.Module):
    """An exported file behind a module's face, for the benchmark (no parameters of its own: ``param_count``
    and ``weight_bytes`` describe what the file holds)."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], param_count: int, weight_bytes: int) -> None:
        super().__init__()
        self.run, self.param_count, self.weight_bytes = run, param_count, weight_bytes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.run(x.numpy()))


def parse_deployments(dtype: str, runtimes: str) -> List[Tuple[str, str]]:
    """``--dtype`` and ``--runtime a,b`` -> the ``(runtime, dtype)`` pairs to benchmark beside the eager models
    (int8 alone means onnxruntime: the one quantized path installed with the project)."""
    names = [r.strip() for r in runtimes.split(",") if r.strip() and r.strip() != "eager"]
    unknown = [r for r in names if r not in RUNTIMES]
    if unknown:
        raise ValueError(f"unknown runtime(s) {', '.join(unknown)}; choose from {', '.join(RUNTIMES)}")
    if dtype.startswith("int8"):
        return [(r, dtype) for r in names or ["onnxruntime"]]
    if dtype != "fp32" and names:
        raise ValueError(f"--runtime {','.join(names)} runs fp32 or int8 exports, not {dtype}")
    return [(r, dtype) for r in names]


DEPLOYED_FORMATS = {"fp32": "onnx", "int8": "int8", "int8-static": "int8-static"}
"""Benchmark dtype -> export format. ``int8-static`` is calibrated on random images there: speed only."""


def deployed_models(ours: nn.Module, twin: Optional[nn.Module], deployed: Sequence[Tuple[str, str]],
                    workdir: Optional[PathLike] = None) -> List[Tuple[str, str, str, nn.Module]]:
    """``(impl, runtime, dtype, module)`` for ours exported to each ``(runtime, dtype)`` of ``deployed`` (each format
    exported once) and, beside any int8 one, timm's ``twin`` under PyTorch's dynamic int8: the benchmark's extra
    contenders."""
    from .export import export_model

    if deployed and next(ours.parameters()).device.type != "cpu":
        raise ValueError("exported and int8 models run on the CPU: benchmark them with --device cpu")
    models = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for runtime, dtype in deployed:
            if runtime not in RUNTIMES[1:] or dtype not in DEPLOYED_FORMATS:
                raise ValueError(f"cannot deploy to {runtime} {dtype}: runtimes {', '.join(RUNTIMES[1:])}, "
                                 f"dtypes {', '.join(DEPLOYED_FORMATS)}")
            fmt = DEPLOYED_FORMATS[dtype]
            path = Path(tmp) / f"{fmt}.onnx"
            if not path.exists():
                size = (8, ours.stem.in_chans, *ours.stem.img_size)
                calibration = np.random.default_rng(0).standard_normal(size, dtype=np.float32)
                export_model(ours, path, fmt, calibration=calibration if fmt == "int8-static" else None)
            run = RuntimeModel(open_onnx(path, runtime), sum(p.numel() for p in ours.parameters()), path.stat().st_size)
            models.append(("mixer_zoo", runtime, dtype, run))
    if twin is not None and any(dtype.startswith("int8") for _, dtype in deployed):
        models.append(("timm", "eager", "int8", torch_dynamic_int8(twin)))
    return models


def weight_bytes(module: nn.Module) -> int:
    """Bytes of the weights a contender holds: an exported file's size, or every tensor of the state dict
    (quantized linear layers keep theirs packed, outside ``parameters()``)."""
    if isinstance(module, RuntimeModel):
        return module.weight_bytes
    total = 0
    for value in module.state_dict().values():
        for t in value if isinstance(value, tuple) else (value,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


# ---- scoring on real images --------------------------------------------------------------------------------------

def logits_in_batches(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                      batch_size: int = 250) -> np.ndarray:
    return np.concatenate([run(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def normalise_images(images_hwc: np.ndarray, preprocessing: Dict[str, Any]) -> np.ndarray:
    """uint8 (N, H, W, 3) RGB images already at the model's size -> float32 NCHW as the export record says
    (pixels / 255, then mean/std per channel). Resizing and cropping are the caller's."""
    size = tuple(preprocessing["input_size"][1:])
    if images_hwc.shape[1:3] != size:
        raise ValueError(f"images are {images_hwc.shape[1:3]} but the model takes {size}: resize them first")
    x = images_hwc.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    mean = np.asarray(preprocessing["mean"], np.float32).reshape(1, -1, 1, 1)
    std = np.asarray(preprocessing["std"], np.float32).reshape(1, -1, 1, 1)
    return np.ascontiguousarray((x - mean) / std)


def score_against_reference(name: str, logits: np.ndarray, reference: np.ndarray,
                            labels: np.ndarray) -> Dict[str, Any]:
    """Top-1 accuracy of ``logits``, its drop from the reference's, and top-1 agreement with the reference."""
    top1 = float((logits.argmax(1) == labels).mean() * 100)
    ref_top1 = float((reference.argmax(1) == labels).mean() * 100)
    diff = np.abs(logits.astype(np.float64) - reference).max() / np.abs(reference).max()
    return dict(path=name, images=int(len(labels)), top1=round(top1, 2), top1_drop=round(ref_top1 - top1, 2),
                agreement=round(float((logits.argmax(1) == reference.argmax(1)).mean() * 100), 2),
                max_rel_logit_diff=float(f"{diff:.3g}"))


def score_paths(runs: Dict[str, Callable[[np.ndarray], np.ndarray]], reference: str, images: np.ndarray,
                labels: np.ndarray) -> List[Dict[str, Any]]:
    """One row per path: accuracy on ``images`` and agreement with the ``reference`` path (the fp32 model)."""
    logits = {name: logits_in_batches(run, images) for name, run in runs.items()}
    return [score_against_reference(name, out, logits[reference], labels) for name, out in logits.items()]
