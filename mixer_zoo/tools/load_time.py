"""How long ``create_model(..., pretrained=True)`` takes from a warm file, ours against timm's ``MlpMixer``
(``mixer-zoo bench --load-time``, ``benchmarks/model_paths.py``)."""
from __future__ import annotations

import datetime
import gc
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from ..model.architectures import ARCHITECTURES, TIMM_EQUIVALENTS
from ..util.env import environ
from ..util.hardware import cpu_isa, hardware_name

LOAD_TIME_COLUMNS = ["model", "timm_model", "file_mb", "first_load_s", "load_s", "timm_load_s", "first_load_vs_timm",
                     "load_time_vs_timm"]


def load_time_vs_timm(arch: str, repeats: int = 3, workdir: Optional[str] = None) -> Dict[str, Any]:
    """Seconds for ``create_model(..., pretrained=True)`` from one safetensors file, ours vs timm's ``MlpMixer``.

    The file is sealed with a content record, as every conversion is, so our load checks it. ``first_load_s``
    is our first load of it, which reads and hashes the whole file; ``load_s`` is the median of the warm loads
    after it, which find the digest remembered (:mod:`mixer_zoo.weights.digest_memo`). timm's side is the
    builder its ``mixer_*_224`` entries call, with this architecture's dims, so H/14 and S/8 (no timm entry)
    are timed the same way. The file is read once before timing (warm page cache) and runs alternate."""
    import tempfile

    import timm
    from safetensors.torch import save_file
    from timm.models import build_model_with_cfg
    from timm.models.mlp_mixer import MlpMixer, checkpoint_filter_fn

    from ..weights import digest_memo
    from ..weights.integrity import CONTENT_KEY, PENDING, seal_safetensors

    a = ARCHITECTURES[arch]
    twin = TIMM_EQUIVALENTS.get(arch, "mixer_l16_224")  # whose pretrained cfg timm's builder starts from
    dims = dict(patch_size=a["patch_size"], num_blocks=a["num_blocks"], embed_dim=a["embed_dim"])
    with tempfile.TemporaryDirectory(dir=workdir) as tmp, \
            environ({"MIXER_ZOO_CACHE": str(Path(tmp) / "zoo-cache")}):  # a digest memo of its own, gone with the file
        path = Path(tmp) / "model.safetensors"
        model = timm.create_model(arch, device="meta")
        save_file({k: torch.randn(v.shape) * 0.02 for k, v in model.state_dict().items()}, str(path),
                  metadata={CONTENT_KEY: PENDING})
        del model
        seal_safetensors(path)
        path.read_bytes()  # warm the page cache
        time.sleep(max(0.0, digest_memo.RACY_SECONDS + 0.1 - (time.time() - path.stat().st_ctime)))
        overlay = dict(file=str(path))
        builds = {"mixer_zoo": lambda: timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay),
                  "timm": lambda: build_model_with_cfg(MlpMixer, twin, pretrained=True, pretrained_cfg_overlay=overlay,
                                                       pretrained_filter_fn=checkpoint_filter_fn, **dims)}
        start = time.perf_counter()
        model = builds["mixer_zoo"]()  # reads and hashes the file, then remembers its digest
        first = time.perf_counter() - start
        del model
        times: Dict[str, List[float]] = {k: [] for k in builds}
        for _ in range(repeats):
            for impl, build in builds.items():
                gc.collect()
                start = time.perf_counter()
                model = build()
                times[impl].append(time.perf_counter() - start)
                del model
        size = path.stat().st_size
    ours, theirs = statistics.median(times["mixer_zoo"]), statistics.median(times["timm"])
    return dict(model=arch, timm_model=twin, file_mb=round(size / 2 ** 20, 1), first_load_s=round(first, 3),
                load_s=round(ours, 3), timm_load_s=round(theirs, 3),
                first_load_vs_timm=round(first / theirs, 3), load_time_vs_timm=round(ours / theirs, 3),
                repeats=repeats, hardware=hardware_name(torch.device("cpu")), cpu_isa=cpu_isa(),
                date=datetime.date.today().isoformat())
