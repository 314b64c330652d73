"""Scoring: what one query's hits mean, and the figures over many queries.

Each (query, system) pair is reduced to an ``Outcome`` as soon as it is
answered, so a run keeps a few numbers per query, not images or hit lists.
Definitions (the report repeats them):

- *rank-1*: the top hit is the reference the query was made from.
- *verdict recall*: the system's own verdict is a match on that reference
  (at any rank it returned).
- *micro-AP*: every query contributes its top hit, scored by its ``score``;
  a top hit is correct when it is the true reference; precision and recall
  over the pooled list, recall relative to all attacked queries (misses and
  unanswered queries count). Tied scores enter together, so order within a
  tie never matters.
- *recall at 99 % precision*: the highest recall on that list at a score
  cut-off whose precision is >= 0.99.
- *false-positive rate*: share of unrelated queries with any ``match`` hit.
- *region IoU*: intersection over union of the true reference's hit region
  and the attack's true region, both rasterised in the query frame.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from .attacks import PARTIAL_COPY_ATTACKS, Polygon

__all__ = [
    "Outcome",
    "SystemResult",
    "latency",
    "micro_ap",
    "outcome",
    "polygon_iou",
    "pr_curve",
    "recall_at_precision",
    "summarise",
]

_IOU_RASTER = 256  # longer side of the IoU raster: exact enough for a 0.5 cut, and cheap


@dataclass
class Outcome:
    """One query as one system answered it."""

    attack: str | None  # None: unrelated query
    ref_id: int | None
    ms: float
    kind: str = ""  # "photo" | "logo" (of the reference for a copy), for break-downs
    top_score: float | None = None  # None: no hits
    top_match: bool = False
    rank: int | None = None  # 1-based rank of the true reference among the hits
    true_score: float | None = None
    true_match: bool = False
    has_region: bool = False  # the attack knows where the reference lies in the query
    iou: float | None = None  # None: no true region, or no region on the true reference's hit
    other_match: bool = False  # a hit on any other reference was a match
    true_components: dict[str, float] = field(default_factory=dict)
    other_best: dict[str, float] = field(default_factory=dict)  # best over other references' hits

    @property
    def is_copy(self) -> bool:
        return self.attack is not None


def lower_is_better(component: str) -> bool:
    return component.endswith("distance")


def polygon_iou(a: Polygon, b: Polygon, size: tuple[int, int]) -> float:
    """IoU of two polygons inside a ``size`` frame (parts outside the frame do not count)."""
    scale = min(1.0, _IOU_RASTER / max(size))
    w, h = max(1, round(size[0] * scale)), max(1, round(size[1] * scale))

    def mask(poly: Polygon) -> np.ndarray:
        canvas = Image.new("1", (w, h), 0)
        if len(poly) >= 3:
            ImageDraw.Draw(canvas).polygon([(x * scale, y * scale) for x, y in poly], fill=1)
        return np.asarray(canvas, dtype=bool)

    ma, mb = mask(a), mask(b)
    union = np.logical_or(ma, mb).sum()
    return float(np.logical_and(ma, mb).sum() / union) if union else 0.0


def outcome(*, attack: str | None, ref_id: int | None, region: Polygon | None,
            size: tuple[int, int], hits: Sequence[Any], ms: float, kind: str = "") -> Outcome:
    """Reduce a system's hits for one query. ``hits`` are ``Hit``-like (duck-typed)."""
    out = Outcome(attack=attack, ref_id=ref_id, ms=ms, kind=kind, has_region=region is not None)
    if hits:
        out.top_score, out.top_match = float(hits[0].score), bool(hits[0].match)
    for rank, hit in enumerate(hits, start=1):
        components = {"score": float(hit.score), **{k: float(v) for k, v in
                                                    (getattr(hit, "components", None) or {}).items()}}
        if ref_id is not None and hit.ref_id == ref_id:
            if out.rank is not None:
                continue  # a system may repeat a reference; its best (first) hit counts
            out.rank, out.true_score, out.true_match = rank, float(hit.score), bool(hit.match)
            out.true_components = components
            hit_region = getattr(hit, "region", None)
            if region is not None and hit_region:
                out.iou = polygon_iou(region, hit_region, size)
            continue
        out.other_match = out.other_match or bool(hit.match)
        for name, value in components.items():
            best = out.other_best.get(name)
            if best is None or (value < best if lower_is_better(name) else value > best):
                out.other_best[name] = value
    return out


