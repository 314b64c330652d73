"""Image sources for bulk work: a local directory or ``s3://bucket/prefix``.

Plain Python (no Django, no Spark): the Spark driver lists a source with it,
executors read single objects with it, and the Django side (``catalog.sources``)
wraps it for the in-process command line. A key is the object's path relative
to the source root, byte for byte: spaces, quotes, unicode and even leading
slashes are kept, never stripped or normalised.
"""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matching.core.errors import FileTooLarge, RetryableError

__all__ = ["Entry", "LocalSource", "S3Source", "SourceError", "open_source", "split_s3_url"]

# Reads of one object are retried this often before the file is reported as unreadable.
READ_ATTEMPTS = 3


class SourceError(Exception):
    """The source as a whole cannot be used: missing, unreachable, not allowed or empty."""


class OutsideSource(PermissionError):
    """A file whose real path leaves the source root (a symlink pointing elsewhere)."""


@dataclass(frozen=True)
class Entry:
    key: str  # relative to the source root, exactly as stored
    size: int


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> ("bucket", "a/b/"); the prefix is a folder, so it ends with "/"."""
    if not url.startswith("s3://"):
        raise SourceError(f"{url!r} is not an s3:// URL")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket:
        raise SourceError(f"{url!r} names no bucket")
    prefix = prefix.rstrip("/")
    return bucket, f"{prefix}/" if prefix else ""


class LocalSource:
    """A directory, walked recursively in sorted order; dot files and dot folders are skipped."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = str(root)

    def _real_root(self) -> Path:
        return self.root.resolve()

    def check(self) -> None:
        """Raise ``SourceError`` unless the source exists and holds at least one file."""
        if not self.root.is_dir():
            raise SourceError(f"{self.root} is not a readable directory")
        if next(iter(self.list()), None) is None:
            raise SourceError(f"{self.root} holds no files")

    def list(self) -> Iterator[Entry]:
        if not self.root.is_dir():
            raise SourceError(f"{self.root} is not a readable directory")

        def fail(exc: OSError) -> None:
            raise SourceError(f"cannot list {self.root}: {exc}") from exc

        for dirpath, dirnames, filenames in os.walk(self.root, onerror=fail):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith("."):
                    continue
                path = Path(dirpath) / name
                try:
                    size = path.stat().st_size
                except OSError:
                    size = 0  # a dangling link: reading it reports the reason
                yield Entry(path.relative_to(self.root).as_posix(), size)

    def read(self, key: str, *, max_bytes: int) -> bytes:
        path = self.root / key
        real = path.resolve()
        if not real.is_relative_to(self._real_root()):
            raise OutsideSource(f"{key} points outside the source directory")
        size = real.stat().st_size
        if size > max_bytes:
            raise FileTooLarge(f"The file is {size} bytes; the limit is {max_bytes} bytes.")
        with open(real, "rb") as fh:
            data = fh.read(max_bytes + 1)  # it may have grown since stat
        if len(data) > max_bytes:
            raise FileTooLarge(f"The file is larger than the limit of {max_bytes} bytes.")
        return data


_clients: dict[str | None, Any] = {}
_clients_lock = threading.Lock()


def s3_client(endpoint_url: str | None) -> Any:
    """One boto3 client per endpoint and process (clients are thread-safe and costly to build)."""
    with _clients_lock:
        client = _clients.get(endpoint_url)
        if client is None:
            import boto3
            from botocore.config import Config

            # Short connect timeout and few retries: an unreachable endpoint must fail the job at once.
            config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
            client = _clients[endpoint_url] = boto3.client("s3", endpoint_url=endpoint_url or None, config=config)
        return client


class S3Source:
    """Objects under ``s3://bucket/prefix/``, read with boto3 (no Hadoop S3 jars needed)."""

    def __init__(self, url: str, *, endpoint_url: str | None = None) -> None:
        self.url = url
        self.bucket, self.prefix = split_s3_url(url)
        self.endpoint_url = endpoint_url or None

    def _client(self) -> Any:
        return s3_client(self.endpoint_url)

    def check(self) -> None:
        if next(iter(self.list(page_size=10)), None) is None:
            raise SourceError(f"{self.url} holds no objects")

    def list(self, *, page_size: int = 1000) -> Iterator[Entry]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            pages = self._client().get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix, PaginationConfig={"PageSize": page_size}
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key.endswith("/"):  # a "folder" marker, not an object
                        continue
                    yield Entry(key[len(self.prefix):], int(obj["Size"]))
        except (BotoCoreError, ClientError) as exc:
            where = f" at {self.endpoint_url}" if self.endpoint_url else ""
            raise SourceError(f"cannot list {self.url}{where}: {exc}") from exc

    def read(self, key: str, *, max_bytes: int, size: int | None = None) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        if size is not None and size > max_bytes:
            raise FileTooLarge(f"The object is {size} bytes; the limit is {max_bytes} bytes.")
        for attempt in range(READ_ATTEMPTS):
            try:
                body = self._client().get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
                data: bytes = body.read(max_bytes + 1)
                if len(data) > max_bytes:
                    raise FileTooLarge(f"The object is larger than the limit of {max_bytes} bytes.")
                return data
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "AccessDenied", "403"}:
                    raise OSError(f"cannot read {key}: {exc}") from exc
                error: Exception = exc
            except BotoCoreError as exc:
                error = exc
            time.sleep(0.2 * 2**attempt)
        raise RetryableError(f"cannot read {key} after {READ_ATTEMPTS} attempts: {error}")


def open_source(source: str, *, endpoint_url: str | None = None) -> LocalSource | S3Source:
    """The source a URL or path names (``s3://...`` or a local directory)."""
    if source.startswith("s3://"):
        return S3Source(source, endpoint_url=endpoint_url)
    if "://" in source:
        raise SourceError(f"{source!r}: only local directories and s3:// URLs are supported")
    return LocalSource(source)
