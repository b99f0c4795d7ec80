"""Fine-tuning at a higher resolution than pre-training: the paper's expansion of the token-mixing MLPs.

With the patch size kept, an image K times larger per side has K² times the tokens, so every token-mixing MLP
must change shape. The paper (Sec. 3 "Fine-tuning" and Supplementary C) widens its hidden layer by K² as well
and initialises it block-diagonally with copies of the pretrained MLP, so that the K² parts of the sequence
are first mixed independently, each exactly as at the base resolution. Only integer K allows this.

Which tokens form a part: Supplementary C says the long sequence is "a concatenation of K² token sequences of
length S each, computed by splitting the input into K×K equal parts spatially". The parts are therefore the
K×K contiguous *tiles* of the image, each a grid of the base resolution's shape (not strided subsets of
tokens). Our models keep tokens in row-major order over the whole grid, so the blocks of the expanded weights
sit at the tiles' positions in that order rather than on a literal diagonal: the matrix is block-diagonal up
to that fixed permutation, which the model never has to perform. ``layout="strided"`` (part ``(a, b)`` takes
the tokens ``(K*i + a, K*j + b)``) is offered for comparison only; it is not what the paper describes.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch

LAYOUTS = ("tiles", "strided")
TOKEN_KEYS = ("mlp_tokens.fc1.weight", "mlp_tokens.fc1.bias", "mlp_tokens.fc2.weight", "mlp_tokens.fc2.bias")
Size = Union[int, Sequence[int]]


class ResolutionError(ValueError):
    """A size the pretrained token-mixing MLPs cannot be expanded to (not an integer multiple)."""


def spatial_size(size: Size) -> Tuple[int, int]:
    """``224``, ``(224, 224)`` or timm's ``(3, 224, 224)`` -> ``(224, 224)``."""
    if isinstance(size, int):
        return size, size
    size = tuple(int(s) for s in size)
    return size[-2:] if len(size) == 3 else size


def scale_factor(base: Size, target: Size, name: str = "pretrained weights") -> int:
    """The integer K with ``target = K × base`` on both sides, else a :class:`ResolutionError` saying which
    sizes would work."""
    (bh, bw), (th, tw) = spatial_size(base), spatial_size(target)
    if th % bh == 0 and tw % bw == 0 and th // bh == tw // bw and th >= bh:
        return th // bh
    examples = ", ".join(f"{k * bh}" if bh == bw else f"({k * bh}, {k * bw})" for k in (2, 3, 4))
    raise ResolutionError(
        f"{name}: trained at {bh}x{bw} px; img_size {th}x{tw} is not an integer multiple K of it. The token-mixing "
        f"MLPs can only be expanded (MLP-Mixer paper, Supplementary C) to K times the size per side: {examples}, ...")


