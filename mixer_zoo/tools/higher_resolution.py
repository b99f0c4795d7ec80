"""Higher-resolution fine-tuning in practice (MLP-Mixer, Sec. 3 and Supplementary C): a converted folder expanded
to K times its resolution for fine-tuning, and what that expansion keeps at step 0, measured on real images.

What is exact: the expanded model (:mod:`mixer_zoo.model.resolution`) mixes each of the K×K tiles of its input
exactly as the base model mixes a whole image, and every other layer acts per token, so its logits are the mean
of the base model's logits on the K² tiles. An input made of K×K copies of an image is therefore classified
exactly as that image at the base resolution. An image *upsampled* K times is not: each tile is then a K-th of
the picture per side, magnified K times, and each patch sees a K-th of the pixels per side it saw before.
Nearest or bilinear upsampling only changes how those magnified parts look; what they give at step 0 is measured
(:func:`step0_rows`), not promised by the expansion. Fine-tuning at the new size is what closes that gap.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..formats.keys import ConversionError, PathLike, check_timm_state_dict
from ..formats.timm_folder import check_output_folder, local_entry, source_metadata, write_converted_folder
from ..model.resolution import ResolutionError, scale_factor
from ..weights.download import sha256_of

PREPROCESSING_KEYS = ("crop_pct", "interpolation", "mean", "std")

INPUTS = {
    "tiles": "K x K copies of the image (the case the expansion keeps exactly)",
    "nearest": "upsampled K times, nearest neighbour (every pixel repeated K x K times)",
    "bilinear": "upsampled K times, bilinear with half-pixel centres (tf.image.resize, as vision_transformer)",
}
"""The K-times larger inputs :func:`step0_rows` measures, and what each is."""


def read_folder_config(folder: Path) -> Dict[str, Any]:
    """``config.json`` of a converted folder, with the keys expansion needs."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file (a folder written by `mixer-zoo convert` has one)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConversionError(f"{path}: not a JSON file ({e})") from None
    missing = [k for k in ("architecture", "num_classes", "model_args", "pretrained_cfg") if k not in config]
    if missing or "act_layer" not in config.get("model_args", {}):
        raise ConversionError(f"{path}: not a mixer-zoo config.json (missing {missing or ['model_args.act_layer']})")
    return config


def expand_folder(src: PathLike, out_dir: PathLike, img_size: int, force: bool = False) -> Path:
    """A converted folder -> the same model at ``img_size`` = K times its own size (integer K >= 2), in a new
    folder. Built by ``timm.create_model("local-dir:SRC", pretrained=True, img_size=...)``, so the token-mixing
    MLPs are expanded exactly as that call does. The new folder keeps the source's evaluation preprocessing and
    says what it was expanded from; ``--load-from local-dir:OUT`` fine-tunes it with mmengine at the new size."""
    import timm

    src = Path(src)
    config = read_folder_config(src)
    base = int(config["model_args"].get("img_size") or config["pretrained_cfg"]["input_size"][-1])
    factor = scale_factor(base, img_size, str(src))
    if factor == 1:
        raise ResolutionError(f"{src}: already a {base} px model; --img-size must be K x {base} with K >= 2")
    check_output_folder(Path(out_dir), force)  # before the work, as the converters do
    model = timm.create_model(f"local-dir:{src}", pretrained=True, img_size=img_size)
    state_dict = {k: v.detach() for k, v in model.state_dict().items()}
    dims = check_timm_state_dict(state_dict, str(src))
    arch, num_classes = config["architecture"], int(config["num_classes"])
    act_layer = config["model_args"]["act_layer"]
    weights = src / "model.safetensors"
    num_params = sum(t.numel() for t in state_dict.values())
    entry = local_entry(arch, num_classes, act_layer, src, dims, num_params, "timm")
    source_cfg = config["pretrained_cfg"]
    entry.update({k: source_cfg[k] for k in PREPROCESSING_KEYS if k in source_cfg})
    entry.update(
        preprocessing_source=f"the source folder {src.name}'s config.json, at {img_size} px",
        resolution=dict(trained=base, fine_tuned=None),
        description=(f"{src.name} ({base} px) expanded to {img_size} px for fine-tuning: every token-mixing MLP "
                     f"holds {factor * factor} block-diagonal copies of the original (MLP-Mixer, Supplementary C)."))
    source_sha256 = sha256_of(weights)
    entry["source"] = dict(entry["source"], file=f"{src.name}/{weights.name}", sha256=source_sha256)
    metadata = dict(source_metadata(src, source_sha256, "timm"), expanded_from=f"{base}x{base} px",
                    expansion=f"token-mixing MLPs x{factor * factor}, block-diagonal over {factor}x{factor} tiles")
    return write_converted_folder(state_dict, dims, out_dir, arch, num_classes, act_layer, {}, metadata,
                                  entry=entry, force=force)


# ---- step 0 on real images ---------------------------------------------------------------------------------------

