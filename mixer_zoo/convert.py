"""Checkpoint conversion between Google's JAX ``.npz`` layout, timm's layout and mmpretrain's layout.

A converted folder is what ``timm.create_model("local-dir:DIR", pretrained=True)`` loads:
``model.safetensors`` (timm layout, float32), ``config.json`` (timm's Hub format) and ``README.md``.

Official npz files are converted as a stream: every array is read, transposed and written on its own, so
memory stays near the size of the largest array rather than of the checkpoint. Everything is written into a
staging folder next to the output and moved into place only at the end, so a failure leaves nothing behind.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import struct
import tempfile
import zipfile
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from . import __version__
from .download import sha256_of
from .report import atomic_write, first_line, umask_mode

CONVERTER_VERSION = f"mixer-zoo-convert {__version__}"
PathLike = Union[str, Path]
Shape = Tuple[int, ...]
PARITY_TOLERANCE = 1e-5
"""Largest accepted relative logit difference (max |ours - flax| / max |flax|) for ``--verify``."""


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message names the file and the key."""


# ---- key mapping ---------------------------------------------------------------------------------------------

def key_map(num_blocks: int) -> List[Tuple[str, str, str]]:
    """``(official key, timm key, transform)`` rows in state-dict order.

    Transforms: ``conv`` (HWIO <-> OIHW), ``dense`` (Flax ``(in, out)`` <-> torch ``(out, in)``), ``copy``.
    """
    rows = [("stem/kernel", "stem.proj.weight", "conv"), ("stem/bias", "stem.proj.bias", "copy")]
    for i in range(num_blocks):
        jax_block, timm_block = f"MixerBlock_{i}/", f"blocks.{i}."
        for norm_index, (mixing, mlp) in enumerate((("token_mixing", "mlp_tokens"), ("channel_mixing", "mlp_channels"))):
            norm = f"norm{norm_index + 1}"
            rows += [(f"{jax_block}LayerNorm_{norm_index}/scale", f"{timm_block}{norm}.weight", "copy"),
                     (f"{jax_block}LayerNorm_{norm_index}/bias", f"{timm_block}{norm}.bias", "copy")]
            for dense, fc in (("Dense_0", "fc1"), ("Dense_1", "fc2")):
                rows += [(f"{jax_block}{mixing}/{dense}/kernel", f"{timm_block}{mlp}.{fc}.weight", "dense"),
                         (f"{jax_block}{mixing}/{dense}/bias", f"{timm_block}{mlp}.{fc}.bias", "copy")]
    rows += [("pre_head_layer_norm/scale", "norm.weight", "copy"), ("pre_head_layer_norm/bias", "norm.bias", "copy"),
             ("head/kernel", "head.weight", "dense"), ("head/bias", "head.bias", "copy")]
    return rows


_TO_TIMM_AXES = {"conv": (3, 2, 0, 1), "dense": (1, 0)}
_TO_OFFICIAL_AXES = {"conv": (2, 3, 1, 0), "dense": (1, 0)}


def _permute_shape(shape: Shape, axes: Optional[Tuple[int, ...]]) -> Shape:
    return tuple(shape) if axes is None else tuple(shape[a] for a in axes)


def _shapes(arrays: Mapping[str, Any]) -> Dict[str, Shape]:
    """Accept arrays, tensors or bare shapes."""
    return {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in arrays.items()}


def _shape_of(shapes: Mapping[str, Shape], key: str, source: str, ndim: int) -> Shape:
    if key not in shapes:
        raise ConversionError(f"{source}: missing key {key!r}")
    if len(shapes[key]) != ndim:
        raise ConversionError(f"{source}: key {key!r} has shape {shapes[key]}; expected {ndim} dimensions")
    return shapes[key]


def _count_blocks(keys: Any, pattern: str) -> int:
    indices = {int(m.group(1)) for k in keys for m in [re.match(pattern, k)] if m}
    return max(indices) + 1 if indices else 0


def _grid_img_size(num_tokens: int, patch_size: int, source: str, key: str) -> int:
    side = int(round(num_tokens ** 0.5))
    if side * side != num_tokens:
        raise ConversionError(f"{source}: key {key!r} mixes {num_tokens} tokens, not a square grid of patches")
    return side * patch_size


def infer_dims(arrays: Mapping[str, Any], source: str = "<arrays>") -> Dict[str, int]:
    """Hyper-parameters of an official-layout checkpoint read from its shapes (and its image size from the
    token count)."""
    shapes = _shapes(arrays)
    ph, pw, in_chans, width = _shape_of(shapes, "stem/kernel", source, 4)
    if ph != pw or in_chans != 3:
        raise ConversionError(f"{source}: key 'stem/kernel' has shape {shapes['stem/kernel']}; expected (p, p, 3, width)")
    num_tokens, tokens_mlp = _shape_of(shapes, "MixerBlock_0/token_mixing/Dense_0/kernel", source, 2)
    _, channels_mlp = _shape_of(shapes, "MixerBlock_0/channel_mixing/Dense_0/kernel", source, 2)
    return dict(patch_size=ph, num_blocks=_count_blocks(shapes, r"MixerBlock_(\d+)/"), embed_dim=width,
                tokens_mlp_dim=tokens_mlp, channels_mlp_dim=channels_mlp,
                img_size=_grid_img_size(num_tokens, ph, source, "MixerBlock_0/token_mixing/Dense_0/kernel"))


