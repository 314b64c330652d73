"""The ranking head: EfficientNet-Lite0's last MBConv block and last 1x1 convolution, GeM
pooling and a projection to a 256-d L2-normalised embedding, trained for copy detection.

Without a block, input is the backbone cut before its last convolution:
``block15_project_conv``, a ``(7, 7, 320)`` map. The head owns that convolution
(320 -> 1280, BatchNorm folded, ReLU6) so training may adapt it; ``conv_trained``
in the file's metadata says whether it did (otherwise it holds the ImageNet values). Then:

    x = relu6(conv(map))                            (7, 7, 1280)
    g = mean_hw(max(x, eps) ** p) ** (1 / p)        GeM, learnt p (starts at 3)
    [h = g + relu(g @ W1 + b1) @ W2]                optional residual MLP
    z = normalise(g @ W + b)                        (256,)

A head may also own the backbone's last MBConv block, ``block15`` (arrays ``block/...``: 1x1
expansion 192 -> 1152, 3x3 depthwise, 1x1 projection to 320, BatchNorm folded), fine-tuned with
it (``training/train.py``'s default since 2026-12-07; the shipped head does, ``block_trained`` in
its metadata). Its input is then the map before that block, ``block14_add``
(``BLOCK_INPUT_LAYER``, ``(7, 7, 192)``), and the block runs first:

    m = relu6(E map + e); m = relu6(depthwise3x3(m) + d); map' = P m + q

File format: one ``.npz`` read with ``allow_pickle=False``; a ``__meta__``
JSON string holds the format, the SHA-256 of all arrays (checked on every
load), the training configuration and the command that wrote it. A missing or
damaged file raises :class:`~matching.core.cnn.weights.WeightsError` naming
``TRAIN_COMMAND``: it is never silently replaced.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from ..resources import package_file
from .weights import WeightsError, arrays_sha256

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

__all__ = [
    "DEFAULT_HEAD_PATH",
    "EMBEDDING_DIM",
    "BLOCK_INPUT_LAYER",
    "FEATURE_LAYER",
    "HeadWeights",
    "TRAIN_COMMAND",
    "block_tf",
    "head_numpy",
    "head_tf",
    "read_head",
    "write_head",
]

TRAIN_COMMAND = "python -m training.train --seed 0"
FORMAT = "imgprotect/cnn-ranking-head"
FORMAT_VERSION = 1
META_KEY = "__meta__"
EMBEDDING_DIM = 256
FEATURE_LAYER = "block15_project_conv"  # the backbone is cut here; the head starts with "head_conv"
GEM_EPS = 1e-6
# (package_file: also from the zip Spark executors import the engine from, spark/submit.py.)
DEFAULT_HEAD_PATH = package_file("matching.core.cnn", "weights/head.npz")
BLOCK_INPUT_LAYER = "block14_add"  # where the backbone is cut for a head that owns block15
BLOCK_INPUT_CHANNELS = 192  # that layer's channels
_REQUIRED = ("conv/kernel", "conv/bias", "gem/p", "proj/kernel", "proj/bias")
_BLOCK = ("block/expand_kernel", "block/expand_bias", "block/dw_kernel", "block/dw_bias",
          "block/project_kernel", "block/project_bias")
_OPTIONAL = ("mlp/kernel1", "mlp/bias1", "mlp/kernel2", "mlp/bias2", *_BLOCK)


@dataclass(frozen=True)
class HeadWeights:
    """Arrays by name (``conv/kernel`` (320, 1280), ``gem/p`` (), ``proj/kernel`` (1280, 256) ...)."""

    arrays: dict[str, npt.NDArray[Any]]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def p(self) -> float:
        return float(self.arrays["gem/p"])

    @property
    def has_mlp(self) -> bool:
        return "mlp/kernel1" in self.arrays

    @property
    def has_block(self) -> bool:
        """The head owns the backbone's last block (``block/...`` arrays)."""
        return "block/expand_kernel" in self.arrays

    @property
    def feature_layer(self) -> str:
        """The backbone layer whose output this head takes."""
        return BLOCK_INPUT_LAYER if self.has_block else FEATURE_LAYER

    @property
    def sha256(self) -> str:
        return arrays_sha256(self.arrays)


