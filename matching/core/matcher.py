"""The matching cascade, in order of cost (DESIGN.md §4), over pluggable parts.

A ``Matcher`` gathers candidates from every stage it has — exact digests,
pHash and PDQ with the eight flip/rotation variants of the query, CNN
embeddings of the whole query and of crops — then judges them: exact digests
and close hashes decide at once; the most promising remaining candidates go
through geometric verification, which confirms a modified copy and localises
it; an embedding that is only close makes ``similar``.

It knows nothing of Django: references come through a ``ReferenceStore``
(STYLE.md habit 6), which the service implements over the database and the
benchmark over memory.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Protocol

from matching.core.cascade import (
    EXACT, MODIFIED_COPY, NEAR_DUPLICATE, NONE, POSITIVE_VERDICTS, SIMILAR, VERDICT_ORDER,
)
from matching.core.loading import LoadedImage

THRESHOLDS_FILE = Path(__file__).with_name("thresholds.json")


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds; calibrated values live in ``thresholds.json`` (see docs/benchmarks.md)."""

    phash_near_duplicate: int = 8       # Hamming bits, query as given
    pdq_near_duplicate: int = 31        # Hamming bits, query as given
    pdq_variant_copy: int = 31          # a flip/rotation variant this close is a modified copy
    phash_candidate: int = 16           # radius searched for candidates
    pdq_candidate: int = 63
    min_inliers: int = 15               # geometric verification must find at least this many
    cnn_similar: float = 0.80           # cosine at or above: ``similar`` when not verified
    cnn_candidate: float = 0.35         # cosine below: not worth verifying
    verify_top: int = 6                 # candidates sent to geometric verification

    def tightened(self, **overrides: Any) -> "Thresholds":
        """A collection may only make matching stricter: smaller distances, larger scores/inliers."""
        changes: dict[str, Any] = {}
        for name, value in overrides.items():
            if value is None:
                continue
            current = getattr(self, name)
            stricter_is_smaller = name.endswith(("_near_duplicate", "_variant_copy"))
            changes[name] = min(current, value) if stricter_is_smaller else max(current, value)
        return replace(self, **changes) if changes else self

    @classmethod
    def load(cls, path: Path | None = None, **env_overrides: Any) -> "Thresholds":
        """Calibrated values from the JSON file, then explicit overrides (settings)."""
        values: dict[str, Any] = {}
        file = path or THRESHOLDS_FILE
        if file.exists():
            data = json.loads(file.read_text())
            known = {f.name for f in fields(cls)}
            values.update({k: v for k, v in data.get("thresholds", data).items() if k in known})
        values.update({k: v for k, v in env_overrides.items() if v is not None})
        return cls(**values)


@dataclass(frozen=True)
class RefRecord:
    """What the matcher needs to know about one protected image."""

    id: int
    sha256_bytes: str
    sha256_pixels: str
    phash: int | None = None
    pdq: int | None = None
    pdq_quality: int = 0
    thresholds: Thresholds | None = None  # the collection's, when it tightened the defaults


class ReferenceStore(Protocol):
    """Storage interface the Django side and the benchmark implement."""

    def records(self, ids: Collection[int]) -> dict[int, RefRecord]:
        """Records for the ids that still exist (deleted ones are simply absent)."""

    def exact(self, *, sha256_bytes: str, sha256_pixels: str) -> list[int]:
        """Ids of references with the same file bytes or the same decoded pixels."""

    def features(self, ref_id: int) -> Any | None:
        """Local features (``geometry.Features``) of a reference, for verification; None if unavailable."""


class HashIndex(Protocol):
    def __len__(self) -> int: ...
    def query_radius(self, code: Any, radius: int) -> list[tuple[int, int]]: ...
    def query_knn(self, code: Any, k: int) -> list[tuple[int, int]]: ...


class VectorSearch(Protocol):
    def __len__(self) -> int: ...
    def search(self, vectors: Any, k: int) -> list[list[tuple[int, float]]]: ...


@dataclass
class Indexes:
    phash: HashIndex | None = None
    pdq: HashIndex | None = None
    vectors: VectorSearch | None = None


@dataclass(frozen=True)
class Decision:
    reference_id: int
    verdict: str
    score: float
    signal_scores: dict[str, Any] = field(default_factory=dict)
    region: dict[str, list[list[float]]] | None = None
    edit: dict[str, Any] | None = None

    @property
    def is_match(self) -> bool:
        return self.verdict in POSITIVE_VERDICTS


@dataclass
class MatchOutcome:
    decisions: list[Decision]                     # ranked best first
    signals: dict[str, Any]
    timings_ms: dict[str, float]
    verifications: dict[int, Any] = field(default_factory=dict)  # ref id -> geometry.Verification
    notes: list[str] = field(default_factory=list)

    @property
    def positives(self) -> list[Decision]:
        return [d for d in self.decisions if d.is_match]


