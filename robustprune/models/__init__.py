"""Architecture registry and safe checkpoint I/O.

Importing this package registers the built-in architectures (mlp, digits_cnn, vgg11, preact_resnet18).
"""

from robustprune.models.checkpoint import CheckpointInfo, load_checkpoint, save_checkpoint, sha256_file
from robustprune.models.layers import Normalize
from robustprune.models.registry import MODELS, build_model, resolve_factory

# Imported for their registrations.
from robustprune.models import cnn, mlp, preact_resnet, vgg  # noqa: F401  isort: skip
from robustprune.models import dio  # noqa: F401  isort: skip  (dio_<base> multi-head models)

__all__ = [
    "MODELS",
    "CheckpointInfo",
    "Normalize",
    "build_model",
    "load_checkpoint",
    "resolve_factory",
    "save_checkpoint",
    "sha256_file",
]
