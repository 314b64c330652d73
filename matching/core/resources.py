"""Files shipped inside the engine's packages (thresholds, the ranking head), as real paths.

In a checkout or an installed package the file is where it always was. On a
Spark executor the packages arrive in a zip on ``sys.path`` (spark/submit.py)
and ``Path(__file__)`` points inside that zip, which ``open`` cannot read: the
file is then copied out once, into a directory of this user's temporary space
named by its content, and every process of the machine shares that copy.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import os
import tempfile
from pathlib import Path

__all__ = ["package_file"]


def package_file(package: str, name: str) -> Path:
    """A path ``open`` can read holding ``package``'s data file ``name`` ("weights/head.npz")."""
    resource = importlib.resources.files(package).joinpath(*name.split("/"))
    if isinstance(resource, Path):
        return resource  # a real directory: no copy, and a missing file stays missing for the caller
    data = resource.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    directory = Path(tempfile.gettempdir()) / f"imgprotect-resources-{os.getuid()}" / digest
    path = directory / name.rsplit("/", 1)[-1]
    if path.is_file() and path.stat().st_size == len(data):
        return path
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)  # atomic: a concurrent worker sees no copy or a whole one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
