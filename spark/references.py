"""The protected set a scan matches against, as files every executor loads once (no Django).

A scan is a check at scale: each executor runs ``matching.core.matcher.Matcher``
(digests, hash variants, CNN on the whole image and its tiles, geometric
verification) over the organisation's protected images. The driver side
(matching/bulk/references.py) writes them into one directory before the job
starts, in the formats the service already uses for its own index snapshots
(matching/index_registry.py): the hash indexes' ``.npz``, the vector index's
FAISS file and checkpoint, plus the records the ``ReferenceStore`` answers
from. Records are ``.npy`` files opened with ``mmap_mode="r"``, so the Python
workers of one machine share their pages. The directory must be visible to
every executor at the same path, as the job's output directory already is
(docs/scaling.md, "Scans on a cluster"). Reference local features and image
files are read from the storage indexing wrote them to, on demand, with a
per-process LRU cache, exactly as a check reads them (matching/engine.py).

Layout::

    manifest.json      format, version, count, thresholds, hash index kinds, vectors yes/no
    phash.npz pdq.npz  hash index snapshots (MIHIndex / VPTree / FaissBinaryIndex .save)
    vectors.faiss      the CNN vector index (VectorIndex.save), when the organisation has one
    ids.npy            int64, sorted: the protected images in scope
    sha256_bytes.npy sha256_pixels.npy   S64 hex digests, by row
    phash.npy          uint64 (0 where none: has_phash.npy says)
    pdq.npy            S64 hex ("" where none) and pdq_quality.npy int32
    phash_max.npy      int32: the collection's tightened near-duplicate distance, -1 where none
    files.npy features.npy   S storage names of the image and of its local features
    exact_digests.npy exact_ids.npy   both digests of every row, sorted, for exact look-ups
    marks.npy          S storage names of the logos' marks ("" where none; matching/core/marks.py)
    mark_boxes.npy mark_sources.npy mark_backgrounds.npy   int32 (n, 4), S, int16 (n, 3) (-1: none)

The vector index holds the logos' mark views too (ids ``marks.mark_vector_id``, as the service's
index does), and the store answers ``mark(ref_id)``, so a scan looks for a mark composited into a
scene as a check does. A snapshot written before marks has no ``marks*.npy``: it scans without them.
"""
from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from matching.core.matcher import Indexes, RefRecord, Thresholds

__all__ = ["FORMAT", "ReferenceSnapshot", "SnapshotStore", "load_snapshot", "read_stored", "write_snapshot"]

FORMAT = "imgprotect/scan-references"
VERSION = 1
_ARRAYS = ("ids", "sha256_bytes", "sha256_pixels", "phash", "has_phash", "pdq", "pdq_quality", "phash_max",
           "files", "features", "exact_digests", "exact_ids")
_MARK_ARRAYS = ("marks", "mark_boxes", "mark_sources", "mark_backgrounds")  # optional (older snapshots)


def _hash_classes() -> dict[str, Any]:
    from matching.core import hashindex, vptree

    return {"MIHIndex": hashindex.MIHIndex, "VPTree": vptree.VPTree, "FaissBinaryIndex": hashindex.FaissBinaryIndex}


def _text(values: Sequence[str | None]) -> npt.NDArray[Any]:
    """ASCII storage names or hex digests as a fixed-width bytes array (no pickle)."""
    encoded = [(v or "").encode("utf-8") for v in values]
    width = max((len(v) for v in encoded), default=1) or 1
    return np.array(encoded, dtype=f"S{width}")


