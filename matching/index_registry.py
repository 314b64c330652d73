"""One in-memory pHash index per organisation, kept in step with the database.

Each matching process (a Celery worker, the web process on the embedded
default, the command line) holds its own registry. An index is loaded from its
snapshot file when present, then reconciled with the database whenever the
organisation's ``index_generation`` moved, so a process never serves a stale
index and never rebuilds an unchanged one (STYLE.md habit 8). The database stays
the source of truth: candidates are re-read from it before any verdict.
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings

from catalog.models import Organisation, ProtectedImage
from matching.core.vptree import SnapshotError, VPTree

log = logging.getLogger(__name__)

U64 = 1 << 64


def to_signed64(value: int) -> int:
    return value - U64 if value >= 1 << 63 else value


def to_unsigned64(value: int) -> int:
    return value & (U64 - 1)


@dataclass
class OrgIndex:
    generation: int
    tree: VPTree


class IndexRegistry:
    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory
        self._indexes: dict[int, OrgIndex] = {}
        self._lock = threading.Lock()

    @property
    def directory(self) -> Path:
        return Path(self._directory or settings.IMGPROTECT_INDEX_DIR)

    def _paths(self, organisation_id: int) -> tuple[Path, Path]:
        base = self.directory / f"org-{organisation_id}"
        return base / "phash.npz", base / "checkpoint.json"

    def get(self, organisation_id: int) -> VPTree:
        """The organisation's pHash index, current with the database."""
        generation = Organisation.objects.filter(pk=organisation_id).values_list("index_generation", flat=True).first()
        if generation is None:
            return VPTree(words=1)
        with self._lock:
            current = self._indexes.get(organisation_id)
            if current is None:
                current = self._load_snapshot(organisation_id)
            if current is None or current.generation != generation:
                current = self._reconcile(organisation_id, generation, current)
            self._indexes[organisation_id] = current
            return current.tree

    def forget(self, organisation_id: int | None = None) -> None:
        with self._lock:
            if organisation_id is None:
                self._indexes.clear()
            else:
                self._indexes.pop(organisation_id, None)

    def _load_snapshot(self, organisation_id: int) -> OrgIndex | None:
        tree_path, checkpoint_path = self._paths(organisation_id)
        if not tree_path.exists() or not checkpoint_path.exists():
            return None
        try:
            checkpoint = json.loads(checkpoint_path.read_text())
            tree = VPTree.load(tree_path)
        except (SnapshotError, OSError, ValueError) as exc:
            # A damaged snapshot is rebuilt from the database, never half-used.
            log.warning("index snapshot for org %s unusable (%s); rebuilding", organisation_id, exc)
            return None
        if checkpoint.get("count") != len(tree):
            log.warning("index snapshot for org %s disagrees with its checkpoint; rebuilding", organisation_id)
            return None
        return OrgIndex(generation=int(checkpoint["generation"]), tree=tree)

    def _reconcile(self, organisation_id: int, generation: int, current: OrgIndex | None) -> OrgIndex:
        started = time.perf_counter()
        rows = ProtectedImage.objects.filter(
            organisation_id=organisation_id, status=ProtectedImage.Status.INDEXED, phash__isnull=False
        ).values_list("id", "phash")
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64)
        hashes = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(ids)).view(np.uint64)
        tree = current.tree if current is not None else VPTree(words=1)
        have = tree.ids() if len(tree) else np.empty(0, dtype=np.int64)
        gone = np.setdiff1d(have, ids, assume_unique=True)
        new_mask = ~np.isin(ids, have, assume_unique=True)
        if current is None or len(gone) + int(new_mask.sum()) > max(1024, len(ids) // 5):
            tree = VPTree.build(hashes.reshape(-1, 1), ids)
        else:
            if len(gone):
                tree.remove(gone)
            if new_mask.any():
                tree.add(ids[new_mask], hashes[new_mask].reshape(-1, 1))
        index = OrgIndex(generation=generation, tree=tree)
        self._save_snapshot(organisation_id, index)
        log.info(
            "index org=%s generation=%s size=%s reconciled in %.1f ms",
            organisation_id, generation, len(tree), (time.perf_counter() - started) * 1000,
        )
        return index

    def _save_snapshot(self, organisation_id: int, index: OrgIndex) -> None:
        tree_path, checkpoint_path = self._paths(organisation_id)
        try:
            tree_path.parent.mkdir(parents=True, exist_ok=True)
            index.tree.save(tree_path)
            tmp = checkpoint_path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"generation": index.generation, "count": len(index.tree)}))
            os.replace(tmp, checkpoint_path)
        except OSError as exc:  # a snapshot is an optimisation; matching goes on without it
            log.warning("could not save index snapshot for org %s: %s", organisation_id, exc)


registry = IndexRegistry()
