"""Conversions users run: an official ``.npz``, a MindSpore ``.ckpt``, a ``.pth`` or a manifest tag -> a timm
folder (an ``.npz`` proved against the Flax reference on request); and back, timm weights -> official ``.npz``,
MindSpore ``.ckpt`` or an mmpretrain checkpoint.

The formats themselves live in :mod:`mixer_zoo.formats`; this module chooses one and checks the result.
"""
from __future__ import annotations

import importlib.util
import json
import math
import zipfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import torch

from ..formats.keys import (ConversionError, CorruptFileError, PathLike, architecture_for_dims, check_layout,
                            check_timm_state_dict, expected_official_shapes, infer_dims, num_classes_of)
from ..formats.mindspore_ckpt import check_ckpt_layout, read_ckpt_index, stream_ckpt_to_safetensors, write_ckpt
from ..formats.mmpretrain_layout import TIMM_TO_CLASSIFIER, classifier_config, is_mmpretrain_layout, mmpretrain_to_timm
from ..formats.npz import read_npz_index, stream_npz_to_safetensors, timm_to_npz_arrays
from ..formats.timm_folder import (CONVERTER_VERSION, check_output_folder, describe_file, local_entry,
                                   pretrained_cfg_for, source_metadata, staging_folder, write_config_and_card,
                                   write_converted_folder)
from ..formats.torch_files import load_timm_weights, load_torch_state_dict
from ..model.architectures import ARCHITECTURES, CUSTOM_ARCHITECTURE
from ..reference import flax_mixer
from ..util.files import locked, remove_tree
from ..util.report import atomic_write, format_table
from ..weights.download import download, lock_path as download_lock, sha256_of
from ..weights.manifest import get_entry

FLOAT64_TOLERANCE = 1e-10
"""``--verify``: largest relative logit difference (max |ours - jax| / max |jax|) with both run in float64."""
PARITY_FACTOR = 2.0
PARITY_FLOOR = 2.0 ** -21
"""``--verify`` in float32: ours may be at most PARITY_FACTOR times as far from the float64 truth as JAX's own
float32 model is, plus PARITY_FLOOR (4 float32 ulps of the largest logit), so that a JAX error that happens
to be tiny on one batch cannot fail a correct conversion."""


def _resolve_arch(dims: Mapping[str, int], arch: Optional[str], source: str) -> str:
    if arch is None:
        return architecture_for_dims(dims, source)
    if arch == CUSTOM_ARCHITECTURE:
        return arch
    if arch not in ARCHITECTURES:
        raise ConversionError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}, "
                              f"{CUSTOM_ARCHITECTURE} (any shape)")
    wrong = {k: (v, dims[k]) for k, v in ARCHITECTURES[arch].items() if dims[k] != v}
    if wrong:
        k, (want, got) = next(iter(wrong.items()))
        raise ConversionError(f"{source}: shapes give {k}={got} but {arch} has {k}={want}")
    return arch


def convert_npz(src: PathLike, out_dir: PathLike, arch: Optional[str] = None, verify: bool = False,
                force: bool = False, act_layer: Optional[str] = None, entry: Optional[Mapping[str, Any]] = None,
                source_sha256: Optional[str] = None, progress: bool = True) -> Path:
    """Convert an official JAX Mixer ``.npz`` into a timm folder; with ``verify``, prove it against Flax
    before anything is moved into ``out_dir``."""
    src, out_dir = Path(src), Path(out_dir)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    check_output_folder(out_dir, force)
    members = read_npz_index(src)
    shapes = {m.key: m.shape for m in members}
    dims = infer_dims(shapes, str(src))
    arch = _resolve_arch(dims, arch, str(src))
    num_classes = num_classes_of(shapes, "head/kernel", 1, str(src))
    check_layout(shapes, expected_official_shapes(dims, num_classes), str(src), "official Mixer")
    act_layer = act_layer or (entry["act_layer"] if entry else "gelu_tanh")  # flax's nn.gelu is the tanh form
    num_params = sum(int(np.prod(m.shape, dtype=np.int64)) for m in members)
    card_entry = (describe_file(entry, dims, num_params, str(src)) if entry else
                  local_entry(arch, num_classes, act_layer, src, dims, num_params, "jax_npz"))
    if verify:
        flax_mixer.require_jax()
    with staging_folder(out_dir, force, quiet=not progress) as stage:
        metadata = source_metadata(src, source_sha256, "jax_npz")
        metadata["source_sha256"], content = stream_npz_to_safetensors(
            src, members, dims["num_blocks"], stage / "model.safetensors", metadata, source_sha256, progress)
        if not entry:
            card_entry["source"]["sha256"] = metadata["source_sha256"]
        write_config_and_card(stage, arch, num_classes, act_layer, pretrained_cfg_for(arch, card_entry), card_entry,
                              metadata, dims, content)
        if verify:
            rows = verify_against_flax(src, stage)
            print(format_table(rows))
            check_parity(rows, act_layer, src)
    return out_dir