def infer_dims_timm(state_dict: Mapping[str, Any], source: str = "<state dict>") -> Dict[str, int]:
    """The same, for a timm-layout state dict."""
    shapes = _shapes(state_dict)
    width, in_chans, ph, pw = _shape_of(shapes, "stem.proj.weight", source, 4)
    if ph != pw or in_chans != 3:
        raise ConversionError(f"{source}: key 'stem.proj.weight' has shape {shapes['stem.proj.weight']}; "
                              "expected (width, 3, p, p)")
    tokens_mlp, num_tokens = _shape_of(shapes, "blocks.0.mlp_tokens.fc1.weight", source, 2)
    channels_mlp, _ = _shape_of(shapes, "blocks.0.mlp_channels.fc1.weight", source, 2)
    return dict(patch_size=ph, num_blocks=_count_blocks(shapes, r"blocks\.(\d+)\."), embed_dim=width,
                tokens_mlp_dim=tokens_mlp, channels_mlp_dim=channels_mlp,
                img_size=_grid_img_size(num_tokens, ph, source, "blocks.0.mlp_tokens.fc1.weight"))


def architecture_for_dims(dims: Mapping[str, int], source: str = "<arrays>") -> str:
    from .zoo import ARCHITECTURES

    for name, arch in ARCHITECTURES.items():
        if all(arch[k] == dims[k] for k in arch):
            return name
    described = ", ".join(f"{k}={dims[k]}" for k in ("patch_size", "embed_dim", "num_blocks", "tokens_mlp_dim",
                                                     "channels_mlp_dim"))
    raise ConversionError(f"{source}: shapes ({described}) match no architecture of the zoo "
                          f"({', '.join(ARCHITECTURES)})")


def infer_architecture(arrays: Mapping[str, Any], source: str = "<arrays>") -> str:
    """The zoo architecture whose patch size, width, depth and MLP sizes the official-layout arrays have."""
    return architecture_for_dims(infer_dims(arrays, source), source)


