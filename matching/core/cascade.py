"""The matching decision: from a query's signals and a candidate's signals to a verdict.

Plain Python so the Celery matcher, the command line and Spark jobs decide the
same way. Candidates come from the indexes; this module only judges them.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

EXACT = "exact"
NEAR_DUPLICATE = "near_duplicate"
MODIFIED_COPY = "modified_copy"
SIMILAR = "similar"
NONE = "none"
POSITIVE_VERDICTS = frozenset({EXACT, NEAR_DUPLICATE, MODIFIED_COPY})
# Best first when two candidates score the same.
VERDICT_ORDER = {EXACT: 0, NEAR_DUPLICATE: 1, MODIFIED_COPY: 2, SIMILAR: 3, NONE: 4}


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds. Defaults come from settings; see docs/benchmarks.md."""

    phash_near_duplicate: int = 8

    def tightened(self, *, phash_max_distance: int | None = None) -> "Thresholds":
        """A collection may only make matching stricter, never looser."""
        if phash_max_distance is None:
            return self
        return replace(self, phash_near_duplicate=min(self.phash_near_duplicate, phash_max_distance))


@dataclass(frozen=True)
class Reference:
    """What the decision needs to know about one protected image."""

    id: int
    sha256_bytes: str
    sha256_pixels: str
    phash: int | None


@dataclass(frozen=True)
class Decision:
    reference_id: int
    verdict: str
    score: float
    signal_scores: dict[str, Any] = field(default_factory=dict)

    @property
    def is_match(self) -> bool:
        return self.verdict in POSITIVE_VERDICTS


def _hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def decide(query: dict[str, Any], reference: Reference, thresholds: Thresholds) -> Decision:
    """Judge one candidate. ``query`` is the dict from ``signals.compute_signals``."""
    scores: dict[str, Any] = {
        "sha256_bytes": query["sha256_bytes"] == reference.sha256_bytes,
        "sha256_pixels": query["sha256_pixels"] == reference.sha256_pixels,
    }
    phash_score = 0.0
    distance: int | None = None
    if reference.phash is not None and query.get("phash") is not None:
        distance = _hamming(int(query["phash"], 16), reference.phash & 0xFFFFFFFFFFFFFFFF)
        scores["phash_distance"] = distance
        phash_score = 1.0 - distance / 64.0
    if scores["sha256_bytes"] or scores["sha256_pixels"]:
        return Decision(reference.id, EXACT, 1.0, scores)
    if distance is not None and distance <= thresholds.phash_near_duplicate:
        return Decision(reference.id, NEAR_DUPLICATE, phash_score, scores)
    return Decision(reference.id, NONE, phash_score, scores)


def rank(decisions: list[Decision]) -> list[Decision]:
    """Best first: score, then the stronger verdict, then the older reference."""
    return sorted(decisions, key=lambda d: (-d.score, VERDICT_ORDER[d.verdict], d.reference_id))
