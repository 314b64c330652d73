"""Image sources for bulk commands: a local directory or s3://bucket/prefix.

Listing and reading live in ``spark.sources`` (plain Python, shared with the
Spark executors, so both paths key files identically); this module adds what
needs Django: the S3 endpoint from settings and the allow-list of source roots.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from django.conf import settings

from spark.sources import LocalSource, S3Source, SourceError, open_source as _open_source, split_s3_url

__all__ = ["SourceError", "SourceItem", "SourceNotAllowed", "iter_source", "open_source", "source_check_allowed"]


@dataclass(frozen=True)
class SourceItem:
    key: str  # path relative to the source root, kept exactly
    size: int
    read: Callable[[], bytes]


class SourceNotAllowed(SourceError):
    """The source lies outside ``IMGPROTECT_SOURCE_ROOTS``."""


def open_source(source: str) -> LocalSource | S3Source:
    return _open_source(source, endpoint_url=getattr(settings, "IMGPROTECT_SOURCE_S3_ENDPOINT_URL", "") or None)


def iter_source(source: str, *, max_bytes: int) -> Iterator[SourceItem]:
    opened = open_source(source)
    for entry in opened.list():
        if isinstance(opened, S3Source):
            def read(key: str = entry.key, size: int = entry.size) -> bytes:
                return opened.read(key, max_bytes=max_bytes, size=size)
        else:
            def read(key: str = entry.key) -> bytes:
                return opened.read(key, max_bytes=max_bytes)
        yield SourceItem(key=entry.key, size=entry.size, read=read)


def _under(path: str, root: str) -> bool:
    return (path.rstrip("/") + "/").startswith(root.rstrip("/") + "/")


def source_check_allowed(source: str, *, trusted: bool) -> str:
    """The source in canonical form (local paths resolved) if it may be read, else ``SourceNotAllowed``.

    With ``IMGPROTECT_SOURCE_ROOTS`` set, every source must lie under one of
    its entries. Unset, only ``trusted`` callers (the command line, run by an
    operator who can read the files anyway) may name a source; the API may not,
    so a tenant can never make the service read the server's own files.
    """
    source = source.strip()
    if not source:
        raise SourceNotAllowed("The source is empty.")
    roots: list[str] = list(getattr(settings, "IMGPROTECT_SOURCE_ROOTS", []) or [])
    if source.startswith("s3://"):
        bucket, prefix = split_s3_url(source)
        canonical = f"s3://{bucket}/{prefix}".rstrip("/")
        allowed = [r for r in roots if r.startswith("s3://")]
    elif "://" in source:
        raise SourceNotAllowed(f"{source!r}: only local directories and s3:// URLs are supported.")
    else:
        if not trusted and not Path(source).is_absolute():
            raise SourceNotAllowed(f"{source!r} is not an absolute path.")
        # Resolved, so a symlink or ".." cannot lead out of an allowed root.
        canonical = str(Path(source).resolve())
        allowed = [str(Path(r).resolve()) for r in roots if "://" not in r]
    if not roots:
        if trusted:
            return canonical
        raise SourceNotAllowed("Bulk sources are not enabled: the operator must list allowed roots in "
                               "IMGPROTECT_SOURCE_ROOTS.")
    if not any(_under(canonical, root) for root in allowed):
        raise SourceNotAllowed(f"{source!r} is outside the allowed source roots.")
    return canonical
