"""An exported ONNX file opened in its runtime (onnxruntime or OpenVINO) as a function images -> logits.

The runtimes are optional: each is imported when asked for, and a missing one is a one-line error naming the
package to install.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch

from ..formats.keys import CorruptFileError, PathLike
from ..util.report import first_line

RUNTIMES = ("eager", "onnxruntime", "openvino")
"""``eager``: the PyTorch module itself; the others run an exported ONNX file."""


EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}
"""The mixer-zoo extra that installs each runtime."""


def _require(package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise RuntimeError(f"runtime {package!r} is not installed: pip install {package} "
                           f"(or 'mixer-zoo[{EXTRAS[package]}]')") from None


def open_onnx(path: PathLike, runtime: str = "onnxruntime",
              threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
    """An ONNX file as a function images -> logits, on the CPU, in onnxruntime or OpenVINO.

    ``threads`` defaults to torch's thread count, so a runtime and eager PyTorch compete on equal terms.
    OpenVINO is pinned to f32 inference precision: on CPUs with AVX512-BF16 or AMX it would otherwise run
    float layers in bf16 and change the results."""
    threads = threads or torch.get_num_threads()
    if runtime == "onnxruntime":
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # idle threads must not steal
        try:
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own types for damaged or foreign files
            raise CorruptFileError(f"{path}: not a loadable ONNX model (onnxruntime: {first_line(e)})") from None
        name = session.get_inputs()[0].name
        return lambda images: session.run(None, {name: np.ascontiguousarray(images, dtype=np.float32)})[0]
    if runtime == "openvino":
        ov = _require("openvino")
        core = ov.Core()
        try:
            compiled = core.compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                             "INFERENCE_PRECISION_HINT": "f32",
                                                             "PERFORMANCE_HINT": "LATENCY"})
        except Exception as e:
            lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith("Exception from")]
            raise CorruptFileError(f"{path}: not a loadable ONNX model (openvino: "
                                   f"{lines[0] if lines else type(e).__name__})") from None
        request = compiled.create_infer_request()
        return lambda images: request.infer([np.ascontiguousarray(images, dtype=np.float32)])[0].copy()
    raise ValueError(f"unknown runtime {runtime!r}; choose from {', '.join(RUNTIMES[1:])}")
