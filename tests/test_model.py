"""The model class: timm's MlpMixer layout and outputs, the timm model API, and clear errors."""
import pytest
import timm
import torch
from timm.layers import GELUTanh

from conftest import pool_storages, randomize_, run_in_threads
from mixer_zoo import Mixer
from mixer_zoo.model import gelu_approximation

SMALL = dict(patch_size=16, num_blocks=2, embed_dim=64, tokens_mlp_dim=32, channels_mlp_dim=256)


def timm_twin(ours: Mixer, timm_name: str, **kwargs) -> torch.nn.Module:
    """timm's own MlpMixer with the same GELU, loaded with our weights (strict)."""
    act = GELUTanh if ours.act_layer == "gelu_tanh" else torch.nn.GELU
    ref = timm.create_model(timm_name, act_layer=act, **kwargs)
    ref.load_state_dict(ours.state_dict(), strict=True)
    return ref.eval()


@pytest.mark.parametrize("ours_name,timm_name,img_size", [
    ("mixer_s32_zoo", "mixer_s32_224", 224),
    ("mixer_b16_zoo", "mixer_b16_224", 224),
    ("mixer_s16_zoo", "mixer_s16_224", 160),
])
@pytest.mark.parametrize("act", ["gelu", "gelu_tanh"])
def test_logits_equal_timm_mlpmixer_with_same_weights(ours_name, timm_name, img_size, act):
    ours = randomize_(timm.create_model(ours_name, act_layer=act, img_size=img_size)).eval()
    ref = timm_twin(ours, timm_name, img_size=img_size)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert all(ours.state_dict()[k].shape == v.shape for k, v in ref.state_dict().items())
    x = torch.randn(2, 3, img_size, img_size)
    with torch.inference_mode():
        ours_out, ref_out = ours(x), ref(x)
    assert ours_out.shape == (2, 1000)
    torch.testing.assert_close(ours_out, ref_out, rtol=1e-5, atol=1e-5)


def test_training_path_matches_inference_path_and_timm_gradients():
    ours = randomize_(Mixer(**SMALL, num_classes=7, img_size=64))
    from timm.models.mlp_mixer import MlpMixer

    ref = MlpMixer(num_classes=7, img_size=64, patch_size=16, num_blocks=2, embed_dim=64)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(3, 3, 64, 64)
    ours.eval(), ref.eval()
    with torch.no_grad():
        fast = ours(x)
    ours.train(), ref.train()  # no dropout configured: train() only switches the code path
    slow = ours(x)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    slow.square().sum().backward()
    ref(x).square().sum().backward()
    ref_grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_grads[name].grad, rtol=1e-4, atol=1e-5, msg=name)


def test_bf16_autocast_matches_timm_in_dtype_and_value():
    ours = randomize_(timm.create_model("mixer_s32_zoo")).eval()
    ref = timm_twin(ours, "mixer_s32_224")
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours_out, ref_out = ours(x), ref(x)
        inter = ours.forward_intermediates(x, indices=1, intermediates_only=True, output_fmt="NLC")[0]
        ref_inter = ref.forward_intermediates(x, indices=1, intermediates_only=True, output_fmt="NLC")[0]
    assert inter.dtype == ref_inter.dtype  # the residual stream's precision follows timm's
    assert ours_out.dtype == ref_out.dtype
    torch.testing.assert_close(ours_out.float(), ref_out.float(), rtol=0, atol=2e-2)