MINDSPORE_ACT_LAYER = "gelu_tanh"
MINDSPORE_NORM_EPS = 1e-7
"""MindSpore's ``nn.GELU()`` defaults to ``approximate=True`` (the tanh form) and ``nn.LayerNorm`` to
``epsilon=1e-7``: what the release's Mixer (mindvision blocks with default arguments) computes."""


def convert_ckpt(src: PathLike, out_dir: PathLike, arch: Optional[str] = None, force: bool = False,
                 act_layer: Optional[str] = None, entry: Optional[Mapping[str, Any]] = None,
                 source_sha256: Optional[str] = None, progress: bool = True) -> Path:
    """Convert a MindSpore Mixer ``.ckpt`` into a timm folder, parameter by parameter; its GELU and LayerNorm
    epsilon are MindSpore's (recorded in ``config.json``)."""
    src, out_dir = Path(src), Path(out_dir)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: no such file")
    check_output_folder(out_dir, force)
    index = read_ckpt_index(src)
    to_timm, dims, num_classes = check_ckpt_layout(index)
    arch = _resolve_arch(dims, arch, str(src))
    act_layer = act_layer or (entry["act_layer"] if entry else MINDSPORE_ACT_LAYER)
    num_params = sum(math.prod(p.shape) for p in index.params.values())
    card_entry = (describe_file(entry, dims, num_params, str(src)) if entry else
                  local_entry(arch, num_classes, act_layer, src, dims, num_params, "mindspore_ckpt", MINDSPORE_NORM_EPS))
    if index.skipped and progress:
        print(f"{src}: left out {len(index.skipped)} optimiser/training-state entries (e.g. {index.skipped[0]!r})")
    with staging_folder(out_dir, force, quiet=not progress) as stage:
        metadata = source_metadata(src, source_sha256 or sha256_of(src), "mindspore_ckpt")
        if index.skipped:
            metadata["left_out_training_state"] = str(len(index.skipped))
        if not entry:
            card_entry["source"]["sha256"] = metadata["source_sha256"]
        content = stream_ckpt_to_safetensors(index, to_timm, stage / "model.safetensors", metadata, progress)
        write_config_and_card(stage, arch, num_classes, act_layer, pretrained_cfg_for(arch, card_entry), card_entry,
                              metadata, dims, content)
    return out_dir


def _allow_trainer_checkpoints() -> None:
    """A checkpoint of ``mixer-zoo train`` holds mmengine's bookkeeping next to the weights: let the weights-only
    loader read it (numbers and mmengine's ``HistoryBuffer``, nothing callable) where mmpretrain is installed."""
    if importlib.util.find_spec("mmpretrain") is not None:
        from ..mmpretrain.checkpoints import allow_mmengine_checkpoints

        allow_mmengine_checkpoints()


