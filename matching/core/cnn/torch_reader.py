"""Read a PyTorch ``state_dict`` checkpoint (``.pth``) without torch.

A ``.pth`` file is a pickle, and unpickling runs arbitrary code, so the
unpickler here only resolves the handful of globals a plain tensor state dict
needs (``torch._utils._rebuild_tensor_v2``, ``torch._utils._rebuild_parameter``,
``collections.OrderedDict`` and the ``torch.*Storage`` type tags) and maps each
of them to local numpy code; any other global raises
``pickle.UnpicklingError``. Tensor data never passes through pickle: it is
read as raw bytes and checked against the storage bounds before a numpy view
is taken.

Two on-disk layouts exist and both are read:

* the zip layout (torch >= 1.6): ``<prefix>/data.pkl`` plus one raw entry
  ``<prefix>/data/<key>`` per storage;
* the legacy layout (torch < 1.6): pickled magic number, protocol version and
  sys info, then the state-dict pickle, then the pickled list of storage keys,
  then each storage as an 8-byte little-endian element count and raw bytes.

The very old tar layout (torch < 0.4) is recognised and refused.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import tarfile
import zipfile
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import as_strided

__all__ = ["TorchCheckpointError", "read_state_dict"]

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL_VERSION = 1001

# Storage type tag -> numpy dtype (without byte order). bfloat16 has no numpy
# dtype: its 16-bit patterns are widened to float32 after the view is taken.
_STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": "u2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
}


class TorchCheckpointError(pickle.UnpicklingError, ValueError):
    """The file is not a tensor state dict this reader can decode safely.

    A subclass of ``pickle.UnpicklingError``, so a disallowed global surfaces
    as that type whichever layer notices it.
    """


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype_code(self) -> str:
        return _STORAGE_DTYPES[self.name]


@dataclass
class _StorageRef:
    """A storage named in the pickle; its bytes are attached later."""

    key: str
    storage_type: _StorageType
    numel: int
    data: npt.NDArray[Any] | None = None  # 1-d, native byte order, set by the loader


@dataclass
class _StorageView:
    """Legacy-format view into a root storage (element offset and size)."""

    root: _StorageRef
    offset: int
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef | _StorageView
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(
    storage: Any,
    storage_offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    backward_hooks: Any = None,
    metadata: Any = None,
) -> _TensorRef:
    if not isinstance(storage, (_StorageRef, _StorageView)):
        raise pickle.UnpicklingError("tensor rebuilt from something that is not a storage")
    try:
        size_t = tuple(int(s) for s in size)
        stride_t = tuple(int(s) for s in stride)
        offset = int(storage_offset)
    except (TypeError, ValueError) as exc:
        raise pickle.UnpicklingError(f"bad tensor geometry: {exc}") from None
    if len(size_t) != len(stride_t):
        raise pickle.UnpicklingError("tensor size and stride differ in length")
    return _TensorRef(storage, offset, size_t, stride_t)


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> Any:
    if not isinstance(data, _TensorRef):
        raise pickle.UnpicklingError("parameter rebuilt from something that is not a tensor")
    return data


_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch", name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler for tensor state dicts; refuses every other global."""

    def __init__(self, file: IO[bytes], *, storages: dict[str, _StorageRef]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"global {module}.{name} is not allowed in a weights file"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        # ('storage', storage_type, key, location, numel[, view_metadata])
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError("persistent id without a storage type")
        key = str(key)
        if not isinstance(numel, int) or numel < 0:
            raise pickle.UnpicklingError(f"bad element count for storage {key}")
        ref = self._storages.get(key)
        if ref is None:
            ref = self._storages[key] = _StorageRef(key, storage_type, numel)
        elif ref.storage_type != storage_type:
            raise pickle.UnpicklingError(f"storage {key} used with two types")
        view_metadata = pid[5] if len(pid) == 6 else None
        if view_metadata is None:
            return ref
        view_key, view_offset, view_size = view_metadata
        if not (0 <= view_offset and view_offset + view_size <= numel):
            raise pickle.UnpicklingError(f"storage view {view_key} outside its storage")
        return _StorageView(ref, int(view_offset), int(view_size))


def _storage_array(raw: bytes, storage_type: _StorageType, numel: int, little_endian: bool) -> npt.NDArray[Any]:
    dtype = np.dtype(("<" if little_endian else ">") + storage_type.dtype_code)
    if len(raw) != numel * dtype.itemsize:
        raise TorchCheckpointError(
            f"storage holds {len(raw)} bytes, expected {numel} x {dtype.itemsize}"
        )
    return np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="), copy=True)


def _materialise(tensor: _TensorRef) -> npt.NDArray[Any]:
    storage = tensor.storage
    if isinstance(storage, _StorageView):
        root, base = storage.root, storage.offset
        available = storage.numel
    else:
        root, base = storage, 0
        available = storage.numel
    if root.data is None:
        raise TorchCheckpointError(f"storage {root.key} has no data in the file")
    # as_strided does no bounds checking: prove every element lies inside.
    if tensor.offset < 0 or any(s < 0 for s in tensor.size) or any(s < 0 for s in tensor.stride):
        raise TorchCheckpointError("negative tensor offset, size or stride")
    if 0 in tensor.size:
        flat = np.empty(tensor.size, dtype=root.data.dtype)
    else:
        last = tensor.offset + sum((n - 1) * s for n, s in zip(tensor.size, tensor.stride))
        if last >= available:
            raise TorchCheckpointError(f"tensor reaches past the end of storage {root.key}")
        data = root.data[base + tensor.offset : base + available]
        item = data.itemsize
        flat = as_strided(
            data, shape=tensor.size, strides=tuple(s * item for s in tensor.stride), writeable=False
        ).copy()
    if root.storage_type.name == "BFloat16Storage":
        flat = (flat.astype(np.uint32) << 16).view(np.float32)
    return flat


def _to_state_dict(obj: Any) -> dict[str, npt.NDArray[Any]]:
    if not isinstance(obj, dict):
        raise TorchCheckpointError(f"top-level object is a {type(obj).__name__}, not a state dict")
    out: dict[str, npt.NDArray[Any]] = {}
    for name, value in obj.items():
        if not isinstance(name, str) or not isinstance(value, _TensorRef):
            raise TorchCheckpointError(f"entry {name!r:.80} is not a named tensor")
        out[name] = _materialise(value)
    return out


def _read_zip(path: str | os.PathLike[str]) -> dict[str, npt.NDArray[Any]]:
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
        if len(pkl) != 1:
            raise TorchCheckpointError("zip checkpoint without exactly one data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        little_endian = True
        if prefix + "byteorder" in names:
            little_endian = zf.read(prefix + "byteorder").strip() != b"big"
        storages: dict[str, _StorageRef] = {}
        with zf.open(pkl[0]) as fh:
            obj = _RestrictedUnpickler(io.BytesIO(fh.read()), storages=storages).load()
        for key, ref in storages.items():
            entry = f"{prefix}data/{key}"
            if entry not in names:
                raise TorchCheckpointError(f"zip checkpoint lacks {entry}")
            ref.data = _storage_array(zf.read(entry), ref.storage_type, ref.numel, little_endian)
    return _to_state_dict(obj)


def _load_plain(fh: IO[bytes]) -> Any:
    """Unpickle a header value that must contain no globals at all."""

    class _NoGlobals(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            raise pickle.UnpicklingError(f"global {module}.{name} in a checkpoint header")

    return _NoGlobals(fh).load()


def _read_legacy(fh: IO[bytes]) -> dict[str, npt.NDArray[Any]]:
    if _load_plain(fh) != LEGACY_MAGIC_NUMBER:
        raise TorchCheckpointError("not a PyTorch checkpoint (magic number mismatch)")
    if _load_plain(fh) != LEGACY_PROTOCOL_VERSION:
        raise TorchCheckpointError("unsupported legacy checkpoint protocol version")
    sys_info = _load_plain(fh)
    little_endian = bool(sys_info.get("little_endian", True)) if isinstance(sys_info, dict) else True
    storages: dict[str, _StorageRef] = {}
    obj = _RestrictedUnpickler(fh, storages=storages).load()
    keys = _load_plain(fh)
    if not isinstance(keys, list) or set(map(str, keys)) != set(storages):
        raise TorchCheckpointError("storage key list does not match the tensors")
    count_fmt = "<q" if little_endian else ">q"
    for key in keys:
        ref = storages[str(key)]
        header = fh.read(8)
        if len(header) != 8:
            raise TorchCheckpointError("checkpoint truncated in the storage data")
        (numel,) = struct.unpack(count_fmt, header)
        if numel != ref.numel:
            raise TorchCheckpointError(f"storage {key}: {numel} elements, pickle says {ref.numel}")
        nbytes = numel * np.dtype(ref.storage_type.dtype_code).itemsize
        raw = fh.read(nbytes)
        if len(raw) != nbytes:
            raise TorchCheckpointError("checkpoint truncated in the storage data")
        ref.data = _storage_array(raw, ref.storage_type, numel, little_endian)
    return _to_state_dict(obj)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, npt.NDArray[Any]]:
    """Return the tensors of a ``.pth`` state dict as numpy arrays, by name.

    Raises ``TorchCheckpointError`` for anything that is not a plain tensor
    state dict (including ``pickle.UnpicklingError`` for disallowed globals,
    which is chained as the cause).
    """
    try:
        if zipfile.is_zipfile(path):
            return _read_zip(path)
        if tarfile.is_tarfile(path):
            raise TorchCheckpointError("tar checkpoints (PyTorch < 0.4) are not supported")
        with open(path, "rb") as fh:
            return _read_legacy(fh)
    except TorchCheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, struct.error, ValueError,
            KeyError, TypeError, AttributeError, IndexError) as exc:
        raise TorchCheckpointError(f"cannot read {os.fspath(path)}: {exc}") from exc
