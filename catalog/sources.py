"""Image sources for bulk commands: a local directory or s3://bucket/prefix.

Listing and reading live in ``spark.sources`` (plain Python, shared with the
Spark executors, so both paths key files identically); this module adds what
needs Django: the S3 endpoint from settings and the allow-list of source roots.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from django.conf import settings

from spark.sources import LocalSource, S3Source, SourceError, open_source as _open_source, split_s3_url

__all__ = ["SourceError", "SourceItem", "SourceNotAllowed", "iter_source", "open_source", "source_check_allowed",
           "source_roots"]


@dataclass(frozen=True)
class SourceItem:
    key: str  # path relative to the source root, kept exactly
    size: int
    read: Callable[[], bytes]


class SourceNotAllowed(SourceError):
    """The source lies outside the organisation's roots in ``IMGPROTECT_SOURCE_ROOTS``."""


def open_source(source: str) -> LocalSource | S3Source:
    return _open_source(source, endpoint_url=getattr(settings, "IMGPROTECT_SOURCE_S3_ENDPOINT_URL", "") or None)


def iter_source(source: str, *, max_bytes: int) -> Iterator[SourceItem]:
    opened = open_source(source)
    for entry in opened.list():
        read: Callable[..., bytes]
        if isinstance(opened, S3Source):
            def read(key: str = entry.key, size: int = entry.size) -> bytes:
                return opened.read(key, max_bytes=max_bytes, size=size)
        else:
            def read(key: str = entry.key) -> bytes:
                return opened.read(key, max_bytes=max_bytes)
        yield SourceItem(key=entry.key, size=entry.size, read=read)


def _under(path: str, root: str) -> bool:
    return (path.rstrip("/") + "/").startswith(root.rstrip("/") + "/")


_SLUG = re.compile(r"^[-a-zA-Z0-9_]+$")


def _parse_roots(setting: str | list[str] | tuple[str, ...]) -> list[tuple[frozenset[str] | None, str]]:
    """``IMGPROTECT_SOURCE_ROOTS`` as (owners, root) pairs; owners None: a shared root.

    Groups are separated by ";" (or are the items of a list), roots within a group by ",".
    A group ``acme=/data/acme,s3://bucket/acme`` gives those roots to organisation ``acme``
    (``acme+beta=/data/shared`` to both); a group without ``slug=`` lists shared roots, of
    which each organisation may read only its own subdirectory ``<root>/<org-slug>/``.
    """
    groups = setting.split(";") if isinstance(setting, str) else [g for item in setting for g in item.split(";")]
    pairs: list[tuple[frozenset[str] | None, str]] = []
    for group in groups:
        owners: frozenset[str] | None = None
        head, eq, rest = group.partition("=")
        if eq and _SLUG.match(head.strip().replace("+", "")):
            owners, group = frozenset(o.strip().lower() for o in head.split("+") if o.strip()), rest
        pairs += [(owners, root.strip()) for root in group.split(",") if root.strip()]
    return pairs


def _canonical_root(root: str) -> str:
    if root.startswith("s3://"):
        bucket, prefix = split_s3_url(root)
        return f"s3://{bucket}/{prefix}".rstrip("/")
    return str(Path(root).resolve())


def source_roots(organisation_slug: str) -> list[str]:
    """The roots ``organisation_slug`` may read, in canonical form (docs/bulk.md, "Sources")."""
    slug = organisation_slug.lower()
    roots = []
    for owners, root in _parse_roots(getattr(settings, "IMGPROTECT_SOURCE_ROOTS", []) or []):
        if owners is None:
            roots.append(_canonical_root(root.rstrip("/") + "/" + slug))
        elif slug in owners:
            roots.append(_canonical_root(root))
    return roots


def source_check_allowed(source: str, *, organisation_slug: str, trusted: bool) -> str:
    """The source in canonical form (local paths resolved) if ``organisation_slug`` may read
    it, else ``SourceNotAllowed``.

    With ``IMGPROTECT_SOURCE_ROOTS`` set, every source must lie under one of the roots it
    gives that organisation (:func:`source_roots`), for every caller. Unset, only
    ``trusted`` callers (the command line, run by an operator who can read the files
    anyway) may name a source; the API and the portal may not, so a tenant can never make
    the service read the server's own files, nor another organisation's.
    """
    source = source.strip()
    if not source:
        raise SourceNotAllowed("The source is empty.")
    configured = bool(getattr(settings, "IMGPROTECT_SOURCE_ROOTS", []) or [])
    roots = source_roots(organisation_slug) if configured else []
    if source.startswith("s3://"):
        bucket, prefix = split_s3_url(source)
        if any(part in ("", ".", "..") for part in prefix.rstrip("/").split("/")) and prefix:
            # S3 keys are literal, but a gateway that normalises paths would climb out of the prefix.
            raise SourceNotAllowed(f"{source!r}: an S3 prefix may not contain empty, '.' or '..' parts.")
        canonical = f"s3://{bucket}/{prefix}".rstrip("/")
        allowed = [r for r in roots if r.startswith("s3://")]
    elif "://" in source:
        raise SourceNotAllowed(f"{source!r}: only local directories and s3:// URLs are supported.")
    else:
        if not trusted and not Path(source).is_absolute():
            raise SourceNotAllowed(f"{source!r} is not an absolute path.")
        # Resolved, so a symlink or ".." cannot lead out of an allowed root.
        canonical = str(Path(source).resolve())
        allowed = [r for r in roots if not r.startswith("s3://")]
    if not configured:
        if trusted:
            return canonical
        raise SourceNotAllowed("Bulk sources are not enabled: the operator must list allowed roots in "
                               "IMGPROTECT_SOURCE_ROOTS.")
    if not any(_under(canonical, root) for root in allowed):
        raise SourceNotAllowed(f"{source!r} is outside the source roots of organisation {organisation_slug!r}.")
    return canonical
