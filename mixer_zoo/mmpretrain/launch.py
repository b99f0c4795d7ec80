"""What ``mixer_zoo.train`` and ``mixer_zoo.test`` share: finding a config, overrides, distributed set-up.

Distribution is torch.distributed's, started by torchrun (``--launcher pytorch``) and driven by
mmengine's Runner. On a machine without CUDA, mmengine's own initialisation would call
``torch.cuda.set_device``; we start the gloo process group first, so the Runner finds one already
running, and wrap the model in DDP without device ids.
"""
from __future__ import annotations

import argparse
import itertools
import os
import pickle
from pathlib import Path
from typing import Any, Optional

from mmengine.runner import Runner

from ..util.report import error_summary
from .metafile import CONFIG_DIR


def resolve_config(name: str) -> Path:
    """A config file path, a path under the shipped configs, or an mmpretrain model name of the zoo."""
    for candidate in (Path(name), CONFIG_DIR / name):
        if candidate.is_file():
            return candidate.resolve()
    from .metafile import model_names

    if name.lower() in model_names():
        return CONFIG_DIR / "eval" / f"{name.lower()}.py"
    raise FileNotFoundError(
        f"config {name!r} not found: not a file, not under {CONFIG_DIR}, and not a model name from "
        "mmpretrain.list_models('*zoo*')")


def load_config(args: argparse.Namespace, default_work_dir_prefix: str = "work_dirs") -> Any:
    """Config with ``--cfg-options`` merged, ``work_dir`` and ``launcher`` set."""
    from mmengine.config import Config, DictAction

    path = resolve_config(args.config)
    try:
        cfg = Config.fromfile(str(path))
    except Exception as e:  # syntax errors, bad _base_ paths, type clashes with a base: one line naming the file
        raise RuntimeError(f"{path}: cannot read config: {error_summary(e)}") from e
    if args.cfg_options:
        bad = [kv for kv in args.cfg_options if "=" not in kv]
        if bad:
            raise ValueError(f"--cfg-options takes KEY=VALUE pairs, got {bad}")
        parsed = argparse.Namespace()
        DictAction(option_strings=["--cfg-options"], dest="options")(None, parsed, args.cfg_options)
        cfg.merge_from_dict(parsed.options)
    cfg.work_dir = args.work_dir or cfg.get("work_dir") or os.path.join(default_work_dir_prefix, path.stem)
    cfg.launcher = args.launcher
    return cfg


