"""The one key-mapping table between Google's official Mixer layout and timm's, mmpretrain's and MindSpore's, and
the shape checks every format shares (dims read from shapes, expected shapes, finite values)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple, Union

import numpy as np
import torch

from ..model.architectures import ARCHITECTURES, CUSTOM_ARCHITECTURE

PathLike = Union[str, Path]
Shape = Tuple[int, ...]


class ConversionError(ValueError):
    """A checkpoint that cannot be converted; the message names the file and the key."""


class CorruptFileError(ConversionError):
    """The file's own structure says it is damaged (CRC mismatch, truncated, sizes that do not add up)."""


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


TO_TIMM_AXES = {"conv": (3, 2, 0, 1), "dense": (1, 0)}
TO_OFFICIAL_AXES = {"conv": (2, 3, 1, 0), "dense": (1, 0)}


def permute_shape(shape: Shape, axes: Optional[Tuple[int, ...]]) -> Shape:
    return tuple(shape) if axes is None else tuple(shape[a] for a in axes)


def shapes_of(arrays: Mapping[str, Any]) -> Dict[str, Shape]:
    """Accept arrays, tensors or bare shapes."""
    return {k: tuple(v.shape) if hasattr(v, "shape") else tuple(v) for k, v in arrays.items()}


def shape_of(shapes: Mapping[str, Shape], key: str, source: str, ndim: int) -> Shape:
    if key not in shapes:
        raise ConversionError(f"{source}: missing key {key!r}")
    if len(shapes[key]) != ndim:
        raise ConversionError(f"{source}: key {key!r} has shape {shapes[key]}; expected {ndim} dimensions")
    return shapes[key]


def count_blocks(keys: Any, pattern: str) -> int:
    indices = {int(m.group(1)) for k in keys for m in [re.match(pattern, k)] if m}
    return max(indices) + 1 if indices else 0


def grid_img_size(num_tokens: int, patch_size: int, source: str, key: str) -> int:
    side = int(round(num_tokens ** 0.5))
    if side * side != num_tokens:
        raise ConversionError(f"{source}: key {key!r} mixes {num_tokens} tokens, not a square grid of patches")
    return side * patch_size


def infer_dims(arrays: Mapping[str, Any], source: str = "<arrays>") -> Dict[str, int]:
    """Hyper-parameters of an official-layout checkpoint read from its shapes (and its image size from the
    token count)."""
    shapes = shapes_of(arrays)
    ph, pw, in_chans, width = shape_of(shapes, "stem/kernel", source, 4)
    if ph != pw or in_chans != 3:
        raise ConversionError(f"{source}: key 'stem/kernel' has shape {shapes['stem/kernel']}; expected (p, p, 3, width)")
    num_tokens, tokens_mlp = shape_of(shapes, "MixerBlock_0/token_mixing/Dense_0/kernel", source, 2)
    _, channels_mlp = shape_of(shapes, "MixerBlock_0/channel_mixing/Dense_0/kernel", source, 2)
    return dict(patch_size=ph, num_blocks=count_blocks(shapes, r"MixerBlock_(\d+)/"), embed_dim=width,
                tokens_mlp_dim=tokens_mlp, channels_mlp_dim=channels_mlp,
                img_size=grid_img_size(num_tokens, ph, source, "MixerBlock_0/token_mixing/Dense_0/kernel"))


def infer_dims_timm(state_dict: Mapping[str, Any], source: str = "<state dict>") -> Dict[str, int]:
    """The same, for a timm-layout state dict."""
    shapes = shapes_of(state_dict)
    width, in_chans, ph, pw = shape_of(shapes, "stem.proj.weight", source, 4)
    if ph != pw or in_chans != 3:
        raise ConversionError(f"{source}: key 'stem.proj.weight' has shape {shapes['stem.proj.weight']}; "
                              "expected (width, 3, p, p)")
    tokens_mlp, num_tokens = shape_of(shapes, "blocks.0.mlp_tokens.fc1.weight", source, 2)
    channels_mlp, _ = shape_of(shapes, "blocks.0.mlp_channels.fc1.weight", source, 2)
    return dict(patch_size=ph, num_blocks=count_blocks(shapes, r"blocks\.(\d+)\."), embed_dim=width,
                tokens_mlp_dim=tokens_mlp, channels_mlp_dim=channels_mlp,
                img_size=grid_img_size(num_tokens, ph, source, "blocks.0.mlp_tokens.fc1.weight"))


def architecture_for_dims(dims: Mapping[str, int], source: str = "<arrays>") -> str:
    """The paper's architecture with these patch size, width, depth and MLP sizes (at any image size), else
    the generic ``mixer_custom_zoo``, which takes the shape as arguments."""
    for name, arch in ARCHITECTURES.items():
        if all(arch[k] == dims[k] for k in arch):
            return name
    return CUSTOM_ARCHITECTURE


def infer_architecture(arrays: Mapping[str, Any], source: str = "<arrays>") -> str:
    """The zoo architecture of official-layout arrays (``mixer_custom_zoo`` for a shape outside the table)."""
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
    return {t: permute_shape(official[o], TO_TIMM_AXES.get(kind)) for o, t, kind in key_map(dims["num_blocks"])}


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


def num_classes_of(shapes: Mapping[str, Shape], key: str, axis: int, source: str) -> int:
    shape = shape_of(shapes, key, source, 2)
    if shape[axis] < 1:
        raise ConversionError(f"{source}: key {key!r} has shape {tuple(shape)}: a head with {shape[axis]} classes; "
                              "a classifier needs at least one")
    return int(shape[axis])


