"""Reading mmengine checkpoints safely and completely, wherever a Runner comes from.

- ``allow_mmengine_checkpoints()``: torch >= 2.6 loads with ``weights_only=True``; the checkpoints mmengine writes
  hold numpy scalars and its ``HistoryBuffer`` next to the tensors. ``import mixer_zoo.mmpretrain`` (what a
  config's ``custom_imports`` does) allow-lists exactly those, so a plain ``Runner.from_cfg`` resumes and tests.
- ``ExactCheckpointHook``: mmengine's ``Runner.load_checkpoint`` loads whatever matches and only logs "do not
  match exactly" (and only on rank 0), leaving the rest of the model random. The hook, listed in the shipped
  ``default_runtime.py``, checks the checkpoint against the model first and raises one line naming the file
  and the keys. ``MixerZoo``'s ``init_cfg=dict(type='Pretrained')`` is checked the same way.
"""
from __future__ import annotations

import pickle
from typing import Any, Dict, List, Mapping, Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS

MODULE_PREFIX = "module."
"""What a wrapped model's keys start with; mmengine's Runner strips it on load, and so does the check."""


class CheckpointMismatchError(ValueError):
    """A checkpoint that does not fill the model exactly: missing, unexpected or mis-shaped keys."""


def _names(keys: List[str], limit: int = 4) -> str:
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def mismatch(model_state: Mapping[str, torch.Tensor], loaded: Mapping[str, Any]) -> Optional[str]:
    """What keeps ``loaded`` from filling ``model_state`` exactly, as one line; None when it fits."""
    missing = [k for k in model_state if k not in loaded and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in loaded if k not in model_state]
    shapes = [f"{k} {tuple(loaded[k].shape)} in the file, {tuple(v.shape)} in the model" for k, v in model_state.items()
              if k in loaded and hasattr(loaded[k], "shape") and tuple(loaded[k].shape) != tuple(v.shape)]
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} of another shape ({_names(shapes, 2)})")
    if missing:
        problems.append(f"{len(missing)} missing ({_names(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected ({_names(unexpected)})")
    if not problems:
        return None
    hint = ""
    if any(s.startswith("head.fc.weight ") for s in shapes):
        hint = ("; a head for another number of classes: set model.head.num_classes to the checkpoint's, or load "
                "the backbone alone with model.backbone.init_cfg=dict(type='Pretrained', checkpoint=..., "
                "prefix='backbone.')")
    elif any(k.startswith(("backbone.patch_embed.", "backbone.layers.")) for k in unexpected):
        hint = ("; the file is in mmpretrain's MlpMixer layout: `mixer-zoo convert FILE --out DIR` makes a folder "
                "that loads as local-dir:DIR")
    elif "stem.proj.weight" in unexpected:
        hint = "; the file is in timm layout: load it as local-dir:PATH (mixer-zoo train --load-from PATH does)"
    return "; ".join(problems) + hint


def check_fits(model_state: Mapping[str, torch.Tensor], loaded: Mapping[str, Any], source: str) -> None:
    """Raise :class:`CheckpointMismatchError` naming ``source`` unless ``loaded`` fills ``model_state`` exactly."""
    problem = mismatch(model_state, loaded)
    if problem:
        raise CheckpointMismatchError(f"{source}: does not match the model: {problem}")


def strip_module_prefix(state_dict: Mapping[str, Any]) -> Dict[str, Any]:
    return {(k[len(MODULE_PREFIX):] if k.startswith(MODULE_PREFIX) else k): v for k, v in state_dict.items()}


def checkpoint_state_dict(checkpoint: Mapping[str, Any], source: str) -> Dict[str, Any]:
    """The weights of a loaded checkpoint (mmengine's ``{"state_dict": ...}`` or a bare state dict)."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, Mapping) else None
    if not isinstance(state, Mapping):
        raise CheckpointMismatchError(f"{source}: not a checkpoint: no state dict of tensors")
    return strip_module_prefix(state)


@HOOKS.register_module(force=True)
class ExactCheckpointHook(Hook):
    """Fails ``load_from`` / ``resume`` with one line when the checkpoint does not fill the model exactly
    (mmengine would warn and go on with a partly random model). Runs last among the hooks, on the state dict
    that is about to be loaded, on every rank."""

    priority = "VERY_LOW"

    def after_load_checkpoint(self, runner: Any, checkpoint: Dict[str, Any]) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        source = _checkpoint_name(runner)
        check_fits(model.state_dict(), checkpoint_state_dict(checkpoint, source), source)


def _checkpoint_name(runner: Any) -> str:
    """The file being loaded: the Runner does not pass it to its hooks."""
    name = getattr(runner, "_load_from", None)
    if name is None and getattr(runner, "_resume", False):
        from mmengine.runner import find_latest_checkpoint

        name = find_latest_checkpoint(runner.work_dir)
    return str(name) if name else "checkpoint"


def ensure_exact_checkpoint_hook(cfg: Any) -> None:
    """Add :class:`ExactCheckpointHook` to a config that lacks it (one that replaced the shipped custom_hooks)."""
    hooks = list(cfg.get("custom_hooks") or [])
    if not any(isinstance(h, ExactCheckpointHook) or isinstance(h, Mapping) and
               h.get("type") in ("ExactCheckpointHook", ExactCheckpointHook) for h in hooks):
        cfg.custom_hooks = hooks + [dict(type="ExactCheckpointHook")]


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
    from mmengine.logging import HistoryBuffer

    multiarray = getattr(np, "_core", None) or np.core
    dtypes = [t for t in vars(np.dtypes).values() if isinstance(t, type) and issubclass(t, np.dtype)]
    torch.serialization.add_safe_globals([
        multiarray.multiarray.scalar, multiarray.multiarray._reconstruct, np.ndarray, np.dtype, *dtypes,
        HistoryBuffer, (_history_buffer_method, "builtins.getattr")])
