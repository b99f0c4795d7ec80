"""``mixer-zoo export``: a Mixer (weights tag or converted folder) -> one deployable file, with its preprocessing
recorded beside it (``FILE.json``), that runs where mixer_zoo is not installed.

``onnx`` and ``int8`` run in onnxruntime (and OpenVINO, which reads ONNX), ``int8-static`` in onnxruntime;
``torchscript``, ``torch-int8`` and ``pt2`` need only torch. ``int8`` is onnxruntime's dynamic quantization of the
fp32 ONNX graph: int8 weights (per output channel), activations quantized per batch at run time, so no calibration
images are needed; measured on a model trained on real images it keeps >= 99 % top-1 agreement where the static
(calibrated QDQ) graph kept 97.4 % (``benchmarks/cpu_deployment.py``); ``torch-int8`` (PyTorch's dynamic int8 of
timm's twin) was the faster one for S/32 at batch 16. Every export is checked before it takes its name: the file is reloaded in
its runtime and its logits are compared with the eager model's (fp32 formats: ``FP32_TOLERANCE``).
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Optional

import numpy as np
import torch
from torch import nn

from .._version import __version__
from ..formats.keys import CorruptFileError, PathLike
from ..util.files import atomic_copy, atomic_write_text
from ..util.report import first_line
from .quantize import write_torch_int8

FORMATS = {
    "onnx": "float32 ONNX, dynamic batch (onnxruntime, OpenVINO)",
    "int8": "ONNX with int8 weights and per-batch int8 activations (onnxruntime's dynamic quantization)",
    "int8-static": "ONNX QDQ int8: int8 weights, activation ranges calibrated on --calibration images "
                   "(onnxruntime's static quantization; OpenVINO runs it in int8 too)",
    "torchscript": "TorchScript (torch.jit.load, libtorch)",
    "torch-int8": "TorchScript of timm's MlpMixer holding these weights under torch.ao dynamic int8 (fbgemm)",
    "pt2": "torch.export ExportedProgram (torch.export.load)",
}
SUFFIXES = {"onnx": ".onnx", "int8": ".onnx", "int8-static": ".onnx", "torchscript": ".pt", "torch-int8": ".pt",
            "pt2": ".pt2"}
ONNX_FORMATS = ("onnx", "int8", "int8-static")
INT8_FORMATS = ("int8", "int8-static", "torch-int8")
RUNTIMES_OF = {"onnx": ["onnxruntime", "openvino"], "int8": ["onnxruntime", "openvino"], "int8-static": ["onnxruntime"]}
"""Where each format is known to compute the model's function. OpenVINO 2026.4 runs the static QDQ graph but
gets it wrong (23 % top-1 agreement with fp32 on real CIFAR-10 images, per-channel or per-tensor), so it is
refused there."""
INPUT_NAME, OUTPUT_NAME = "images", "logits"
OPSET = 18
FP32_TOLERANCE = 1e-5
"""Largest relative logit difference (max |exported - eager| / max |eager|) a float32 export may show."""


class ExportError(ValueError):
    """An export that cannot be made or fails its own check; nothing was written."""


def sidecar_path(path: PathLike) -> Path:
    """Where the preprocessing and provenance of an exported file live: ``FILE.json`` beside it."""
    return Path(f"{path}.json")


# ---- the model to export ---------------------------------------------------------------------------------------

def load_model(source: str, img_size: Optional[int] = None, num_classes: Optional[int] = None,
               random_weights: bool = False) -> nn.Module:
    """A converted folder (``local-dir:``), a weights tag ``arch.tag`` (through the cache) or, with
    ``random_weights``, an architecture with seeded random weights (for speed tests), in eval mode."""
    import timm

    from .. import zoo  # noqa: F401  (registers the zoo's architectures with timm)

    kwargs = {k: v for k, v in dict(img_size=img_size, num_classes=num_classes).items() if v is not None}
    path = Path(source)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a converted folder (no config.json); see mixer-zoo convert")
        return timm.create_model(f"local-dir:{path}", pretrained=True, **kwargs).eval()
    if path.exists() or "/" in source:
        raise FileNotFoundError(f"{source}: give a converted folder (mixer-zoo convert) or a weights tag arch.tag")
    if source.split(".")[0] not in timm.list_models("*_zoo"):
        raise ValueError(f"unknown model {source!r}: give a converted folder or a weights tag "
                         f"({', '.join(timm.list_models('*_zoo'))} with .tag)")
    if random_weights:
        torch.manual_seed(0)
        model = timm.create_model(source.split(".")[0], **kwargs)
        with torch.no_grad():  # the paper's zero head would give equal logits for every class
            nn.init.normal_(model.head.weight, std=0.02)
        return model.eval()
    return timm.create_model(source, pretrained=True, **kwargs).eval()


def preprocessing_of(model: nn.Module) -> Dict[str, Any]:
    """What an image must go through before the exported file sees it: timm's data config of the model
    (mean/std on 0-1 pixels, RGB, interpolation, crop), at the model's own input size."""
    from timm.data import resolve_data_config

    cfg = resolve_data_config({}, model=model)
    size = [model.stem.in_chans, *model.stem.img_size]
    return dict(input_size=size, interpolation=cfg["interpolation"], crop_pct=cfg["crop_pct"],
                crop_mode=cfg.get("crop_mode", "center"), mean=list(cfg["mean"]), std=list(cfg["std"]),
                pixel_range="0-1 (divide 8-bit pixels by 255 before mean/std)", channels="RGB", layout="NCHW")


