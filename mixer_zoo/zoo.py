"""Layer 3, the zoo registry: the paper's Mixer variants registered with timm's own registry and builder.

Architectures are code (:mod:`mixer_zoo.model.architectures`); the weights released for them are data,
read from ``weights_manifest.json`` into timm pretrained cfgs.
"""
from __future__ import annotations

import functools
from typing import Any, Dict

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._builder import resolve_pretrained_cfg

from .model import ARCHITECTURES, TIMM_EQUIVALENTS, Mixer  # noqa: F401  (the zoo's names, re-exported)
from .model.architectures import CUSTOM_ARCHITECTURE, SHAPE_ARGS
from .model.mixer import materialize_meta_
from .model.resolution import pretrained_model_kwargs
from .weights.hub_cache import build_pretrained
from .weights.manifest import weights_entries


def pretrained_cfg_from_entry(entry: Dict[str, Any]) -> Dict[str, Any]:
    """A timm pretrained cfg for one manifest entry (weights come from its Hub repo, as safetensors)."""
    source = entry.get("source") or {}
    return dict(
        url="",
        hf_hub_id=entry.get("hf_hub_id"),
        hf_hub_filename="model.safetensors",  # safetensors only: never timm's pickle fallback
        num_classes=entry["num_classes"],
        input_size=tuple(entry["input_size"]),
        fixed_input_size=True,
        crop_pct=entry["crop_pct"],
        interpolation=entry["interpolation"],
        mean=tuple(entry["mean"]),
        std=tuple(entry["std"]),
        first_conv="stem.proj",
        classifier="head",
        license=entry["license"],
        description=entry.get("description", ""),
        origin_url=source.get("url"),
        paper_name=entry["paper"]["name"],
        paper_ids=f"arXiv:{entry['paper']['arxiv']}",
    )


default_cfgs = generate_default_cfgs({name: pretrained_cfg_from_entry(e) for name, e in weights_entries().items()})
default_cfgs.update(generate_default_cfgs({CUSTOM_ARCHITECTURE: dict(
    url="", num_classes=1000, input_size=(3, 224, 224), fixed_input_size=True, crop_pct=1.0, interpolation="bilinear",
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), first_conv="stem.proj", classifier="head")}))


def _create_mixer(variant: str, pretrained: bool = False, **kwargs: Any) -> Mixer:
    """Build through timm's builder; the weights tag decides the GELU flavour (and LayerNorm epsilon) unless
    ``act_layer`` (``norm_eps``) is given.

    With ``pretrained`` timm downloads (or finds in its cache) the tag's Hub file; ``hub.build_pretrained``
    then checks it against the manifest's sha256 and turns Hub failures into errors naming tag and repo.
    """
    cfg = resolve_pretrained_cfg(variant, kwargs.pop("pretrained_cfg", None), kwargs.pop("pretrained_cfg_overlay", None))
    entry = weights_entries().get(f"{variant}.{cfg.tag}")
    kwargs.setdefault("act_layer", entry["act_layer"] if entry else "gelu")
    if entry and "norm_eps" in entry:  # MindSpore's weights were trained with its LayerNorm epsilon (1e-7)
        kwargs.setdefault("norm_eps", entry["norm_eps"])
    out_indices = kwargs.pop("out_indices", 3)
    model_kwargs = {**ARCHITECTURES.get(variant, {}), **kwargs}
    if pretrained:  # at K times the pretrained size the token MLPs widen by K² (model/resolution.py)
        model_kwargs = pretrained_model_kwargs(model_kwargs, cfg.input_size, f"{variant}.{cfg.tag}")
    build = functools.partial(
        build_model_with_cfg, Mixer, variant, pretrained,
        pretrained_cfg=cfg.to_dict(),
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **model_kwargs,
    )
    if not pretrained:
        return build()
    # Build on the meta device: the checkpoint's tensors become the parameters (Mixer.load_state_dict assigns),
    # so no time goes into a random init that the weights would overwrite.
    device, dtype = kwargs.get("device"), kwargs.get("dtype")
    build = functools.partial(build, device="meta")
    model = build_pretrained(build, f"{variant}.{cfg.tag}", cfg.to_dict(), kwargs.get("cache_dir"))
    materialize_meta_(model, "cpu")  # a new head (num_classes differs) has no weights in the file
    return model.to(device=device, dtype=dtype) if device is not None or dtype is not None else model


@register_model
def mixer_s8_zoo(pretrained: bool = False, **kwargs: Any) -> Mixer:
    return _create_mixer("mixer_s8_zoo", pretrained, **kwargs)


@register_model
def mixer_s16_zoo(pretrained: bool = False, **kwargs: Any) -> Mixer:
    return _create_mixer("mixer_s16_zoo", pretrained, **kwargs)


@register_model
def mixer_s32_zoo(pretrained: bool = False, **kwargs: Any) -> Mixer:
    return _create_mixer("mixer_s32_zoo", pretrained, **kwargs)


@register_model
def mixer_b16_zoo(pretrained: bool = False, **kwargs: Any) -> Mixer:
    return _create_mixer("mixer_b16_zoo", pretrained, **kwargs)


@register_model
def mixer_b32_zoo(pretrained: bool = False, **kwargs: Any) -> Mixer:
    return _create_mixer("mixer_b32_zoo", pretrained, **kwargs)


@register_model
def mixer_l16_zoo(pretrained: bool = False, **kwargs: Any) -> Mixer:
    return _create_mixer("mixer_l16_zoo", pretrained, **kwargs)


@register_model
def mixer_l32_zoo(pretrained: bool = False, **kwargs: Any) -> Mixer:
    return _create_mixer("mixer_l32_zoo", pretrained, **kwargs)


@register_model
def mixer_h14_zoo(pretrained: bool = False, **kwargs: Any) -> Mixer:
    return _create_mixer("mixer_h14_zoo", pretrained, **kwargs)


@register_model
def mixer_custom_zoo(pretrained: bool = False, **kwargs: Any) -> Mixer:
    """Any Mixer shape, given as arguments (``SHAPE_ARGS``): the architecture of converted checkpoints outside the
    paper's table, e.g. a patch-4 Mixer trained on CIFAR at 32 px; their ``config.json`` ``model_args`` hold it."""
    missing = [k for k in SHAPE_ARGS if kwargs.get(k) is None]
    if missing:
        raise TypeError(f"{CUSTOM_ARCHITECTURE} needs the Mixer's shape: missing {', '.join(missing)} "
                        f"(give all of {', '.join(SHAPE_ARGS)}, as a converted folder's config.json does)")
    if not kwargs.get("pretrained_cfg"):  # no weights' cfg (local-dir gives one): the input is the model's size
        size = kwargs["img_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)[-2:]
        kwargs["pretrained_cfg_overlay"] = dict(input_size=(3, *size), **(kwargs.get("pretrained_cfg_overlay") or {}))
    return _create_mixer(CUSTOM_ARCHITECTURE, pretrained, **kwargs)
