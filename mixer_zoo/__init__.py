"""mixer-zoo: every MLP-Mixer for timm and mmpretrain. Importing it registers the models with timm.

The package is layered; each layer imports only the ones below it (tests/test_layers.py checks this):
util -> model -> weights -> zoo -> formats (+ reference) -> mmpretrain -> tools -> cli.

Importing it is cheap (no torch, no timm), so that ``mixer-zoo --help`` and ``mixer-zoo list`` answer at once:
the registration with timm (:mod:`mixer_zoo.zoo`) runs right away when timm is already imported, and otherwise
the moment timm's own import finishes; ``Mixer`` and the other names below are imported on first use.
"""
import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

from ._version import __version__

_LAZY_NAMES = {"Mixer": "model", "MixerBlock": "model", "ARCHITECTURES": "model", "TIMM_EQUIVALENTS": "model"}
"""Public names and the subpackage that defines them, imported when first asked for."""


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        from . import model

        return getattr(model, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _TimmLoader(importlib.abc.Loader):
    """timm's own loader, then the zoo's registration, once timm's ``__init__`` has run."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__spec__.loader = module.__loader__ = self.loader
        self.loader.exec_module(module)
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _RegisterWhenTimmLoads)]
        from . import zoo  # noqa: F401  (registers the models with timm)

    def __getattr__(self, name: str) -> Any:  # resource readers and the like: timm's loader answers
        return getattr(self.loader, name)


class _RegisterWhenTimmLoads(importlib.abc.MetaPathFinder):
    """Asks the other finders for timm and hands what they find to :class:`_TimmLoader`."""

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "timm":
            return None
        for finder in sys.meta_path:
            spec = None if finder is self else getattr(finder, "find_spec", lambda *a: None)(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _TimmLoader(spec.loader)
                return spec
        return None


if "timm" in sys.modules:
    from . import zoo as _zoo  # noqa: F401  (registers the models with timm)
elif not any(isinstance(f, _RegisterWhenTimmLoads) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterWhenTimmLoads())

__all__ = ["Mixer", "MixerBlock", "ARCHITECTURES", "TIMM_EQUIVALENTS", "__version__"]
