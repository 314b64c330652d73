"""The EfficientNet-Lite0 backbone as the matcher uses it: load once, run batches.

The model is built and its weights loaded once per process and per
(weights file, head) pair, under a lock; inference goes through a cached
``tf.function`` so a call costs one graph execution, not a Python walk over
~250 layers. TensorFlow is imported on first use only.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from .efficientnet_lite import FEATURE_CHANNELS, INPUT_SHAPE, NUM_CLASSES
from .weights import WeightsError, convert_checkpoint, default_weights_path, read_weights

if TYPE_CHECKING:  # pragma: no cover
    import keras
    from PIL import Image

__all__ = ["classify", "load_backbone", "pooled_features", "preprocess"]

DEFAULT_BATCH_SIZE = 32


@dataclass(frozen=True)
class Loaded:
    model: "keras.Model"
    run: Callable[[npt.NDArray[Any]], Any]  # batch (n, 224, 224, 3) -> pooled (n, 1280) or logits (n, 1000)


_lock = threading.Lock()
_loaded: dict[tuple[str, bool, bool], Loaded] = {}


def load_loaded(weights_path: str | Path | None, include_top: bool, fused: bool = True) -> Loaded:
    path = Path(weights_path) if weights_path is not None else default_weights_path()
    key = (str(path.resolve()), include_top, fused)
    loaded = _loaded.get(key)
    if loaded is not None:
        return loaded
    with _lock:
        loaded = _loaded.get(key)
        if loaded is None:
            loaded = _loaded[key] = _build(path, include_top, fused)
    return loaded


def _build(path: Path, include_top: bool, fused: bool) -> Loaded:
    import tensorflow as tf

    from .efficientnet_lite import build_backbone, fuse_batchnorm, set_weights

    try:
        arrays = read_weights(path)
    except FileNotFoundError:
        # Offline by design: the source checkpoint ships in an installed package.
        convert_checkpoint(output=path)
        arrays = read_weights(path)
    model = build_backbone(include_top=include_top, fused=fused)
    try:
        set_weights(model, fuse_batchnorm(arrays) if fused else arrays)
    except ValueError as exc:
        raise WeightsError(f"weights file {path} does not fit EfficientNet-Lite0 ({exc}); "
                           "rebuild it with `python -m matching.core.cnn.convert`") from exc

    def forward(batch: Any) -> Any:
        out = model(batch, training=False)
        return out if include_top else tf.reduce_mean(out, axis=(1, 2))

    run: Callable[[npt.NDArray[Any]], Any] = tf.function(
        forward, input_signature=[tf.TensorSpec((None, *INPUT_SHAPE), tf.float32)])
    return Loaded(model=model, run=run)


def load_backbone(weights_path: str | Path | None = None, include_top: bool = False, *,
                  fused: bool = True) -> "keras.Model":
    """The Keras model with ImageNet weights, built once per process and shared.

    ``weights_path`` defaults to ``<data_dir>/models/efficientnet_lite0_imagenet.npz`` (``.config``);
    a missing file is converted from the installed package first. A corrupt or
    mismatched file raises ``WeightsError`` naming ``python -m matching.core.cnn.convert``.
    ``fused`` (default) folds BatchNorm into the convolutions for inference;
    ``fused=False`` returns the layer-for-layer port with its BatchNorm layers,
    for fine-tuning. The returned model is shared: do not change its weights.
    """
    return load_loaded(weights_path, include_top, fused).model


def preprocess(image: "Image.Image") -> npt.NDArray[Any]:
    """RGB, bilinear resize of the whole image to 224x224 (no crop), ``(x/255 - 0.5)/0.5``.

    Returns ``(224, 224, 3)`` float32. The whole frame is kept on purpose: a
    copy-detection signal must not ignore the borders a centre crop would drop.
    """
    from PIL import Image

    rgb = image.convert("RGB").resize(INPUT_SHAPE[1::-1], Image.Resampling.BILINEAR)
    return (np.asarray(rgb, dtype=np.float32) / 255.0 - 0.5) / 0.5


def _batches(images: "npt.NDArray[Any] | Iterable[Image.Image]", batch_size: int) -> Iterable[npt.NDArray[Any]]:
    if isinstance(images, np.ndarray):
        if images.ndim != 4 or images.shape[1:] != INPUT_SHAPE:
            raise ValueError(f"expected preprocessed images (n, 224, 224, 3), got {images.shape}")
        batch = images.astype(np.float32, copy=False)
        for start in range(0, len(batch), batch_size):
            yield batch[start : start + batch_size]
        return
    chunk: list[npt.NDArray[Any]] = []
    for image in images:
        chunk.append(preprocess(image))
        if len(chunk) == batch_size:
            yield np.stack(chunk)
            chunk = []
    if chunk:
        yield np.stack(chunk)


def _run(images: Any, width: int, *, include_top: bool, weights_path: str | Path | None,
         batch_size: int) -> npt.NDArray[Any]:
    loaded = load_loaded(weights_path, include_top)
    outputs = [np.asarray(loaded.run(batch)) for batch in _batches(images, batch_size)]
    return np.concatenate(outputs) if outputs else np.zeros((0, width), np.float32)


def pooled_features(images: "npt.NDArray[Any] | Iterable[Image.Image]", *,
                    weights_path: str | Path | None = None,
                    batch_size: int = DEFAULT_BATCH_SIZE) -> npt.NDArray[Any]:
    """``(n, 1280)`` float32: the 7x7x1280 feature map averaged over space.

    ``images``: PIL images (preprocessed here) or an already preprocessed
    ``(n, 224, 224, 3)`` float32 array.
    """
    return _run(images, FEATURE_CHANNELS, include_top=False, weights_path=weights_path,
                batch_size=batch_size)


def classify(images: "npt.NDArray[Any] | Iterable[Image.Image]", *,
             weights_path: str | Path | None = None,
             batch_size: int = DEFAULT_BATCH_SIZE) -> npt.NDArray[Any]:
    """``(n, 1000)`` float32 ImageNet logits (no softmax), same inputs as ``pooled_features``."""
    return _run(images, NUM_CLASSES, include_top=True, weights_path=weights_path,
                batch_size=batch_size)