def _check_shapes(arrays: dict[str, npt.NDArray[Any]]) -> None:
    missing = [n for n in _REQUIRED if n not in arrays]
    if missing:
        raise ValueError(f"missing arrays {missing}")
    unknown = sorted(set(arrays) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ValueError(f"unknown arrays {unknown}")
    cin, width = arrays["conv/kernel"].shape
    if arrays["conv/bias"].shape != (width,) or arrays["gem/p"].shape != ():
        raise ValueError("conv bias or GeM p has the wrong shape")
    if "mlp/kernel1" in arrays:
        hidden = arrays["mlp/kernel1"].shape[1]
        if (arrays["mlp/kernel1"].shape != (width, hidden) or arrays["mlp/bias1"].shape != (hidden,)
                or arrays["mlp/kernel2"].shape != (hidden, width) or arrays["mlp/bias2"].shape != (width,)):
            raise ValueError("MLP arrays have inconsistent shapes")
    if arrays["proj/kernel"].shape != (width, EMBEDDING_DIM) or arrays["proj/bias"].shape != (EMBEDDING_DIM,):
        raise ValueError(f"projection must be ({width}, {EMBEDDING_DIM})")
    present = [n for n in _BLOCK if n in arrays]
    if present and len(present) != len(_BLOCK):
        raise ValueError(f"block arrays incomplete: missing {[n for n in _BLOCK if n not in arrays]}")
    if present:
        block_in, hidden = arrays["block/expand_kernel"].shape
        if block_in != BLOCK_INPUT_CHANNELS:
            raise ValueError(f"block arrays take {block_in} channels, {BLOCK_INPUT_LAYER} has {BLOCK_INPUT_CHANNELS}")
        want = {"block/expand_bias": (hidden,), "block/dw_kernel": (3, 3, hidden, 1), "block/dw_bias": (hidden,),
                "block/project_kernel": (hidden, cin), "block/project_bias": (cin,)}
        wrong = [n for n, shape in want.items() if arrays[n].shape != shape]
        if wrong:
            raise ValueError(f"block arrays have inconsistent shapes: {wrong}")


def write_head(path: Path, head: HeadWeights) -> None:
    """Write atomically (temp file + rename) so a worker never loads half a file."""
    # np.array, not ascontiguousarray: that one turns the 0-d GeM p into shape (1,).
    arrays = {n: np.array(a, dtype=np.float32, order="C") for n, a in head.arrays.items()}
    _check_shapes(arrays)
    meta = {**head.meta, "format": FORMAT, "version": FORMAT_VERSION,
            "sha256": arrays_sha256(arrays), "written_by": TRAIN_COMMAND}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            members: dict[str, Any] = {**arrays, META_KEY: np.array(json.dumps(meta, sort_keys=True))}
            np.savez(fh, **members)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_head(path: Path | None = None) -> HeadWeights:
    """Load and verify the head; every failure is a ``WeightsError`` that names the train command."""
    path = Path(path) if path is not None else DEFAULT_HEAD_PATH
    fix = f"restore it from the repository or retrain it with `{TRAIN_COMMAND} --out {path}`"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise WeightsError(f"ranking-head weights {path} are missing; {fix}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise WeightsError(f"ranking-head weights {path} are unreadable ({exc}); {fix}") from exc
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise WeightsError(f"ranking-head weights {path} have format {meta.get('format')!r} "
                               f"v{meta.get('version')}, expected {FORMAT} v{FORMAT_VERSION}; {fix}")
        expected = meta["sha256"]
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"ranking-head weights {path} have no valid checksum record; {fix}") from exc
    if arrays_sha256(arrays) != expected:
        raise WeightsError(f"ranking-head weights {path} fail their SHA-256 check (corrupt); {fix}")
    try:
        _check_shapes(arrays)
    except ValueError as exc:
        raise WeightsError(f"ranking-head weights {path} do not fit the head ({exc}); {fix}") from exc
    return HeadWeights(arrays=arrays, meta=meta)


def _l2n(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    unit: npt.NDArray[Any] = x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
    return unit


def _block_numpy(features: npt.NDArray[Any], a: dict[str, npt.NDArray[Any]]) -> npt.NDArray[Any]:
    """block15 on ``(n, h, w, 192)`` maps: expansion, 3x3 depthwise ("same" zero padding), projection."""
    m = np.clip(features.astype(np.float32) @ a["block/expand_kernel"] + a["block/expand_bias"], 0.0, 6.0)
    h, w = m.shape[1:3]
    padded = np.pad(m, ((0, 0), (1, 1), (1, 1), (0, 0)))
    kernel = a["block/dw_kernel"][..., 0]
    d = sum(padded[:, i:i + h, j:j + w] * kernel[i, j] for i in range(3) for j in range(3))
    m = np.clip(d + a["block/dw_bias"], 0.0, 6.0)
    out: npt.NDArray[Any] = m @ a["block/project_kernel"] + a["block/project_bias"]
    return out


def head_numpy(features: npt.NDArray[Any], head: HeadWeights) -> npt.NDArray[Any]:
    """Reference implementation on ``(n, 7, 7, C)`` feature maps (C 320, or 192 for a head with
    the block) -> ``(n, 256)`` float32."""
    a = head.arrays
    if head.has_block:
        features = _block_numpy(features, a)
    x = np.clip(features.astype(np.float32) @ a["conv/kernel"] + a["conv/bias"], 0.0, 6.0)
    p = head.p
    g = np.mean(np.maximum(x, GEM_EPS) ** p, axis=(1, 2)) ** (1.0 / p)
    if head.has_mlp:
        g = g + np.maximum(g @ a["mlp/kernel1"] + a["mlp/bias1"], 0.0) @ a["mlp/kernel2"] + a["mlp/bias2"]
    return _l2n(g @ a["proj/kernel"] + a["proj/bias"]).astype(np.float32)


def block_tf(features: "tf.Tensor", a: dict[str, Any]) -> "tf.Tensor":
    """block15 in TensorFlow on ``(n, h, w, 192)`` maps, with ``a``'s ``block/...`` tensors
    (constants in the embedding graph, variables in training/train.py)."""
    import tensorflow as tf

    m = tf.nn.relu6(tf.tensordot(features, a["block/expand_kernel"], 1) + a["block/expand_bias"])
    m = tf.nn.relu6(tf.nn.depthwise_conv2d(m, a["block/dw_kernel"], [1, 1, 1, 1], "SAME") + a["block/dw_bias"])
    return tf.tensordot(m, a["block/project_kernel"], 1) + a["block/project_bias"]


def head_tf(features: "tf.Tensor", head: HeadWeights) -> "tf.Tensor":
    """The same computation in TensorFlow (weights as constants), for the embedding graph."""
    import tensorflow as tf

    a = {n: tf.constant(v) for n, v in head.arrays.items()}
    if head.has_block:
        features = block_tf(features, a)
    x = tf.nn.relu6(tf.tensordot(features, a["conv/kernel"], 1) + a["conv/bias"])
    p = a["gem/p"]
    # exp(p log x) rather than pow(x, p): the same value to float rounding, 4x faster on
    # TensorFlow's CPU kernels (21.6 -> 4.8 ms for a batch of 32 maps, one core).
    g = tf.pow(tf.reduce_mean(tf.exp(p * tf.math.log(tf.maximum(x, GEM_EPS))), axis=(1, 2)), 1.0 / p)
    if head.has_mlp:
        g = g + tf.nn.relu(g @ a["mlp/kernel1"] + a["mlp/bias1"]) @ a["mlp/kernel2"] + a["mlp/bias2"]
    return tf.math.l2_normalize(g @ a["proj/kernel"] + a["proj/bias"], axis=-1)
