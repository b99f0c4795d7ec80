"""Model cards (the Hub's ``README.md``) generated from a manifest entry, so a fact is written once.

The card is timm's own: :func:`timm.models._hub.generate_readme` (what ``push_to_hf_hub`` writes) renders the
front matter (``pipeline_tag``, ``library_name``, licence, datasets) and the model details from a ``model_card``
dict built here; sections timm has no slot for (metrics with their sources, provenance, conversion) follow it.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional

from ..model.architectures import ARCHITECTURES, TIMM_EQUIVALENTS, closed_form_macs
from .manifest import load_manifest

TASK = "image-classification"
TAGS = (TASK, "timm", "mlp-mixer", "mixer-zoo")
MIXER_ARXIV = "2105.01601"
HUB_DATASETS = {"imagenet-1k": "ImageNet-1k", "imagenet-21k": "ImageNet-21k", "imagenet-21k-p": "ImageNet-21k",
                "cifar-10": "CIFAR10"}
"""Manifest label set -> the name timm's cards give it; lower-cased it is the Hub dataset id (timm's cards list
ImageNet-21K-P weights as ``imagenet-21k``; ``imagenet-21k-p`` is no Hub dataset)."""
LABEL_SET_NAMES = {"imagenet-1k": "ImageNet-1k (1,000 classes)", "imagenet-21k": "ImageNet-21k (21,843 classes)",
                   "imagenet-21k-p": "ImageNet-21K-P (Alibaba-MIIL's processed ImageNet-21k, 11,221 classes)",
                   "cifar-10": "CIFAR-10 (10 classes)"}


def trained_on(entry: Mapping[str, Any]) -> List[str]:
    """Label sets the weights were trained on, first the pre-training: the manifest's ``provenance`` when it
    records them, else the tag's name (``*in21k*``: ImageNet-21k pre-training); none for untrained entries."""
    provenance = entry.get("provenance") or {}
    if "trained_on" in provenance:
        return list(provenance["trained_on"])
    if not entry.get("source") and not (entry.get("resolution") or {}).get("trained"):
        return []  # an architecture without weights saw no data, whatever label set its head would follow
    datasets = []
    if "in21k" in entry.get("tag", ""):
        datasets.append("imagenet-21k-p" if entry.get("label_set") == "imagenet-21k-p" or "miil" in entry["tag"]
                        else "imagenet-21k")
    if "in1k_ft" in entry.get("tag", ""):  # e.g. gsam_in1k_ft_cifar10: ImageNet-1k pre-training, then the head's set
        datasets.append("imagenet-1k")
    if entry.get("label_set") and entry["label_set"] not in datasets:
        datasets.append(entry["label_set"])
    return datasets


def card_datasets(entry: Mapping[str, Any]) -> List[str]:
    """The Hub dataset ids of :func:`trained_on` in timm's order (the last data trained on, then the pre-training):
    what the card's ``datasets:`` lists, without repeats."""
    seen = trained_on(entry)
    ids: List[str] = []
    for label_set in seen[-1:] + seen[:-1]:
        hub_id = HUB_DATASETS.get(label_set, label_set).lower()
        if hub_id not in ids:
            ids.append(hub_id)
    return ids


def why_mixer_zoo(entry: Mapping[str, Any]) -> str:
    """Why timm alone cannot load these weights, said for this entry."""
    arch = entry["architecture"]
    reasons = []
    if arch not in TIMM_EQUIVALENTS:
        reasons.append(f"timm has no `{arch}` architecture (its `MlpMixer` family lacks "
                       + ("Mixer-S/8 and Mixer-H/14" if arch in ARCHITECTURES else "this shape") + ")")
    if entry.get("act_layer") == "gelu_tanh":
        reasons.append("the weights were trained with the tanh approximation of GELU (Flax's `nn.gelu`), which "
                       "timm's `MlpMixer` cannot be told to use (its exact GELU shifts the logits)")
    if not reasons:
        reasons.append(f"`config.json` names the zoo's `{arch}`; the state dict has timm's `MlpMixer` keys, so timm's "
                       f"`{TIMM_EQUIVALENTS[arch]}` also loads `model.safetensors` (exact GELU, as trained)")
    return "; ".join(reasons)


