"""``mixer-zoo manifest check``: the manifest's schema, then its agreement with the code and with timm."""
from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any, Dict, List, Optional

from .. import zoo  # noqa: F401  (the timm registry that check_manifest builds models from)
from ..model.architectures import ARCHITECTURES, param_count
from ..weights.manifest import (GOOGLE_TAG_PREFIXES, LABEL_NAMES, LABEL_SET_CLASSES, RELEASE_URL_PREFIXES, ManifestError,
                                PathLike, manifest_path, validate_manifest)


def _expected_npz_name(arch: str) -> str:
    """``mixer_b16_zoo`` -> ``Mixer-B_16.npz``, Google's file naming."""
    size = arch.split("_")[1]
    return f"Mixer-{size[0].upper()}_{size[1:]}.npz"


def _release_url_problem(url: str, source_format: str) -> Optional[str]:
    """Why ``url`` is not a release of its format's publisher (None when it is)."""
    prefixes = RELEASE_URL_PREFIXES.get(source_format, ())
    parsed = urllib.parse.urlparse(url)
    segments = urllib.parse.unquote(parsed.path).split("/")
    if not url.startswith(prefixes) or parsed.query or parsed.fragment or parsed.username or parsed.port \
            or any(s in (".", "..") for s in segments):
        return (f"source.url {url} is not a {source_format} release location; the zoo downloads "
                f"{source_format} files only from {', '.join(p + '...' for p in prefixes)}")
    return None


def problems_of_resolution(e: Dict[str, Any], problem: Any) -> None:
    """``resolution`` against the rest of the entry: weights exist iff a training resolution does, the input
    size is the last resolution they saw, and ``*_ft_*`` tags (timm's "fine-tuned on") name a fine-tuning."""
    trained, fine_tuned = e["resolution"]["trained"], e["resolution"]["fine_tuned"]
    if (e["source"] is None) != (trained is None):
        problem("resolution.trained is null exactly when there are no weights (source null)")
    if fine_tuned is not None and trained is None:
        problem("resolution.fine_tuned set without resolution.trained")
    last = fine_tuned or trained
    if last is not None and list(e["input_size"][1:]) != [last, last]:
        problem(f"input_size {e['input_size']} but the weights were last trained at {last} px (resolution)")
    if ("_ft_" in e["tag"]) != (fine_tuned is not None):
        problem(f"tag {e['tag']!r} {'says' if '_ft_' in e['tag'] else 'does not say'} fine-tuned (_ft_) but "
                f"resolution.fine_tuned is {fine_tuned}")


