"""Model cards (the Hub's ``README.md``) generated from a manifest entry, so a fact is written once."""
from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional

from ..model.architectures import ARCHITECTURES
from .manifest import load_manifest

TAGS = ("image-classification", "timm", "mlp-mixer")
MIXER_ARXIV = "2105.01601"


def card_datasets(entry: Mapping[str, Any]) -> List[str]:
    """Datasets the weights saw: the label set, plus ImageNet-21k for ``*in21k*`` pre-training."""
    datasets = []
    if "in21k" in entry.get("tag", ""):
        datasets.append("imagenet-21k")
    if entry.get("label_set") and entry["label_set"] not in datasets:
        datasets.append(entry["label_set"])
    return datasets


def _yaml_scalar(value: Any) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar and needs no escaping rules of its own


def _front_matter(entry: Mapping[str, Any]) -> str:
    lines = ["---", "library_name: timm", f"license: {_yaml_scalar(entry.get('license') or 'unknown')}", "tags:"]
    lines += [f"- {t}" for t in TAGS]
    datasets = card_datasets(entry)
    if datasets:
        lines += ["datasets:", *(f"- {d}" for d in datasets)]
    return "\n".join(lines + ["---"])


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


def render_model_card(entry: Mapping[str, Any], extra: Optional[Mapping[str, Any]] = None) -> str:
    """Markdown with YAML front matter for one weights entry; ``extra`` adds rows to a Conversion section
    (source file, its sha256, converter version, ...)."""
    arch, tag = entry["architecture"], entry.get("tag", "")
    name = f"{arch}.{tag}" if tag else arch
    source = entry.get("source") or {}
    paper = entry.get("paper") or {}
    out = [_front_matter(entry), "", f"# Model card for {name}", "", entry.get("description") or "", "",
           "## Model details", ""]
    details = [("Architecture", f"`{arch}`")]
    shape = ARCHITECTURES.get(arch) or entry.get("model_args")
    if shape:
        details.append(("Shape", f"patch {shape['patch_size']}, width {shape['embed_dim']}, depth {shape['num_blocks']}, "
                                 f"token MLP {shape['tokens_mlp_dim']}, channel MLP {shape['channels_mlp_dim']}"))
    if entry.get("num_params") is not None:  # the manifest's (checked against the real model) or the file's
        details.append(("Params", f"{entry['num_params']:,}"))
    details += [
        ("Weights tag", f"`{tag}`" if tag else "-"),
        ("GELU", f"`{entry.get('act_layer', 'gelu')}`" + (" (tanh approximation, as Flax's `nn.gelu`)"
                                                          if entry.get("act_layer") == "gelu_tanh" else " (exact, erf)")),
        ("LayerNorm epsilon", f"{entry.get('norm_eps', 1e-6):g}"),
        ("Classes", f"{entry.get('num_classes')}" + (f" ({entry['label_set']})" if entry.get("label_set") else "")
                    + (f": {', '.join(entry['label_names'])}" if entry.get("label_names") else "")),
        ("Input", f"{'x'.join(map(str, entry.get('input_size', [])))}, crop_pct {entry.get('crop_pct')}, "
                  f"{entry.get('interpolation')}, mean {entry.get('mean')}, std {entry.get('std')}"
                  + (f" (as {entry['preprocessing_source']})" if entry.get("preprocessing_source") else "")),
        ("Resolution", _resolution_text(entry)),
        ("Source", f"{source.get('url') or source.get('file') or '-'}"
                   + (f" ({source['format']})" if source.get("format") else "")),
        ("Source sha256", f"`{source['sha256']}`" if source.get("sha256") else "-"),
        ("Paper", f"[{paper.get('name')}](https://arxiv.org/abs/{paper.get('arxiv')})" if paper else "-"),
        ("License", entry.get("license") or "unknown"),
    ]
    out += [f"- **{k}:** {v}" for k, v in details]

    model_id = f"hf-hub:{entry['hf_hub_id']}" if entry.get("hf_hub_id") else "local-dir:PATH/TO/THIS/FOLDER"
    out += ["", "## Usage", "", "```python", "import timm, mixer_zoo  # importing mixer_zoo registers the architectures",
            f'model = timm.create_model("{model_id}", pretrained=True).eval()',
            "cfg = timm.data.resolve_data_config({}, model=model)",
            "transform = timm.data.create_transform(**cfg)", "```", "", "## Metrics", ""]
    rows = _metric_rows(entry.get("metrics") or {})
    if rows:
        out += ["| kind | metric | value | source |", "|---|---|---:|---|"]
        out += [f"| {r['kind']} | {r['metric']} | {r['value']} | {r['source']} |" for r in rows]
    else:
        out += ["No metrics recorded for these weights yet."]
    if extra:
        out += ["", "## Conversion", ""] + [f"- **{k}:** `{v}`" for k, v in extra.items()]
    citations = _citations(entry)
    if citations:
        out += ["", "## Citation", "", "```bibtex", "\n\n".join(citations), "```"]
    return "\n".join(out) + "\n"