@dataclass
class _Evidence:
    exact: bool = False
    phash: int | None = None           # distance, query as given
    phash_variant: int | None = None   # best distance over the flip/rotation variants
    pdq: int | None = None
    pdq_variant: int | None = None
    cnn: float | None = None           # best cosine over whole image and crops


def _bits(hex_code: str) -> int:
    return int(hex_code, 16)


class Matcher:
    def __init__(
        self,
        *,
        store: ReferenceStore,
        indexes: Indexes,
        thresholds: Thresholds | None = None,
        embedder: Any | None = None,
        verify: bool = True,
        feature_kind: str | None = None,
    ) -> None:
        self.store = store
        self.indexes = indexes
        self.thresholds = thresholds or Thresholds()
        self.embedder = embedder
        self.verify = verify
        self.feature_kind = feature_kind

    # -- public -------------------------------------------------------------
    def match(
        self,
        loaded: LoadedImage | None,
        *,
        top_k: int = 5,
        allowed: Callable[[int], bool] | None = None,
        signals: dict[str, Any] | None = None,
    ) -> MatchOutcome:
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[name] = round((now - clock) * 1000, 3)
            clock = now

        from matching.core.signals import query_signals

        if loaded is None and signals is None:
            raise ValueError("match() needs the image or its signals")
        # Without pixels (signals computed elsewhere, e.g. by a Spark job) only
        # the digest and hash stages run.
        sig = signals or query_signals(loaded)
        lap("signals_ms")
        evidence: dict[int, _Evidence] = {}

        def ev(ref_id: int) -> _Evidence:
            return evidence.setdefault(ref_id, _Evidence())

        for ref_id in self.store.exact(sha256_bytes=sig["sha256_bytes"], sha256_pixels=sig["sha256_pixels"]):
            ev(ref_id).exact = True
        lap("exact_ms")
        self._hash_stage(sig, ev, top_k)
        lap("hash_ms")
        notes: list[str] = []
        if (loaded is not None and self.embedder is not None and self.indexes.vectors is not None
                and len(self.indexes.vectors)):
            self._cnn_stage(loaded, ev, top_k, notes)
            lap("cnn_ms")

        if allowed is not None:
            evidence = {i: e for i, e in evidence.items() if allowed(i)}
        records = self.store.records(list(evidence))
        lap("records_ms")

        t = self.thresholds
        decided: dict[int, Decision] = {}
        to_verify: list[tuple[float, int]] = []
        for ref_id, e in evidence.items():
            record = records.get(ref_id)
            if record is None:
                continue  # deleted since it was indexed
            rt = record.thresholds or t
            scores = self._signal_scores(e)
            if e.exact:
                decided[ref_id] = Decision(ref_id, EXACT, 1.0, scores)
            elif (e.phash is not None and e.phash <= rt.phash_near_duplicate) or (
                e.pdq is not None and e.pdq <= rt.pdq_near_duplicate
            ):
                decided[ref_id] = Decision(ref_id, NEAR_DUPLICATE, self._hash_score(e), scores)
            else:
                decided[ref_id] = self._unverified(ref_id, e, rt, scores)
                to_verify.append((self._promise(e), ref_id))

        verifications: dict[int, Any] = {}
        if self.verify and to_verify and loaded is not None:
            verifications = self._verify_stage(loaded, sorted(to_verify, reverse=True)[: t.verify_top], records,
                                               decided, evidence, notes)
        lap("verify_ms")
        ranked = sorted(decided.values(), key=lambda d: (-d.score, VERDICT_ORDER[d.verdict], d.reference_id))
        timings["total_ms"] = round(sum(timings.values()), 3)
        return MatchOutcome(ranked, sig, timings, verifications, notes)

    # -- stages -------------------------------------------------------------
    def _hash_stage(self, sig: dict[str, Any], ev: Callable[[int], _Evidence], top_k: int) -> None:
        t = self.thresholds
        if self.indexes.phash is not None and len(self.indexes.phash):
            variants = [_bits(h) for h in sig.get("phash_variants") or [sig["phash"]]]
            for n, code in enumerate(variants):
                hits = self.indexes.phash.query_radius(code, t.phash_candidate)
                if n == 0:
                    hits = hits + self.indexes.phash.query_knn(code, top_k)
                for ref_id, distance in hits:
                    e = ev(ref_id)
                    if n == 0:
                        e.phash = distance if e.phash is None else min(e.phash, distance)
                    e.phash_variant = distance if e.phash_variant is None else min(e.phash_variant, distance)
        from matching.core.signals import PDQ_MIN_QUALITY

        if (self.indexes.pdq is not None and len(self.indexes.pdq) and sig.get("pdq")
                and sig.get("pdq_quality", 0) >= PDQ_MIN_QUALITY):
            variants = [_bits(h) for h in sig.get("pdq_variants") or [sig["pdq"]]]
            for n, code in enumerate(variants):
                for ref_id, distance in self.indexes.pdq.query_radius(code, t.pdq_candidate):
                    e = ev(ref_id)
                    if n == 0:
                        e.pdq = distance if e.pdq is None else min(e.pdq, distance)
                    e.pdq_variant = distance if e.pdq_variant is None else min(e.pdq_variant, distance)

    def _cnn_stage(self, loaded: LoadedImage, ev: Callable[[int], _Evidence], top_k: int, notes: list[str]) -> None:
        _boxes, vectors = self.embedder.embed_crops(loaded.image)
        per_crop = max(top_k, self.thresholds.verify_top)
        for hits in self.indexes.vectors.search(vectors, per_crop):
            for ref_id, score in hits:
                e = ev(ref_id)
                e.cnn = score if e.cnn is None else max(e.cnn, score)

    def _verify_stage(self, loaded: LoadedImage, ranked: list[tuple[float, int]], records: dict[int, RefRecord],
                      decided: dict[int, Decision], evidence: dict[int, _Evidence],
                      notes: list[str]) -> dict[int, Any]:
        from matching.core import geometry

        kwargs = {"kind": self.feature_kind} if self.feature_kind else {}
        query_features = geometry.extract_features(loaded.image, with_mirror=True,
                                                   max_features=geometry.DEFAULT_QUERY_MAX_FEATURES, **kwargs)
        results: dict[int, Any] = {}
        for _promise, ref_id in ranked:
            if _promise <= 0:
                continue
            reference = self.store.features(ref_id)
            if reference is None:
                continue
            rt = records[ref_id].thresholds or self.thresholds
            result = geometry.verify(query_features, reference, min_inliers=rt.min_inliers)
            results[ref_id] = result
            scores = dict(decided[ref_id].signal_scores, inliers=result.inliers)
            if result.accepted:
                decided[ref_id] = Decision(
                    ref_id, MODIFIED_COPY, self._verified_score(evidence[ref_id], result.inliers), scores,
                    region={"query": result.query_polygon, "reference": result.reference_polygon},
                    edit={**_edit_json(result.edit), "description": result.edit.describe()},
                )
            else:
                decided[ref_id] = replace(decided[ref_id], signal_scores=dict(scores, verification=result.reason))
        return results

    # -- scoring ------------------------------------------------------------
    @staticmethod
    def _signal_scores(e: _Evidence) -> dict[str, Any]:
        out: dict[str, Any] = {"exact": e.exact}
        for name in ("phash", "phash_variant", "pdq", "pdq_variant"):
            value = getattr(e, name)
            if value is not None:
                out[f"{name}_distance"] = value
        if e.cnn is not None:
            out["cnn_score"] = round(float(e.cnn), 6)
        return out

    @staticmethod
    def _similarity(e: _Evidence) -> float:
        """Best similarity in [0, 1] any signal gives, whatever the orientation."""
        sims = [0.0]
        if e.phash_variant is not None:
            sims.append(1 - e.phash_variant / 64)
        if e.pdq_variant is not None:
            sims.append(1 - e.pdq_variant / 256)
        if e.cnn is not None:
            sims.append(max(0.0, float(e.cnn)))
        return max(sims)

    def _hash_score(self, e: _Evidence) -> float:
        sims = []
        if e.phash is not None:
            sims.append(1 - e.phash / 64)
        if e.pdq is not None:
            sims.append(1 - e.pdq / 256)
        return round(max(sims + [self._similarity(e)]), 6)

    def _verified_score(self, e: _Evidence, inliers: int) -> float:
        # Verified copies rank above unverified ones of the same similarity.
        return round(max(self._similarity(e), min(0.99, 0.75 + inliers / 400)), 6)

    def _promise(self, e: _Evidence) -> float:
        """How worth verifying a candidate is; <= 0 means not at all."""
        t = self.thresholds
        if e.pdq_variant is not None and e.pdq_variant <= t.pdq_variant_copy:
            return 2.0
        if e.cnn is not None and e.cnn >= t.cnn_candidate:
            return float(e.cnn)
        if e.phash_variant is not None and e.phash_variant <= t.phash_candidate:
            return 0.5 - e.phash_variant / 64
        return 0.0

    def _unverified(self, ref_id: int, e: _Evidence, t: Thresholds, scores: dict[str, Any]) -> Decision:
        if e.pdq_variant is not None and e.pdq_variant <= t.pdq_variant_copy:
            # A flip or 90° turn of the picture, told by PDQ's variants (verification may add the region).
            return Decision(ref_id, MODIFIED_COPY, round(1 - e.pdq_variant / 256, 6), scores)
        if e.cnn is not None and e.cnn >= t.cnn_similar:
            return Decision(ref_id, SIMILAR, round(float(e.cnn), 6), scores)
        return Decision(ref_id, NONE, round(self._similarity(e), 6), scores)