def describe_model(model: nn.Module) -> Dict[str, Any]:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return dict(architecture=cfg.get("architecture"), tag=cfg.get("tag"), num_classes=model.num_classes,
                img_size=list(model.stem.img_size), act_layer=model.act_layer,
                param_count=sum(p.numel() for p in model.parameters()))


def calibration_images(source: PathLike, model: nn.Module, count: int = 256) -> np.ndarray:
    """Preprocessed images for static quantization: ``count`` spread evenly over the training split of a CIFAR-10
    ``data_root`` (the folder holding ``cifar-10-batches-py/``) or over a folder of image files, each through
    timm's eval transform at the model's input size and preprocessing."""
    from PIL import Image
    from timm.data import create_transform

    source = Path(source)
    pre = preprocessing_of(model)
    transform = create_transform(input_size=tuple(pre["input_size"]), interpolation=pre["interpolation"],
                                 mean=pre["mean"], std=pre["std"], crop_pct=pre["crop_pct"], crop_mode=pre["crop_mode"])
    if (source / "cifar-10-batches-py").is_dir():
        from ..mmpretrain.cifar import load_split

        pixels, _ = load_split(source, "train")
        picks = np.linspace(0, len(pixels) - 1, min(count, len(pixels))).astype(int)
        images = [Image.fromarray(pixels[i]) for i in picks]
    elif source.is_dir():
        readable = Image.registered_extensions()  # every suffix PIL can open
        files = sorted(p for p in source.rglob("*") if p.suffix.lower() in readable)
        if not files:
            raise FileNotFoundError(f"{source}: no image files for calibration")
        images = []
        for i in np.linspace(0, len(files) - 1, min(count, len(files))).astype(int):
            try:
                images.append(Image.open(files[i]).convert("RGB"))
            except OSError as e:
                raise ValueError(f"{files[i]}: not a readable image: {first_line(e)}") from None
    else:
        raise FileNotFoundError(f"{source}: no such folder (give a folder of images or a CIFAR-10 data_root)")
    return torch.stack([transform(image) for image in images]).numpy()


# ---- writing ----------------------------------------------------------------------------------------------------

def _sample(model: nn.Module, batch_size: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, model.stem.in_chans, *model.stem.img_size, generator=g)


def write_onnx(model: nn.Module, path: PathLike) -> None:
    """fp32 ONNX through the dynamo exporter, one file (no external data), batch dimension dynamic."""
    x = _sample(model)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with warnings.catch_warnings(), torch.no_grad(), contextlib.redirect_stdout(None):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), dynamo=True, opset_version=OPSET, input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},))
    program.save(str(path), external_data=False)


def quantize_int8(fp32_onnx: PathLike, path: PathLike) -> Dict[str, Any]:
    """onnxruntime's dynamic quantization: int8 weights per output channel, activations quantized per batch."""
    from onnxruntime import __version__ as ort_version
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(fp32_onnx), str(path), weight_type=QuantType.QInt8, per_channel=True)
    return dict(library=f"onnxruntime {ort_version}", method="dynamic",
                weights="int8, per output channel (MatMul with a constant right-hand side)",
                activations="uint8, scale and zero point computed per batch at run time")