def convert_state_dict_file(src: PathLike, out_dir: PathLike, arch: Optional[str] = None, force: bool = False,
                            act_layer: Optional[str] = None, entry: Optional[Mapping[str, Any]] = None,
                            source_sha256: Optional[str] = None) -> Path:
    """A ``.pth`` in timm layout (timm's GitHub releases) or mmpretrain layout (``MlpMixer``, or ``MixerZoo`` as
    ``mixer-zoo train`` writes it) -> timm folder."""
    src = Path(src)
    check_output_folder(Path(out_dir), force)
    _allow_trainer_checkpoints()
    raw = load_torch_state_dict(src)
    mmpretrain = is_mmpretrain_layout(raw)
    state_dict = mmpretrain_to_timm(raw, str(src)) if mmpretrain else raw
    dims = check_timm_state_dict(state_dict, str(src))
    arch = _resolve_arch(dims, arch, str(src))
    # mmpretrain's MlpMixer uses the exact GELU; timm's releases of Google's weights come with their tag.
    act_layer = act_layer or (entry["act_layer"] if entry else "gelu")
    metadata = source_metadata(src, source_sha256 or sha256_of(src), "mmpretrain" if mmpretrain else "timm")
    return write_converted_folder(state_dict, dims, out_dir, arch, int(state_dict["head.weight"].shape[0]), act_layer,
                                  pretrained_cfg_for(arch, entry) if entry else {}, metadata, entry=entry, force=force)


def convert_tag(tag: str, out_dir: PathLike, verify: bool = False, force: bool = False,
                cache_dir: Optional[PathLike] = None, progress: bool = True) -> Path:
    """Download the source of a manifest tag (``arch.tag``) through the cache and convert it."""
    entry = get_entry(tag)
    source = entry.get("source") or {}
    if not source.get("url"):
        raise ConversionError(f"weights tag {tag!r} has no source to convert (manifest entry without a URL)")
    if source.get("format") not in ("jax_npz", "timm_pth", "mindspore_ckpt"):
        raise ConversionError(f"weights tag {tag!r}: unknown source format {source.get('format')!r}")
    if verify and source["format"] != "jax_npz":
        raise ConversionError(f"{tag}: --verify compares against the JAX model and needs a jax_npz source")
    check_output_folder(Path(out_dir), force)
    known = source.get("sha256")
    known = known if known and known != "unverified" else None
    path = download(source["url"], sha256=known, cache_dir=cache_dir, progress=progress,
                    validate=lambda p: check_source_file(p, source["format"]))
    # Without a known sha256 each converter hashes the file itself (the npz one while streaming it).
    try:
        if source["format"] == "jax_npz":
            return convert_npz(path, out_dir, arch=entry["architecture"], verify=verify, force=force,
                               act_layer=entry["act_layer"], entry=entry, source_sha256=known, progress=progress)
        if source["format"] == "mindspore_ckpt":
            return convert_ckpt(path, out_dir, arch=entry["architecture"], force=force, act_layer=entry["act_layer"],
                                entry=entry, source_sha256=known, progress=progress)
        return convert_state_dict_file(path, out_dir, arch=entry["architecture"], force=force,
                                       act_layer=entry["act_layer"], entry=entry, source_sha256=known)
    except CorruptFileError as e:
        with locked(download_lock(path, cache_dir), str(path), quiet=not progress):
            remove_tree(path)  # a damaged download must not be served again from the cache
        raise CorruptFileError(f"{e}; the cached download was removed: run the command again to download "
                               f"{tag} anew") from None


def check_source_file(path: PathLike, source_format: str) -> None:
    """Cheap structural check of a downloaded source (its zip directory and array headers), so a truncated
    download is never kept: the full CRC check happens while converting."""
    if source_format == "jax_npz":
        read_npz_index(path)
    elif source_format == "mindspore_ckpt":
        read_ckpt_index(path)
    elif zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            zf.infolist()


def _check_output_file(out_file: Path, force: bool, what: str) -> None:
    if out_file.is_dir():
        raise ConversionError(f"{out_file}: is a folder; {what} is written to one file (give a file name)")
    if out_file.exists() and not force:
        raise ConversionError(f"{out_file}: exists (use --force to overwrite)")


