"""PyTorch's own int8 for a Mixer: timm's ``MlpMixer`` holding our weights (one state-dict layout) under
``torch.ao`` dynamic quantization, whose fbgemm kernels use VNNI where the CPU has it.

Our ``Mixer`` reads its weights inside its own GEMMs, so PyTorch's module-swapping ``quantize_dynamic`` cannot
reach them; timm's twin, built from the same shape, can. On the AVX-512 EPYC here it was the fastest path for S/32
at batch 16 (``benchmarks/cpu_deployment.py``).
"""
from __future__ import annotations

import copy
import warnings

from torch import nn


def timm_twin(model: nn.Module) -> nn.Module:
    """timm's ``MlpMixer`` with the shape, GELU and weights of our ``model`` (any shape: timm takes the dims)."""
    from timm.layers import GELUTanh
    from timm.models.mlp_mixer import MlpMixer

    block, width = model.blocks[0], model.embed_dim
    twin = MlpMixer(num_classes=model.num_classes, img_size=model.stem.img_size, in_chans=model.stem.in_chans,
                    patch_size=model.stem.patch_size[0], num_blocks=len(model.blocks), embed_dim=width,
                    mlp_ratio=(block.mlp_tokens.fc1.out_features / width, block.mlp_channels.fc1.out_features / width),
                    act_layer=nn.GELU if model.act_layer == "gelu" else GELUTanh)
    twin.load_state_dict(model.state_dict())
    return twin.eval()


def torch_dynamic_int8(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` under ``torch.ao`` dynamic int8 (int8 weights, activations
    quantized per batch): what a timm ``MlpMixer`` user gets in one line."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization announces its deprecation in favour of torchao
        return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


def write_torch_int8(model: nn.Module, path, sample) -> None:
    """timm's twin of ``model`` under dynamic int8, traced to TorchScript (``torch.jit.load`` runs it)."""
    import torch

    quantized = torch_dynamic_int8(timm_twin(model))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(quantized, sample)
        torch.jit.save(traced, str(path))