def quantize_int8_static(fp32_onnx: PathLike, path: PathLike, calibration: np.ndarray,
                         batch_size: int = 32) -> Dict[str, Any]:
    """onnxruntime's static quantization to QDQ: int8 weights per output channel, uint8 activations whose ranges
    are the min/max seen on ``calibration`` (preprocessed images, N C H W float32)."""
    from onnxruntime import __version__ as ort_version
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration[i:i + batch_size] for i in range(0, len(calibration), batch_size))

        def get_next(self) -> Optional[Dict[str, np.ndarray]]:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}

    quantize_static(str(fp32_onnx), str(path), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return dict(library=f"onnxruntime {ort_version}", method="static (QDQ)", calibration_images=int(len(calibration)),
                weights="int8, per channel", activations="uint8, per tensor, min/max of the calibration images")


def write_torchscript(model: nn.Module, path: PathLike) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.freeze(torch.jit.script(model.eval()))
    torch.jit.save(scripted, str(path))


def write_pt2(model: nn.Module, path: PathLike) -> None:
    batch = torch.export.Dim("batch", min=1, max=4096)
    with torch.no_grad():
        program = torch.export.export(model, (_sample(model),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def export_model(model: nn.Module, out: PathLike, fmt: str, force: bool = False, source: Optional[str] = None,
                 calibration: Optional[np.ndarray] = None) -> Dict[str, Any]:
    """Write ``model`` as ``fmt`` to ``out`` and its record to ``out.json``; returns the record.

    The file is made in a private temp folder, reloaded in its runtime and compared with the eager model
    there; only then are it and its record moved into place (each through a temp file and a rename).
    ``int8-static`` needs ``calibration``: preprocessed images like those the model will see."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    if (fmt == "int8-static") != (calibration is not None):
        raise ExportError("--calibration images are needed by, and only by, --format int8-static")
    out = Path(out)
    if out.is_dir():
        raise ExportError(f"{out}: is a folder; give the file to write (e.g. {out / ('model' + SUFFIXES[fmt])})")
    if (out.exists() or sidecar_path(out).exists()) and not force:
        raise ExportError(f"{out}: exists (use --force to overwrite)")
    model = model.eval()
    record: Dict[str, Any] = dict(format=fmt, description=FORMATS[fmt], file=out.name)
    with _workdir(out) as tmp:
        made = tmp / f"model{SUFFIXES[fmt]}"
        if fmt in ONNX_FORMATS:
            write_onnx(model, tmp / "fp32.onnx")
            if fmt == "int8":
                record["quantization"] = quantize_int8(tmp / "fp32.onnx", made)
            elif fmt == "int8-static":
                record["quantization"] = quantize_int8_static(tmp / "fp32.onnx", made, calibration)
            else:
                (tmp / "fp32.onnx").rename(made)
        elif fmt == "torchscript":
            write_torchscript(model, made)
        elif fmt == "torch-int8":
            write_torch_int8(model, made, _sample(model))
            record["quantization"] = dict(library=f"torch {torch.__version__} (torch.ao, fbgemm)", method="dynamic",
                                          model="timm MlpMixer with these weights", weights="int8 per tensor",
                                          activations="quantized per batch at run time")
        else:
            write_pt2(model, made)
        record["check"] = check_against_eager(model, made, fmt)
        record.update(
            input=dict(name=INPUT_NAME, shape=["batch", *preprocessing_of(model)["input_size"]], dtype="float32"),
            output=dict(name=OUTPUT_NAME, shape=["batch", model.num_classes], dtype="float32"),
            preprocessing=preprocessing_of(model), model=dict(describe_model(model), source=source),
            runtimes=RUNTIMES_OF.get(fmt, ["torch"]),
            exported_with=_versions(fmt), date=datetime.date.today().isoformat())
        out.parent.mkdir(parents=True, exist_ok=True)
        record["sha256"] = atomic_copy(made, out)
        record["size_bytes"] = out.stat().st_size
    atomic_write_text(sidecar_path(out), json.dumps(record, indent=2) + "\n")
    return record


@contextlib.contextmanager
def _workdir(out: Path) -> Iterator[Path]:
    """A private temp folder beside the output (same file system, so nothing large crosses devices)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        holder = tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent)
    except OSError:  # a read-only destination folder: make the file elsewhere, the copy then names the error
        holder = tempfile.TemporaryDirectory(prefix="mixer-zoo-export-")
    with holder as tmp:
        yield Path(tmp)


def _versions(fmt: str) -> Dict[str, str]:
    versions = dict(mixer_zoo=__version__, torch=torch.__version__)
    if fmt in ONNX_FORMATS:
        import onnx
        import onnxruntime

        versions.update(onnx=onnx.__version__, onnxruntime=onnxruntime.__version__, opset=str(OPSET))
    return versions


def relative_difference(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want|, in float64."""
    want = np.asarray(want, dtype=np.float64)
    return float(np.abs(np.asarray(got, dtype=np.float64) - want).max() / max(np.abs(want).max(), 1e-30))


def check_against_eager(model: nn.Module, path: PathLike, fmt: str) -> Dict[str, Any]:
    """Reload ``path`` in its runtime and compare its logits with the eager model's on a random batch; a float32
    export beyond ``FP32_TOLERANCE`` is an error (int8 is reported: random images say nothing of accuracy)."""
    x = _sample(model, batch_size=3, seed=1)
    with torch.no_grad():
        want = model(x).numpy()
    got = open_exported(path, fmt=fmt)(x.numpy())
    diff = relative_difference(got, want)
    if fmt not in INT8_FORMATS and not diff <= FP32_TOLERANCE:
        raise ExportError(f"{path}: the exported {fmt} model's logits differ from the eager model's by {diff:.3g} "
                          f"relative (tolerance {FP32_TOLERANCE:g}); nothing was written")
    return dict(images="3 random", max_rel_diff=float(f"{diff:.3g}"),
                tolerance=None if fmt in INT8_FORMATS else FP32_TOLERANCE)


# ---- reading ----------------------------------------------------------------------------------------------------

def read_record(path: PathLike) -> Optional[Dict[str, Any]]:
    """The record beside an exported file (None when there is none)."""
    side = sidecar_path(path)
    if not side.is_file():
        return None
    try:
        record = json.loads(side.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{side}: not a valid export record: {first_line(e)}") from None
    if not isinstance(record, dict) or "format" not in record:
        raise CorruptFileError(f"{side}: not an export record (no 'format')")
    return record


def verify_exported(path: PathLike) -> Optional[Dict[str, Any]]:
    """The file against the sha256 and size its record holds: a truncated or altered file is named as such."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such exported file")
    record = read_record(path)
    if record is None or "sha256" not in record:
        return record
    size = path.stat().st_size
    if size != record.get("size_bytes", size):
        raise CorruptFileError(f"{path}: {size:,} bytes but {record['size_bytes']:,} were exported: the file is "
                               "truncated or altered; export it again")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    if digest.hexdigest() != record["sha256"]:
        raise CorruptFileError(f"{path}: sha256 differs from the one recorded at export ({sidecar_path(path).name}): "
                               "the file is corrupted; export it again")
    return record


def open_exported(path: PathLike, fmt: Optional[str] = None, runtime: str = "onnxruntime",
                  threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
    """A function images (N, C, H, W float32) -> logits for an exported file, checked first against its record.

    ``runtime`` (onnxruntime or openvino) applies to ONNX files; TorchScript and pt2 run in torch."""
    from .sessions import open_onnx

    record = verify_exported(path)
    fmt = fmt or (record or {}).get("format") or {".onnx": "onnx", ".pt": "torchscript", ".pt2": "pt2"}.get(
        Path(path).suffix)
    if fmt in ONNX_FORMATS:
        if runtime not in RUNTIMES_OF[fmt]:
            raise ValueError(f"{path}: a {fmt} export runs in {' or '.join(RUNTIMES_OF[fmt])}, not {runtime} "
                             "(OpenVINO computes the static QDQ graph wrongly: see mixer_zoo/tools/export.py)")
        return open_onnx(path, runtime, threads)
    if fmt not in FORMATS:
        raise ValueError(f"{path}: cannot tell the export format (no record, suffix {Path(path).suffix!r})")
    try:
        module = torch.export.load(str(path)).module() if fmt == "pt2" else torch.jit.load(str(path))
    except Exception as e:  # torch raises many types for a damaged archive
        raise CorruptFileError(f"{path}: not a loadable {fmt} file: {first_line(e)}") from None

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))).numpy()
    return run


def export(source: str, out: PathLike, fmt: str, img_size: Optional[int] = None, num_classes: Optional[int] = None,
           random_weights: bool = False, force: bool = False, calibration: Optional[PathLike] = None,
           calibration_count: int = 256) -> Dict[str, Any]:
    """``mixer-zoo export``: load ``source`` (folder or tag) and export it (``calibration``: a folder of images or a
    CIFAR-10 data_root, for ``int8-static``)."""
    model = load_model(source, img_size=img_size, num_classes=num_classes, random_weights=random_weights)
    images = None if calibration is None else calibration_images(calibration, model, calibration_count)
    return export_model(model, out, fmt, force=force, source=source + (" (random weights)" if random_weights else ""),
                        calibration=images)