def _mean(values: Iterable[float]) -> float | None:
    v = list(values)
    return float(np.mean(v)) if v else None


def pr_curve(outcomes: Sequence[Outcome]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, score cut-off) at each distinct top-hit score, best first."""
    n_pos = sum(o.is_copy for o in outcomes)
    scored = [(o.top_score, o.rank == 1) for o in outcomes if o.top_score is not None]
    if not scored or n_pos == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    scores = np.array([s for s, _ in scored], dtype=np.float64)
    correct = np.array([c for _, c in scored], dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    scores, correct = scores[order], correct[order]
    tp, n = np.cumsum(correct), np.arange(1, len(scores) + 1)
    # Evaluate only at the end of each run of equal scores: a cut-off cannot split a tie.
    ends = np.flatnonzero(np.append(scores[1:] != scores[:-1], True))
    return tp[ends] / n[ends], tp[ends] / n_pos, scores[ends]


def micro_ap(outcomes: Sequence[Outcome]) -> float:
    precision, recall, _ = pr_curve(outcomes)
    if len(recall) == 0:
        return 0.0
    return float(np.sum(precision * np.diff(recall, prepend=0.0)))


def recall_at_precision(outcomes: Sequence[Outcome], target: float = 0.99) -> float:
    precision, recall, _ = pr_curve(outcomes)
    ok = precision >= target
    return float(recall[ok].max()) if ok.any() else 0.0


def latency(ms: Sequence[float]) -> dict[str, float | None]:
    if not ms:
        return {"mean": None, "p50": None, "p95": None}
    a = np.asarray(ms, dtype=np.float64)
    return {"mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95))}


@dataclass
class SystemResult:
    """Everything measured for one system in one run."""

    name: str
    index_ms_per_image: float
    outcomes: list[Outcome] = field(default_factory=list)


def _attack_figures(copies: list[Outcome], unrelated: list[Outcome]) -> dict[str, Any]:
    with_region = [o for o in copies if o.has_region]
    scored_iou = [o.iou for o in with_region if o.iou is not None]
    return {
        "n": len(copies),
        "rank1": _mean(o.rank == 1 for o in copies),
        "verdict_recall": _mean(o.true_match for o in copies),
        "micro_ap": micro_ap(copies + unrelated) if copies else None,
        "recall_at_99p": recall_at_precision(copies + unrelated) if copies else None,
        "mean_iou": _mean(scored_iou),
        # found (own verdict) and boxed (IoU >= 0.5), over every copy of the attack
        "boxed": _mean(o.true_match and (o.iou or 0.0) >= 0.5 for o in with_region)
        if scored_iou else None,
    }


def summarise(result: SystemResult, attacks: Sequence[str]) -> dict[str, Any]:
    """Per-attack figures and the overall summary of one system, JSON-ready."""
    copies = [o for o in result.outcomes if o.is_copy]
    unrelated = [o for o in result.outcomes if not o.is_copy]
    top_matches = [o for o in result.outcomes if o.top_match]
    per_attack = {a: _attack_figures([o for o in copies if o.attack == a], unrelated)
                  for a in attacks}
    kinds = sorted({o.kind for o in result.outcomes})
    return {
        "system": result.name,
        "attacks": per_attack,
        "overall": {
            "n_copies": len(copies),
            "n_unrelated": len(unrelated),
            "rank1": _mean(o.rank == 1 for o in copies),
            "rank1_whole_frame": _mean(o.rank == 1 for o in copies if o.attack not in PARTIAL_COPY_ATTACKS),
            "verdict_recall": _mean(o.true_match for o in copies),
            "micro_ap": micro_ap(result.outcomes),
            "recall_at_99p": recall_at_precision(result.outcomes),
            "verdict_precision": _mean(o.rank == 1 for o in top_matches),
            "fpr": _mean(o.other_match for o in unrelated),
            "rank1_by_kind": {k: _mean(o.rank == 1 for o in copies if o.kind == k) for k in kinds},
            "fpr_by_kind": {k: _mean(o.other_match for o in unrelated if o.kind == k) for k in kinds},
            "copies_matching_other": _mean(o.other_match for o in copies),
            "index_ms_per_image": result.index_ms_per_image,
            "query_ms": latency([o.ms for o in result.outcomes]),
        },
    }