def set_threads(threads: Optional[int]) -> None:
    """torch's intra-op thread count (``--threads``); on a shared CPU fewer threads than cores can be faster."""
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def prepare_distributed(cfg: Any) -> None:
    """Under ``--launcher pytorch`` on CPU: gloo process group and device-less DDP (see module doc)."""
    import torch
    import torch.distributed as dist

    if cfg.launcher == "none" or torch.cuda.is_available():
        return
    cfg.setdefault("env_cfg", {}).setdefault("dist_cfg", {})["backend"] = "gloo"
    cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None)
    if cfg.launcher != "pytorch":
        raise RuntimeError(f"--launcher {cfg.launcher} without CUDA is not supported; use torchrun with --launcher pytorch")
    if not dist.is_initialized():
        missing = [v for v in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
        if missing:
            raise RuntimeError(f"--launcher pytorch needs torchrun's environment ({', '.join(missing)} unset): "
                               "run under torchrun --nproc_per_node N -m mixer_zoo.train ...")
        dist.init_process_group("gloo")


def _history_buffer_method(owner: Any, name: str) -> Any:
    """Stands in for ``getattr`` while unpickling: mmengine's ``HistoryBuffer`` pickles its statistics as
    ``getattr(HistoryBuffer, "mean")``; a general ``getattr`` would open every attribute chain to the file."""
    from mmengine.logging import HistoryBuffer

    if owner is HistoryBuffer and name in ("min", "max", "current", "mean", *HistoryBuffer._statistics_methods):
        return getattr(owner, name)
    raise pickle.UnpicklingError(f"refusing getattr({owner!r}, {name!r}) in a checkpoint")


def allow_mmengine_checkpoints() -> None:
    """Let ``torch.load(weights_only=True)`` (torch's default, which mmengine relies on) read the checkpoints
    mmengine writes: numpy scalars and arrays and the message hub's ``HistoryBuffer``, nothing callable."""
    import numpy as np
    import torch
    from mmengine.logging import HistoryBuffer

    multiarray = getattr(np, "_core", None) or np.core
    dtypes = [t for t in vars(np.dtypes).values() if isinstance(t, type) and issubclass(t, np.dtype)]
    torch.serialization.add_safe_globals([
        multiarray.multiarray.scalar, multiarray.multiarray._reconstruct, np.ndarray, np.dtype, *dtypes,
        HistoryBuffer, (_history_buffer_method, "builtins.getattr")])


_RUN_NUMBERS = itertools.count(1)
"""Runners built in this process (the same sequence on every rank), to tell mmengine's named singletons apart."""


class ZooRunner(Runner):
    """mmengine's ``Runner``, except that the checkpoint of ``load_from`` (``mixer-zoo test CKPT``,
    ``mixer-zoo train --load-from``) must match the model exactly: mmengine only warns about missing, unexpected
    or mis-shaped keys and goes on with the model partly untouched. (A backbone-only start is the backbone's
    ``init_cfg=dict(type='Pretrained', prefix='backbone.')``, as in ``finetune/cifar10.py``.)"""

    def load_checkpoint(self, filename: str, map_location: Any = "cpu", strict: bool = True,
                        revise_keys: Any = ((r"^module.", ""),)) -> Any:
        try:
            return super().load_checkpoint(filename, map_location, strict, revise_keys)
        except RuntimeError as e:
            problems = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
            if not problems:
                raise
            summary = "; ".join(problems)
            summary = summary if len(summary) <= 400 else summary[:400] + " ..."
            raise RuntimeError(f"{filename}: does not match the model: {summary}") from None


def build_runner(cfg: Any) -> Any:
    """mmengine's Runner with strict ``load_from`` (mmpretrain's own ``Runner`` type if the config names one);
    importing this module has already registered the zoo (it lives in ``mixer_zoo.mmpretrain``)."""
    from mmengine.registry import RUNNERS

    prepare_distributed(cfg)
    allow_mmengine_checkpoints()
    if not cfg.get("experiment_name"):
        # mmengine names its logger and visualizer singletons <config>_<timestamp to the second>: a second Runner of
        # the same config within that second would reuse the first one's visualizer and log into its work dir.
        cfg.experiment_name = f"{Path(cfg.filename or 'run').stem}_run{next(_RUN_NUMBERS)}"
    if "runner_type" in cfg:
        return RUNNERS.build(cfg)
    return ZooRunner.from_cfg(cfg)


def finish_distributed() -> None:
    """Tear the process group down before exit: gloo's threads abort the process if it is left alive."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()  # no barrier: after a failure on another rank it would hang


def is_main_process() -> bool:
    from mmengine.dist import get_rank

    return get_rank() == 0


def checkpoint_arg(value: Optional[str]) -> Optional[str]:
    """A checkpoint given on the command line: ``zoo://arch.tag``, ``local-dir:FOLDER`` (a converted folder) or
    an existing file."""
    from .weights import LOCAL_DIR

    if value is None or "://" in value:
        return value
    if value.startswith(LOCAL_DIR):
        folder = Path(value[len(LOCAL_DIR):])
        if not (folder / "model.safetensors").is_file() and not (folder.is_file() and folder.suffix == ".safetensors"):
            raise FileNotFoundError(f"checkpoint {value!r}: no converted folder with a model.safetensors at {folder}")
        return value
    if not Path(value).is_file():
        raise FileNotFoundError(f"checkpoint {value!r} not found")
    return value
