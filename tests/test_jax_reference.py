"""The Flax reference is Google's Mixer: its parameter names and shapes, and its arithmetic."""
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("flax")

from mixer_zoo.reference.flax_mixer import flax_logits, load_official_npz, make_official_npz, random_official_params, resolve_dims  # noqa: E402

TINY = dict(patch_size=4, num_blocks=2, embed_dim=8, tokens_mlp_dim=6, channels_mlp_dim=12, img_size=8)


def test_parameter_names_and_shapes_are_the_official_ones():
    params = random_official_params(dict(TINY, num_blocks=1), num_classes=5)
    n, c = 4, 8  # (8 / 4) ** 2 tokens, width 8
    assert {k: v.shape for k, v in params.items()} == {
        "stem/kernel": (4, 4, 3, c), "stem/bias": (c,),
        "MixerBlock_0/LayerNorm_0/scale": (c,), "MixerBlock_0/LayerNorm_0/bias": (c,),
        # Dense_0 is the hidden layer (created first), Dense_1 projects back.
        "MixerBlock_0/token_mixing/Dense_0/kernel": (n, 6), "MixerBlock_0/token_mixing/Dense_0/bias": (6,),
        "MixerBlock_0/token_mixing/Dense_1/kernel": (6, n), "MixerBlock_0/token_mixing/Dense_1/bias": (n,),
        "MixerBlock_0/LayerNorm_1/scale": (c,), "MixerBlock_0/LayerNorm_1/bias": (c,),
        "MixerBlock_0/channel_mixing/Dense_0/kernel": (c, 12), "MixerBlock_0/channel_mixing/Dense_0/bias": (12,),
        "MixerBlock_0/channel_mixing/Dense_1/kernel": (12, c), "MixerBlock_0/channel_mixing/Dense_1/bias": (c,),
        "pre_head_layer_norm/scale": (c,), "pre_head_layer_norm/bias": (c,),
        "head/kernel": (c, 5), "head/bias": (5,),
    }
    assert all(v.dtype == np.float32 for v in params.values())


def _numpy_mixer(p, images, gelu):
    """The paper's equations written out in numpy (LN eps 1e-6), independent of Flax."""
    def ln(x, prefix):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-6) * p[f"{prefix}/scale"] + p[f"{prefix}/bias"]

    def mlp(x, prefix):
        h = gelu(x @ p[f"{prefix}/Dense_0/kernel"] + p[f"{prefix}/Dense_0/bias"])
        return h @ p[f"{prefix}/Dense_1/kernel"] + p[f"{prefix}/Dense_1/bias"]

    k = p["stem/kernel"]
    s = k.shape[0]
    b, h, w, _ = images.shape
    patches = images.reshape(b, h // s, s, w // s, s, 3).transpose(0, 1, 3, 2, 4, 5).reshape(b, -1, s * s * 3)
    x = patches @ k.reshape(-1, k.shape[-1]) + p["stem/bias"]
    i = 0
    while f"MixerBlock_{i}/LayerNorm_0/scale" in p:
        x = x + mlp(ln(x, f"MixerBlock_{i}/LayerNorm_0").swapaxes(1, 2), f"MixerBlock_{i}/token_mixing").swapaxes(1, 2)
        x = x + mlp(ln(x, f"MixerBlock_{i}/LayerNorm_1"), f"MixerBlock_{i}/channel_mixing")
        i += 1
    return ln(x, "pre_head_layer_norm").mean(1) @ p["head/kernel"] + p["head/bias"]


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))


def _gelu_erf(x):
    from math import erf

    return 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))


def test_forward_is_the_papers_mixer_with_tanh_gelu():
    params = {k: v.astype(np.float64) for k, v in random_official_params(TINY, num_classes=7, seed=3).items()}
    images = np.random.default_rng(0).standard_normal((3, 8, 8, 3))
    ours = flax_logits(params, images)
    tanh = _numpy_mixer(params, images, _gelu_tanh)
    erf = _numpy_mixer(params, images, _gelu_erf)
    scale = np.abs(tanh).max()
    assert np.abs(ours - tanh).max() / scale < 1e-5
    assert np.abs(ours - erf).max() / scale > 10 * np.abs(ours - tanh).max() / scale  # it is not the erf GELU


def test_make_official_npz_writes_random_non_trivial_weights(tmp_path):
    path = make_official_npz(tmp_path / "Mixer-T.npz", TINY, num_classes=4, seed=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Mixer-T.npz"]  # no temp file left, no ".npz" appended
    arrays = load_official_npz(path)  # allow_pickle=False inside
    assert arrays.keys() == random_official_params(TINY, 4).keys()
    assert not np.allclose(arrays["MixerBlock_1/LayerNorm_1/scale"], 1.0)
    assert np.abs(arrays["pre_head_layer_norm/bias"]).min() > 0
    assert np.abs(arrays["head/kernel"]).min() > 0 and np.abs(arrays["head/bias"]).min() > 0
    again = load_official_npz(make_official_npz(tmp_path / "again.npz", TINY, num_classes=4, seed=1))
    other = load_official_npz(make_official_npz(tmp_path / "other.npz", TINY, num_classes=4, seed=2))
    assert all(np.array_equal(arrays[k], again[k]) for k in arrays)
    assert not np.array_equal(arrays["head/kernel"], other["head/kernel"])


def test_architecture_names_resolve_to_the_zoo_dims():
    assert resolve_dims("mixer_b16_zoo") == dict(patch_size=16, num_blocks=12, embed_dim=768, tokens_mlp_dim=384,
                                                 channels_mlp_dim=3072, img_size=224)
    with pytest.raises(ValueError, match="unknown architecture 'mixer_x9'"):
        resolve_dims("mixer_x9")


def test_importing_the_module_does_not_import_jax():
    code = "import sys, mixer_zoo.reference.flax_mixer; print('jax' in sys.modules, 'flax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
