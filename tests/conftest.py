import pytest
import torch

import mixer_zoo  # noqa: F401  (registers the models with timm)


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
