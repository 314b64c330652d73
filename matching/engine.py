"""Find and judge candidates for one query image within an organisation.

Candidates come from the exact digests (database indexes) and the pHash
VP-tree; every candidate is re-read from the database, so an image deleted a
moment ago can never be reported, whatever an index still holds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import Q

from catalog.models import ProtectedImage
from matching.core.cascade import Decision, Reference, Thresholds, decide, rank
from matching.core.signals import from_hex64
from matching.index_registry import registry


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
            "region": None,
        }


def default_thresholds() -> Thresholds:
    return Thresholds(phash_near_duplicate=settings.IMGPROTECT_PHASH_NEAR_DUPLICATE)


def find_candidates(
    *, organisation_id: int, signals: dict[str, Any], collection_id: int | None = None, top_k: int = 5
) -> tuple[list[Candidate], dict[str, float]]:
    """Every candidate the indexes propose (all positives among them), ranked best first.

    ``top_k`` sets how many nearest neighbours are gathered beyond the positives.
    Returns the ranked candidates and per-stage timings in milliseconds.
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    ids: set[int] = set(
        ProtectedImage.objects.filter(
            organisation_id=organisation_id, status=ProtectedImage.Status.INDEXED
        ).filter(Q(sha256_bytes=signals["sha256_bytes"]) | Q(sha256_pixels=signals["sha256_pixels"]))
        .values_list("id", flat=True)
    )
    timings["exact_ms"] = (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    tree = registry.get(organisation_id)
    timings["index_load_ms"] = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    if len(tree):
        code = from_hex64(signals["phash"])
        radius = max(settings.IMGPROTECT_PHASH_CANDIDATE_RADIUS, settings.IMGPROTECT_PHASH_NEAR_DUPLICATE)
        ids.update(i for i, _ in tree.query_radius(code, radius))
        # A collection filter may discard neighbours from other collections, so look further.
        ids.update(i for i, _ in tree.query_knn(code, top_k * (4 if collection_id else 1)))
    timings["phash_ms"] = (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    rows = ProtectedImage.objects.filter(
        pk__in=ids, organisation_id=organisation_id, status=ProtectedImage.Status.INDEXED
    ).select_related("collection")
    if collection_id is not None:
        rows = rows.filter(collection_id=collection_id)
    base = default_thresholds()
    decided: list[Candidate] = []
    by_id = {row.pk: row for row in rows}
    for decision in rank([
        decide(
            signals,
            Reference(row.pk, row.sha256_bytes, row.sha256_pixels, row.phash),
            base.tightened(phash_max_distance=row.collection.phash_max_distance),
        )
        for row in by_id.values()
    ]):
        decided.append(Candidate(decision, by_id[decision.reference_id]))
    timings["decide_ms"] = (time.perf_counter() - started) * 1000
    return decided, timings
