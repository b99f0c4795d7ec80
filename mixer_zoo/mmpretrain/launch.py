"""What ``mixer_zoo.train`` and ``mixer_zoo.test`` share: finding a config, overrides, distributed set-up.

Distribution is torch.distributed's, started by torchrun (``--launcher pytorch``) and driven by
mmengine's Runner. On a machine without CUDA, mmengine's own initialisation would call
``torch.cuda.set_device``; we start the gloo process group first, so the Runner finds one already
running, and wrap the model in DDP without device ids.
"""
from __future__ import annotations

import argparse
import contextlib
import itertools
import os
from pathlib import Path
from typing import Any, Iterator, Optional

from mmengine.runner import Runner

from ..util.report import error_summary
from .checkpoints import ensure_exact_checkpoint_hook
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
    if getattr(args, "data_root", None):
        set_data_root(cfg, args.data_root)
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


DATALOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")


def set_data_root(cfg: Any, data_root: str) -> None:
    """``--data-root``: the dataset folder of every dataloader the config has (before ``--cfg-options``, which
    may still set one of them apart)."""
    if not Path(data_root).is_dir():
        raise FileNotFoundError(f"--data-root {data_root}: no such folder")
    for name in DATALOADERS:
        if cfg.get(name) and "dataset" in cfg[name]:
            cfg[name].dataset.data_root = str(data_root)


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


def dataset_classes(dataset_cfg: Any) -> Optional[int]:
    """How many classes a dataset config has, where its type or its ``metainfo`` says (None if unknown)."""
    from mmpretrain.registry import DATASETS

    classes = (dataset_cfg.get("metainfo") or {}).get("classes") or dataset_cfg.get("classes")
    if classes is None:
        kind = dataset_cfg.get("type")
        kind = DATASETS.get(kind) if isinstance(kind, str) else kind
        classes = (getattr(kind, "METAINFO", None) or {}).get("classes")
    return len(classes) if isinstance(classes, (list, tuple)) else None


def check_class_counts(cfg: Any) -> None:
    """The head, the data preprocessor and the datasets agree on the number of classes (mmpretrain would stop
    deep inside a step with an assertion or an index error, or, for the preprocessor, mix up labels)."""
    model = cfg.get("model") or {}
    head = (model.get("head") or {}).get("num_classes")
    if head is None:
        return
    source = getattr(cfg, "filename", None) or "config"
    preprocessor = (model.get("data_preprocessor") or {}).get("num_classes")
    if preprocessor is not None and preprocessor != head:
        raise ValueError(f"{source}: model.head.num_classes={head} but model.data_preprocessor.num_classes="
                         f"{preprocessor}: set both to the dataset's number of classes")
    for name in DATALOADERS:
        dataset = (cfg.get(name) or {}).get("dataset")
        count = dataset_classes(dataset) if dataset else None
        if count is not None and count > head:
            raise ValueError(f"{source}: {name}'s {dataset.get('type')} has {count} classes but model.head.num_classes="
                             f"{head}: set model.head.num_classes and model.data_preprocessor.num_classes to {count}")


_RUN_NUMBERS = itertools.count(1)
"""Runners built in this process (the same sequence on every rank), to tell mmengine's named singletons apart."""


def build_runner(cfg: Any) -> Any:
    """mmengine's own Runner (mmpretrain's ``runner_type`` if the config names one) with the zoo's checkpoint rules:
    importing this package allow-listed mmengine's checkpoint contents, and :class:`ExactCheckpointHook` makes a
    checkpoint that does not fill the model an error (added here if the config replaced ``custom_hooks``)."""
    from mmengine.registry import RUNNERS

    check_class_counts(cfg)
    prepare_distributed(cfg)
    ensure_exact_checkpoint_hook(cfg)
    if not cfg.get("experiment_name"):
        # mmengine names its logger and visualizer singletons <config>_<timestamp to the second>: a second Runner of
        # the same config within that second would reuse the first one's visualizer and log into its work dir.
        cfg.experiment_name = f"{Path(cfg.filename or 'run').stem}_run{next(_RUN_NUMBERS)}"
    if "runner_type" in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)


@contextlib.contextmanager
def config_assertions_as_errors(cfg: Any) -> Iterator[None]:
    """mmengine and mmpretrain check configs and data with ``assert`` (a folder of 3 classes for a 1000-class
    ImageNet, a split name): such an AssertionError is the user's input, reported as one line naming the config."""
    try:
        yield
    except AssertionError as e:
        text = " ".join(str(e).split()) or "an assertion in mmengine/mmpretrain failed"
        raise ValueError(f"{getattr(cfg, 'filename', None) or 'config'}: {text}") from e


FINISH_BARRIER_SECONDS = 120
"""How long a rank that finished waits for the others before tearing the process group down."""


def finish_distributed(succeeded: bool = True) -> None:
    """Tear the process group down before exit: gloo's threads abort the process if it is left alive.

    After success every rank first meets the others at a barrier with a timeout (gloo's monitored one). Without
    it, a rank that finished first and tore its group down made its peer abort at exit ("terminate called
    without an active exception") in 5 of 28 two-process CPU runs on a loaded 2-core machine; with it, 0 of 27.
    After a failure there is no barrier: the failed rank would never arrive."""
    import datetime

    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if succeeded and dist.get_world_size() > 1:
        timeout = datetime.timedelta(seconds=FINISH_BARRIER_SECONDS)
        if dist.get_backend() == "gloo":
            dist.monitored_barrier(timeout=timeout)
        else:
            dist.barrier()
    dist.destroy_process_group()


def is_main_process() -> bool:
    from mmengine.dist import get_rank

    return get_rank() == 0


def checkpoint_arg(value: Optional[str]) -> Optional[str]:
    """A checkpoint given on the command line: ``zoo://arch.tag``, an mmengine checkpoint file, or converted weights
    in timm layout: a folder with a ``model.safetensors``, a ``.safetensors`` file, or either as ``local-dir:PATH``
    (all three become ``local-dir:PATH``, whose loader renames the keys for the zoo's classifier)."""
    from .weights import LOCAL_DIR

    if value is None or "://" in value:
        return value
    path = Path(value[len(LOCAL_DIR):] if value.startswith(LOCAL_DIR) else value)
    if (path / "model.safetensors").is_file() or path.is_file() and path.suffix == ".safetensors":
        return f"{LOCAL_DIR}{path}"
    if value.startswith(LOCAL_DIR) or path.is_dir():
        raise FileNotFoundError(f"checkpoint {value!r}: no converted folder with a model.safetensors at {path}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {value!r} not found")
    return value