def test_torch_compile_gives_the_eager_logits():
    """``mixer-zoo bench --compile``: the oneDNN-fused CPU path is eager-only, compile traces plain ops."""
    ours = randomize_(Mixer(img_size=32, **{**SMALL, "patch_size": 8}, num_classes=10)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        eager, compiled = ours(x), torch.compile(ours)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def test_gelu_flavours_differ_and_tanh_is_what_flax_computes():
    x = torch.linspace(-4, 4, 101)
    tanh = Mixer(**SMALL, act_layer="gelu_tanh").blocks[0].approximate
    assert tanh == "tanh" and gelu_approximation("gelu") == "none"
    assert gelu_approximation(GELUTanh) == "tanh" and gelu_approximation(torch.nn.GELU) == "none"
    assert (torch.nn.functional.gelu(x, approximate="tanh") - torch.nn.functional.gelu(x)).abs().max() > 1e-4
    with pytest.raises(ValueError, match="act_layer must be one of"):
        Mixer(**SMALL, act_layer="relu")


def test_grad_checkpointing_gives_equal_outputs_and_grads():
    model = randomize_(Mixer(**SMALL, img_size=64, num_classes=5)).train()
    x = torch.randn(2, 3, 64, 64)
    plain = model(x)
    plain.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    ckpt = model(x)
    ckpt.sum().backward()
    torch.testing.assert_close(plain, ckpt)
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], msg=n)


def test_forward_features_and_head_split():
    model = randomize_(timm.create_model("mixer_s32_zoo", num_classes=10)).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        feats = model.forward_features(x)
        assert feats.shape == (2, 49, 512)
        torch.testing.assert_close(model.forward_head(feats), model(x))
        assert model.forward_head(feats, pre_logits=True).shape == (2, 512)


def test_reset_and_get_classifier():
    model = timm.create_model("mixer_s32_zoo")
    model.reset_classifier(10)
    assert model.get_classifier().out_features == 10 and model.num_classes == 10
    model.reset_classifier(0)
    with torch.inference_mode():
        assert model.eval()(torch.randn(1, 3, 224, 224)).shape == (1, 512)
    model.reset_classifier(0, global_pool="")
    with torch.inference_mode():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 49, 512)


def test_forward_intermediates_match_timm():
    ours = randomize_(timm.create_model("mixer_s32_zoo")).eval()
    ref = timm_twin(ours, "mixer_s32_224")
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        for kwargs in (dict(indices=3), dict(indices=[0, -1], norm=True, output_fmt="NLC")):
            final, inter = ours.forward_intermediates(x, **kwargs)
            ref_final, ref_inter = ref.forward_intermediates(x, **kwargs)
            torch.testing.assert_close(final, ref_final, rtol=1e-5, atol=1e-5)
            assert len(inter) == len(ref_inter)
            for a, b in zip(inter, ref_inter):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)
        only = ours.forward_intermediates(x, indices=[1], intermediates_only=True, stop_early=True)
        assert len(only) == 1 and only[0].shape == (2, 512, 7, 7)


def test_prune_intermediate_layers_keeps_what_is_asked():
    model = timm.create_model("mixer_s32_zoo")
    assert model.prune_intermediate_layers([1, 3]) == [1, 3]
    assert len(model.blocks) == 4 and model.num_classes == 0


def test_group_matcher_covers_every_parameter():
    from timm.models import group_parameters

    model = timm.create_model("mixer_s32_zoo")
    groups = group_parameters(model, model.group_matcher())
    assert sum(len(g) for g in groups.values()) == len(list(model.parameters()))


def test_drop_path_and_dropout_are_active_in_training_only():
    model = randomize_(Mixer(**SMALL, img_size=64, drop_path_rate=0.5, proj_drop_rate=0.2, drop_rate=0.2))
    x = torch.randn(4, 3, 64, 64)
    model.train()
    assert not torch.allclose(model(x), model(x))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))


@pytest.mark.parametrize("img_size", [100, 225])
def test_img_size_not_divisible_by_patch_is_a_clear_error(img_size):
    with pytest.raises(ValueError, match="not divisible by patch_size 16"):
        timm.create_model("mixer_b16_zoo", img_size=img_size)


def test_wrong_input_size_is_a_clear_error():
    model = timm.create_model("mixer_s32_zoo").eval()
    with pytest.raises(ValueError, match=r"does not match the model's img_size \(224, 224\)"):
        model(torch.randn(1, 3, 256, 256))


