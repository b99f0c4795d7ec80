"""The pooled training block: timm's gradients, and buffers reused only when nothing else holds them."""
import copy
import pickle

import pytest
import torch
from timm.layers import GELUTanh
from timm.models.mlp_mixer import MlpMixer

from conftest import pool_storages, randomize_
from mixer_zoo import Mixer
from mixer_zoo.model.block import MixerBlock
from mixer_zoo.model.block_training import BufferPool

SMALL = dict(patch_size=16, num_blocks=2, embed_dim=64, tokens_mlp_dim=32, channels_mlp_dim=256, img_size=64)


def pair(act: str = "gelu", **kwargs):
    """Ours and timm's MlpMixer with the same weights, both in training mode."""
    ours = randomize_(Mixer(**SMALL, act_layer=act, num_classes=7, **kwargs)).train()
    ref = MlpMixer(num_classes=7, img_size=64, patch_size=16, num_blocks=2, embed_dim=64,
                   act_layer=GELUTanh if act == "gelu_tanh" else torch.nn.GELU, **kwargs)
    ref.load_state_dict(ours.state_dict())
    return ours, ref.train()


def grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def assert_same_grads(ours, ref):
    theirs = grads(ref)
    for name, g in grads(ours).items():
        torch.testing.assert_close(g, theirs[name], rtol=1e-4, atol=1e-6, msg=name)


def pooled_calls(model):
    """Count the pooled Function's forwards (a forward hook on each block sees its grad_fn)."""
    seen = []
    for block in model.blocks:
        block.register_forward_hook(lambda m, i, o: seen.append(type(o.grad_fn).__name__))
    return seen


@pytest.mark.parametrize("act", ["gelu", "gelu_tanh"])
def test_gradients_equal_timms(act):
    ours, ref = pair(act)
    calls = pooled_calls(ours)
    x = torch.randn(6, 3, 64, 64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_(True)
    out, out_ref = ours(x), ref(x_ref)
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    weight = torch.randn_like(out)
    (out * weight).sum().backward()
    (out_ref * weight).sum().backward()
    assert calls == ["MixerBlockTrainingBackward"] * 2
    assert_same_grads(ours, ref)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-4, atol=1e-6)


def test_stochastic_depth_drops_the_samples_timms_ops_drop(monkeypatch):
    """timm's MlpMixer gives every block the same rate, ours rises with depth: so the reference here is
    our block on timm's ops (the same draws in the same order drop the same samples)."""
    ours, _ = pair(drop_path_rate=0.6)
    reference = copy.deepcopy(ours)
    x = torch.randn(8, 3, 64, 64)
    torch.manual_seed(3)
    out = ours(x)
    with monkeypatch.context() as patch:
        patch.setattr(MixerBlock, "_pooled_training_applies", lambda self, x: False)
        torch.manual_seed(3)
        out_ref = reference(x)
        weight = torch.randn_like(out)
        (out_ref * weight).sum().backward()
    (out * weight).sum().backward()
    torch.testing.assert_close(out, out_ref, rtol=1e-5, atol=1e-5)
    assert_same_grads(ours, reference)
    undropped = copy.deepcopy(reference)
    for block in undropped.blocks:
        block.drop_path = 0.0
    assert not torch.allclose(undropped(x), out, atol=1e-3)  # some samples were dropped


def test_second_step_reuses_every_buffer_and_allocates_none():
    ours, _ = pair()
    x = torch.randn(4, 3, 64, 64)
    ours(x).sum().backward()
    pool = ours.blocks[0].buffer_pool
    assert all(b.buffer_pool is pool for b in ours.blocks)  # one pool per model
    held = pool_storages(pool)
    for _ in range(3):
        ours.zero_grad(set_to_none=True)
        ours(x).sum().backward()
    assert held[1] > 0 and pool_storages(pool) == held


def test_a_kept_output_is_never_overwritten_by_later_steps():
    ours, ref = pair()
    x1, x2 = torch.randn(4, 3, 64, 64), torch.randn(4, 3, 64, 64)
    kept = []
    ours.blocks[0].register_forward_hook(lambda m, i, o: kept.append(o))  # a user's feature hook keeps outputs
    first = ours(x1)
    first_copy, kept_copy = first.detach().clone(), kept[0].detach().clone()
    first.sum().backward()
    for _ in range(2):
        ours(x2).sum().backward()
    torch.testing.assert_close(first, first_copy, rtol=0, atol=0)
    torch.testing.assert_close(kept[0], kept_copy, rtol=0, atol=0)


