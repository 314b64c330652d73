"""The service's matcher: ``matching.core.matcher.Matcher`` over the database and the registry's indexes.

Candidates come from the exact digests (database indexes), the hash indexes
and the CNN vector index; every candidate is re-read from the database, so an
image deleted a moment ago can never be reported, whatever an index holds.
"""
from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models import Q

from catalog.models import ProtectedImage
from matching.cnn import cnn_config, cnn_enabled
from matching.core.cnn.config import configure as configure_cnn
from matching.core.cnn.embedder import get_embedder as load_embedder
from matching.core.geometry import features_from_bytes
from matching.core.loading import LoadedImage
from matching.core.marks import mark_from_png
from matching.core.matcher import Decision, Matcher, MatchOutcome, RefRecord, Thresholds
from matching.encodings import to_unsigned64
from matching.index_registry import registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    decision: Decision
    image: ProtectedImage

    def as_json(self) -> dict[str, Any]:
        return {
            "image_id": self.image.pk,
            "key": self.image.key,
            "collection": self.image.collection.name,
            "collection_id": self.image.collection_id,
            "score": round(self.decision.score, 6),
            "match": self.decision.is_match,
            "verdict": self.decision.verdict,
            "signal_scores": self.decision.signal_scores,
            "region": self.decision.region["query"] if self.decision.region else None,
            "edit": self.decision.edit,
        }


def default_thresholds() -> Thresholds:
    """The engine's thresholds (matching/core/thresholds.json), then the settings that override them."""
    return Thresholds.load(cnn=cnn_enabled(), phash_near_duplicate=settings.IMGPROTECT_PHASH_NEAR_DUPLICATE,
                           phash_candidate=settings.IMGPROTECT_PHASH_CANDIDATE_RADIUS)


class _FeatureCache:
    """Reference local features, read from storage once per process (LRU)."""

    def __init__(self, size: int = 2048) -> None:
        self._items: OrderedDict[str, Any] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, name: str) -> Any | None:
        with self._lock:
            if name in self._items:
                self._items.move_to_end(name)
                return self._items[name]
        try:
            with default_storage.open(name, "rb") as fh:
                features = features_from_bytes(fh.read())
        except Exception as exc:  # noqa: BLE001 - a missing/corrupt cache file only disables verification
            log.warning("reference features %s unusable: %s", name, exc)
            return None
        with self._lock:
            self._items[name] = features
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return features


feature_cache = _FeatureCache()


class DatabaseStore:
    """``ReferenceStore`` over one organisation's indexed images."""

    def __init__(self, organisation_id: int, collection_id: int | None = None) -> None:
        self.organisation_id = organisation_id
        self.collection_id = collection_id
        self.rows: dict[int, ProtectedImage] = {}
        self._base = default_thresholds()

    def _scope(self):
        rows = ProtectedImage.objects.filter(organisation_id=self.organisation_id,
                                             status=ProtectedImage.Status.INDEXED)
        return rows.filter(collection_id=self.collection_id) if self.collection_id else rows

    def records(self, ids: Collection[int]) -> dict[int, RefRecord]:
        out: dict[int, RefRecord] = {}
        for row in self._scope().filter(pk__in=list(ids)).select_related("collection"):
            self.rows[row.pk] = row
            out[row.pk] = RefRecord(
                id=row.pk, sha256_bytes=row.sha256_bytes, sha256_pixels=row.sha256_pixels,
                phash=to_unsigned64(row.phash) if row.phash is not None else None,
                pdq=int(row.pdq, 16) if row.pdq else None, pdq_quality=row.pdq_quality,
                thresholds=collection_thresholds(self._base, row.collection.phash_max_distance)
                if row.collection.phash_max_distance is not None else None,
            )
        return out

    def exact(self, *, sha256_bytes: str, sha256_pixels: str) -> list[int]:
        return list(self._scope().filter(Q(sha256_bytes=sha256_bytes) | Q(sha256_pixels=sha256_pixels))
                    .values_list("id", flat=True))

    def features(self, ref_id: int) -> Any | None:
        row = self.rows.get(ref_id)
        return feature_cache.get(row.features.name) if row is not None and row.features else None

    def mark(self, ref_id: int) -> Any | None:
        """The reference's mark (``marks.Mark``), read from storage; None without one."""
        row = self.rows.get(ref_id)
        if row is None:
            return None
        try:
            return stored_mark(row)
        except (OSError, ValueError, KeyError) as exc:  # a missing mark file only loses the mark check
            log.warning("reference mark %s unusable: %s", row.mark.name, exc)
            return None


def stored_mark(image: ProtectedImage) -> Any | None:
    """The picture's mark as indexing stored it (``marks.Mark``), None without one; a mark file that
    cannot be read raises (OSError, ValueError, KeyError)."""
    if not image.mark or not image.mark_info:
        return None
    with default_storage.open(image.mark.name, "rb") as fh:
        background = image.mark_info.get("background")
        return mark_from_png(fh.read(), tuple(image.mark_info["box"]), image.mark_info["source"],
                             tuple(background) if background else None)


def collection_thresholds(base: Thresholds, phash_max_distance: int) -> Thresholds:
    """A collection's near-duplicate limit, tightened on both hashes: either hash alone decides a
    near duplicate, so PDQ's limit shrinks in the same proportion as pHash's (else any copy close
    enough in pHash is also close in PDQ and the collection's setting never changes a verdict)."""
    share = min(1.0, phash_max_distance / base.phash_near_duplicate) if base.phash_near_duplicate else 0.0
    return base.tightened(phash_near_duplicate=phash_max_distance,
                          pdq_near_duplicate=int(base.pdq_near_duplicate * share))


def get_embedder() -> Any | None:
    if not cnn_enabled():
        return None
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up chatter, before its import
    configure_cnn(cnn_config())
    return load_embedder()


def find_candidates(
    *,
    organisation_id: int,
    loaded: LoadedImage | None = None,
    signals: dict[str, Any] | None = None,
    collection_id: int | None = None,
    top_k: int = 5,
    partial: str = "auto",
) -> tuple[list[Candidate], MatchOutcome]:
    """Every candidate the stages propose (all positives among them), ranked best first.

    Give the decoded image (all stages) or only its signals (digests and hashes).
    ``partial`` is ``Matcher.match``'s: ``"never"`` stops before the partial-copy pass.
    """
    store = DatabaseStore(organisation_id, collection_id)
    matcher = Matcher(store=store, indexes=registry.get(organisation_id), thresholds=store._base,
                      embedder=get_embedder())
    outcome = matcher.match(loaded, top_k=top_k, signals=signals, partial=partial)
    candidates = [Candidate(d, store.rows[d.reference_id]) for d in outcome.decisions
                  if d.reference_id in store.rows]
    return candidates, outcome
