"""Listing and reading bulk sources: local directories and S3 (moto server on loopback)."""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from matching.core.errors import FileTooLarge
from spark.sources import LocalSource, OutsideSource, S3Source, SourceError, open_source, split_s3_url
from tests.spark.s3server import CREDENTIALS, s3_server

ODD_KEYS = ["plain.png", "with space.png", "ünïcødé/ファイル.png", "quote's \"double\".png", "semi;colon&amp.png",
            "a b/c  d/ e.png"]


def test_local_listing_keeps_keys_exactly_sorted_and_skips_dot_files(tmp_path: Path):
    for key in ODD_KEYS:
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_bytes(key.encode())
    (tmp_path / ".hidden").write_bytes(b"x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "config").write_bytes(b"x")
    source = LocalSource(tmp_path)
    entries = list(source.list())
    # A folder's files (sorted), then its sub-folders (sorted), recursively: stable across runs.
    assert [e.key for e in entries] == ["plain.png", "quote's \"double\".png", "semi;colon&amp.png", "with space.png",
                                        "a b/c  d/ e.png", "ünïcødé/ファイル.png"]
    for entry in entries:
        assert source.read(entry.key, max_bytes=1000) == entry.key.encode()
        assert entry.size == len(entry.key.encode())


def test_local_read_refuses_oversized_and_links_leaving_the_root(tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "big.bin").write_bytes(b"x" * 2000)
    secret = tmp_path / "secret.txt"
    secret.write_bytes(b"server secret")
    os.symlink(secret, root / "escape.png")
    source = LocalSource(root)
    with pytest.raises(FileTooLarge):
        source.read("big.bin", max_bytes=1000)
    with pytest.raises(OutsideSource):
        source.read("escape.png", max_bytes=1000)


def test_missing_or_empty_local_source_is_a_source_error(tmp_path: Path):
    with pytest.raises(SourceError, match="not a readable directory"):
        LocalSource(tmp_path / "nope").check()
    (tmp_path / ".only-hidden").write_bytes(b"x")
    with pytest.raises(SourceError, match="holds no files"):
        LocalSource(tmp_path).check()
    with pytest.raises(SourceError, match="only local directories and s3://"):
        open_source("http://example.com/x")


def test_split_s3_url_treats_the_prefix_as_a_folder():
    assert split_s3_url("s3://bucket") == ("bucket", "")
    assert split_s3_url("s3://bucket/") == ("bucket", "")
    assert split_s3_url("s3://bucket/crawl/2025/") == ("bucket", "crawl/2025/")
    assert split_s3_url("s3://bucket/crawl") == ("bucket", "crawl/")
    with pytest.raises(SourceError):
        split_s3_url("s3:///key")


def test_s3_listing_and_reading_keep_odd_keys_exactly(monkeypatch):
    with s3_server(monkeypatch) as s3:
        bucket = s3.bucket("crawl")
        for key in ODD_KEYS:
            s3.put(bucket, f"2025/{key}", key.encode())
        s3.put(bucket, "2025-other/not-mine.png", b"x")  # shares the prefix text, not the folder
        s3.put(bucket, "2025/folder/", b"")  # a folder marker, not an object
        source = S3Source("s3://crawl/2025", endpoint_url=s3.endpoint)
        source.check()
        entries = list(source.list(page_size=2))  # several pages
        assert sorted(e.key for e in entries) == sorted(ODD_KEYS)
        for entry in entries:
            assert source.read(entry.key, max_bytes=1000, size=entry.size) == entry.key.encode()
        with pytest.raises(FileTooLarge):
            source.read(ODD_KEYS[0], max_bytes=3)
        with pytest.raises(OSError):
            source.read("missing.png", max_bytes=1000)
        with pytest.raises(SourceError, match="holds no objects"):
            S3Source("s3://crawl/empty", endpoint_url=s3.endpoint).check()
        with pytest.raises(SourceError, match="cannot list"):
            S3Source("s3://no-such-bucket", endpoint_url=s3.endpoint).check()


def test_unreachable_s3_endpoint_fails_at_once(monkeypatch):
    for name, value in CREDENTIALS.items():  # without them boto refuses before connecting
        monkeypatch.setenv(name, value)
    with socket.socket() as s:  # a loopback port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(SourceError, match=f"127.0.0.1:{port}.*Could not connect"):
        S3Source("s3://crawl/x", endpoint_url=f"http://127.0.0.1:{port}").check()


def test_an_endpoint_that_drops_connections_is_tried_a_bounded_number_of_times(monkeypatch):
    """At once means few attempts, not a clock: count the connections an S3 endpoint that hangs up receives."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    accepted: list[int] = []
    stop = threading.Event()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.1)

        def hang_up() -> None:
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except TimeoutError:
                    continue
                accepted.append(1)
                conn.close()

        thread = threading.Thread(target=hang_up, daemon=True)
        thread.start()
        port = server.getsockname()[1]
        try:
            with pytest.raises(SourceError, match=f"cannot list s3://crawl/x at http://127.0.0.1:{port}"):
                S3Source("s3://crawl/x", endpoint_url=f"http://127.0.0.1:{port}").check()
        finally:
            stop.set()
            thread.join()
    # spark/sources.py's retries={"max_attempts": 3}: botocore reads that key as three retries after the first try.
    assert len(accepted) == 4
