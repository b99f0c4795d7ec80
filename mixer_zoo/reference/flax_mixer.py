"""Google's Flax Mixer (``vit_jax/models_mixer.py``), rebuilt here as the reference conversions are checked
against, plus generators of official-layout checkpoints with random weights for tests and demos.

jax/flax are the optional ``[jax]`` extra, so they are imported inside functions only.
"""
from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Mapping, Union

import numpy as np

from ..formats.keys import infer_dims
from ..model.architectures import ARCHITECTURES
from ..util.report import atomic_write

DimsLike = Union[str, Mapping[str, int]]
DIM_KEYS = ("patch_size", "num_blocks", "embed_dim", "tokens_mlp_dim", "channels_mlp_dim")


def require_jax() -> None:
    """Fail with one line naming the extra, rather than an ImportError deep inside a conversion."""
    try:
        import flax  # noqa: F401
        import jax  # noqa: F401
    except ImportError as e:
        raise RuntimeError(f"the JAX reference needs the [jax] extra (pip install 'mixer-zoo[jax]'): {e}") from None


def resolve_dims(arch_or_dims: DimsLike) -> Dict[str, int]:
    """An architecture name of the zoo, or a dict of its hyper-parameters (plus optional ``img_size``)."""
    if isinstance(arch_or_dims, str):
        if arch_or_dims not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {arch_or_dims!r}; known: {', '.join(ARCHITECTURES)}")
        dims = dict(ARCHITECTURES[arch_or_dims])
    else:
        missing = [k for k in DIM_KEYS if k not in arch_or_dims]
        if missing:
            raise ValueError(f"Mixer dims lack {missing}; give all of {DIM_KEYS}")
        dims = {k: int(arch_or_dims[k]) for k in DIM_KEYS}
        if "img_size" in arch_or_dims:
            dims["img_size"] = int(arch_or_dims["img_size"])
    dims.setdefault("img_size", 224)
    return dims


@functools.lru_cache(maxsize=None)
def _modules() -> SimpleNamespace:
    """The linen modules, defined on first use so that importing this file does not import flax."""
    require_jax()
    import flax.linen as nn
    import jax.numpy as jnp

    class MlpBlock(nn.Module):
        mlp_dim: int

        @nn.compact
        def __call__(self, x):
            # The hidden layer is created first, so it is Dense_0 as in the official checkpoints.
            y = nn.Dense(self.mlp_dim)(x)
            y = nn.gelu(y)  # tanh approximation (flax's default)
            return nn.Dense(x.shape[-1])(y)

    class MixerBlock(nn.Module):
        tokens_mlp_dim: int
        channels_mlp_dim: int

        @nn.compact
        def __call__(self, x):
            y = nn.LayerNorm()(x)
            y = jnp.swapaxes(y, 1, 2)
            y = MlpBlock(self.tokens_mlp_dim, name="token_mixing")(y)
            y = jnp.swapaxes(y, 1, 2)
            x = x + y
            y = nn.LayerNorm()(x)
            return x + MlpBlock(self.channels_mlp_dim, name="channel_mixing")(y)

    class MlpMixer(nn.Module):
        num_classes: int
        num_blocks: int
        patch_size: int
        hidden_dim: int
        tokens_mlp_dim: int
        channels_mlp_dim: int

        @nn.compact
        def __call__(self, inputs):
            p = self.patch_size
            x = nn.Conv(self.hidden_dim, (p, p), strides=(p, p), name="stem")(inputs)
            n, h, w, c = x.shape
            x = x.reshape(n, h * w, c)
            for _ in range(self.num_blocks):
                x = MixerBlock(self.tokens_mlp_dim, self.channels_mlp_dim)(x)
            x = nn.LayerNorm(name="pre_head_layer_norm")(x)
            x = jnp.mean(x, axis=1)
            if self.num_classes:
                x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")(x)
            return x

    return SimpleNamespace(MlpBlock=MlpBlock, MixerBlock=MixerBlock, MlpMixer=MlpMixer)