def normalized(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` RGB -> float ``(N, 3, H, W)`` in [-1, 1], as the configs' data preprocessor and
    Google's input pipeline: ``(x - 127.5) / 127.5``."""
    return (torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() - 127.5) / 127.5


def larger_input(x: torch.Tensor, factor: int, kind: str) -> torch.Tensor:
    """``x`` made ``factor`` times larger per side in one of the ways of :data:`INPUTS`."""
    if kind == "tiles":
        return x.repeat(1, 1, factor, factor)
    if kind == "nearest":
        return F.interpolate(x, scale_factor=factor, mode="nearest")
    if kind == "bilinear":
        return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    raise ValueError(f"input kind must be one of {list(INPUTS)}, got {kind!r}")


def tiles(x: torch.Tensor, factor: int) -> List[torch.Tensor]:
    """The K×K equal tiles of an image batch, row-major: the parts the expanded token mixing keeps apart."""
    h, w = x.shape[-2] // factor, x.shape[-1] // factor
    return [x[..., i * h:(i + 1) * h, j * w:(j + 1) * w] for i in range(factor) for j in range(factor)]


def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int = 250) -> torch.Tensor:
    """Logits of ``model`` in eval mode, batch by batch."""
    model.eval()
    with torch.inference_mode():
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])


def _accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 1) -> float:
    top = logits.topk(k, dim=1).indices
    return float((top == labels[:, None]).any(dim=1).float().mean() * 100)


def step0_rows(base: torch.nn.Module, expanded: torch.nn.Module, images: np.ndarray, labels: Sequence[int],
               kinds: Sequence[str] = tuple(INPUTS), batch_size: int = 250,
               progress: Optional[Callable[[str], None]] = None) -> List[Dict[str, Any]]:
    """Top-1/top-5 of the base model at its own size and of the expanded model (step 0, before any fine-tuning)
    on K-times larger inputs of the same images; for each, how many predictions equal the base model's and how far
    the logits are from the mean of the base model's logits on the K² tiles (the identity the expansion
    guarantees, relative to the largest logit)."""
    x, y = normalized(images), torch.as_tensor(np.asarray(labels), dtype=torch.long)
    factor = expanded.stem.img_size[0] // base.stem.img_size[0]
    base_logits = predict(base, x, batch_size)
    base_pred = base_logits.argmax(1)
    rows = [dict(model="base", input=f"{x.shape[-1]} px, as trained", img_size=x.shape[-1],
                 top1=_accuracy(base_logits, y), top5=_accuracy(base_logits, y, 5), same_prediction_as_base=100.0,
                 tile_mean_rel_error=0.0)]
    for kind in kinds:
        if progress:
            progress(f"step 0 at {factor * x.shape[-1]} px: {INPUTS[kind]}")
        large = larger_input(x, factor, kind)
        logits = predict(expanded, large, batch_size)
        tile_mean = torch.stack([predict(base, t, batch_size) for t in tiles(large, factor)]).mean(0)
        rows.append(dict(model="expanded, step 0", input=kind, img_size=large.shape[-1],
                         top1=_accuracy(logits, y), top5=_accuracy(logits, y, 5),
                         same_prediction_as_base=float((logits.argmax(1) == base_pred).float().mean() * 100),
                         tile_mean_rel_error=float((logits - tile_mean).abs().max() / tile_mean.abs().max())))
    return rows


# ---- the figure -------------------------------------------------------------------------------------------------

def plot_resolution_finetune(runs: Sequence[Dict[str, Any]], path: PathLike, base_top1: float,
                             base_label: str = "base model", title: str = "") -> None:
    """PNG: training loss per logged step (left) and test top-1 per validated step (right) of each fine-tuning
    run; step 0 is each run's start, the dotted line the base model at its own resolution.

    ``runs``: dicts with ``label``, ``steps`` (``[{step, loss}]``) and ``curve`` (``[{step, val_top1}]``, step 0
    included)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import save_figure

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.8), dpi=120)
    for run in runs:
        left.plot([s["step"] for s in run["steps"]], [s["loss"] for s in run["steps"]], lw=1.0, label=run["label"])
        line, = right.plot([c["step"] for c in run["curve"]], [c["val_top1"] for c in run["curve"]], marker="o",
                           label=run["label"])
        last = run["curve"][-1]
        right.annotate(f"{last['val_top1']:.1f}", (last["step"], last["val_top1"]), textcoords="offset points",
                       xytext=(0, 6), ha="center", fontsize=8, color=line.get_color())
    right.axhline(base_top1, color="grey", lw=1.0, ls=":", label=f"{base_label}: {base_top1:.2f}")
    left.set_xlabel("fine-tuning step")
    left.set_ylabel("training loss (as the head computes it)")
    right.set_xlabel("fine-tuning step (0: before any)")
    right.set_ylabel("top-1 % (real CIFAR-10 test images)")
    for ax in (left, right):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, str(path))
