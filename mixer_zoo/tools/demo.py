"""``mixer-zoo demo``: the whole pipeline, offline, on an embedded default (nothing is downloaded).

1. every architecture is built through ``timm.create_model`` and runs one forward pass;
2. a Mixer-S/32 checkpoint in the exact layout of Google's released ``.npz`` (random weights, made by
   the Flax reference model) is found in the download cache and converted, verified against Flax;
3. the converted folder is installed in a private huggingface_hub cache and a manifest copy records its
   sha256, so ``timm.create_model(TAG, pretrained=True)`` loads it with ``HF_HUB_OFFLINE`` exactly as
   after a real download (sha256 checked), and its logits equal the converted weights';
4. our model against timm's own ``MlpMixer`` with the same weights: the benchmark table.
"""
from __future__ import annotations

import contextlib
import importlib.util
import shutil
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import torch

from ..model.architectures import ARCHITECTURES
from ..reference.flax_mixer import make_official_npz
from ..util.env import environ
from ..util.report import format_table
from ..weights.download import cached_path, sha256_of
from ..weights.hub_cache import WEIGHTS_FILE
from ..weights.manifest import MANIFEST_ENV, get_entry, manifest_path, record_converted
from .bench import benchmark_models, summary_table
from .convert import convert_tag
from .publish import install_in_cache

DEMO_TAG = "mixer_s32_zoo.gsam_in1k"
"""A released tag whose source is an official npz, small enough to convert and verify in seconds."""


def forward_every_variant(batch_size: int = 1, seed: int = 0) -> List[Dict[str, Any]]:
    import timm

    torch.manual_seed(seed)
    x = torch.randn(batch_size, 3, 224, 224)
    rows = []
    for arch in ARCHITECTURES:
        model = timm.create_model(arch).eval()
        start = time.perf_counter()
        with torch.inference_mode():
            logits = model(x)
        rows.append(dict(
            model=arch, params=sum(p.numel() for p in model.parameters()), gelu=model.act_layer,
            output_shape="x".join(map(str, logits.shape)), forward_s=round(time.perf_counter() - start, 3),
            finite=bool(torch.isfinite(logits).all()),
        ))
        print(f"  built and ran {arch}", flush=True)
        del model
    return rows


def place_generated_checkpoint(tag: str, downloads: Path, seed: int = 0) -> Path:
    """Write a random checkpoint in the official npz layout where the download cache keeps ``tag``'s source."""
    entry = get_entry(tag)
    path = cached_path(entry["source"]["url"], downloads)
    make_official_npz(path, entry["architecture"], num_classes=entry["num_classes"], seed=seed)
    return path


@contextlib.contextmanager
def offline_hub(manifest: Path) -> Iterator[None]:
    """huggingface_hub offline and ``manifest`` in effect, for this block only.

    huggingface_hub reads ``HF_HUB_OFFLINE`` when it is imported (timm imports it first), so the
    constant is switched too."""
    from huggingface_hub import constants

    saved_offline = constants.HF_HUB_OFFLINE
    with environ({"HF_HUB_OFFLINE": "1", MANIFEST_ENV: str(manifest)}):
        constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE = saved_offline


def load_pretrained_offline(tag: str, folder: Path, work: Path) -> Dict[str, Any]:
    """Install ``folder`` as ``tag``'s Hub repo in a private cache, record its sha256 in a manifest copy, and
    load ``pretrained=True`` offline; returns how its logits compare with the folder's weights."""
    import timm
    from safetensors.torch import load_file

    manifest = work / "weights_manifest.json"
    shutil.copyfile(manifest_path(), manifest)
    weights = folder / WEIGHTS_FILE
    sha256 = sha256_of(weights)
    record_converted({tag: dict(sha256=sha256, size_bytes=weights.stat().st_size)}, manifest)
    repo_id = get_entry(tag)["hf_hub_id"]
    hf_cache = work / "hf-cache"
    snapshot = install_in_cache(folder, repo_id, cache_dir=hf_cache, manifest=manifest)

    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    reference = timm.create_model(tag).eval()
    reference.load_state_dict(load_file(weights))
    with offline_hub(manifest):
        model = timm.create_model(tag, pretrained=True, cache_dir=hf_cache).eval()
    with torch.inference_mode():
        want, got = reference(x), model(x)
    return dict(tag=tag, hub_repo=repo_id, snapshot=f"{snapshot.relative_to(work).parent}/{snapshot.name[:12]}",
                gelu=model.act_layer, checked_sha256=sha256[:16] + "...", max_abs_diff=float((got - want).abs().max()),
                top1_agreement=float((got.argmax(1) == want.argmax(1)).float().mean()))


def run_pipeline(work: Path, tag: str = DEMO_TAG, bench_models: Optional[List[str]] = None, batch_size: int = 16,
                 repeats: int = 3, variants: bool = True) -> Dict[str, Any]:
    """Every step of the demo in ``work``; returns each step's rows (and raises on the first failure)."""

    results: Dict[str, Any] = {}
    step = 0

    def title(text: str) -> None:
        nonlocal step
        step += 1
        print(f"\n[{step}] {text}", flush=True)

    if variants:
        title("every architecture through timm.create_model, one CPU forward pass at 224x224")
        results["variants"] = forward_every_variant()
        print(format_table(results["variants"]))

    title(f"convert {tag}: a generated checkpoint in Google's npz layout, found in the download cache")
    downloads = work / "downloads"
    npz = place_generated_checkpoint(tag, downloads)
    verify = importlib.util.find_spec("jax") is not None and importlib.util.find_spec("flax") is not None
    if not verify:
        print("  (jax/flax not installed: skipping the Flax comparison; pip install 'mixer-zoo[jax]')")
    folder = convert_tag(tag, work / "converted" / tag, verify=verify, cache_dir=downloads, progress=False)
    results["converted"] = dict(source=str(npz.relative_to(work)), folder=str(folder.relative_to(work)),
                                files=", ".join(sorted(p.name for p in folder.iterdir())), flax_verified=verify)
    print(format_table([results["converted"]]))

    title(f"timm.create_model({tag!r}, pretrained=True) from a local Hub cache, HF_HUB_OFFLINE=1")
    results["pretrained"] = load_pretrained_offline(tag, folder, work)
    print(format_table([results["pretrained"]]))
    if results["pretrained"]["max_abs_diff"] != 0.0:
        raise RuntimeError(f"{tag}: pretrained=True gave logits {results['pretrained']['max_abs_diff']:.3g} away "
                           f"from the converted weights in {folder}")

    models = bench_models if bench_models is not None else ["mixer_s32_zoo", "mixer_b16_zoo"]
    if models:
        title(f"ours vs timm's MlpMixer, same weights, CPU fp32, batch {batch_size}, median of {repeats}")
        results["benchmark"] = benchmark_models(models, device="cpu", batch_size=batch_size, warmup=1,
                                                repeats=repeats, train=False)
        print(summary_table(results["benchmark"]))
    return results