def write_snapshot(
    dest: Path,
    *,
    rows: Sequence[Mapping[str, Any]],
    indexes: Indexes,
    thresholds: Thresholds,
    embedding_model: str | None = None,
) -> Path:
    """Write the snapshot for ``rows`` (dicts with id, sha256_bytes, sha256_pixels, phash (unsigned
    int or None), pdq (hex or None), pdq_quality, phash_max (int or None), file, features, and
    optionally mark (storage name or None) with mark_info ({"box", "source", "background"} as
    ``ProtectedImage.mark_info``)) into ``dest`` (a new directory); ``indexes`` may hold more images
    than ``rows`` (the organisation's): what is not in ``rows`` is out of scope and never judged."""
    dest.mkdir(parents=True, exist_ok=False)
    ordered = sorted(rows, key=lambda r: int(r["id"]))
    ids = np.array([int(r["id"]) for r in ordered], dtype=np.int64)
    arrays: dict[str, npt.NDArray[Any]] = {
        "ids": ids,
        "sha256_bytes": _text([r["sha256_bytes"] for r in ordered]),
        "sha256_pixels": _text([r["sha256_pixels"] for r in ordered]),
        "phash": np.array([int(r["phash"] or 0) for r in ordered], dtype=np.uint64),
        "has_phash": np.array([r["phash"] is not None for r in ordered], dtype=bool),
        "pdq": _text([r["pdq"] for r in ordered]),
        "pdq_quality": np.array([int(r["pdq_quality"] or 0) for r in ordered], dtype=np.int32),
        "phash_max": np.array([-1 if r["phash_max"] is None else int(r["phash_max"]) for r in ordered], dtype=np.int32),
        "files": _text([r["file"] for r in ordered]),
        "features": _text([r["features"] for r in ordered]),
    }
    arrays.update(_mark_arrays(ordered))
    digests = np.concatenate([arrays["sha256_bytes"], arrays["sha256_pixels"]]) if len(ids) else _text([])[:0]
    order = np.argsort(digests, kind="stable")
    arrays["exact_digests"] = digests[order]
    arrays["exact_ids"] = np.concatenate([ids, ids])[order]
    for name, array in arrays.items():
        np.save(dest / f"{name}.npy", array, allow_pickle=False)
    phash, pdq = indexes.phash, indexes.pdq
    if phash is None or pdq is None:
        raise ValueError("a scan snapshot needs the pHash and PDQ indexes")
    phash.save(dest / "phash.npz")  # type: ignore[attr-defined]
    pdq.save(dest / "pdq.npz")  # type: ignore[attr-defined]
    vectors = indexes.vectors is not None and len(indexes.vectors) > 0
    if vectors:
        indexes.vectors.save(dest / "vectors.faiss")  # type: ignore[union-attr]
    manifest = {"format": FORMAT, "version": VERSION, "count": int(len(ids)), "thresholds": asdict(thresholds),
                "phash_kind": type(phash).__name__, "pdq_kind": type(pdq).__name__, "vectors": vectors,
                # The network that made the vectors: an executor embedding with another scans without them.
                "embedding_model": embedding_model if vectors else None}
    # Written last: a directory without it is unfinished and never loaded.
    tmp = dest / ".manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, sort_keys=True))
    os.replace(tmp, dest / "manifest.json")
    return dest


def _mark_arrays(rows: Sequence[Mapping[str, Any]]) -> dict[str, npt.NDArray[Any]]:
    """The marks of ``rows`` (a row without ``mark`` or ``mark_info`` has none)."""
    infos = [r.get("mark_info") if r.get("mark") else None for r in rows]
    boxes = np.zeros((len(rows), 4), dtype=np.int32)
    backgrounds = np.full((len(rows), 3), -1, dtype=np.int16)
    for i, info in enumerate(infos):
        if info:
            boxes[i] = [int(v) for v in info["box"]]
            if info.get("background"):
                backgrounds[i] = [int(v) for v in info["background"]]
    return {"marks": _text([r.get("mark") if info else None for r, info in zip(rows, infos, strict=True)]),
            "mark_boxes": boxes, "mark_sources": _text([info["source"] if info else None for info in infos]),
            "mark_backgrounds": backgrounds}


class SnapshotStore:
    """``matching.core.matcher.ReferenceStore`` over a snapshot's records; local features from storage."""

    def __init__(self, arrays: Mapping[str, npt.NDArray[Any]], thresholds: Thresholds,
                 storage: "StorageReader") -> None:
        self.a = arrays
        self.thresholds = thresholds
        self.storage = storage
        self._features: OrderedDict[int, Any] = OrderedDict()
        self._marks: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(len(self.a["ids"]))

    def row(self, ref_id: int) -> int | None:
        ids = self.a["ids"]
        pos = int(np.searchsorted(ids, ref_id))
        return pos if pos < len(ids) and int(ids[pos]) == ref_id else None

    def __contains__(self, ref_id: object) -> bool:
        return isinstance(ref_id, (int, np.integer)) and self.row(int(ref_id)) is not None

    def records(self, ids: Collection[int]) -> dict[int, RefRecord]:
        a, out = self.a, {}
        for ref_id in ids:
            pos = self.row(int(ref_id))
            if pos is None:
                continue  # out of scope (another collection) or gone since the snapshot
            pdq_hex = a["pdq"][pos].decode()
            limit = int(a["phash_max"][pos])
            out[int(ref_id)] = RefRecord(
                id=int(ref_id), sha256_bytes=a["sha256_bytes"][pos].decode(),
                sha256_pixels=a["sha256_pixels"][pos].decode(),
                phash=int(a["phash"][pos]) if a["has_phash"][pos] else None,
                pdq=int(pdq_hex, 16) if pdq_hex else None, pdq_quality=int(a["pdq_quality"][pos]),
                thresholds=self.thresholds.tightened(phash_near_duplicate=limit) if limit >= 0 else None,
            )
        return out

    def exact(self, *, sha256_bytes: str, sha256_pixels: str) -> list[int]:
        digests, ids = self.a["exact_digests"], self.a["exact_ids"]
        found: set[int] = set()
        for digest in {sha256_bytes, sha256_pixels}:
            key = np.array([digest.encode()], dtype=digests.dtype) if len(digests) else None
            if key is None:
                break
            lo, hi = np.searchsorted(digests, key[0], "left"), np.searchsorted(digests, key[0], "right")
            found.update(int(i) for i in ids[lo:hi])
        return sorted(found)

    def _cached(self, cache: "OrderedDict[int, Any]", ref_id: int, load: Callable[[int], Any]) -> Any | None:
        """``load(row)`` of the reference, kept in a per-process LRU of 512 (None is not kept)."""
        with self._lock:
            if ref_id in cache:
                cache.move_to_end(ref_id)
                return cache[ref_id]
        pos = self.row(ref_id)
        value = load(pos) if pos is not None else None
        if value is not None:
            with self._lock:
                cache[ref_id] = value
                while len(cache) > 512:
                    cache.popitem(last=False)
        return value

    def features(self, ref_id: int) -> Any | None:
        return self._cached(self._features, ref_id, self._load_features)

    def _load_features(self, pos: int) -> Any | None:
        name = self.a["features"][pos].decode()
        if not name:
            return None
        from matching.core.geometry import features_from_bytes

        try:
            return features_from_bytes(self.storage.read(name))
        except Exception:  # noqa: BLE001 - as a check: an unreadable features file only disables verification
            return None

    def mark(self, ref_id: int) -> Any | None:
        """The reference's mark (``marks.Mark``), read from storage as a check reads it
        (matching/engine.py ``DatabaseStore.mark``); None without one."""
        return self._cached(self._marks, ref_id, self._load_mark)

    def _load_mark(self, pos: int) -> Any | None:
        name = self.a["marks"][pos].decode() if "marks" in self.a else ""
        if not name:
            return None
        from matching.core.marks import mark_from_png

        x0, y0, x1, y1 = (int(v) for v in self.a["mark_boxes"][pos])
        r, g, b = (int(v) for v in self.a["mark_backgrounds"][pos])
        try:
            return mark_from_png(self.storage.read(name), (x0, y0, x1, y1), self.a["mark_sources"][pos].decode(),
                                 (r, g, b) if min(r, g, b) >= 0 else None)
        except Exception:  # noqa: BLE001 - as a check: an unreadable mark only loses the mark search
            return None

    def file_name(self, ref_id: int) -> str | None:
        pos = self.row(ref_id)
        return (self.a["files"][pos].decode() or None) if pos is not None else None


