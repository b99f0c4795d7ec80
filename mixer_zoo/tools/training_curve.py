"""The learning curve of a ``mixer-zoo train`` run, read back from mmengine's logs, as rows and as a plot.

mmengine's ``LocalVisBackend`` writes ``<work_dir>/<timestamp>/vis_data/scalars.json``: one JSON object per
logged training step (``loss`` smoothed over the logger's window, ``lr``, ``epoch``, ``iter``, ``step``) and
one per validation (``accuracy/top1``, ``step`` = epoch). Reading that file, rather than hooking the run, keeps
the training path exactly what a user runs.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Sequence, Union

from .plots import save_figure

def scalars_file(work_dir: Union[str, Path]) -> Path:
    """The newest run's ``scalars.json`` under ``work_dir``."""
    files = sorted(Path(work_dir).glob("*/vis_data/scalars.json"))
    if not files:
        raise FileNotFoundError(f"{work_dir}: no */vis_data/scalars.json (was the run logged with LocalVisBackend?)")
    return files[-1]


def read_scalars(work_dir: Union[str, Path]) -> List[Dict[str, Any]]:
    path = scalars_file(work_dir)
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not a JSON line ({e})") from None
    return rows


def epoch_curve(work_dir: Union[str, Path]) -> List[Dict[str, Any]]:
    """One row per validated epoch: mean training loss over that epoch's logged windows, the lr at its last logged
    step, top-1/top-5 on the validation set. Each logged loss is the mean of the logger's window of steps, so with
    ``interval`` equal to the window every logged step counts once (mmengine skips an epoch's last partial
    window)."""
    train: Dict[int, List[Dict[str, Any]]] = {}
    rows = []
    for entry in read_scalars(work_dir):
        if "loss" in entry and "epoch" in entry:
            train.setdefault(int(entry["epoch"]), []).append(entry)
        elif "accuracy/top1" in entry:
            epoch = int(entry["step"])
            steps = train.get(epoch, [])
            rows.append(dict(
                epoch=epoch,
                last_logged_step=int(steps[-1]["step"]) if steps else None,
                train_loss=(sum(s["loss"] for s in steps) / len(steps)) if steps else math.nan,
                lr=steps[-1]["lr"] if steps else None,
                val_top1=float(entry["accuracy/top1"]),
                val_top5=float(entry["accuracy/top5"]) if "accuracy/top5" in entry else None))
    return rows


def validation_curve(work_dir: Union[str, Path]) -> List[Dict[str, Any]]:
    """One row per validation of an iteration-based run: the iteration it followed (``step``, logged so when the
    LoggerHook has ``log_metric_by_epoch=False``), top-1 and top-5."""
    return [dict(step=int(e["step"]), val_top1=float(e["accuracy/top1"]),
                 val_top5=float(e["accuracy/top5"]) if "accuracy/top5" in e else None)
            for e in read_scalars(work_dir) if "accuracy/top1" in e]


def step_losses(work_dir: Union[str, Path]) -> List[Dict[str, float]]:
    """Every logged training loss with its global step (for the loss-vs-step curve)."""
    return [dict(step=int(e["step"]), loss=float(e["loss"])) for e in read_scalars(work_dir) if "loss" in e]


def plot_training_curve(epochs: Sequence[Dict[str, Any]], steps: Sequence[Dict[str, float]], path: Union[str, Path],
                        title: str = "", steps_per_epoch: float = 0.0) -> None:
    """PNG: training loss per logged step and per epoch (left), validation top-1 per epoch (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    scale = steps_per_epoch or 1.0
    left.plot([s["step"] / scale for s in steps], [s["loss"] for s in steps], lw=0.8, alpha=0.5,
              label="logged windows")
    # an epoch's mean belongs to the middle of that epoch
    left.plot([e["epoch"] - 0.5 for e in epochs], [e["train_loss"] for e in epochs], marker="o", label="epoch mean")
    left.set_xlabel("epoch" if steps_per_epoch else "step")
    left.set_ylabel("training loss (as the head computes it)")
    left.grid(True, alpha=0.3)
    left.legend(fontsize=8)
    right.plot([e["epoch"] for e in epochs], [e["val_top1"] for e in epochs], marker="o", label="top-1")
    if all(e.get("val_top5") is not None for e in epochs):
        right.plot([e["epoch"] for e in epochs], [e["val_top5"] for e in epochs], marker="s", ls="--", label="top-5")
    right.axhline(10.0, color="grey", lw=0.8, ls=":", label="chance (10 %)")
    for e in epochs[-1:]:
        right.annotate(f"{e['val_top1']:.1f}", (e["epoch"], e["val_top1"]), textcoords="offset points",
                       xytext=(0, 6), ha="center", fontsize=8)
    right.set_xlabel("epoch")
    right.set_ylabel("accuracy % (real CIFAR-10 test images)")
    right.set_ylim(0, 100)
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    save_figure(fig, path)
