"""Higher-resolution fine-tuning (paper, Supplementary C): the token-mixing MLPs of weights trained at one size,
expanded block-diagonally for K times that size, mix each of the K×K image tiles exactly as at the base size."""
import json

import pytest
import timm
import torch
from safetensors.torch import save_file

from conftest import randomize_
from mixer_zoo.model.resolution import (ResolutionError, expand_token_mixing, pretrained_model_kwargs, scale_factor,
                                        token_groups)
from mixer_zoo.tools.convert import convert_state_dict_file

SHAPE = dict(patch_size=4, num_blocks=3, embed_dim=32, tokens_mlp_dim=24, channels_mlp_dim=64)


def mixer(img_size, tokens_mlp_dim=SHAPE["tokens_mlp_dim"]):
    shape = dict(SHAPE, tokens_mlp_dim=tokens_mlp_dim)
    return timm.create_model("mixer_custom_zoo", img_size=img_size, num_classes=7, act_layer="gelu_tanh",
                             **shape).eval()


@pytest.fixture(scope="module")
def base():
    """A 32 px model (8x8 tokens) with random weights everywhere."""
    return randomize_(mixer(32), seed=3)


def compose(images, k, layout="tiles", patch=SHAPE["patch_size"]):
    """One image K times larger whose patch grid holds the K² images' patches arranged as ``layout`` groups them
    (tiles: image g fills tile g; strided: image (a, b) takes every K-th patch from offset (a, b))."""
    n, c, h, w = images[0].shape
    gh, gw = h // patch, w // patch
    out = torch.empty(n, c, k * h, k * w)
    index = token_groups((gh, gw), k, layout)
    for g, img in enumerate(images):
        patches = img.reshape(n, c, gh, patch, gw, patch)
        for t, position in enumerate(index[g].tolist()):
            row, col = divmod(position, k * gw)
            out[:, :, row * patch:(row + 1) * patch, col * patch:(col + 1) * patch] = patches[:, :, t // gw, :, t % gw, :]
    return out


def token_mixing(block, tokens):
    """The block's token-mixing MLP on normalised tokens (B, N, C): what the expansion changes."""
    y = block.norm1(tokens).transpose(1, 2)
    tok = block.mlp_tokens
    y = torch.nn.functional.linear(torch.nn.functional.gelu(torch.nn.functional.linear(y, tok.fc1.weight, tok.fc1.bias),
                                                            approximate="tanh"), tok.fc2.weight, tok.fc2.bias)
    return y.transpose(1, 2)


def expanded(base, k, layout="tiles"):
    model = mixer(32 * k, tokens_mlp_dim=SHAPE["tokens_mlp_dim"] * k * k)
    model.load_state_dict(expand_token_mixing(base.state_dict(), k, layout=layout), strict=True)
    return model


# ---- the defining property ------------------------------------------------------------------------------------

def test_tiles_are_the_papers_k_by_k_equal_parts():
    index = token_groups((2, 3), 2)  # base grid 2x3, large grid 4x6
    assert index.tolist()[0] == [0, 1, 2, 6, 7, 8]  # top-left tile, row-major inside it
    assert index.tolist()[3] == [15, 16, 17, 21, 22, 23]  # bottom-right tile
    assert sorted(index.flatten().tolist()) == list(range(24))  # the parts cover every token once
    assert token_groups((2, 3), 2, "strided").tolist()[0] == [0, 2, 4, 12, 14, 16]


def block_inputs(model, x):
    """What each block's token mixing sees: the stem's tokens, then every block's output (B, N, C)."""
    _, outputs = model.forward_intermediates(x, output_fmt="NLC")
    return [model.stem(x)] + outputs[:-1]


@pytest.mark.parametrize("k,layout", [(2, "tiles"), (3, "tiles"), (2, "strided")])
def test_each_part_is_token_mixed_exactly_as_at_base_resolution(base, k, layout):
    images = [torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(k * k)]
    large = expanded(base, k, layout)
    index = token_groups((8, 8), k, layout)
    with torch.inference_mode():
        big = block_inputs(large, compose(images, k, layout))
        for g, img in enumerate(images):
            small = block_inputs(base, img)
            for b in range(SHAPE["num_blocks"]):
                torch.testing.assert_close(token_mixing(large.blocks[b], big[b])[:, index[g]],
                                           token_mixing(base.blocks[b], small[b]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layout", ["tiles", "strided"])
def test_whole_model_features_per_part_and_logits_are_the_base_models(base, layout):
    """Everything but token mixing acts per token, so every block output of part g is the base model's on image
    g, and the pooled logits are the mean of the K² base logits."""
    k = 2
    images = [torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(10 + i)) for i in range(4)]
    large = expanded(base, k, layout)
    index = token_groups((8, 8), k, layout)
    with torch.inference_mode():
        _, big = large.forward_intermediates(compose(images, k, layout), output_fmt="NLC")
        for g, img in enumerate(images):
            _, small = base.forward_intermediates(img, output_fmt="NLC")
            for b in range(SHAPE["num_blocks"]):
                torch.testing.assert_close(big[b][:, index[g]], small[b], rtol=1e-5, atol=1e-5)
        mean_logits = torch.stack([base(img) for img in images]).mean(0)
        torch.testing.assert_close(large(compose(images, k, layout)), mean_logits, rtol=1e-5, atol=1e-5)


def test_the_wrong_arrangement_breaks_the_property(base):
    """The check can fail: tiles-expanded weights on an image whose parts are strided do not give the mean."""
    images = [torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(20 + i)) for i in range(4)]
    large = expanded(base, 2, "tiles")
    with torch.inference_mode():
        mean_logits = torch.stack([base(img) for img in images]).mean(0)
        assert (large(compose(images, 2, "strided")) - mean_logits).abs().max() > 100 * 1e-5  # 100x the tolerance


def test_expansion_shapes_and_untouched_tensors(base):
    sd = base.state_dict()
    out = expand_token_mixing(sd, 3)
    assert out["blocks.0.mlp_tokens.fc1.weight"].shape == (24 * 9, 64 * 9)
    assert out["blocks.2.mlp_tokens.fc2.weight"].shape == (64 * 9, 24 * 9)
    assert out["blocks.1.mlp_tokens.fc2.bias"].shape == (64 * 9,)
    w1 = out["blocks.0.mlp_tokens.fc1.weight"]
    assert torch.count_nonzero(w1) == torch.count_nonzero(sd["blocks.0.mlp_tokens.fc1.weight"]) * 9  # only the copies
    for key, value in sd.items():
        if "mlp_tokens" not in key:
            assert out[key] is value, key
    assert all(torch.equal(v, sd[k]) for k, v in expand_token_mixing(sd, 1).items())


# ---- through timm: create_model(..., pretrained=True, img_size=K * size) ------------------------------------

@pytest.fixture(scope="module")
def folder(base, tmp_path_factory):
    """The base model converted like any user checkpoint: a .pth -> a timm folder (config.json, safetensors)."""
    root = tmp_path_factory.mktemp("res")
    torch.save(base.state_dict(), root / "base.pth")
    return convert_state_dict_file(root / "base.pth", root / "folder", act_layer="gelu_tanh")


def test_local_dir_at_twice_the_size_expands_and_keeps_the_function(base, folder):
    model = timm.create_model(f"local-dir:{folder}", pretrained=True, img_size=64).eval()
    assert model.stem.img_size == (64, 64)
    assert model.blocks[0].mlp_tokens.fc1.weight.shape == (SHAPE["tokens_mlp_dim"] * 4, 256)
    images = [torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(30 + i)) for i in range(4)]
    with torch.inference_mode():
        torch.testing.assert_close(model(compose(images, 2)), torch.stack([base(x) for x in images]).mean(0),
                                   rtol=1e-5, atol=1e-5)
    same = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()  # at its own size: unchanged
    assert same.blocks[0].mlp_tokens.fc1.weight.shape == (SHAPE["tokens_mlp_dim"], 64)