def export_npz(src: PathLike, out_file: PathLike, force: bool = False) -> Path:
    """timm weights (converted folder, ``.safetensors`` or ``.pth``) -> official-layout ``.npz``."""
    out_file = Path(out_file)
    _check_output_file(out_file, force, "--to npz")
    _allow_trainer_checkpoints()
    arrays = timm_to_npz_arrays(load_timm_weights(src), str(src))
    return atomic_write(out_file, lambda f: np.savez(f, **arrays))


def export_mindspore(src: PathLike, out_file: PathLike, force: bool = False) -> Path:
    """timm weights -> a MindSpore ``.ckpt`` with the release's parameter names (``load_checkpoint`` reads it)."""
    out_file = Path(out_file)
    _check_output_file(out_file, force, "--to mindspore")
    state_dict = load_timm_weights(src)
    return atomic_write(out_file, lambda f: write_ckpt(state_dict, f, str(src)))


def _folder_model_arg(src: PathLike, name: str, required: bool) -> Any:
    """``model_args[name]`` of a converted folder's ``config.json`` (for a folder or its ``model.safetensors``);
    None when there is no config.json, or when an optional argument is absent."""
    folder = Path(src) if Path(src).is_dir() else Path(src).parent
    config = folder / "config.json"
    if not config.is_file():
        return None
    try:
        model_args = json.loads(config.read_text(encoding="utf-8"))["model_args"]
        return model_args[name] if required else model_args.get(name)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ConversionError(f"{config}: no model_args.{name} ({type(e).__name__}: {e})") from None


def folder_act_layer(src: PathLike) -> Optional[str]:
    """The GELU flavour a converted folder's ``config.json`` records (for a folder or its ``model.safetensors``)."""
    return _folder_model_arg(src, "act_layer", required=True)


def folder_norm_eps(src: PathLike) -> float:
    """The LayerNorm epsilon a converted folder records (1e-7 for MindSpore's weights), else timm's 1e-6."""
    eps = _folder_model_arg(src, "norm_eps", required=False)
    return 1e-6 if eps is None else float(eps)


def export_mmpretrain(src: PathLike, out_file: PathLike, force: bool = False, backbone: str = "MixerZoo",
                      act_layer: Optional[str] = None) -> Dict[str, Any]:
    """timm weights -> an mmpretrain ``ImageClassifier`` checkpoint (``{"state_dict", "meta"}``) for ``backbone``:
    the zoo's ``MixerZoo`` (what the shipped configs build) or mmpretrain's ``MlpMixer`` (S, B and L widths only).
    Returns the ``model`` config the checkpoint fits exactly (also kept in its ``meta``)."""
    out_file = Path(out_file)
    _check_output_file(out_file, force, "--to mmpretrain")
    _allow_trainer_checkpoints()
    state_dict = load_timm_weights(src)
    dims = check_timm_state_dict(state_dict, str(src))
    act_layer = act_layer or folder_act_layer(src) or "gelu"  # timm's own MlpMixer releases use the exact GELU
    arch = architecture_for_dims(dims, str(src))
    model = classifier_config(backbone, dims, int(state_dict["head.weight"].shape[0]), act_layer,
                              arch=None if arch == CUSTOM_ARCHITECTURE else arch, source=str(src),
                              norm_eps=folder_norm_eps(src))
    checkpoint = {"state_dict": TIMM_TO_CLASSIFIER[backbone](state_dict, str(src)),
                  "meta": {"converter": CONVERTER_VERSION, "source_file": Path(src).name, "model": model}}
    atomic_write(out_file, lambda f: torch.save(checkpoint, f))
    return model


def _compare(model: str, dtype: str, gelu: str, versus: str, got: np.ndarray, reference: np.ndarray) -> Dict[str, Any]:
    max_abs = float(np.abs(got.astype(np.float64) - reference).max())
    return dict(model=model, dtype=dtype, gelu=gelu, versus=versus, max_abs_diff=max_abs,
                max_rel_diff=max_abs / float(np.abs(reference).max()),
                top1_agreement=float((got.argmax(1) == reference.argmax(1)).mean()))


