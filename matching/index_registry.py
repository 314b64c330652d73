"""Each matching process's in-memory indexes, one set per organisation, kept in step with the database.

A process (a Celery worker, the web process on the embedded default, the
command line) holds, per organisation, a pHash index, a PDQ index and a CNN
vector index. They are loaded from snapshot files when present, then
reconciled with the database whenever the organisation's ``index_generation``
moved, so a process never serves a stale index and never rebuilds an
unchanged one (docs/coding-habits.md, habit 8). The database stays the source of truth:
candidates are re-read from it before any verdict, so an index that still
holds a deleted image cannot produce a match.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings

from catalog.models import Organisation, ProtectedImage
from matching.core import hashindex, vptree
from matching.core.hashindex import HashIndex, make_hash_index
from matching.core.hamming import pdq_words
from matching.core.matcher import HashIndex as HashSearch
from matching.core.marks import MARK_SLOTS, mark_vector_id, with_mark_views
from matching.core.matcher import Indexes, VectorSearch
from matching.core.snapshots import SnapshotError
from matching.core.vectorindex import VectorIndex
from matching.cnn import embedding_model
from matching.encodings import embedding_from_bytes, embeddings_from_bytes

log = logging.getLogger(__name__)


@dataclass
class OrgIndexes:
    generation: int
    indexes: Indexes
    # Entries were dropped in place (``drop_ids``): the hash indexes hold tombstones, which a snapshot
    # would keep on disk, so the next reconciliation rebuilds them from the rows before saving.
    tombstoned: bool = False
    # The network whose vectors ``indexes.vectors`` holds (``matching.cnn.embedding_model``).
    model: str | None = None


class IndexRegistry:
    """Thread-safe; one per process (``registry`` below)."""

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory
        self._orgs: dict[int, OrgIndexes] = {}
        self._lock = threading.Lock()

    @property
    def directory(self) -> Path:
        return Path(self._directory or settings.IMGPROTECT_INDEX_DIR)

    def get(self, organisation_id: int) -> Indexes:
        """The organisation's indexes, current with the database."""
        generation = Organisation.objects.filter(pk=organisation_id).values_list("index_generation", flat=True).first()
        if generation is None:
            return Indexes(phash=make_hash_index(1), pdq=make_hash_index(4), vectors=None)
        with self._lock:
            current = self._orgs.get(organisation_id) or self._load_snapshot(organisation_id)
            if current is None or current.generation != generation or current.model != embedding_model():
                current = self._reconcile(organisation_id, generation, current)
            self._orgs[organisation_id] = current
            return current.indexes

    def forget(self, organisation_id: int | None = None) -> None:
        with self._lock:
            if organisation_id is None:
                self._orgs.clear()
            else:
                self._orgs.pop(organisation_id, None)

    def drop_ids(self, organisation_id: int, image_ids: list[int]) -> int:
        """Remove deleted images from this process's indexes at once and delete the organisation's snapshot
        (it holds their entries). Cheaper than ``drop_snapshot`` for a large index: nothing is rebuilt
        before the next check. Other processes drop them at their next check, which reads the generation
        the deletion bumped (docs/receipts.md). Returns how many entries this process held."""
        ids = np.asarray(sorted(set(image_ids)), dtype=np.int64)
        with self._lock:
            shutil.rmtree(self._dir(organisation_id), ignore_errors=True)
            current = self._orgs.get(organisation_id)
            if current is None or not len(ids):
                return 0
            idx = current.indexes
            held = int(np.isin(ids, _hashes(idx.phash).ids(), assume_unique=True).sum())
            _hashes(idx.phash).remove(ids)
            _hashes(idx.pdq).remove(ids)
            vector_index = _vectors(idx.vectors)
            if vector_index is not None:
                vector_index.remove(_with_mark_view_ids(ids))
                if vector_index.n_dead:  # HNSW tombstones
                    vector_index.rebuild()
            current.tombstoned = True
            return held

    def holds(self, organisation_id: int, image_id: int) -> bool:
        """Whether this process's in-memory indexes hold the image, in any of them (no database read)."""
        with self._lock:
            current = self._orgs.get(organisation_id)
        if current is None:
            return False
        idx = current.indexes
        vector_index = _vectors(idx.vectors)
        return (image_id in _hashes(idx.phash) or image_id in _hashes(idx.pdq)
                or (vector_index is not None and image_id in vector_index))

    def snapshot_files(self, organisation_id: int) -> list[dict[str, object]]:
        """The organisation's snapshot files (name and size), for a deletion receipt."""
        base = self._dir(organisation_id)
        files = sorted(p for p in base.rglob("*") if p.is_file()) if base.is_dir() else []
        return [{"kind": "index_snapshot", "name": f"{base.name}/{p.relative_to(base)}", "size": p.stat().st_size}
                for p in files]

    def drop_snapshot(self, organisation_id: int) -> None:
        """Forget the organisation's indexes and delete its snapshot, after images were deleted: no entry
        of a deleted image stays on disk. The next ``get`` rebuilds from the database."""
        with self._lock:
            self._orgs.pop(organisation_id, None)
            shutil.rmtree(self._dir(organisation_id), ignore_errors=True)

    # -- snapshots ------------------------------------------------------------
    def _dir(self, organisation_id: int) -> Path:
        return self.directory / f"org-{organisation_id}"

    def _load_snapshot(self, organisation_id: int) -> OrgIndexes | None:
        base = self._dir(organisation_id)
        checkpoint_path = base / "checkpoint.json"
        if not checkpoint_path.exists():
            return None
        try:
            checkpoint = json.loads(checkpoint_path.read_text())
            indexes = Indexes(
                phash=_hash_class(checkpoint["phash_kind"]).load(base / "phash.npz"),
                pdq=_hash_class(checkpoint["pdq_kind"]).load(base / "pdq.npz"),
                vectors=_load_vectors(base) if checkpoint.get("vectors") else None,
            )
        except (SnapshotError, OSError, ValueError, KeyError) as exc:
            # A damaged snapshot is rebuilt from the database, never half-used.
            log.warning("index snapshot for org %s unusable (%s); rebuilding", organisation_id, exc)
            return None
        if checkpoint.get("count") != len(_hashes(indexes.phash)):
            log.warning("index snapshot for org %s disagrees with its checkpoint; rebuilding", organisation_id)
            return None
        if indexes.vectors is not None and checkpoint.get("embedding_model") != embedding_model():
            # Its vectors were made by another network (a new head): not comparable with this one's.
            log.info("index snapshot for org %s holds another network's vectors; rebuilding", organisation_id)
            return None
        return OrgIndexes(generation=int(checkpoint["generation"]), indexes=indexes,
                          model=checkpoint.get("embedding_model"))

    def _save_snapshot(self, organisation_id: int, current: OrgIndexes) -> None:
        base = self._dir(organisation_id)
        try:
            base.mkdir(parents=True, exist_ok=True)
            idx = current.indexes
            phash, pdq, vector_index = _hashes(idx.phash), _hashes(idx.pdq), _vectors(idx.vectors)
            phash.save(base / "phash.npz")
            pdq.save(base / "pdq.npz")
            if vector_index is not None:
                vector_index.save(base / "vectors.faiss")
            checkpoint = {
                "generation": current.generation, "count": len(phash),
                "phash_kind": type(idx.phash).__name__, "pdq_kind": type(idx.pdq).__name__,
                "vectors": idx.vectors is not None, "embedding_model": current.model,
            }
            tmp = base / "checkpoint.json.tmp"
            tmp.write_text(json.dumps(checkpoint))
            os.replace(tmp, base / "checkpoint.json")
        except OSError as exc:  # a snapshot is an optimisation; matching goes on without it
            log.warning("could not save index snapshot for org %s: %s", organisation_id, exc)

    # -- reconciliation ---------------------------------------------------------
    def _reconcile(self, organisation_id: int, generation: int, current: OrgIndexes | None) -> OrgIndexes:
        started = time.perf_counter()
        rows = list(
            ProtectedImage.objects.filter(
                organisation_id=organisation_id, status=ProtectedImage.Status.INDEXED, phash__isnull=False
            ).values_list("id", "phash", "pdq", "embedding", "mark_embeddings", "embedding_model")
        )
        # Only vectors of the network this process embeds with are comparable with its queries; the
        # others wait for ``manage.py reembed`` (docs/training/embedder.md).
        model = embedding_model()
        usable = [bool(r[3]) and (model is None or r[5] == model) for r in rows]
        stale = sum(1 for r, ok in zip(rows, usable) if r[3] and not ok)
        if stale:
            log.warning("org %s: %d images hold vectors of another network than %s and are left out of the CNN "
                        "index; `python manage.py reembed` computes them again", organisation_id, stale, model)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        indexes = current.indexes if current is not None else Indexes(
            phash=make_hash_index(1), pdq=make_hash_index(4), vectors=None
        )
        phash_index = _hashes(indexes.phash)
        have = phash_index.ids() if len(phash_index) else np.zeros(0, np.int64)
        gone = np.setdiff1d(have, ids, assume_unique=True)
        new = ~np.isin(ids, have, assume_unique=True)
        rebuild = (current is None or current.model != model
                   or len(gone) + int(new.sum()) > max(1024, len(ids) // 5))
        # Hash indexes remove by tombstones, which a snapshot would keep on disk: after a deletion they
        # are rebuilt from the rows (cheap); the vector index removes for real, or is rebuilt too.
        rebuild_hashes = rebuild or len(gone) > 0 or (current is not None and current.tombstoned)
        added = [r for r, is_new in zip(rows, new) if is_new]
        chosen = rows if rebuild_hashes else added

        phash_ids = np.fromiter((r[0] for r in chosen), dtype=np.int64, count=len(chosen))
        phash_codes = np.fromiter((r[1] for r in chosen), dtype=np.int64, count=len(chosen)).view(np.uint64)
        with_pdq = [r for r in chosen if r[2]]
        pdq_ids = np.fromiter((r[0] for r in with_pdq), dtype=np.int64, count=len(with_pdq))
        pdq_codes = pdq_words([r[2] for r in with_pdq])
        # Vectors are reconciled against what the vector index holds, not against the hashes: a
        # picture re-embedded by a new network keeps its hashes and enters the vector index now.
        vector_held = _vectors(indexes.vectors) if not rebuild else None
        held = vector_held.holds(ids) if vector_held is not None else np.zeros(len(ids), bool)
        with_vec = [r for r, ok, h in zip(rows, usable, held) if ok and not h]
        unusable_held = np.fromiter((r[0] for r, ok, h in zip(rows, usable, held) if h and not ok), dtype=np.int64)
        vec_ids = np.fromiter((r[0] for r in with_vec), dtype=np.int64, count=len(with_vec))
        vectors = (np.stack([embedding_from_bytes(r[3] or b"") for r in with_vec]) if with_vec
                   else np.zeros((0, 0), np.float32))
        vec_ids, vectors = _with_marks(vec_ids, vectors, [r for r in with_vec if r[4]])

        if rebuild:
            indexes = Indexes(
                phash=make_hash_index(1, codes=phash_codes.reshape(-1, 1), ids=phash_ids),
                pdq=make_hash_index(4, codes=pdq_codes, ids=pdq_ids),
                vectors=_new_vectors(vec_ids, vectors),
            )
        else:
            if rebuild_hashes:
                indexes.phash = make_hash_index(1, codes=phash_codes.reshape(-1, 1), ids=phash_ids)
                indexes.pdq = make_hash_index(4, codes=pdq_codes, ids=pdq_ids)
                vector_index = _vectors(indexes.vectors)
                if vector_index is not None:
                    # A picture's mark views go with it (marks.mark_vector_id).
                    vector_index.remove(_with_mark_view_ids(gone))
                    if vector_index.n_dead:  # HNSW tombstones
                        vector_index.rebuild()
            else:
                if len(phash_ids):
                    _hashes(indexes.phash).add(phash_ids, phash_codes.reshape(-1, 1))
                if len(pdq_ids):
                    _hashes(indexes.pdq).add(pdq_ids, pdq_codes)
            held_index = _vectors(indexes.vectors)
            if len(unusable_held) and held_index is not None:  # another network's vectors leave
                held_index.remove(_with_mark_view_ids(unusable_held))
                if held_index.n_dead:  # HNSW tombstones
                    held_index.rebuild()
            if len(vec_ids):
                vector_index = _vectors(indexes.vectors)
                if vector_index is None:
                    indexes.vectors = _new_vectors(vec_ids, vectors)
                else:
                    vector_index.add(vec_ids, vectors)
        result = OrgIndexes(generation=generation, indexes=indexes, model=model)
        self._save_snapshot(organisation_id, result)
        log.info("indexes org=%s generation=%s size=%s %s in %.1f ms", organisation_id, generation, len(ids),
                 "rebuilt" if rebuild else "updated", (time.perf_counter() - started) * 1000)
        return result


def _with_mark_view_ids(image_ids: np.ndarray) -> np.ndarray:
    """The vector ids of the pictures and of their mark views (marks.mark_vector_id): a picture's
    mark views leave the index with it."""
    return np.concatenate([image_ids, *(mark_vector_id(0, s) + image_ids * MARK_SLOTS for s in range(MARK_SLOTS))])


def _with_marks(ids: np.ndarray, vectors: np.ndarray, rows: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``ids``/``vectors`` followed by the views of the rows' marks (``mark_embeddings``, column 4),
    under the ids ``marks.mark_vector_id`` gives them."""
    return with_mark_views(ids, vectors, ((row[0], embeddings_from_bytes(row[4], vectors.shape[1])[:MARK_SLOTS])
                                          for row in rows))


def _hash_class(name: str) -> Any:
    classes = {"MIHIndex": hashindex.MIHIndex, "VPTree": vptree.VPTree, "FaissBinaryIndex": hashindex.FaissBinaryIndex}
    if name not in classes:
        raise ValueError(f"unknown hash index kind {name!r}")
    return classes[name]


def _new_vectors(ids: np.ndarray, vectors: np.ndarray) -> VectorIndex | None:
    if not len(ids):
        return None
    index = VectorIndex(dim=vectors.shape[1])
    index.add(ids, vectors)
    return index


def _hashes(index: HashSearch | None) -> HashIndex:
    assert isinstance(index, HashIndex)  # the registry always builds both hash indexes, whole
    return index


def _vectors(index: VectorSearch | None) -> VectorIndex | None:
    assert index is None or isinstance(index, VectorIndex)  # the registry builds only VectorIndex
    return index


def _load_vectors(base: Path) -> VectorIndex:
    return VectorIndex.load(base / "vectors.faiss")


registry = IndexRegistry()