def check_values(array: Union[np.ndarray, torch.Tensor], key: str, source: str) -> None:
    if array.dtype == object or (isinstance(array, np.ndarray) and array.dtype.hasobject):
        raise ConversionError(f"{source}: key {key!r} holds Python objects; expected floating point numbers")
    if isinstance(array, np.ndarray) and array.dtype.kind == "f" and (
            array.dtype.name not in ("float16", "float32", "float64") or not array.dtype.isnative):
        raise ConversionError(f"{source}: key {key!r} has dtype {array.dtype.str}; expected native-endian "
                              "float16/float32/float64")
    tensor = torch.from_numpy(array) if isinstance(array, np.ndarray) else array.detach().cpu()
    if not tensor.is_floating_point():
        raise ConversionError(f"{source}: key {key!r} has dtype {array.dtype}; expected floating point numbers")
    # numpy's isfinite is several times faster than torch's here, and this runs over every byte
    finite = (np.isfinite(tensor.numpy()) if tensor.dtype in (torch.float16, torch.float32, torch.float64)
              else torch.isfinite(tensor).numpy())
    if not finite.all():
        bad = int(finite.size - np.count_nonzero(finite))
        raise ConversionError(f"{source}: key {key!r} contains {bad} NaN/Inf value(s)")


def to_float32_tensor(array: Union[np.ndarray, torch.Tensor], axes: Optional[Tuple[int, ...]]) -> torch.Tensor:
    tensor = torch.from_numpy(np.asarray(array)) if not isinstance(array, torch.Tensor) else array
    if axes is not None:
        tensor = tensor.permute(*axes)
    return tensor.to(torch.float32).contiguous()


# (timm key, mmpretrain key) templates: {i} is a block index, {p} weight or bias.
TIMM_MMPRETRAIN_KEYS = [
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


MMPRETRAIN_TO_TIMM = [_rename_rule(mm, timm) for timm, mm in TIMM_MMPRETRAIN_KEYS]
TIMM_TO_MMPRETRAIN = [_rename_rule(timm, mm) for timm, mm in TIMM_MMPRETRAIN_KEYS]

# (timm key, MindSpore parameter name) templates of MindSpore's Mixer release (mindspore-courses/applications
# mlpMixer/src/model: mindvision's BaseClassifier(backbone, head=DenseHead), PatchEmbedding.conv, FeedForward
# dense1/dense2). nn.Dense weights are (out, in) and nn.Conv2d weights OIHW, as in torch: nothing is transposed;
# nn.LayerNorm names its weight and bias gamma and beta.
_MS_BLOCK = "backbone.mixer_blocks.layers.{i}."
TIMM_MINDSPORE_KEYS = [
    ("stem.proj.{p}", "backbone.patch_embedding.conv.{p}"),
    ("blocks.{i}.norm1.weight", _MS_BLOCK + "token_mixer.norm.gamma"),
    ("blocks.{i}.norm1.bias", _MS_BLOCK + "token_mixer.norm.beta"),
    ("blocks.{i}.mlp_tokens.fc1.{p}", _MS_BLOCK + "token_mixer.token_mixing_mlp.dense1.{p}"),
    ("blocks.{i}.mlp_tokens.fc2.{p}", _MS_BLOCK + "token_mixer.token_mixing_mlp.dense2.{p}"),
    ("blocks.{i}.norm2.weight", _MS_BLOCK + "channel_mixer.norm.gamma"),
    ("blocks.{i}.norm2.bias", _MS_BLOCK + "channel_mixer.norm.beta"),
    ("blocks.{i}.mlp_channels.fc1.{p}", _MS_BLOCK + "channel_mixer.channel_mixing_mlp.dense1.{p}"),
    ("blocks.{i}.mlp_channels.fc2.{p}", _MS_BLOCK + "channel_mixer.channel_mixing_mlp.dense2.{p}"),
    ("norm.weight", "backbone.norm.gamma"),
    ("norm.bias", "backbone.norm.beta"),
    ("head.{p}", "head.dense.{p}"),
]
MINDSPORE_TO_TIMM = [_rename_rule(ms, timm) for timm, ms in TIMM_MINDSPORE_KEYS]
TIMM_TO_MINDSPORE = [_rename_rule(timm, ms) for timm, ms in TIMM_MINDSPORE_KEYS]


def renamed(key: str, rules: List[Tuple[str, str]]) -> Optional[str]:
    """``key`` under the first rule that matches it; None when none does."""
    for pattern, replacement in rules:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def rename_keys(state_dict: Mapping[str, Any], rules: List[Tuple[str, str]], source: str, layout: str) -> Dict[str, Any]:
    out = {}
    for key, value in state_dict.items():
        new = renamed(key, rules)
        if new is None:
            raise ConversionError(f"{source}: unexpected key {key!r}, not part of the {layout} layout")
        out[new] = value
    return out


def timm_order(state_dict: Mapping[str, Any]):
    order = {t: i for i, (_, t, _) in enumerate(key_map(count_blocks(state_dict, r"blocks\.(\d+)\.")))}
    return lambda k: order.get(k, len(order))


def check_timm_state_dict(state_dict: Mapping[str, Any], source: str = "<state dict>") -> Dict[str, int]:
    """Validate a timm-layout Mixer state dict (keys, shapes, dtypes, finite values); return its dims."""
    shapes = shapes_of(state_dict)
    dims = infer_dims_timm(shapes, source)
    check_layout(shapes, expected_timm_shapes(dims, num_classes_of(shapes, "head.weight", 0, source)), source, "timm Mixer")
    for key, value in state_dict.items():
        check_values(value, key, source)
    return dims
