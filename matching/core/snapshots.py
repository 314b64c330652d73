"""Index snapshot files: written atomically, and the error every damaged one raises.

A snapshot replaces its path in one rename after an fsync, so a reader (a
worker loading the index) sees the old file or the new one, never half of one.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["SnapshotError", "atomic_savez", "atomic_write", "fsync_dir"]


class SnapshotError(Exception):
    """A snapshot file is missing, truncated, corrupt or of another format version."""


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None], *, prefix: str,
                 mode: int | None = None, durable: bool = True) -> None:
    """Replace ``path`` atomically with what ``write`` puts in the temporary file whose name it gets.

    The temporary file lies in ``path``'s directory (same file system, so the
    rename is atomic) and is removed on any failure. ``mode``: its permissions
    (``mkstemp`` makes it 0600; other worker users may need to read it).
    ``durable``: fsync the file and the directory, so the rename survives a crash.
    """
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        if durable:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
        if durable:
            fsync_dir(directory)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_savez(path: str | os.PathLike[str], arrays: Mapping[str, npt.NDArray[Any]], *, prefix: str,
                 mode: int | None = None, durable: bool = True) -> None:
    """Write ``arrays`` as one .npz that replaces ``path`` atomically (:func:`atomic_write`)."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            members: dict[str, Any] = dict(arrays)
            np.savez(f, **members)  # a file object: numpy adds no ".npz" suffix

    atomic_write(path, write, prefix=prefix, mode=mode, durable=durable)


def fsync_dir(path: str) -> None:
    """Make a rename durable (POSIX); harmless where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