def flax_mixer(arch_or_dims: DimsLike, num_classes: int = 1000) -> Any:
    """The official Flax ``MlpMixer`` for an architecture (or explicit dims)."""
    d = resolve_dims(arch_or_dims)
    return _modules().MlpMixer(
        num_classes=num_classes, num_blocks=d["num_blocks"], patch_size=d["patch_size"], hidden_dim=d["embed_dim"],
        tokens_mlp_dim=d["tokens_mlp_dim"], channels_mlp_dim=d["channels_mlp_dim"])


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    flat: Dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        flat.update(_flatten(v, key) if isinstance(v, Mapping) else {key: v})
    return flat


def flatten_params(tree: Mapping[str, Any]) -> Dict[str, np.ndarray]:
    """Nested Flax params -> ``{"MixerBlock_0/LayerNorm_0/scale": array}`` (the official npz keys)."""
    return {k: np.asarray(v) for k, v in _flatten(tree).items()}


def unflatten_params(flat: Mapping[str, np.ndarray]) -> Dict[str, Any]:
    tree: Dict[str, Any] = {}
    for key, value in flat.items():
        node = tree
        *parents, leaf = key.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def random_official_params(arch_or_dims: DimsLike, num_classes: int = 1000, seed: int = 0) -> Dict[str, np.ndarray]:
    """Official-layout float32 params with random values everywhere: LN scales near 1 with random biases,
    lecun-scaled kernels, non-zero biases and head, so a swapped, transposed or mislabelled tensor shows.

    The key structure comes from the Flax model itself (``jax.eval_shape`` of its init: no compute)."""
    import jax
    import jax.numpy as jnp

    d = resolve_dims(arch_or_dims)
    model = flax_mixer(d, num_classes)
    dummy = jax.ShapeDtypeStruct((1, d["img_size"], d["img_size"], 3), jnp.float32)
    shapes = jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x), dummy)["params"]
    rng = np.random.default_rng(seed)
    params = {}
    for key, spec in _flatten(shapes).items():
        shape = tuple(spec.shape)
        if key.endswith("/scale"):
            value = 1.0 + 0.1 * rng.standard_normal(shape, dtype=np.float32)
        elif key.endswith("/bias"):
            value = 0.05 * rng.standard_normal(shape, dtype=np.float32)
        else:  # kernel: fan_in is every axis but the last (HWIO conv, (in, out) dense)
            fan_in = int(np.prod(shape[:-1]))
            value = rng.standard_normal(shape, dtype=np.float32)
            value *= np.float32(1.0 / np.sqrt(fan_in))
        params[key] = value.astype(np.float32, copy=False)
    return params


def make_official_npz(path: Union[str, Path], arch_or_dims: DimsLike = "mixer_s32_zoo", num_classes: int = 1000,
                      seed: int = 0) -> Path:
    """Write a random checkpoint in the exact layout of Google's released ``Mixer-*.npz`` files."""
    path = Path(path)
    params = random_official_params(arch_or_dims, num_classes, seed)
    # np.savez gets a file object, so it does not append ".npz" to the name
    atomic_write(path, lambda f: np.savez(f, **params))
    return path


def load_official_npz(path: Union[str, Path]) -> Dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def flax_logits(params: Mapping[str, np.ndarray], images_nhwc: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """Run the official model on flat official-layout params; the architecture is read from their shapes.

    ``dtype=np.float64`` runs it in double precision (jax's x64 mode, inside this call only), with the params
    and images cast exactly: the reference that float32 implementations are measured against."""
    import jax

    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"flax_logits runs in float32 or float64, not {dtype}")
    dims = infer_dims({k: tuple(v.shape) for k, v in params.items()})
    num_classes = params["head/bias"].shape[0] if "head/bias" in params else 0
    model = flax_mixer(dims, num_classes)
    with jax.enable_x64(dtype == np.float64):
        tree = jax.tree_util.tree_map(lambda a: jax.numpy.asarray(np.asarray(a, dtype)), unflatten_params(params))
        out = jax.jit(model.apply)({"params": tree}, jax.numpy.asarray(np.asarray(images_nhwc, dtype)))
        out = np.asarray(out)
    if out.dtype != dtype:
        raise RuntimeError(f"the Flax reference ran in {out.dtype}, not {dtype}")
    return out