@pytest.mark.parametrize("path", ["plain", "fused"])
def test_inference_kernels_leave_block_inputs_and_captured_outputs_alone(path):
    """The plain kernel writes its result into the block's own residual buffer: nothing a caller holds may change."""
    from mixer_zoo.tools.bench import forced_cpu_path

    model = randomize_(Mixer(num_classes=10, img_size=32, patch_size=8, num_blocks=3, embed_dim=64)).eval()
    for block in model.blocks:
        block.chunk_bytes = 1  # one image at a time: each chunk writes into the one output tensor
    captured = []
    hooks = [b.register_forward_hook(lambda m, i, o: captured.append((i[0], i[0].clone(), o, o.clone())))
             for b in model.blocks]
    images = torch.randn(2, 3, 32, 32)
    with forced_cpu_path(path), torch.no_grad():
        logits = model(images)
    for h in hooks:
        h.remove()
    assert len(captured) == 3
    for block_in, block_in_then, block_out, block_out_then in captured:
        assert torch.equal(block_in, block_in_then) and torch.equal(block_out, block_out_then)
    with torch.enable_grad():  # the autograd path allocates every tensor afresh: the reference
        assert torch.allclose(model(images), logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("path", ["plain", "fused"])
@pytest.mark.parametrize("act", ["gelu", "gelu_tanh"])
def test_inference_in_image_chunks_gives_the_autograd_logits(path, act):
    """A block's inference runs a few images at a time; a ragged last chunk included (5 images, 2 per chunk)."""
    from mixer_zoo.model.kernels import forced_cpu_path

    model = randomize_(Mixer(num_classes=10, img_size=32, patch_size=8, num_blocks=3, embed_dim=64,
                             act_layer=act)).eval()
    per_image = max(32 * 64, 16 * 256) * 4  # token hidden x width, tokens x channel hidden, float32
    for b in model.blocks:
        b.chunk_bytes = 2 * per_image + 100
        assert b.images_per_chunk() == 2
    images = torch.randn(5, 3, 32, 32)
    with forced_cpu_path(path), torch.no_grad():
        chunked = model(images)
    with torch.enable_grad():
        reference = model(images)  # timm's ops, whole batch at once
    torch.testing.assert_close(chunked, reference, rtol=1e-5, atol=1e-5)
    for b in model.blocks:
        b.chunk_bytes = 1 << 40  # one chunk: the same numbers, image by image
    with forced_cpu_path(path), torch.no_grad():
        torch.testing.assert_close(model(images), chunked, rtol=1e-6, atol=1e-6)


@pytest.fixture
def pool_small_chunks(monkeypatch):
    """Pool the buffers of this file's small models too (by default only chunks of 4 MB or more are pooled)."""
    monkeypatch.setattr("mixer_zoo.model.block.POOL_MIN_BYTES", 1)


@pytest.mark.parametrize("path", ["plain", "fused"])
def test_eager_inference_reuses_its_pooled_buffers_and_allocates_none_after_the_first_call(path, pool_small_chunks):
    """The block outputs and hidden activations of float32 CPU inference come from the model's pool, so later
    calls of the same shape take the same storages (no page faults) and give the autograd path's logits."""
    from mixer_zoo.model.kernels import forced_cpu_path

    model = randomize_(Mixer(num_classes=10, img_size=32, patch_size=8, num_blocks=3, embed_dim=64)).eval()
    for b in model.blocks:
        b.chunk_bytes = 2 * 16 * 256 * 4 + 100  # two images per chunk: a ragged last chunk of one image
    images = torch.randn(5, 3, 32, 32)
    with forced_cpu_path(path), torch.no_grad():
        first = model(images)
        held = pool_storages(model.blocks[0].buffer_pool)
        for _ in range(3):
            assert torch.equal(model(images), first)
            assert pool_storages(model.blocks[0].buffer_pool) == held
    assert held[1] > 0
    assert all(b.buffer_pool is model.blocks[0].buffer_pool for b in model.blocks)
    with torch.enable_grad():
        torch.testing.assert_close(model(images), first, rtol=1e-5, atol=1e-5)
    with forced_cpu_path(path), torch.inference_mode():
        assert torch.equal(model(images), first)
    model.train()
    model(images).sum().backward()  # training takes the storages inference left, and its own
    model.eval()
    assert pool_storages(model.blocks[0].buffer_pool)[1] == 0


def test_block_outputs_kept_from_an_earlier_call_survive_later_calls(pool_small_chunks):
    """A pooled storage is handed out again only when nothing else holds it: intermediates, hook features
    and views of them that a caller keeps are never written by later forwards."""
    model = randomize_(Mixer(num_classes=10, img_size=32, patch_size=8, num_blocks=3, embed_dim=64)).eval()
    kept = []
    model.blocks[1].register_forward_hook(lambda m, i, o: kept.append(o[:, 0]))  # a view of the output
    first, second = torch.randn(2, 3, 32, 32), torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, inter = model.forward_intermediates(first, output_fmt="NLC")
        copies = [t.clone() for t in inter + kept]
        for _ in range(3):
            model(second)
    for t, copy in zip(inter + kept[:1], copies):
        assert torch.equal(t, copy)


def test_inference_from_two_threads_gives_each_its_own_logits(pool_small_chunks):
    """One model serving two threads: the pool never hands a storage that one call holds to the other."""
    model = randomize_(Mixer(num_classes=10, img_size=32, patch_size=8, num_blocks=4, embed_dim=64)).eval()
    inputs = [torch.randn(3, 3, 32, 32) for _ in range(2)]
    with torch.enable_grad():
        expected = [model(x).detach() for x in inputs]  # the autograd path: fresh tensors
    failures = []

    def serve(which):
        with torch.no_grad():
            for _ in range(20):
                if not torch.allclose(model(inputs[which]), expected[which], rtol=1e-5, atol=1e-5):
                    failures.append(which)

    run_in_threads(serve, 2)
    assert failures == []


def test_only_chunks_of_pool_min_bytes_take_pooled_buffers():
    """Small chunks come back warm from the heap, where the pool's bookkeeping would only cost time."""
    from mixer_zoo.model.block import POOL_MIN_BYTES

    model = Mixer(num_classes=10, img_size=64, patch_size=16, num_blocks=2, embed_dim=64, channels_mlp_dim=256).eval()
    per_image = 16 * 256 * 4  # tokens x channel hidden (the larger), float32
    with torch.no_grad():
        model(torch.randn(POOL_MIN_BYTES // per_image - 1, 3, 64, 64))
        assert model.blocks[0].buffer_pool.nbytes() == 0
        model(torch.randn(POOL_MIN_BYTES // per_image, 3, 64, 64))
        assert model.blocks[0].buffer_pool.nbytes() > 0


def test_fast_tanh_gelu_is_the_same_function_and_more_accurate_than_atens():
    from mixer_zoo.model.kernels import gelu_

    x = torch.linspace(-12, 12, 200_001)
    exact = x.double() * 0.5 * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (x.double() + 0.044715 * x.double() ** 3)))
    fast = gelu_(x.clone(), "tanh").double()
    aten = torch.nn.functional.gelu(x, approximate="tanh").double()
    assert (fast - exact).abs().max() < 1e-6
    ulp = exact.abs().clamp_min(1e-30) * 2.0 ** -23
    core = x.abs() < 4
    assert ((fast - exact).abs() / ulp)[core].max() < 32  # ATen's tanh form loses thousands of ulp below -2
    assert ((aten - exact).abs() / ulp)[core].max() > 1000
    erf = torch.randn(1000)
    assert torch.equal(gelu_(erf.clone(), "none"), torch.nn.functional.gelu(erf))
