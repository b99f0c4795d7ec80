"""mmpretrain integration: importing this module registers the zoo with mmpretrain.

- ``MixerZoo`` backbone in ``mmpretrain.registry.MODELS`` (timm's parameter names, tag-aware GELU);
- the ``zoo://arch.tag`` checkpoint scheme (safetensors from the tag's Hub repo) and ``local-dir:PATH``
  (a converted folder or ``.safetensors`` file in timm layout);
- the checkpoint rules of :mod:`.checkpoints`: mmengine's own checkpoints load under ``weights_only=True``
  (allow-listed here, on import, so a plain ``Runner.from_cfg`` resumes and tests), and
  ``ExactCheckpointHook`` makes a partial load an error;
- ``ZooCIFAR10``, a CIFAR-10 dataset read with a restricted unpickler;
- a model-index generated from ``weights_manifest.json`` in mmpretrain's ``ModelHub``, so
  ``list_models("*zoo*")`` / ``get_model(name, pretrained=True)`` know every tag.

Configs ship in ``CONFIG_DIR``; in a config, ``custom_imports = dict(imports=["mixer_zoo.mmpretrain"])``.
"""
from .. import zoo as _zoo  # noqa: F401  (timm registration, used by the tests and by users alike)
from .backbone import MixerZoo, resolve_arch
from .checkpoints import CheckpointMismatchError, ExactCheckpointHook, allow_mmengine_checkpoints
from .cifar import ZooCIFAR10, load_split, read_batch, write_cifar10
from .metafile import CONFIG_DIR, mm_model_name, model_names, register_model_index
from .weights import SCHEME, hub_weights_file, load_zoo_checkpoint

register_model_index()
allow_mmengine_checkpoints()

__all__ = [
    "MixerZoo", "resolve_arch", "CheckpointMismatchError", "ExactCheckpointHook", "allow_mmengine_checkpoints",
    "ZooCIFAR10", "load_split", "read_batch", "write_cifar10", "CONFIG_DIR",
    "mm_model_name", "model_names", "register_model_index", "SCHEME", "hub_weights_file",
    "load_zoo_checkpoint",
]