def _edit_json(edit: Any) -> dict[str, Any]:
    from dataclasses import asdict, is_dataclass

    return asdict(edit) if is_dataclass(edit) else dict(edit)



class MemoryStore:
    """``ReferenceStore`` held in memory: the benchmark's, and any caller without a database."""

    def __init__(self) -> None:
        self._records: dict[int, RefRecord] = {}
        self._features: dict[int, Any] = {}
        self._by_digest: dict[str, set[int]] = {}

    def put(self, record: RefRecord, features: Any | None = None) -> None:
        self._records[record.id] = record
        if features is not None:
            self._features[record.id] = features
        for digest in (record.sha256_bytes, record.sha256_pixels):
            self._by_digest.setdefault(digest, set()).add(record.id)

    def records(self, ids: Collection[int]) -> dict[int, RefRecord]:
        return {i: self._records[i] for i in ids if i in self._records}

    def exact(self, *, sha256_bytes: str, sha256_pixels: str) -> list[int]:
        return sorted(self._by_digest.get(sha256_bytes, set()) | self._by_digest.get(sha256_pixels, set()))

    def features(self, ref_id: int) -> Any | None:
        return self._features.get(ref_id)


class ServiceSystem:
    """The service's matcher behind the benchmark's ``System`` interface (matching/core/bench)."""

    def __init__(self, *, cnn: bool = True, thresholds: Thresholds | None = None, name: str = "service") -> None:
        self.name = name
        self.cnn = cnn
        self.thresholds = thresholds or Thresholds.load()
        self.matcher: Matcher | None = None

    def index(self, refs: list[tuple[int, Any]]) -> None:
        import io

        import numpy as np

        from matching.core import geometry
        from matching.core.hashindex import make_hash_index
        from matching.core.loading import load_image
        from matching.core.signals import PDQ_MIN_QUALITY, compute_signals

        store = MemoryStore()
        ids, phashes, pdq_ids, pdqs, images = [], [], [], [], []
        for ref_id, image in refs:
            buf = io.BytesIO()
            image.convert("RGB").save(buf, format="PNG")
            loaded = load_image(buf.getvalue())
            sig = compute_signals(loaded)
            pdq = int(sig["pdq"], 16) if sig["pdq_quality"] >= PDQ_MIN_QUALITY else None
            store.put(RefRecord(ref_id, sig["sha256_bytes"], sig["sha256_pixels"], int(sig["phash"], 16), pdq,
                                sig["pdq_quality"]), geometry.extract_features(loaded.image))
            ids.append(ref_id)
            phashes.append(int(sig["phash"], 16))
            if pdq is not None:
                pdq_ids.append(ref_id)
                pdqs.append(pdq)
            images.append(loaded.image)
        pdq_words = np.array([[(v >> (64 * (3 - w))) & ((1 << 64) - 1) for w in range(4)] for v in pdqs],
                             dtype=np.uint64).reshape(-1, 4)
        indexes = Indexes(
            phash=make_hash_index(1, codes=np.array(phashes, dtype=np.uint64).reshape(-1, 1),
                                  ids=np.array(ids, dtype=np.int64)),
            pdq=make_hash_index(4, codes=pdq_words, ids=np.array(pdq_ids, dtype=np.int64)),
        )
        embedder = None
        if self.cnn:
            from matching.core.cnn.embedder import get_embedder
            from matching.core.vectorindex import VectorIndex

            embedder = get_embedder()
            indexes.vectors = VectorIndex(dim=embedder.dim)
            indexes.vectors.add(np.array(ids, dtype=np.int64), embedder.embed(images))
        self.matcher = Matcher(store=store, indexes=indexes, thresholds=self.thresholds, embedder=embedder)

    def query(self, image: Any, top_k: int) -> list[Any]:
        import io

        from matching.core.bench.systems import Hit
        from matching.core.loading import load_image

        assert self.matcher is not None, "index() first"
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        outcome = self.matcher.match(load_image(buf.getvalue()), top_k=top_k)
        hits = []
        for d in outcome.decisions[:top_k]:
            components = {k: float(v) for k, v in d.signal_scores.items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool)}
            hits.append(Hit(d.reference_id, d.score, d.is_match, d.verdict,
                            d.region["query"] if d.region else None, components))
        return hits


def benchmark_system() -> ServiceSystem:
    """The benchmark's entry point (``python -m matching.core.bench.run --systems service``)."""
    return ServiceSystem()


def benchmark_system_hashes_only() -> ServiceSystem:
    return ServiceSystem(cnn=False, name="service-hashes")