def token_groups(base_grid: Tuple[int, int], factor: int, layout: str = "tiles") -> torch.Tensor:
    """``index[g, n]``: where token ``n`` (row-major in the base grid) of part ``g`` sits in the row-major token
    sequence of the K-times larger grid. Parts are numbered row-major over the K×K arrangement."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    h, w = base_grid
    k = factor
    part_row, part_col, i, j = torch.meshgrid(torch.arange(k), torch.arange(k), torch.arange(h), torch.arange(w),
                                              indexing="ij")
    if layout == "tiles":
        rows, cols = part_row * h + i, part_col * w + j
    else:
        rows, cols = i * k + part_row, j * k + part_col
    return (rows * (k * w) + cols).reshape(k * k, h * w)


def _block_indices(state_dict: Mapping[str, Any]) -> list:
    return sorted({int(k.split(".")[1]) for k in state_dict if k.startswith("blocks.") and "mlp_tokens" in k})


def expand_token_mixing(state_dict: Mapping[str, torch.Tensor], factor: int,
                        base_grid: Optional[Tuple[int, int]] = None, layout: str = "tiles") -> Dict[str, torch.Tensor]:
    """A timm-layout Mixer state dict for K = ``factor`` times the resolution: every token-mixing MLP gets K²
    copies of its weights, part ``g`` of the tokens feeding hidden units ``g*T .. (g+1)*T`` only, whose
    outputs go back to part ``g`` only. Everything else (stem, norms, channel MLPs, head) is unchanged.

    ``base_grid`` is the checkpoint's patch grid (rows, columns); a square grid is assumed when omitted."""
    if factor < 1 or int(factor) != factor:
        raise ResolutionError(f"the scale factor must be a positive integer, got {factor!r}")
    blocks = _block_indices(state_dict)
    if not blocks:
        raise ResolutionError("no token-mixing MLP (blocks.N.mlp_tokens.*) in the state dict")
    num_tokens = state_dict[f"blocks.{blocks[0]}.mlp_tokens.fc1.weight"].shape[1]
    if base_grid is None:
        side = int(round(num_tokens ** 0.5))
        base_grid = (side, side)
    if base_grid[0] * base_grid[1] != num_tokens:
        raise ResolutionError(f"the token-mixing MLPs mix {num_tokens} tokens, not a {base_grid[0]}x{base_grid[1]} grid")
    out = dict(state_dict)
    if factor == 1:
        return out
    parts = token_groups(base_grid, factor, layout)
    groups, seq = parts.shape
    for b in blocks:
        p = f"blocks.{b}.mlp_tokens."
        w1, b1, w2, b2 = (state_dict[p + k.split(".", 1)[1]] for k in TOKEN_KEYS)
        hidden = w1.shape[0]
        if w1.shape != (hidden, seq) or w2.shape != (seq, hidden):
            raise ResolutionError(f"{p}fc1/fc2 have shapes {tuple(w1.shape)}/{tuple(w2.shape)}; expected "
                                  f"({hidden}, {seq}) and ({seq}, {hidden})")
        new_w1 = w1.new_zeros(groups * hidden, groups * seq)
        new_w2 = w2.new_zeros(groups * seq, groups * hidden)
        new_b2 = b2.new_empty(groups * seq)
        for g in range(groups):
            units = slice(g * hidden, (g + 1) * hidden)
            new_w1[units, parts[g]] = w1
            new_w2[parts[g], units] = w2
            new_b2[parts[g]] = b2
        out.update({p + "fc1.weight": new_w1, p + "fc1.bias": b1.repeat(groups),
                    p + "fc2.weight": new_w2, p + "fc2.bias": new_b2})
    return out


def expand_to_model(state_dict: Dict[str, torch.Tensor], model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """timm ``pretrained_filter_fn``: expand the checkpoint when the model mixes K² times its tokens (built at
    K times its resolution); otherwise return it untouched and leave any mismatch to the strict load."""
    key = "blocks.0.mlp_tokens.fc1.weight"
    stem = getattr(model, "stem", None)
    if key not in state_dict or not hasattr(stem, "grid_size"):
        return state_dict
    have, (rows, cols) = state_dict[key].shape[1], stem.grid_size
    if have == rows * cols:
        return state_dict
    factor = int(round((rows * cols / have) ** 0.5))
    if factor < 2 or rows % factor or cols % factor or (rows // factor) * (cols // factor) != have:
        raise ResolutionError(f"the checkpoint's token-mixing MLPs mix {have} tokens; the model's {rows}x{cols} "
                              "grid is not K times a grid of that size")
    return expand_token_mixing(state_dict, factor, (rows // factor, cols // factor))


def pretrained_model_kwargs(model_kwargs: Dict[str, Any], pretrained_size: Size, name: str) -> Dict[str, Any]:
    """Model arguments for loading weights trained at ``pretrained_size`` into a model of ``img_size``: the same
    at the same size; at K times the size, the token MLP hidden width times K² (the paper's rule), so that the
    expanded checkpoint fits. Any other size is a :class:`ResolutionError`, raised before anything is loaded."""
    if model_kwargs.get("img_size") is None:
        return model_kwargs
    factor = scale_factor(pretrained_size, model_kwargs["img_size"], name)
    if factor == 1:
        return model_kwargs
    tokens = model_kwargs.get("tokens_mlp_dim") or model_kwargs.get("embed_dim", 512) // 2  # Mixer's default
    return dict(model_kwargs, tokens_mlp_dim=tokens * factor * factor)