@pytest.mark.parametrize("size", [48, 16, 100, (64, 96)])
def test_other_sizes_are_a_clear_error_before_loading(folder, size):
    with pytest.raises(ResolutionError, match=r"trained at 32x32 px; img_size .* not an integer multiple.*64, 96"):
        timm.create_model(f"local-dir:{folder}", pretrained=True, img_size=size)
    timm.create_model(f"local-dir:{folder}", pretrained=False, img_size=48)  # without weights any size is a model


def test_an_expanded_fine_tuned_model_saves_and_reloads_at_its_new_size(folder, tmp_path):
    model = timm.create_model(f"local-dir:{folder}", pretrained=True, img_size=64).eval()
    with torch.no_grad():
        model.blocks[1].mlp_tokens.fc1.weight.add_(0.01)  # as fine-tuning would
    save_file(model.state_dict(), str(tmp_path / "ft.safetensors"))
    torch.save(model.state_dict(), tmp_path / "ft.pth")
    out = convert_state_dict_file(tmp_path / "ft.pth", tmp_path / "ft", act_layer="gelu_tanh")
    config = json.loads((out / "config.json").read_text())
    assert config["model_args"]["img_size"] == 64 and config["model_args"]["tokens_mlp_dim"] == 96
    assert config["pretrained_cfg"]["input_size"] == [3, 64, 64]
    again = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


def test_scale_factor_and_model_kwargs():
    assert scale_factor(224, 448) == 2 and scale_factor((3, 32, 32), (96, 96)) == 3 and scale_factor(32, 32) == 1
    for bad in (300, 112, (448, 224)):
        with pytest.raises(ResolutionError, match="224x224"):
            scale_factor(224, bad, "mixer_b16_zoo.goog_in1k")
    kwargs = pretrained_model_kwargs(dict(embed_dim=768, tokens_mlp_dim=384, img_size=448), (3, 224, 224), "x")
    assert kwargs["tokens_mlp_dim"] == 384 * 4
    assert pretrained_model_kwargs(dict(embed_dim=768, img_size=224), (3, 224, 224), "x") == dict(embed_dim=768,
                                                                                                 img_size=224)


def test_the_paper_model_with_a_tag_at_448(tmp_path):
    """A tag built at 448 from 224 px weights (a local file overlay: no download): S/32's 49 tokens -> 196."""
    source = randomize_(timm.create_model("mixer_s32_zoo", num_classes=10), seed=5).eval()
    save_file(source.state_dict(), str(tmp_path / "s32.safetensors"))
    overlay = dict(file=str(tmp_path / "s32.safetensors"), num_classes=10)
    model = timm.create_model("mixer_s32_zoo.gsam_in1k", pretrained=True, img_size=448, num_classes=10,
                              pretrained_cfg_overlay=overlay).eval()
    assert model.blocks[0].mlp_tokens.fc1.weight.shape == (256 * 4, 196)
    images = [torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(40 + i)) for i in range(4)]
    with torch.inference_mode():
        torch.testing.assert_close(model(compose(images, 2, patch=32)),
                                   torch.stack([source(x) for x in images]).mean(0), rtol=1e-4, atol=1e-4)
    with pytest.raises(ResolutionError, match="mixer_s32_zoo.gsam_in1k: trained at 224x224"):
        timm.create_model("mixer_s32_zoo.gsam_in1k", pretrained=True, img_size=320, pretrained_cfg_overlay=overlay)