class StorageReader:
    """Reads stored files (file:///root or s3://bucket/location) by their storage name."""

    def __init__(self, root: str | None, endpoint: str | None = None) -> None:
        self.root, self.endpoint = root or "", endpoint

    def read(self, name: str) -> bytes:
        return read_stored(self.root, name, self.endpoint)


def read_stored(root: str, name: str, endpoint: str | None = None) -> bytes:
    if root.startswith("file://"):
        base = Path(root[len("file://"):]).resolve()
        path = (base / name).resolve()
        if base not in path.parents:
            raise ValueError(f"storage name {name!r} leaves the storage root")
        return path.read_bytes()
    if root.startswith("s3://"):
        from spark.sources import s3_client

        bucket, _, location = root[len("s3://"):].partition("/")
        key = f"{location.strip('/')}/{name}" if location.strip("/") else name
        body: bytes = s3_client(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read()
        return body
    raise ValueError(f"unsupported storage root {root!r}")


@dataclass
class ReferenceSnapshot:
    store: SnapshotStore
    indexes: Indexes
    thresholds: Thresholds
    manifest: dict[str, Any]


_cache_lock = threading.Lock()
_cache: dict[str, tuple[int, ReferenceSnapshot]] = {}


def load_snapshot(path: str | Path, *, storage_root: str | None = None,
                  storage_endpoint: str | None = None) -> ReferenceSnapshot:
    """The snapshot at ``path``, loaded once per process (again only when its manifest changed)."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    stamp = manifest_path.stat().st_mtime_ns  # a missing snapshot fails the task, and the job, loudly
    key = str(path.resolve())
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise ValueError(f"{path} is not a scan snapshot of version {VERSION}")
        known = {f.name for f in fields(Thresholds)}
        thresholds = Thresholds(**{k: v for k, v in manifest["thresholds"].items() if k in known})
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in _ARRAYS}
        arrays.update({name: np.load(path / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                       for name in _MARK_ARRAYS if (path / f"{name}.npy").exists()})
        if len(arrays["ids"]) != manifest["count"]:
            raise ValueError(f"scan snapshot {path} disagrees with its manifest")
        classes = _hash_classes()
        indexes = Indexes(phash=classes[manifest["phash_kind"]].load(path / "phash.npz"),
                          pdq=classes[manifest["pdq_kind"]].load(path / "pdq.npz"))
        if manifest.get("vectors"):
            from matching.core.vectorindex import VectorIndex

            indexes.vectors = VectorIndex.load(path / "vectors.faiss")
        store = SnapshotStore(arrays, thresholds, StorageReader(storage_root, storage_endpoint))
        snapshot = ReferenceSnapshot(store=store, indexes=indexes, thresholds=thresholds, manifest=manifest)
        _cache[key] = (stamp, snapshot)
        return snapshot
