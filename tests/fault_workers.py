"""What one process of the fault-injection suite does (tests/test_faults.py starts many at once, or kills
them): download, convert, install or load one tag, through the same library and CLI code users run.

Processes come from a ``forkserver`` that imported this module (so torch and timm) once; each child takes
its settings from its arguments (the server's environment is the one it started with), writes its stderr
to a file and its outcome as JSON, and is ended by SIGKILL when the test says so.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Dict

import huggingface_hub.constants
import timm  # noqa: F401  (imported once in the forkserver)
import torch

import mixer_zoo  # noqa: F401  (registers the models with timm)
from integrity_helpers import TAG, tiny_architecture
from mixer_zoo.cli import main as cli_main
from mixer_zoo.tools import convert as _convert, publish as _publish  # noqa: F401  (imported once)
from mixer_zoo.weights.download import download


def state_digest(state_dict: Dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors, in key order: equal digests mean equal weights."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        digest.update(key.encode())
        digest.update(state_dict[key].detach().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _cli(argv) -> Dict[str, Any]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli_main(argv)
        except SystemExit as e:  # argparse: counted as a failure of the suite, not hidden
            code = e.code if isinstance(e.code, int) else 99
    return dict(code=code, stderr=err.getvalue())


def _load(hub_cache: str, attempts: int) -> Dict[str, Any]:
    """``pretrained=True`` offline, retried a bounded number of times while installs may be under way."""
    from mixer_zoo.weights.hub_cache import WeightsError

    outcomes = []
    for _ in range(attempts):
        try:
            model = timm.create_model(TAG, pretrained=True, cache_dir=hub_cache)
            outcomes.append(dict(ok=True, digest=state_digest(model.state_dict())))
            break
        except WeightsError as e:
            outcomes.append(dict(ok=False, error=type(e).__name__, message=str(e)))
            time.sleep(0.05)
    return dict(outcomes=outcomes)


def run(task: Dict[str, Any]) -> None:
    """Entry point of a child: ``task`` names the action and its paths; the outcome goes to ``task['result']``."""
    os.environ["MIXER_ZOO_CACHE"] = task["locks"]
    huggingface_hub.constants.HF_HUB_OFFLINE = True
    torch.set_num_threads(1)
    stderr = open(task["result"] + ".stderr", "w")
    os.dup2(stderr.fileno(), 2)
    sys.stderr = stderr
    result: Dict[str, Any]
    try:
        with tiny_architecture():
            action = task["action"]
            if action == "download":
                path = download(task["url"], cache_dir=task["cache"], progress=False, retries=task.get("retries", 3))
                result = dict(ok=True, sha256=hashlib.sha256(Path(path).read_bytes()).hexdigest())
            elif action == "cli":
                if task.get("hub_cache"):
                    huggingface_hub.constants.HF_HUB_CACHE = task["hub_cache"]
                result = _cli(task["argv"])
            elif action == "load":
                if task.get("endpoint"):  # download through huggingface_hub from a local "Hub"
                    huggingface_hub.constants.HF_HUB_OFFLINE = False
                    huggingface_hub.constants.ENDPOINT = task["endpoint"]
                    huggingface_hub.constants.HUGGINGFACE_CO_URL_TEMPLATE = (
                        task["endpoint"] + "/{repo_id}/resolve/{revision}/{filename}")
                result = _load(task["hub_cache"], task.get("attempts", 40))
            else:
                raise ValueError(f"unknown action {action!r}")
    except Exception as e:  # recorded for the test to judge (a library error type, a message)
        result = dict(ok=False, error=type(e).__name__, message=str(e))
    Path(task["result"] + ".tmp").write_text(json.dumps(result))
    os.replace(task["result"] + ".tmp", task["result"])