def expected_official_shapes(dims: Mapping[str, int], num_classes: int) -> Dict[str, Shape]:
    p, c = dims["patch_size"], dims["embed_dim"]
    n = (dims["img_size"] // p) ** 2
    t, d = dims["tokens_mlp_dim"], dims["channels_mlp_dim"]
    shapes: Dict[str, Shape] = {"stem/kernel": (p, p, 3, c), "stem/bias": (c,)}
    for i in range(dims["num_blocks"]):
        b = f"MixerBlock_{i}/"
        for j in (0, 1):
            shapes[f"{b}LayerNorm_{j}/scale"] = shapes[f"{b}LayerNorm_{j}/bias"] = (c,)
        shapes.update({f"{b}token_mixing/Dense_0/kernel": (n, t), f"{b}token_mixing/Dense_0/bias": (t,),
                       f"{b}token_mixing/Dense_1/kernel": (t, n), f"{b}token_mixing/Dense_1/bias": (n,),
                       f"{b}channel_mixing/Dense_0/kernel": (c, d), f"{b}channel_mixing/Dense_0/bias": (d,),
                       f"{b}channel_mixing/Dense_1/kernel": (d, c), f"{b}channel_mixing/Dense_1/bias": (c,)})
    shapes.update({"pre_head_layer_norm/scale": (c,), "pre_head_layer_norm/bias": (c,),
                   "head/kernel": (c, num_classes), "head/bias": (num_classes,)})
    return shapes


def expected_timm_shapes(dims: Mapping[str, int], num_classes: int) -> Dict[str, Shape]:
    official = expected_official_shapes(dims, num_classes)
    return {t: _permute_shape(official[o], _TO_TIMM_AXES.get(kind)) for o, t, kind in key_map(dims["num_blocks"])}


def check_layout(shapes: Mapping[str, Shape], expected: Mapping[str, Shape], source: str, layout: str) -> None:
    """Every expected key present with its shape, nothing else."""
    missing = [k for k in expected if k not in shapes]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConversionError(f"{source}: missing key {missing[0]!r}{more} of the {layout} layout")
    extra = [k for k in shapes if k not in expected]
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise ConversionError(f"{source}: unexpected key {extra[0]!r}{more}, not part of the {layout} layout")
    for key, shape in expected.items():
        if tuple(shapes[key]) != tuple(shape):
            raise ConversionError(f"{source}: key {key!r} has shape {tuple(shapes[key])}; expected {tuple(shape)}")


def _num_classes(shapes: Mapping[str, Shape], key: str, axis: int, source: str) -> int:
    shape = _shape_of(shapes, key, source, 2)
    return int(shape[axis])


def _check_values(array: Union[np.ndarray, torch.Tensor], key: str, source: str) -> None:
    if array.dtype == object or (isinstance(array, np.ndarray) and array.dtype.hasobject):
        raise ConversionError(f"{source}: key {key!r} holds Python objects; expected floating point numbers")
    tensor = torch.from_numpy(array) if isinstance(array, np.ndarray) else array.detach().cpu()
    if not tensor.is_floating_point():
        raise ConversionError(f"{source}: key {key!r} has dtype {array.dtype}; expected floating point numbers")
    # numpy's isfinite is several times faster than torch's here, and this runs over every byte
    finite = (np.isfinite(tensor.numpy()) if tensor.dtype in (torch.float16, torch.float32, torch.float64)
              else torch.isfinite(tensor).numpy())
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise ConversionError(f"{source}: key {key!r} contains {bad} NaN/Inf value(s)")


def _to_float32_tensor(array: Union[np.ndarray, torch.Tensor], axes: Optional[Tuple[int, ...]]) -> torch.Tensor:
    tensor = torch.from_numpy(np.asarray(array)) if not isinstance(array, torch.Tensor) else array
    if axes is not None:
        tensor = tensor.permute(*axes)
    return tensor.to(torch.float32).contiguous()


def npz_to_timm_state_dict(arrays: Mapping[str, Any], source: str = "<arrays>") -> Dict[str, torch.Tensor]:
    """Official-layout arrays (keys like ``MixerBlock_0/token_mixing/Dense_0/kernel``) -> timm state dict."""
    shapes = _shapes(arrays)
    dims = infer_dims(shapes, source)
    check_layout(shapes, expected_official_shapes(dims, _num_classes(shapes, "head/kernel", 1, source)),
                 source, "official Mixer")
    state_dict = {}
    for official, timm_key, kind in key_map(dims["num_blocks"]):
        _check_values(np.asarray(arrays[official]), official, source)
        state_dict[timm_key] = _to_float32_tensor(np.asarray(arrays[official]), _TO_TIMM_AXES.get(kind))
    return state_dict


def check_timm_state_dict(state_dict: Mapping[str, Any], source: str = "<state dict>") -> Dict[str, int]:
    """Validate a timm-layout Mixer state dict (keys, shapes, dtypes, finite values); return its dims."""
    shapes = _shapes(state_dict)
    dims = infer_dims_timm(shapes, source)
    check_layout(shapes, expected_timm_shapes(dims, _num_classes(shapes, "head.weight", 0, source)), source, "timm Mixer")
    for key, value in state_dict.items():
        _check_values(value, key, source)
    return dims


def timm_to_npz_arrays(state_dict: Mapping[str, Any], source: str = "<state dict>") -> Dict[str, np.ndarray]:
    """timm state dict -> arrays in the official layout (``np.savez(path, **arrays)`` writes the npz)."""
    dims = check_timm_state_dict(state_dict, source)
    arrays = {}
    for official, timm_key, kind in key_map(dims["num_blocks"]):
        tensor = state_dict[timm_key]
        tensor = tensor if isinstance(tensor, torch.Tensor) else torch.from_numpy(np.asarray(tensor))
        arrays[official] = _to_float32_tensor(tensor.detach().cpu(), _TO_OFFICIAL_AXES.get(kind)).numpy()
    return arrays


# ---- mmpretrain --------------------------------------------------------------------------------------------

# (timm key, mmpretrain key) templates: {i} is a block index, {p} weight or bias.
_TIMM_MMPRETRAIN_KEYS = [
    ("stem.proj.{p}", "backbone.patch_embed.projection.{p}"),
    ("blocks.{i}.norm1.{p}", "backbone.layers.{i}.ln1.{p}"),
    ("blocks.{i}.norm2.{p}", "backbone.layers.{i}.ln2.{p}"),
    ("blocks.{i}.mlp_tokens.fc1.{p}", "backbone.layers.{i}.token_mix.layers.0.0.{p}"),
    ("blocks.{i}.mlp_tokens.fc2.{p}", "backbone.layers.{i}.token_mix.layers.1.{p}"),
    ("blocks.{i}.mlp_channels.fc1.{p}", "backbone.layers.{i}.channel_mix.layers.0.0.{p}"),
    ("blocks.{i}.mlp_channels.fc2.{p}", "backbone.layers.{i}.channel_mix.layers.1.{p}"),
    ("norm.{p}", "backbone.ln1.{p}"),
    ("head.{p}", "head.fc.{p}"),
]


def _rename_rule(src: str, dst: str) -> Tuple[str, str]:
    """A key template pair -> (regex over ``src`` keys, replacement producing ``dst`` keys)."""
    groups: List[str] = []

    def capture(m: "re.Match[str]") -> str:
        groups.append(m.group(1))
        return r"(\d+)" if m.group(1) == "i" else "(weight|bias)"

    pattern = re.sub(r"\\\{([ip])\\\}", capture, re.escape(src))
    replacement = re.sub(r"\{([ip])\}", lambda m: f"\\{groups.index(m.group(1)) + 1}", dst)
    return pattern, replacement


_MMPRETRAIN_TO_TIMM = [_rename_rule(mm, timm) for timm, mm in _TIMM_MMPRETRAIN_KEYS]
_TIMM_TO_MMPRETRAIN = [_rename_rule(timm, mm) for timm, mm in _TIMM_MMPRETRAIN_KEYS]


def _rename(state_dict: Mapping[str, Any], rules: List[Tuple[str, str]], source: str, layout: str) -> Dict[str, Any]:
    out = {}
    for key, value in state_dict.items():
        for pattern, replacement in rules:
            if re.fullmatch(pattern, key):
                out[re.sub(pattern, replacement, key)] = value
                break
        else:
            raise ConversionError(f"{source}: unexpected key {key!r}, not part of the {layout} layout")
    return out


def is_mmpretrain_layout(state_dict: Mapping[str, Any]) -> bool:
    """mmpretrain ``MlpMixer`` keys (a classifier's ``backbone.*`` or a bare backbone's ``patch_embed.*``)."""
    return any(k.startswith(("backbone.", "patch_embed.")) for k in state_dict)


def mmpretrain_to_timm(state_dict: Mapping[str, Any], source: str = "<state dict>") -> Dict[str, torch.Tensor]:
    """An mmpretrain ``ImageClassifier`` (``MlpMixer`` backbone, ``LinearClsHead``) state dict -> timm layout.
    A bare backbone state dict (no ``backbone.`` prefix) is accepted too; then it has no head."""
    if not any(k.startswith("backbone.") for k in state_dict):
        state_dict = {f"backbone.{k}": v for k, v in state_dict.items()}
    renamed = _rename(state_dict, _MMPRETRAIN_TO_TIMM, source, "mmpretrain MlpMixer")
    return {k: renamed[k] for k in sorted(renamed, key=_timm_order(renamed))}


def timm_to_mmpretrain(state_dict: Mapping[str, Any], source: str = "<state dict>") -> Dict[str, torch.Tensor]:
    """timm layout -> mmpretrain ``ImageClassifier`` keys (``backbone.*``, ``head.fc.*``)."""
    return _rename(state_dict, _TIMM_TO_MMPRETRAIN, source, "timm Mixer")


def _timm_order(state_dict: Mapping[str, Any]):
    order = {t: i for i, (_, t, _) in enumerate(key_map(_count_blocks(state_dict, r"blocks\.(\d+)\.")))}
    return lambda k: order.get(k, len(order))


# ---- reading files ------------------------------------------------------------------------------------------

@dataclass
class NpzMember:
    """One array of an ``.npz``: where its raw bytes are, so it can be read on its own."""
    key: str
    shape: Shape
    dtype: np.dtype
    fortran_order: bool
    data_offset: Optional[int]  # None: compressed member, read through zipfile
    info: zipfile.ZipInfo

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def read_npz_index(path: PathLike) -> List[NpzMember]:
    """List the arrays of an ``.npz`` (names, shapes, dtypes, offsets) without reading their data."""
    path = Path(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ConversionError(f"{path}: not a readable .npz (zip) file: {e}") from None
    members = []
    file_size = path.stat().st_size
    with zf, open(path, "rb") as raw:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise ConversionError(f"{path}: unexpected member {info.filename!r}; an .npz holds only .npy arrays")
            key = info.filename[:-4]
            try:
                with zf.open(info) as fp:
                    version = np.lib.format.read_magic(fp)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, fortran_order, dtype = read_header(fp)
                    header_len = fp.tell()
            except (ValueError, zipfile.BadZipFile, OSError, EOFError) as e:
                raise ConversionError(f"{path}: key {key!r} is not a valid .npy array: {e}") from None
            if dtype.hasobject:
                raise ConversionError(f"{path}: key {key!r} holds pickled Python objects; refusing to unpickle")
            if dtype.kind != "f":
                raise ConversionError(f"{path}: key {key!r} has dtype {dtype}; expected floating point numbers")
            offset = None
            if info.compress_type == zipfile.ZIP_STORED:
                raw.seek(info.header_offset)
                local = raw.read(30)
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                offset = info.header_offset + 30 + name_len + extra_len + header_len
                member = NpzMember(key, tuple(shape), dtype, fortran_order, offset, info)
                if offset + member.nbytes > file_size:
                    raise ConversionError(f"{path}: key {key!r} is truncated")
            members.append(NpzMember(key, tuple(shape), dtype, fortran_order, offset, info))
    return members


def read_npz_member(path: PathLike, member: NpzMember, raw: Optional[Any] = None) -> np.ndarray:
    """One array, read straight into its own buffer (or decompressed, for ``savez_compressed`` files)."""
    if member.data_offset is None:
        with zipfile.ZipFile(path) as zf, zf.open(member.info) as fp:
            return np.lib.format.read_array(fp, allow_pickle=False)
    shape = member.shape[::-1] if member.fortran_order else member.shape
    array = np.empty(shape, dtype=member.dtype)
    with contextlib.ExitStack() as stack:
        f = raw or stack.enter_context(open(path, "rb"))
        f.seek(member.data_offset)
        if f.readinto(memoryview(array).cast("B")) != member.nbytes:
            raise ConversionError(f"{path}: key {member.key!r} is truncated")
    return array.T if member.fortran_order else array


def load_torch_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """A ``.pth`` state dict, read with ``weights_only=True`` (never unpickles arbitrary objects); mmengine
    checkpoints (``{"state_dict": ..., "meta": ...}``) are unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for bad or unsafe pickles
        raise ConversionError(f"{path}: not a loadable weights-only PyTorch checkpoint: {first_line(e)}") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError(f"{path}: expected a state dict of tensors")
    return dict(obj)


def load_timm_weights(path: PathLike) -> Dict[str, torch.Tensor]:
    """A timm-layout state dict from a converted folder, a ``.safetensors`` file or a ``.pth`` (timm or
    mmpretrain layout)."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except Exception as e:
            raise ConversionError(f"{path}: not a readable safetensors file: {e}") from None
    state_dict = load_torch_state_dict(path)
    if is_mmpretrain_layout(state_dict):
        return mmpretrain_to_timm(state_dict, str(path))
    return state_dict


# ---- writing the output folder -------------------------------------------------------------------------------

def _check_output(out_dir: Path, force: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConversionError(f"{out_dir}: exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not force:
        raise ConversionError(f"{out_dir}: output folder exists and is not empty (use --force to overwrite)")


@contextlib.contextmanager
def staging_folder(out_dir: PathLike, force: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``out_dir`` to write into; its files move into ``out_dir`` only if the block
    succeeds, otherwise it is deleted and ``out_dir`` is untouched."""
    out_dir = Path(out_dir)
    _check_output(out_dir, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    os.chmod(stage, umask_mode(0o777))
    try:
        yield stage
        _check_output(out_dir, force)  # someone may have written there meanwhile
        if out_dir.is_dir():
            for item in stage.iterdir():
                os.replace(item, out_dir / item.name)
            stage.rmdir()
        else:
            os.replace(stage, out_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _safetensors_header(entries: List[Tuple[str, Shape]], metadata: Mapping[str, str]) -> Tuple[bytes, int]:
    """The 8-byte length + JSON header of a float32 safetensors file whose tensors follow in ``entries`` order."""
    header: Dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    for name, shape in entries:
        nbytes = int(np.prod(shape, dtype=np.int64)) * 4
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    return struct.pack("<Q", len(blob)) + blob, offset


_SHA_PENDING = "?" * 64


class _FileHasher:
    """sha256 of a whole file, fed in order with the bytes the conversion reads anyway, on a worker thread
    (hashlib releases the GIL), so the file is read once and hashed alongside the transposes."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self.digest = hashlib.sha256()
        self.pool = pool  # one worker: updates run in submission order

    def update(self, data: Any) -> Future:
        return self.pool.submit(self.digest.update, data)

    def hexdigest(self) -> str:
        return self.pool.submit(self.digest.hexdigest).result()


def stream_npz_to_safetensors(src: PathLike, members: List[NpzMember], num_blocks: int, dst: PathLike,
                              metadata: Mapping[str, str], source_sha256: Optional[str] = None,
                              progress: bool = True) -> str:
    """Convert array by array into ``dst`` and return the source's sha256 (computed on the way unless given).

    The source is read front to back into two alternating buffers (one is hashed while the other fills),
    transposed into one reused output buffer and written; memory stays near three times the largest array.
    ``members`` must already be validated."""
    from tqdm.auto import tqdm

    src = Path(src)
    by_key = {m.key: m for m in members}
    rows = [(by_key[o], t, kind) for o, t, kind in key_map(num_blocks)]
    stored = all(m.data_offset is not None for m, _, _ in rows)
    if stored:
        rows.sort(key=lambda r: r[0].data_offset)  # read the source front to back
    metadata = dict(metadata, source_sha256=source_sha256 or _SHA_PENDING)
    header, total = _safetensors_header(
        [(t, _permute_shape(m.shape, _TO_TIMM_AXES.get(kind))) for m, t, kind in rows], metadata)
    largest = max(m.nbytes for m, _, _ in rows)
    in_buffers = [np.empty(largest, np.uint8), np.empty(largest, np.uint8)]
    pending: List[Optional[Future]] = [None, None]
    out_buffer = torch.empty(max(m.nbytes // m.dtype.itemsize for m, _, _ in rows), dtype=torch.float32)
    with contextlib.ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(1))
        hasher = _FileHasher(pool) if source_sha256 is None and stored else None
        whole_file = pool.submit(sha256_of, src) if source_sha256 is None and not stored else None
        raw = stack.enter_context(open(src, "rb"))
        out = stack.enter_context(open(dst, "wb"))
        bar = stack.enter_context(tqdm(total=total, unit="B", unit_scale=True, desc=f"converting {src.name}",
                                       disable=not progress or None, leave=False))
        out.write(header)
        for i, (member, timm_key, kind) in enumerate(rows):
            if stored:
                gap = raw.read(member.data_offset - raw.tell())  # zip and .npy headers
                if hasher:
                    hasher.update(gap)
                slot = i % 2
                if pending[slot] is not None:
                    pending[slot].result()  # the hash of what this buffer held before
                view = memoryview(in_buffers[slot])[:member.nbytes]
                if raw.readinto(view) != member.nbytes:
                    raise ConversionError(f"{src}: key {member.key!r} is truncated")
                if hasher:
                    pending[slot] = hasher.update(view)
                shape = member.shape[::-1] if member.fortran_order else member.shape
                array = np.frombuffer(view, dtype=member.dtype).reshape(shape)
                array = array.T if member.fortran_order else array
            else:
                array = read_npz_member(src, member)
            _check_values(array, member.key, str(src))
            source = torch.from_numpy(array)
            axes = _TO_TIMM_AXES.get(kind)
            if axes is None and source.dtype == torch.float32 and source.is_contiguous():
                out.write(array.data)  # nothing to change: write the bytes as read
            else:
                target = out_buffer[:source.numel()].view(_permute_shape(tuple(source.shape), axes))
                target.copy_(source.permute(*axes) if axes else source)
                out.write(target.numpy().data)
            bar.update(source.numel() * 4)
        if hasher:
            hasher.update(raw.read())  # the zip directory after the last array
            source_sha256 = hasher.hexdigest()
        elif whole_file:
            source_sha256 = whole_file.result()
        if metadata["source_sha256"] == _SHA_PENDING:
            out.seek(header.index(_SHA_PENDING.encode()))
            out.write(source_sha256.encode())
    return source_sha256


def timm_config(arch: str, num_classes: int, act_layer: str, pretrained_cfg: Mapping[str, Any],
                dims: Optional[Mapping[str, int]] = None) -> Dict[str, Any]:
    """``config.json`` in timm's Hub format; ``model_args`` carries what the architecture name does not."""
    from .zoo import ARCHITECTURES

    model_args: Dict[str, Any] = {"act_layer": act_layer}
    if dims and dims.get("img_size", 224) != 224:
        model_args["img_size"] = dims["img_size"]
    cfg = dict(pretrained_cfg)
    cfg.update(architecture=arch, num_classes=num_classes, custom_load=False)
    if "img_size" in model_args:
        cfg["input_size"] = [3, model_args["img_size"], model_args["img_size"]]
    for key in ("hf_hub_id", "url", "file", "source", "state_dict"):
        cfg.pop(key, None)  # where the weights are is decided by whoever loads the folder
    cfg = {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items() if v is not None}
    return dict(architecture=arch, num_classes=num_classes, num_features=ARCHITECTURES[arch]["embed_dim"],
                global_pool="avg", model_args=model_args, pretrained_cfg=cfg)


def pretrained_cfg_for(arch: str, entry: Mapping[str, Any]) -> Dict[str, Any]:
    """timm pretrained cfg (preprocessing, licence, paper) for a manifest entry, tag included."""
    from .zoo import pretrained_cfg_from_entry

    return dict(pretrained_cfg_from_entry(entry), architecture=arch, tag=entry["tag"])


def local_entry(arch: str, num_classes: int, act_layer: str, src: PathLike) -> Dict[str, Any]:
    """A manifest-like entry for a file the manifest does not know: Google's preprocessing (shared by all
    their Mixer releases), no claims about licence or accuracy."""
    from .manifest import weights_entries

    google = next((e for e in weights_entries().values() if e.get("source") and e["architecture"] == arch), None)
    google = google or next(e for e in weights_entries().values() if e.get("source"))
    return dict(
        architecture=arch, tag="local", act_layer=act_layer,
        source=dict(url=None, file=Path(src).name, format=None, sha256=None), hf_hub_id=None,
        num_classes=num_classes, label_set=google["label_set"] if num_classes == google["num_classes"] else None,
        input_size=list(google["input_size"]), crop_pct=google["crop_pct"], interpolation=google["interpolation"],
        mean=list(google["mean"]), std=list(google["std"]), license="unknown",
        paper={"name": "MLP-Mixer: An all-MLP Architecture for Vision", "arxiv": "2105.01601"},
        description=f"Converted from the local file {Path(src).name}.", metrics={"reported": {}, "measured": {}})


def _write_config_and_card(stage: Path, arch: str, num_classes: int, act_layer: str,
                           pretrained_cfg: Mapping[str, Any], entry: Mapping[str, Any], metadata: Mapping[str, str],
                           dims: Optional[Mapping[str, int]] = None) -> None:
    from .model_card import render_model_card

    config = timm_config(arch, num_classes, act_layer, pretrained_cfg, dims)
    (stage / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    (stage / "README.md").write_text(render_model_card(entry, extra=dict(metadata)), encoding="utf-8")


def _metadata(src: PathLike, sha256: Optional[str], layout: str) -> Dict[str, str]:
    meta = {"format": "pt", "source_file": Path(src).name, "source_layout": layout, "converter": CONVERTER_VERSION}
    if sha256:
        meta["source_sha256"] = sha256
    return meta


def write_converted_folder(state_dict: Mapping[str, torch.Tensor], dims: Mapping[str, int], out_dir: PathLike,
                           arch: str, num_classes: int, act_layer: str, pretrained_cfg: Mapping[str, Any],
                           metadata: Mapping[str, str], entry: Optional[Mapping[str, Any]] = None,
                           force: bool = False) -> Path:
    """Write ``model.safetensors`` + ``config.json`` + ``README.md`` for a timm-layout state dict, atomically.

    ``dims`` is what :func:`check_timm_state_dict` returned for it: the caller has validated it already."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    entry = entry or local_entry(arch, num_classes, act_layer, metadata.get("source_file", "state_dict"))
    pretrained_cfg = pretrained_cfg or pretrained_cfg_for(arch, entry)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in state_dict.items()}
    with staging_folder(out_dir, force) as stage:
        save_file(tensors, str(stage / "model.safetensors"), metadata={k: str(v) for k, v in metadata.items()})
        _write_config_and_card(stage, arch, num_classes, act_layer, pretrained_cfg, entry, metadata, dims)
    return out_dir


# ---- conversions --------------------------------------------------------------------------------------------

def _resolve_arch(dims: Mapping[str, int], arch: Optional[str], source: str) -> str:
    from .zoo import ARCHITECTURES

    if arch is None:
        return architecture_for_dims(dims, source)
    if arch not in ARCHITECTURES:
        raise ConversionError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
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
    _check_output(out_dir, force)
    members = read_npz_index(src)
    shapes = {m.key: m.shape for m in members}
    dims = infer_dims(shapes, str(src))
    arch = _resolve_arch(dims, arch, str(src))
    num_classes = _num_classes(shapes, "head/kernel", 1, str(src))
    check_layout(shapes, expected_official_shapes(dims, num_classes), str(src), "official Mixer")
    act_layer = act_layer or (entry["act_layer"] if entry else "gelu_tanh")  # flax's nn.gelu is the tanh form
    if verify:
        from .jax_reference import require_jax

        require_jax()
    with staging_folder(out_dir, force) as stage:
        metadata = _metadata(src, source_sha256, "jax_npz")
        metadata["source_sha256"] = stream_npz_to_safetensors(
            src, members, dims["num_blocks"], stage / "model.safetensors", metadata, source_sha256, progress)
        card_entry = entry or dict(local_entry(arch, num_classes, act_layer, src),
                                   source=dict(file=src.name, sha256=metadata["source_sha256"]))
        _write_config_and_card(stage, arch, num_classes, act_layer, pretrained_cfg_for(arch, card_entry), card_entry,
                               metadata, dims)
        if verify:
            from .report import format_table

            rows = verify_against_flax(src, stage)
            print(format_table(rows))
            check_parity(rows, act_layer, src)
    return out_dir


def convert_state_dict_file(src: PathLike, out_dir: PathLike, arch: Optional[str] = None, force: bool = False,
                            act_layer: Optional[str] = None, entry: Optional[Mapping[str, Any]] = None,
                            source_sha256: Optional[str] = None) -> Path:
    """A ``.pth`` in timm layout (timm's GitHub releases) or mmpretrain layout -> timm folder."""
    src = Path(src)
    _check_output(Path(out_dir), force)
    raw = load_torch_state_dict(src)
    mmpretrain = is_mmpretrain_layout(raw)
    state_dict = mmpretrain_to_timm(raw, str(src)) if mmpretrain else raw
    dims = check_timm_state_dict(state_dict, str(src))
    arch = _resolve_arch(dims, arch, str(src))
    # mmpretrain's MlpMixer uses the exact GELU; timm's releases of Google's weights come with their tag.
    act_layer = act_layer or (entry["act_layer"] if entry else "gelu")
    metadata = _metadata(src, source_sha256 or sha256_of(src), "mmpretrain" if mmpretrain else "timm")
    return write_converted_folder(state_dict, dims, out_dir, arch, int(state_dict["head.weight"].shape[0]), act_layer,
                                  pretrained_cfg_for(arch, entry) if entry else {}, metadata, entry=entry, force=force)


def convert_tag(tag: str, out_dir: PathLike, verify: bool = False, force: bool = False,
                cache_dir: Optional[PathLike] = None, progress: bool = True) -> Path:
    """Download the source of a manifest tag (``arch.tag``) through the cache and convert it."""
    from .download import download
    from .manifest import get_entry

    entry = get_entry(tag)
    source = entry.get("source") or {}
    if not source.get("url"):
        raise ConversionError(f"weights tag {tag!r} has no source to convert (manifest entry without a URL)")
    if source.get("format") not in ("jax_npz", "timm_pth"):
        raise ConversionError(f"weights tag {tag!r}: unknown source format {source.get('format')!r}")
    if verify and source["format"] != "jax_npz":
        raise ConversionError(f"{tag}: --verify compares against the JAX model and needs a jax_npz source")
    _check_output(Path(out_dir), force)
    known = source.get("sha256")
    known = known if known and known != "unverified" else None
    path = download(source["url"], sha256=known, cache_dir=cache_dir, progress=progress)
    # Without a known sha256 each converter hashes the file itself (the npz one while streaming it).
    if source["format"] == "jax_npz":
        return convert_npz(path, out_dir, arch=entry["architecture"], verify=verify, force=force,
                           act_layer=entry["act_layer"], entry=entry, source_sha256=known, progress=progress)
    return convert_state_dict_file(path, out_dir, arch=entry["architecture"], force=force,
                                   act_layer=entry["act_layer"], entry=entry, source_sha256=known)


def export_npz(src: PathLike, out_file: PathLike, force: bool = False) -> Path:
    """timm weights (converted folder, ``.safetensors`` or ``.pth``) -> official-layout ``.npz``."""
    out_file = Path(out_file)
    if out_file.exists() and not force:
        raise ConversionError(f"{out_file}: exists (use --force to overwrite)")
    arrays = timm_to_npz_arrays(load_timm_weights(src), str(src))
    return atomic_write(out_file, lambda f: np.savez(f, **arrays))


def export_mmpretrain(src: PathLike, out_file: PathLike, force: bool = False) -> Path:
    """timm weights -> an mmpretrain ``ImageClassifier`` checkpoint (``{"state_dict", "meta"}``)."""
    out_file = Path(out_file)
    if out_file.exists() and not force:
        raise ConversionError(f"{out_file}: exists (use --force to overwrite)")
    state_dict = load_timm_weights(src)
    check_timm_state_dict(state_dict, str(src))
    checkpoint = {"state_dict": timm_to_mmpretrain(state_dict, str(src)),
                  "meta": {"converter": CONVERTER_VERSION, "source_file": Path(src).name}}
    return atomic_write(out_file, lambda f: torch.save(checkpoint, f))


# ---- verification ----------------------------------------------------------------------------------------------

def verify_against_flax(npz_path: PathLike, model_dir: PathLike, batch_size: int = 2, seed: int = 0
                        ) -> List[Dict[str, Any]]:
    """Logits of the Flax reference on the npz vs our model built by timm from the folder, on one random batch,
    with the folder's GELU and with the other flavour (to show what the wrong one would cost)."""
    import timm

    from .jax_reference import flax_logits, load_official_npz

    params = load_official_npz(npz_path)
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    size = config["pretrained_cfg"].get("input_size", [3, 224, 224])[-1]
    images = np.random.default_rng(seed).standard_normal((batch_size, size, size, 3), dtype=np.float32)
    reference = flax_logits(params, images).astype(np.float64)
    del params
    rows = []
    for act_layer in (config["model_args"]["act_layer"], *({"gelu", "gelu_tanh"} - {config["model_args"]["act_layer"]})):
        model = timm.create_model(f"local-dir:{model_dir}", pretrained=True, act_layer=act_layer).eval()
        with torch.inference_mode():
            ours = model(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()).double().numpy()
        max_abs = float(np.abs(ours - reference).max())
        rows.append(dict(gelu=act_layer, batch=batch_size, max_abs_diff=max_abs,
                         max_rel_diff=max_abs / float(np.abs(reference).max()),
                         top1_agreement=float((ours.argmax(1) == reference.argmax(1)).mean())))
    return rows


def check_parity(rows: List[Dict[str, Any]], act_layer: str, source: PathLike,
                 tolerance: float = PARITY_TOLERANCE) -> None:
    row = next(r for r in rows if r["gelu"] == act_layer)
    if row["max_rel_diff"] > tolerance:
        raise ConversionError(f"{source}: converted model differs from the JAX reference by "
                              f"{row['max_rel_diff']:.3g} relative (tolerance {tolerance:g}); output not written")


# ---- command line ----------------------------------------------------------------------------------------------

def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", metavar="SRC", help="a JAX .npz, a .pth (timm or mmpretrain layout), a manifest tag "
                        "(arch.tag), or with --to npz/mmpretrain a converted folder or .safetensors")
    parser.add_argument("--out", required=True, help="output folder (or file with --to npz/mmpretrain)")
    parser.add_argument("--arch", help="architecture (inferred from the shapes when omitted)")
    parser.add_argument("--to", choices=("timm", "npz", "mmpretrain"), default="timm",
                        help="timm: a folder timm loads with local-dir: (default); npz: official JAX layout; "
                        "mmpretrain: an ImageClassifier checkpoint")
    parser.add_argument("--act-layer", choices=("gelu", "gelu_tanh"),
                        help="GELU flavour recorded in config.json (default: the tag's, gelu_tanh for JAX npz)")
    parser.add_argument("--verify", action="store_true", help="compare logits with the Flax reference ([jax] extra)")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    src = Path(args.src)
    if args.to == "npz":
        print(f"wrote {export_npz(src, args.out, force=args.force)}")
        return 0
    if args.to == "mmpretrain":
        print(f"wrote {export_mmpretrain(src, args.out, force=args.force)}")
        return 0
    if src.suffix == ".npz" or src.is_file() and zipfile.is_zipfile(src) and src.suffix not in (".pth", ".pt"):
        out = convert_npz(src, args.out, arch=args.arch, verify=args.verify, force=args.force,
                          act_layer=args.act_layer, progress=not args.quiet)
    elif src.suffix in (".pth", ".pt", ".bin"):
        if args.verify:
            raise ConversionError(f"{src}: --verify compares against the JAX model and needs an .npz source")
        out = convert_state_dict_file(src, args.out, arch=args.arch, force=args.force, act_layer=args.act_layer)
    elif not src.exists() and "/" not in args.src:
        out = convert_tag(args.src, args.out, verify=args.verify, force=args.force, progress=not args.quiet)
    else:
        raise FileNotFoundError(f"{src}: no such .npz/.pth file or manifest tag")
    print(f"wrote {out}/model.safetensors, config.json, README.md")
    return 0
