from pathlib import Path

import pytest
import torch

import mixer_zoo  # noqa: F401  (registers the models with timm)
from mixer_zoo.util.env import environ


@pytest.fixture(autouse=True, scope="session")
def _private_zoo_cache(tmp_path_factory):
    """Tests (and the processes they start) never write into the user's mixer-zoo cache: digest memo, locks,
    generated mmpretrain model index."""
    with environ({"MIXER_ZOO_CACHE": str(tmp_path_factory.mktemp("mixer-zoo-cache"))}):
        yield


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _no_log_handlers_on_closed_streams():
    """mmengine's loggers outlive a test, and their handlers keep the stderr that pytest captured for it; once
    that stream is closed, any later log line prints a 'Logging error' traceback into the next test's stderr."""
    import logging
    import sys

    mmlogger = sys.modules.get("mmengine.logging.logger")
    loggers = [logging.getLogger()] + [v for v in logging.root.manager.loggerDict.values()
                                       if isinstance(v, logging.Logger)]
    if mmlogger is not None:
        loggers += list(mmlogger.MMLogger._instance_dict.values())
    for logger in loggers:
        for handler in list(logger.handlers):
            if getattr(getattr(handler, "stream", None), "closed", False):
                logger.removeHandler(handler)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values (LN scales around 1, the head non-zero), so a swapped or
    transposed tensor changes the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * noise)
            else:
                p.copy_(0.05 * noise)
    return model


# ---- real CIFAR-10 (../shared/data/cifar10-real, next to the repository; CI has it too) -------------------------

REAL_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-real"
needs_real_cifar = pytest.mark.skipif(
    not (REAL_CIFAR / "cifar-10-batches-py").is_dir(),
    reason=f"real CIFAR-10 images not found: no {REAL_CIFAR}/cifar-10-batches-py (the repository's ../shared/data)")

CLI_THREADS = ["--threads", "1"]  # one thread: on a shared CPU, idle OpenMP threads spin and cost more than they give


def run_in_threads(target, count: int) -> None:
    """Call ``target(i)`` for i in range(count), each in its own thread, and wait for all."""
    import threading

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def pool_storages(pool) -> tuple:
    """The storages a ``BufferPool`` holds (by identity) and their bytes: equal before and after a call when the
    call allocated nothing new."""
    return {id(entry[0]) for entries in pool._storages.values() for entry in entries}, pool.nbytes()


def cifar_data_options(train_per_class: int, test_per_class: int, **train_loader) -> str:
    """Config lines pointing a shipped CIFAR config at the real images, on balanced subsets."""
    return f"""
train_dataloader = dict(dataset=dict(data_root={str(REAL_CIFAR)!r}, per_class={train_per_class}), **{train_loader!r})
val_dataloader = dict(dataset=dict(data_root={str(REAL_CIFAR)!r}, per_class={test_per_class}))
test_dataloader = val_dataloader
"""


@pytest.fixture(scope="session")
def cifar32_scratch_run(tmp_path_factory):
    """The shipped from-scratch config (``scratch/cifar10_32px.py``) on 2,000 real training images (200 a class)
    for 4 short epochs, then validated on 300 real test images: the same model, optimiser and augmentation, a
    smaller budget. Trained once per session: ``(config, work_dir)``, the last checkpoint is ``epoch_4.pth``."""
    if not (REAL_CIFAR / "cifar-10-batches-py").is_dir():
        pytest.skip(f"real CIFAR-10 images not found: no {REAL_CIFAR}/cifar-10-batches-py")
    pytest.importorskip("mmpretrain")
    from mixer_zoo.cli import main as cli_main
    from mixer_zoo.mmpretrain import CONFIG_DIR

    folder = tmp_path_factory.mktemp("scratch")
    config = folder / "short.py"
    config.write_text(f"""_base_ = [{str(CONFIG_DIR / "scratch" / "cifar10_32px.py")!r}]
{cifar_data_options(200, 30, batch_size=32)}
optim_wrapper = dict(optimizer=dict(lr=3e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-2, by_epoch=False, begin=0, end=10),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=0, end=4, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=4, val_interval=4)
""")
    work_dir = folder / "work"
    assert cli_main(["train", str(config), "--work-dir", str(work_dir), *CLI_THREADS]) == 0
    return config, work_dir