def check_manifest(path: Optional[PathLike] = None, build_models: bool = True) -> List[str]:
    """Schema validation, then cross-checks against the code; returns every problem found (empty: all good).

    Each problem is one line ``FILE: KEY: what is wrong``. With ``build_models`` every entry's ``num_params``
    is compared with a real model built on the meta device (no memory is allocated).
    """
    target = manifest_path(path)
    try:
        manifest = validate_manifest(target)
    except ManifestError as e:
        return [str(e)]
    problems: List[str] = []

    def problem(key: str, message: str) -> None:
        problems.append(f"{target}: {key}: {message}")

    entries = manifest["weights"]
    citations = manifest["citations"]
    hub_ids: Dict[str, str] = {}
    seen_archs: Dict[str, str] = {}
    for key, e in entries.items():
        arch, tag = e["architecture"], e["tag"]
        if key != f"{arch}.{tag}":
            problem(key, f"key must be architecture.tag = {arch}.{tag!s}")
        if arch not in ARCHITECTURES:
            problem(key, f"architecture {arch!r} is not in mixer_zoo.zoo.ARCHITECTURES ({', '.join(ARCHITECTURES)})")
            continue
        seen_archs.setdefault(arch, key)
        want_classes = LABEL_SET_CLASSES[e["label_set"]]
        if e["num_classes"] != want_classes:
            problem(key, f"num_classes {e['num_classes']} but label_set {e['label_set']} has {want_classes} classes")
        names = e.get("label_names")
        if e["label_set"] in LABEL_NAMES and list(names or ()) != list(LABEL_NAMES[e["label_set"]]):
            problem(key, f"label_names must be the {e['label_set']} classes in logit order: "
                         f"{', '.join(LABEL_NAMES[e['label_set']])}")
        elif names is not None and len(names) != e["num_classes"]:
            problem(key, f"{len(names)} label_names for {e['num_classes']} classes")
        counted = param_count(arch, e["num_classes"]) if e["input_size"][1:] == [224, 224] else None
        if counted is not None and e["num_params"] != counted:
            problem(key, f"num_params {e['num_params']} but {arch} with {e['num_classes']} classes has {counted}")
        if build_models:
            import timm
            import torch

            with torch.device("meta"):
                model = timm.create_model(arch, num_classes=e["num_classes"], img_size=e["input_size"][1])
            real = sum(p.numel() for p in model.parameters())
            if real != e["num_params"]:
                problem(key, f"num_params {e['num_params']} but the real model has {real}")
        problems_of_resolution(e, lambda message: problem(key, message))
        source, hub_id = e["source"], e["hf_hub_id"]
        seen = (e.get("provenance") or {}).get("trained_on") or []
        if seen and seen[-1] != e["label_set"]:
            problem(key, f"provenance.trained_on ends with {seen[-1]} but the head's classes are {e['label_set']} "
                         "(label_set): the last data trained on is the label set")
        if seen and source is None:
            problem(key, "provenance.trained_on lists data but no weights were released (source is null)")
        if source is None:
            if hub_id is not None:
                problem(key, "hf_hub_id set but there is no source to convert")
            if e["converted"]["sha256"] is not None:
                problem(key, "converted.sha256 set but there is no source")
        else:
            if hub_id is None:
                problem(key, "released weights need an hf_hub_id to be loaded with pretrained=True")
            url_problem = _release_url_problem(source["url"], source["format"])
            if url_problem:
                problem(key, url_problem)
            if source["format"] == "jax_npz":
                name = _expected_npz_name(arch)
                want_url = f"https://storage.googleapis.com/mixer_models/{source['folder']}/{name}"
                if source["url"] != want_url:
                    problem(key, f"source.url {source['url']} but Google's {arch} file in "
                                 f"gs://mixer_models/{source['folder']} is {want_url}")
                if e["act_layer"] != "gelu_tanh":
                    problem(key, "Google's JAX weights were trained with Flax's tanh GELU: act_layer must be gelu_tanh")
            if source["format"] == "mindspore_ckpt":
                name = "gsam_" + _expected_npz_name(arch).replace(".npz", ".ckpt")
                if source["url"].rsplit("/", 1)[-1] != name:
                    problem(key, f"source.url {source['url']} but MindSpore's {arch} file is {name}")
                if e.get("norm_eps") != 1e-7 or e["act_layer"] != "gelu_tanh":
                    problem(key, "MindSpore's Mixer uses nn.LayerNorm (epsilon 1e-7) and nn.GELU (tanh form): "
                                 "norm_eps must be 1e-7 and act_layer gelu_tanh")
            if tag.startswith(GOOGLE_TAG_PREFIXES) and e["act_layer"] != "gelu_tanh":
                problem(key, f"{'/'.join(p + '*' for p in GOOGLE_TAG_PREFIXES)} tags are Google's JAX weights: "
                             "act_layer must be gelu_tanh")
        if hub_id is not None:
            if hub_id.split("/", 1)[1] != key:
                problem(key, f"hf_hub_id {hub_id!r} must end in /{key}")
            if hub_id in hub_ids:
                problem(key, f"hf_hub_id {hub_id!r} is also used by {hub_ids[hub_id]}")
            hub_ids[hub_id] = key
        if (e["converted"]["sha256"] is None) != (e["converted"]["size_bytes"] is None):
            problem(key, "converted.sha256 and converted.size_bytes are set together")
        if e["paper"]["arxiv"] not in citations:
            problem(key, f"paper.arxiv {e['paper']['arxiv']} has no BibTeX in citations")
        if "2105.01601" not in citations:
            problem("citations", "the MLP-Mixer paper (2105.01601) needs its BibTeX")
    for arch in ARCHITECTURES:
        if arch not in seen_archs:
            problem(arch, "architecture has no manifest entry (add one, tag 'untrained' if nothing is released)")
    problems.extend(_check_timm_registry(entries, target))
    return list(dict.fromkeys(problems))


def _check_timm_registry(entries: Dict[str, Dict[str, Any]], target: Path) -> List[str]:
    """The cfgs timm serves were generated from the packaged manifest at import: they must agree with this one."""
    import timm

    problems = []
    published = set(timm.list_models("*_zoo", pretrained=True))
    for key, e in entries.items():
        if e["hf_hub_id"] and key not in published:
            problems.append(f"{target}: {key}: not listed by timm.list_models('*_zoo', pretrained=True)")
            continue
        cfg = timm.get_pretrained_cfg(key)
        if cfg is None:
            problems.append(f"{target}: {key}: timm has no pretrained cfg of that name (re-import mixer_zoo)")
            continue
        for field in ("num_classes", "hf_hub_id", "crop_pct", "interpolation"):
            if getattr(cfg, field) != e[field]:
                problems.append(f"{target}: {key}: timm's pretrained cfg has {field}={getattr(cfg, field)!r}, "
                                f"the manifest {e[field]!r} (re-import mixer_zoo after editing the manifest)")
        if tuple(cfg.mean) != tuple(e["mean"]) or tuple(cfg.std) != tuple(e["std"]):
            problems.append(f"{target}: {key}: timm's pretrained cfg mean/std differ from the manifest")
    return problems
