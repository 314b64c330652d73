"""Enumerate image sources for bulk commands: a local directory or s3://bucket/prefix."""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from matching.core.errors import FileTooLarge, RetryableError


@dataclass(frozen=True)
class SourceItem:
    key: str  # path relative to the source root, kept exactly
    size: int
    read: Callable[[], bytes]


class SourceError(Exception):
    """The source as a whole cannot be used (missing, unreachable)."""


def iter_source(source: str, *, max_bytes: int) -> Iterator[SourceItem]:
    if source.startswith("s3://"):
        yield from _iter_s3(source, max_bytes=max_bytes)
    else:
        yield from _iter_directory(Path(source), max_bytes=max_bytes)


def _reader(path: Path, size: int, max_bytes: int) -> Callable[[], bytes]:
    def read() -> bytes:
        if size > max_bytes:
            raise FileTooLarge(f"The file is {size} bytes; the limit is {max_bytes} bytes.")
        return path.read_bytes()

    return read


def _iter_directory(root: Path, *, max_bytes: int) -> Iterator[SourceItem]:
    if not root.is_dir():
        raise SourceError(f"{root} is not a directory")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            try:
                size = path.stat().st_size
            except OSError:
                size = 0
            yield SourceItem(key=path.relative_to(root).as_posix(), size=size, read=_reader(path, size, max_bytes))


def _iter_s3(url: str, *, max_bytes: int) -> Iterator[SourceItem]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, prefix = url[len("s3://"):].partition("/")
    client = boto3.client("s3", endpoint_url=os.environ.get("AWS_S3_ENDPOINT_URL") or None)
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"]
                if key.endswith("/"):
                    continue
                rel = key[len(prefix):].lstrip("/") if prefix else key

                def read(key: str = key, size: int = obj["Size"]) -> bytes:
                    if size > max_bytes:
                        raise FileTooLarge(f"The object is {size} bytes; the limit is {max_bytes} bytes.")
                    try:
                        return client.get_object(Bucket=bucket, Key=key)["Body"].read()
                    except (BotoCoreError, ClientError) as exc:
                        raise RetryableError(str(exc)) from exc

                yield SourceItem(key=rel, size=obj["Size"], read=read)
    except (BotoCoreError, ClientError) as exc:
        raise SourceError(f"cannot list {url}: {exc}") from exc