def test_two_graphs_alive_at_once_accumulate_timms_gradients():
    """Gradient accumulation that keeps both forwards before one backward: the second forward must not take
    the buffers the first one saved."""
    ours, ref = pair()
    x1, x2 = torch.randn(3, 3, 64, 64), torch.randn(5, 3, 64, 64)
    (ours(x1).square().sum() + ours(x2).sum()).backward()
    (ref(x1).square().sum() + ref(x2).sum()).backward()
    assert_same_grads(ours, ref)


def test_retained_graph_backward_twice_doubles_the_gradients():
    ours, ref = pair()
    x = torch.randn(3, 3, 64, 64)
    loss, loss_ref = ours(x).square().sum(), ref(x).square().sum()
    for _ in range(2):
        loss.backward(retain_graph=True)
        loss_ref.backward(retain_graph=True)
    assert_same_grads(ours, ref)


def test_eval_releases_the_buffers_and_copies_start_empty():
    ours, _ = pair()
    ours(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(b.buffer_pool.nbytes() > 0 for b in ours.blocks)
    ema = copy.deepcopy(ours)  # timm's ModelEmaV3 deep-copies the training model
    restored = pickle.loads(pickle.dumps(ours))
    assert all(b.buffer_pool.nbytes() == 0 for b in list(ema.blocks) + list(restored.blocks))
    assert all(b.buffer_pool is m.blocks[0].buffer_pool for m in (ema, restored) for b in m.blocks)
    ours.eval()
    assert all(b.buffer_pool.nbytes() == 0 for b in ours.blocks)
    ema.train()
    ema(torch.randn(2, 3, 64, 64)).sum().backward()  # a restored pool works
    assert all(b.buffer_pool.nbytes() > 0 for b in ema.blocks)


def test_storages_of_an_old_batch_size_are_dropped():
    ours, _ = pair()
    pool = ours.blocks[0].buffer_pool
    ours(torch.randn(8, 3, 64, 64)).sum().backward()
    big = pool.nbytes()
    for _ in range(3):
        ours(torch.randn(2, 3, 64, 64)).sum().backward()
    assert 0 < pool.nbytes() < big / 2


def test_dropout_and_autocast_take_timms_ops_with_timms_gradients():
    ours, ref = pair(proj_drop_rate=0.3)
    calls = pooled_calls(ours)
    x = torch.randn(3, 3, 64, 64)
    torch.manual_seed(1)
    ours(x).sum().backward()
    torch.manual_seed(1)
    ref(x).sum().backward()
    assert "MixerBlockTrainingBackward" not in calls
    assert_same_grads(ours, ref)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours(x).float().sum().backward()
    assert "MixerBlockTrainingBackward" not in calls


def test_training_holds_about_timms_peak_memory():
    """Block k-1's backward reuses block k's freed activations: the pool ends up with what one step needs at
    its peak, which timm's allocator also needs (there, about one block's activations less)."""
    ours, ref = pair()
    x = torch.randn(8, 3, 64, 64)
    ours(x).sum().backward()
    block = ours.blocks[0]
    b, n, c = 8, block.mlp_tokens.fc1.in_features, block.norm1.normalized_shape[0]
    t, h = block.mlp_tokens.fc1.out_features, block.mlp_channels.fc1.out_features
    saved_per_block = 4 * (4 * b * n * c + 2 * b * t * c + 2 * b * n * h)  # a, x1, a2, x2 + u, g + v, g2
    backward_extra = 4 * (3 * b * n * c + b * t * c + b * n * h)  # da2 dx1 da dx, du, dv alive at once
    assert ours.blocks[0].buffer_pool.nbytes() <= len(ours.blocks) * saved_per_block + backward_extra


def test_pool_hands_out_a_busy_storage_never():
    pool = BufferPool()
    like = torch.empty(0)
    a = pool.empty((4, 5), like)
    b = pool.empty((4, 5), like)  # a is alive: a second storage
    assert a.data_ptr() != b.data_ptr() and pool.nbytes() == 2 * 80
    ptr = a.data_ptr()
    del a
    assert pool.empty((20,), like).data_ptr() == ptr  # same size in bytes, now free: reused


def test_double_backward_is_refused_clearly():
    ours, _ = pair()
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    (g,) = torch.autograd.grad(ours(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|does not require grad|double"):
        g.sum().backward()