def _metric_rows(metrics: Mapping[str, Any]) -> List[Dict[str, str]]:
    """Flatten ``{"reported": {...}, "measured": {...}}`` whatever its nesting; a ``source`` field stays apart."""
    rows: List[Dict[str, str]] = []

    def walk(kind: str, name: str, value: Any) -> None:
        if isinstance(value, Mapping):
            leaf = {k: v for k, v in value.items() if not isinstance(v, Mapping)}
            source = leaf.pop("source", None) or leaf.pop("where", None)
            if "value" in leaf:
                rows.append(dict(kind=kind, metric=name, value=str(leaf.pop("value")), source=str(source or "")))
                source = None
            for k, v in leaf.items():
                rows.append(dict(kind=kind, metric=f"{name}.{k}" if name else k, value=str(v), source=str(source or "")))
            for k, v in value.items():
                if isinstance(v, Mapping):
                    walk(kind, f"{name}.{k}" if name else k, v)
        else:
            rows.append(dict(kind=kind, metric=name, value=str(value), source=""))

    for kind in ("reported", "measured"):
        walk(kind, "", (metrics or {}).get(kind) or {})
    return rows


def _citations(entry: Mapping[str, Any]) -> List[str]:
    known = load_manifest().get("citations", {})
    ids = [MIXER_ARXIV] + [a for a in [(entry.get("paper") or {}).get("arxiv")] if a and a != MIXER_ARXIV]
    return [known[a] for a in ids if a in known]


def _resolution_text(entry: Mapping[str, Any]) -> str:
    """The manifest's ``resolution`` (trained / fine-tuned at), else what the file's token count says."""
    res = entry.get("resolution")
    if res:
        if res.get("trained") is None:
            return "untrained"
        text = f"trained at {res['trained']} px"
        return text + (f", fine-tuned at {res['fine_tuned']} px" if res.get("fine_tuned") else ", not fine-tuned")
    size = (entry.get("input_size") or [None])[-1]
    return f"{size} px (from the file's token count; how it was trained is not recorded)"


def _details(entry: Mapping[str, Any]) -> Dict[str, Any]:
    """timm's ``model_card['details']``: its own keys first (``Dataset`` and ``Pretrain Dataset`` become the
    front matter's ``datasets``), then the zoo's."""
    arch, tag = entry["architecture"], entry.get("tag", "")
    size = (entry.get("input_size") or [3, 224, 224])[-1]
    stats: Dict[str, Any] = {}
    if entry.get("num_params") is not None:
        stats["Params (M)"] = round(entry["num_params"] / 1e6, 1)
    if arch in ARCHITECTURES:
        stats["GMACs"] = round(closed_form_macs(arch, entry.get("num_classes") or 1000, size) / 1e9, 1)
    stats["Image size"] = f"{size} x {size}"
    paper = entry.get("paper") or {}
    papers = {"MLP-Mixer: An all-MLP Architecture for Vision": f"https://arxiv.org/abs/{MIXER_ARXIV}"}
    if paper.get("arxiv") and paper["arxiv"] != MIXER_ARXIV:
        papers[paper["name"]] = f"https://arxiv.org/abs/{paper['arxiv']}"
    source = entry.get("source") or {}
    details: Dict[str, Any] = {"Model Type": "Image classification / feature backbone", "Model Stats": stats,
                               "Papers": papers}
    if source.get("url") or source.get("file"):
        details["Original"] = source.get("url") or source["file"]
    seen = trained_on(entry)
    if seen:
        details["Dataset"] = HUB_DATASETS.get(seen[-1], seen[-1])
        if len(seen) > 1:
            details["Pretrain Dataset"] = [HUB_DATASETS.get(s, s) for s in seen[:-1]]
    details["Trained on"] = " -> ".join(LABEL_SET_NAMES.get(s, s) for s in seen) or "nothing (no released weights)"
    shape = ARCHITECTURES.get(arch) or entry.get("model_args")
    details["Architecture"] = f"`{arch}`" + (f" (timm's `{TIMM_EQUIVALENTS[arch]}`)" if arch in TIMM_EQUIVALENTS else "")
    if shape:
        details["Shape"] = (f"patch {shape['patch_size']}, width {shape['embed_dim']}, depth {shape['num_blocks']}, "
                            f"token MLP {shape['tokens_mlp_dim']}, channel MLP {shape['channels_mlp_dim']}")
    if entry.get("num_params") is not None:
        details["Params"] = f"{entry['num_params']:,}"
    gelu = entry.get("act_layer", "gelu")
    details.update({
        "Weights tag": f"`{tag}`" if tag else "-",
        "GELU": f"`{gelu}`" + (" (tanh approximation, as Flax's `nn.gelu`)" if gelu == "gelu_tanh" else " (exact, erf)"),
        "LayerNorm epsilon": f"{entry.get('norm_eps', 1e-6):g}",
        "Classes": f"{entry.get('num_classes')}" + (f" ({entry['label_set']})" if entry.get("label_set") else "")
                   + (f": {', '.join(entry['label_names'])}" if entry.get("label_names") else ""),
        "Input": (f"{'x'.join(map(str, entry.get('input_size', [])))}, crop_pct {entry.get('crop_pct')}, "
                  f"{entry.get('interpolation')}, mean {entry.get('mean')}, std {entry.get('std')}"
                  + (f" (as {entry['preprocessing_source']})" if entry.get("preprocessing_source") else "")),
        "Resolution": _resolution_text(entry),
        "Source sha256": f"`{source['sha256']}`" if source.get("sha256") else "-",
        "License": entry.get("license") or "unknown",
    })
    if entry.get("license_source"):
        details["License"] += f" ({entry['license_source']})"
    return details