def verify_against_flax(npz_path: PathLike, model_dir: PathLike, batch_size: int = 2, seed: int = 0,
                        images: Optional[np.ndarray] = None) -> List[Dict[str, Any]]:
    """Logits of the Flax reference on the npz and of our model built by timm from the folder, on one batch
    (``images`` NHWC, or random), each measured against the Flax reference run in float64 (the truth): JAX in
    float32, ours in float32 and float64 with the folder's GELU, ours with the other GELU (what the wrong
    flavour would cost); and last, ours against JAX, both float32."""
    import timm

    params = flax_mixer.load_official_npz(npz_path)
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    size = config["pretrained_cfg"].get("input_size", [3, 224, 224])[-1]
    if images is None:
        images = np.random.default_rng(seed).standard_normal((batch_size, size, size, 3), dtype=np.float32)
    truth = flax_mixer.flax_logits(params, images, np.float64)
    jax32 = flax_mixer.flax_logits(params, images, np.float32)
    del params
    act_layer = config["model_args"]["act_layer"]
    other = ({"gelu", "gelu_tanh"} - {act_layer}).pop()
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2).contiguous()
    rows = [_compare("jax", "float32", "gelu_tanh", "jax float64", jax32, truth)]
    with torch.inference_mode():
        model = timm.create_model(f"local-dir:{model_dir}", pretrained=True, act_layer=act_layer).eval()
        ours32 = model(x).numpy()
        ours64 = model.double()(x.double()).numpy()
        del model
        wrong = timm.create_model(f"local-dir:{model_dir}", pretrained=True, act_layer=other).eval()(x).numpy()
    rows += [_compare("ours", "float32", act_layer, "jax float64", ours32, truth),
             _compare("ours", "float64", act_layer, "jax float64", ours64, truth),
             _compare("ours", "float32", other, "jax float64", wrong, truth),
             _compare("ours", "float32", act_layer, "jax float32", ours32, jax32.astype(np.float64))]
    return rows


def parity_rows(rows: List[Dict[str, Any]], act_layer: str) -> Dict[str, Dict[str, Any]]:
    """The rows the gate reads: ``jax32``, ``ours32``, ``ours64`` (each against float64 JAX)."""
    def find(model: str, dtype: str, gelu: str) -> Dict[str, Any]:
        return next(r for r in rows if (r["model"], r["dtype"], r["gelu"], r["versus"]) ==
                    (model, dtype, gelu, "jax float64"))
    return dict(jax32=find("jax", "float32", "gelu_tanh"), ours32=find("ours", "float32", act_layer),
                ours64=find("ours", "float64", act_layer))


def check_parity(rows: List[Dict[str, Any]], act_layer: str, source: PathLike) -> None:
    """The ``--verify`` gate, against the float64 truth: in float64 ours must agree with JAX to
    ``FLOAT64_TOLERANCE`` (the same function, rounding aside), and in float32 ours must be no further from the
    truth than ``PARITY_FACTOR`` times JAX's own float32 error plus ``PARITY_FLOOR``."""
    r = parity_rows(rows, act_layer)
    if r["ours64"]["max_rel_diff"] > FLOAT64_TOLERANCE:
        raise ConversionError(
            f"{source}: in float64 the converted model differs from the JAX reference by "
            f"{r['ours64']['max_rel_diff']:.3g} relative (tolerance {FLOAT64_TOLERANCE:g}): not rounding, a wrong "
            "conversion or GELU; output not written")
    allowed = PARITY_FACTOR * r["jax32"]["max_rel_diff"] + PARITY_FLOOR
    if r["ours32"]["max_rel_diff"] > allowed:
        raise ConversionError(
            f"{source}: in float32 the converted model is {r['ours32']['max_rel_diff']:.3g} (relative) from the "
            f"float64 JAX reference, JAX's own float32 model {r['jax32']['max_rel_diff']:.3g}; allowed "
            f"{PARITY_FACTOR:g}x that + {PARITY_FLOOR:.2g}; output not written")