def _usage(entry: Mapping[str, Any]) -> str:
    model_id = f"hf-hub:{entry['hf_hub_id']}" if entry.get("hf_hub_id") else "local-dir:PATH/TO/THIS/FOLDER"
    return "\n".join([
        "Loading these weights needs mixer-zoo next to timm: `pip install mixer-zoo`. Importing `mixer_zoo` "
        f"registers its architectures with timm; without it timm answers \"Unknown model\". Why: {why_mixer_zoo(entry)}.",
        "", "```python", "import timm", "import mixer_zoo  # noqa: F401  (registers the zoo's architectures with timm)", "",
        f'model = timm.create_model("{model_id}", pretrained=True).eval()',
        "cfg = timm.data.resolve_data_config({}, model=model)",
        "transform = timm.data.create_transform(**cfg)", "```", "",
        "timm's own scripts run through mixer-zoo, which registers the models first:", "", "```bash",
        f"mixer-zoo timm validate.py --model {model_id} --pretrained --data-dir /path/to/imagenet --device cpu",
        "```"])


def _provenance(entry: Mapping[str, Any]) -> List[str]:
    provenance = entry.get("provenance")
    if not provenance:
        return []
    out = ["", "## Provenance", "", f"**{provenance['certainty'].capitalize()}.** {provenance['notes']}", "",
           "Sources:", ""]
    return out + [f"- {s}" for s in provenance["sources"]]


def render_model_card(entry: Mapping[str, Any], extra: Optional[Mapping[str, Any]] = None) -> str:
    """Markdown with YAML front matter for one weights entry; ``extra`` adds rows to a Conversion section
    (source file, its sha256, converter version, ...)."""
    from timm.models._hub import generate_readme

    arch, tag = entry["architecture"], entry.get("tag", "")
    model_card = dict(tags=list(TAGS), license=entry.get("license") or "unknown", details=_details(entry),
                      description=entry.get("description") or f"A {arch} MLP-Mixer.", usage=_usage(entry),
                      citation=_citations(entry))
    text = generate_readme(model_card, f"{arch}.{tag}" if tag else arch, task_name=TASK).rstrip("\n")
    out = [text, "", "## Metrics", ""]
    rows = _metric_rows(entry.get("metrics") or {})
    if rows:
        out += ["| kind | metric | value | source |", "|---|---|---:|---|"]
        out += [f"| {r['kind']} | {r['metric']} | {r['value']} | {r['source']} |" for r in rows]
    else:
        out += ["No metrics recorded for these weights yet."]
    out += _provenance(entry)
    if extra:
        out += ["", "## Conversion", ""] + [f"- **{k}:** `{v}`" for k, v in extra.items()]
    return "\n".join(out) + "\n"
