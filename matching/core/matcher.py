"""The matching cascade, in order of cost (docs/matching.md), over pluggable parts.

A ``Matcher`` gathers candidates from every stage it has — exact digests,
pHash and PDQ with the eight flip/rotation variants of the query, CNN
embeddings of the whole query and of crops — then judges them: exact digests
and close hashes decide at once; the most promising remaining candidates go
through geometric verification, which confirms a modified copy and localises
it; an embedding that is only close makes ``similar``.

It knows nothing of Django: references come through a ``ReferenceStore``
(docs/coding-habits.md, "Matching behind small interfaces"), which the service implements over the database and the
benchmark over memory.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from matching.core.cascade import (
    EXACT, MODIFIED_COPY, NEAR_DUPLICATE, NONE, POSITIVE_VERDICTS, SIMILAR, VERDICT_ORDER,
)
from matching.core.hamming import pdq_words
from matching.core.loading import LoadedImage
from matching.core.resources import package_file

if TYPE_CHECKING:  # geometry is imported where it is used: OpenCV loads only when a stage needs it
    from matching.core.geometry import EditReport, Features, Verification

# The calibrated thresholds and how they were measured: the one place their values are written
# (docs/matching.md). The ``Thresholds`` defaults below read them; settings only override them.
# (package_file: also from the zip Spark executors import the engine from, spark/submit.py.)
THRESHOLDS_FILE = package_file("matching.core", "thresholds.json")


def _calibrated(path: Path = THRESHOLDS_FILE) -> dict[str, Any]:
    data = json.loads(path.read_text())
    values: dict[str, Any] = data.get("thresholds", data)
    return values


_CALIBRATED = _calibrated()
PARTIAL_AUTO, PARTIAL_ALWAYS, PARTIAL_NEVER = "auto", "always", "never"
# Candidates per check that get a second look when verification did not confirm them (the most
# promising first: ``_verify_stage`` takes them in that order), and only those the CNN already
# finds ``similar`` (cosine >= cnn_similar): the looser settings of a second look then turn
# "looks like it" into a verified copy, never a mere candidate into one. See
# geometry.second_look_features and docs/geometry.md.
SECOND_LOOKS = 2
# Candidates per check that get a low-resolution look when verification did not confirm them:
# the most promising once the partial-copy pass has its tiles' evidence, not the first it verifies
# (any candidate verification takes: the look applies the usual rules, only to blurred thumbnails
# of both pictures), in the partial-copy pass only: off the answer's path,
# whose p95 at 1M references it took past 80 ms (docs/benchmarks.md section 4). See
# geometry.low_resolution_features.
LOW_RES_LOOKS = 3
# Crop looks a check gives, at most (docs/geometry.md, "The crop look"); the same candidates get
# the aligned look after it (docs/geometry.md, "The aligned look").
CROP_LOOKS = 2
# The median and turned looks after the aligned one (about 40 ms together) only for a candidate
# the CNN finds at least this near (cosine, whole picture or a tile): on the development seed
# (seed 1) of the per-attack, chains and marks suites, every copy they verified stood at 0.60 or
# more, and 46-73 % of the looks were at candidates under 0.5 (docs/benchmarks.md section 7,
# "Fewer median and turned looks").
FURTHER_LOOKS_MIN_CNN = 0.5
PARTIAL_MODES = (PARTIAL_AUTO, PARTIAL_ALWAYS, PARTIAL_NEVER)


@dataclass(frozen=True)
class Thresholds:
    """Decision thresholds; the calibrated ones come from ``thresholds.json`` (docs/matching.md)."""

    phash_near_duplicate: int = _CALIBRATED["phash_near_duplicate"]  # Hamming bits, query as given
    pdq_near_duplicate: int = _CALIBRATED["pdq_near_duplicate"]      # Hamming bits, query as given
    # A flip/rotation variant this close is a modified copy.
    pdq_variant_copy: int = _CALIBRATED["pdq_variant_copy"]
    # Radii searched for candidates. No wider than the hashes can decide at (pHash 10 is the
    # original design's match rule, PDQ 48 the near-duplicate threshold): at 1M protected
    # images, pHash 16 / PDQ 63 turned every query into hundreds of chance candidates and a
    # 72 ms hash stage (python -m bench.check), and the CNN finds the rest.
    phash_candidate: int = 10
    # (Without the CNN, HASHES_ONLY_PHASH_CANDIDATE below.)
    pdq_candidate: int = 48
    min_inliers: int = _CALIBRATED["min_inliers"]  # geometric verification must find at least this many
    cnn_similar: float = _CALIBRATED["cnn_similar"]  # cosine at or above: ``similar`` when not verified
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
    def load(cls, path: Path | None = None, *, cnn: bool = True, **overrides: Any) -> "Thresholds":
        """The defaults (the calibrated ``thresholds.json``), or the values of another thresholds
        file at ``path``; without the CNN the wider ``HASHES_ONLY_PHASH_CANDIDATE``; then the
        overrides that are not None (settings)."""
        values: dict[str, Any] = {}
        if path is not None and path.exists():
            known = {f.name for f in fields(cls)}
            values.update({k: v for k, v in _calibrated(path).items() if k in known})
        if not cnn:
            values["phash_candidate"] = HASHES_ONLY_PHASH_CANDIDATE
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


# pHash radius without the CNN: the hashes are then the only net for modified copies, so it is
# cast wider than the default radius (which assumes the CNN finds what lies further out).
HASHES_ONLY_PHASH_CANDIDATE = 16


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

    # A store may also offer ``mark(ref_id)``: the reference's ``marks.Mark`` (the logo alone,
    # keyed out), or None; the matcher verifies marks only with a store that has it.


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
    verifications: dict[int, Verification] = field(default_factory=dict)  # ref id -> its verification
    notes: list[str] = field(default_factory=list)
    # The query's CNN embeddings the passes computed: "whole" (d,), "tiles" (13, d); kept so that
    # images protected later can be searched for in this suspect (matching/core/retro.py).
    embeddings: dict[str, Any] = field(default_factory=dict)

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
    cnn_box: tuple[int, int, int, int] | None = None  # the query tile that gave ``cnn``; None: the whole
    cnn_mark: bool = False             # ``cnn`` came from a view of the reference's mark (marks.py)
    changed: bool = False              # the evidence grew since the candidate was last judged


def _frame(loaded: LoadedImage) -> tuple[int, int]:
    """Features, regions and edit reports are in the picture's own pixels, not the reduced
    working picture's (matching/core/loading.py)."""
    return loaded.width, loaded.height


def query_features(loaded: LoadedImage, kind: str | None = None) -> Features:
    """The local features a check extracts from the whole query (its thumbnail included), in the
    picture's own pixels; ``kind``: the matcher's ``feature_kind`` (None: geometry's default)."""
    from matching.core import geometry

    return geometry.extract_features(loaded.image, frame=_frame(loaded),
                                     max_features=geometry.DEFAULT_QUERY_MAX_FEATURES,
                                     kind=kind or geometry.DEFAULT_KIND)


class _QueryFeatures:
    """The query's local features, extracted on first use: the whole picture (its mirror image's
    too, only when asked: they cost as much again), and parts of it."""

    def __init__(self, loaded: LoadedImage | None, kind: str | None) -> None:
        self.loaded = loaded
        self.kind = kind
        self._whole: Features | None = None
        self._mirrored: Features | None = None  # the whole picture's features with ``.mirror`` filled
        self._regions: dict[tuple[int, int, int, int], Features] = {}
        self._second: dict[float, list[tuple[str, Features]]] = {}
        self._low: dict[bool, Features | None] = {}

    def whole(self, *, mirror: bool = False) -> Features:
        """Features of the whole query; with ``mirror``, carrying those of its mirror image, so
        ``geometry.verify`` also tries the flipped orientation."""
        from matching.core import geometry

        assert self.loaded is not None
        kind = self.kind or geometry.DEFAULT_KIND
        if self._whole is None:
            self._whole = query_features(self.loaded, self.kind)
        if not mirror:
            return self._whole
        if self._mirrored is None:
            flipped = geometry.mirror_features(self.loaded.image, max_features=geometry.DEFAULT_QUERY_MAX_FEATURES,
                                               frame=_frame(self.loaded), kind=kind)
            flipped.thumb = self._whole.thumb
            self._mirrored = replace(self._whole, mirror=flipped)
        return self._mirrored

    def second_looks(self, reference: Features) -> list[tuple[str, Features]]:
        """``geometry.second_look_features`` of the query for ``reference``, cached by what they depend
        on (the reference's proportions)."""
        from matching.core import geometry

        assert self.loaded is not None
        key = round(reference.width / reference.height, 3)
        if key not in self._second:
            self._second[key] = geometry.second_look_features(
                self.loaded.image, reference, frame=_frame(self.loaded), kind=self.kind or geometry.DEFAULT_KIND)
        return self._second[key]

    def low_resolution(self, *, mirror: bool = False) -> Features | None:
        """``geometry.low_resolution_features`` of the whole query; with ``mirror``, carrying its
        mirror image's too (as ``whole``)."""
        from matching.core import geometry

        if mirror not in self._low:
            self._low[mirror] = geometry.low_resolution_features(
                self.whole(), max_features=geometry.DEFAULT_MAX_FEATURES, with_mirror=mirror)
        return self._low[mirror]

    def region(self, box: tuple[int, int, int, int]) -> Features:
        from matching.core import geometry

        if box not in self._regions:
            assert self.loaded is not None
            self._regions[box] = geometry.extract_region_features(
                self.loaded.image, _enlarge(box, self.loaded.image.size), with_mirror=True,
                side=geometry.DEFAULT_REGION_SIDE, max_features=geometry.DEFAULT_QUERY_MAX_FEATURES,
                thumb=self.whole().thumb, frame=_frame(self.loaded), kind=self.kind or geometry.DEFAULT_KIND)
        return self._regions[box]


@dataclass
class _Judging:
    """What ``Matcher.match`` has decided so far, across its passes."""

    records: dict[int, RefRecord]
    decided: dict[int, Decision]
    verifications: dict[int, Verification]  # ref id -> the best attempt
    query: _QueryFeatures
    region_tried: dict[int, set[tuple[int, int, int, int]]] = field(default_factory=dict)
    unverified: set[int] = field(default_factory=set)  # judged by a pass that did not verify
    # Whether every verification also tries the query's mirror image (the partial-copy pass), and
    # which candidates have been verified that way. Before, only candidates a flipped or turned
    # hash variant points at are (the answer's passes: mirroring costs as much again).
    mirror_all: bool = False
    mirror_tried: set[int] = field(default_factory=set)
    # The whole query's verification in its plain orientation, per candidate: when the
    # partial-copy pass verifies a candidate again with the mirror image, that half is known
    # (geometry.verify's ``plain``: it is not matched and fitted again).
    whole_plain: dict[int, Verification] = field(default_factory=dict)
    # Second looks (``geometry.second_look_features``) given so far: only the most promising
    # candidates that verification did not confirm get one, once each.
    second_looked: set[int] = field(default_factory=set)
    # Whether the partial-copy pass is on (marks are then settled, Matcher._mark_stage); the
    # candidates due a low-resolution look (the partial-copy pass only: the LOW_RES_LOOKS most
    # promising not confirmed when the pass has its tiles' evidence, chosen
    # then: the pass verifies the tiles' new candidates before the answer's, and a first-come
    # budget gave the looks to weaker ones); the candidates given one -> whether it tried the
    # mirror image too.
    low_res: bool = False
    low_due: set[int] = field(default_factory=set)
    low_looked: dict[int, bool] = field(default_factory=dict)
    # The crop look (``geometry.crop_verification``) is still due to these: the CROP_LOOKS most
    # promising of the answer's candidates that verification did not confirm (the partial-copy
    # pass's tiles find parts of the query, not the query as a part); each leaves when given it.
    crop_due: set[int] = field(default_factory=set)
    marks_tried: set[int] = field(default_factory=set)  # candidates whose mark was looked for
    # A partial-copy pass follows the answer's passes if they find nothing: they keep
    # marks.PARTIAL_RESERVE of the mark searches for it.
    partial_follows: bool = False
    # No partial-copy pass in this call (``partial="never"``: a check's answer, whose pass runs apart;
    # a scan or a check without it): the marks of candidates the CNN does not find similar are left
    # to the pass, searching for a mark in a scene being partial-copy work.
    weak_marks_left: bool = False
    # Unsure marks the CNN confirmed (marks.crop_confirms): ref id -> the crop's cosine.
    marks_confirmed: dict[int, float] = field(default_factory=dict)
    # Unsure marks found before the partial-copy pass, settled at its end (Matcher._mark_stage):
    # its crop and aligned looks box a cut-out copy better than a mark does.
    marks_unsure: dict[int, Verification] = field(default_factory=dict)

    def found(self) -> bool:
        return any(d.is_match for d in self.decided.values())


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
        unsure_marks: bool = True,
    ) -> None:
        self.store = store
        self.indexes = indexes
        self.thresholds = thresholds or Thresholds()
        self.embedder = embedder
        self.verify = verify
        self.feature_kind = feature_kind
        # Unsure marks (marks.WEAK_SCORE) are confirmed by the crop's nearest vector in
        # ``indexes.vectors``: only meaningful when that index holds every protected picture the
        # check is against (not a re-check's index of the new pictures alone).
        self.unsure_marks = unsure_marks

    # -- public -------------------------------------------------------------
    def match(
        self,
        loaded: LoadedImage | None,
        *,
        top_k: int = 5,
        allowed: Callable[[int], bool] | None = None,
        signals: dict[str, Any] | None = None,
        partial: str = PARTIAL_AUTO,
    ) -> MatchOutcome:
        """Candidates and verdicts for one query, best first.

        Passes, cheapest first; with ``partial="auto"`` (default) each runs only
        when the ones before it found no match. Pass 0: digests and the hash
        indexes (exact and near-duplicate copies: no CNN, no verification).
        Pass 1: the CNN embedding of the whole query, then geometric
        verification of the most promising candidates (the query's mirror image
        is tried only where a flipped or turned hash variant points at the
        candidate). Pass 2, the partial-copy search: the CNN embeddings of the
        query's tiles (``CROP_WINDOWS``), then verification of what they found,
        each against the enlarged part of the query that found it, and of pass
        1's candidates in the mirrored orientation (a copy both flipped and
        cropped). So a resized copy costs no CNN pass, a cropped or rotated one
        a single pass, and only a picture with no whole-frame match pays for
        the 13 tiles. ``"always"`` runs every pass (a picture that is a copy
        may hold further, partial copies); ``"never"`` stops after pass 1 and
        leaves the mark search (``marks.py``, tens of ms each) of candidates the
        CNN does not find ``similar`` to the partial-copy pass: a check's answer
        (the service's background mode) then has it run apart, with ``"auto"``,
        when the answer finds nothing (docs/matching.md, "Marks and the answer").
        """
        if partial not in PARTIAL_MODES:
            raise ValueError(f"partial must be one of {', '.join(PARTIAL_MODES)}, not {partial!r}")
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            timings[name] = round(timings.get(name, 0.0) + (now - clock) * 1000, 3)
            clock = now

        from matching.core.signals import query_signals

        if loaded is None and signals is None:
            raise ValueError("match() needs the image or its signals")
        # Without pixels (signals computed elsewhere, e.g. by a Spark job) only
        # the digest and hash stages run.
        if signals:
            sig = signals
        else:
            assert loaded is not None  # match() needs the image or its signals
            sig = query_signals(loaded)
        lap("signals_ms")
        evidence: dict[int, _Evidence] = {}

        def ev(ref_id: int) -> _Evidence:
            return evidence.setdefault(ref_id, _Evidence())

        for ref_id in self.store.exact(sha256_bytes=sig["sha256_bytes"], sha256_pixels=sig["sha256_pixels"]):
            ev(ref_id).exact = True
        lap("exact_ms")
        use_cnn = (loaded is not None and self.embedder is not None and self.indexes.vectors is not None
                   and len(self.indexes.vectors) > 0)
        self._hash_stage(sig, ev, top_k, nearest=not use_cnn)
        lap("hash_ms")
        exhaustive = partial == PARTIAL_ALWAYS
        state = _Judging(records={}, decided={}, verifications={}, query=_QueryFeatures(loaded, self.feature_kind),
                         partial_follows=use_cnn and partial != PARTIAL_NEVER,
                         weak_marks_left=partial == PARTIAL_NEVER)
        embeddings: dict[str, Any] = {}
        # Pass 0: digests and hashes decide exact and near-duplicate copies; with the CNN to
        # come, verification waits for its candidates.
        self._judge(evidence, allowed, state, loaded, verify=not use_cnn)
        lap("verify_ms")
        if use_cnn and loaded is not None and (exhaustive or not state.found()):
            self._cnn_stage(loaded, ev, top_k, tiles=False, keep=embeddings)
            lap("cnn_ms")
            self._judge(evidence, allowed, state, loaded, verify=True)
            lap("verify_ms")
            if partial != PARTIAL_NEVER and (exhaustive or not state.found()):
                self._cnn_stage(loaded, ev, top_k, tiles=True, keep=embeddings)
                lap("cnn_tiles_ms")
                state.mirror_all = state.low_res = True
                open_ = sorted(((self._promise(e), i) for i, e in evidence.items()
                                if (allowed is None or allowed(i))
                                and not (i in state.decided and state.decided[i].is_match)), reverse=True)
                state.low_due = {i for promise, i in open_[:LOW_RES_LOOKS] if promise > 0}
                # The crop look is for the answer's own best candidates, found by the whole picture,
                # chosen now: the tiles' evidence would otherwise reorder them.
                unconfirmed = sorted(((self._promise(evidence[i]), i) for i, v in state.verifications.items()
                                      if not v.accepted), reverse=True)
                state.crop_due = {i for _p, i in unconfirmed[:CROP_LOOKS]}
                self._judge(evidence, allowed, state, loaded, verify=True)
                # The whole-image candidates that pass 1 verified in the plain orientation only:
                # a mirrored copy that was also cropped or turned has no hash to say it is flipped.
                # And those still due a crop or low-resolution look that the tiles did not bring back.
                again = [(self._promise(evidence[i]), i) for i, v in state.verifications.items()
                         if not v.accepted and i in state.decided and (
                             i not in state.mirror_tried or i in state.crop_due
                             or (i in state.low_due and i not in state.low_looked))]
                self._verify_stage(state, again, evidence)
                self._mark_stage(state, evidence, allowed)
                lap("verify_ms")
        elif state.unverified and loaded is not None and self.verify:
            # Stopping after pass 0: a flipped or turned copy that PDQ's variants found is
            # still verified, for its region and edit report.
            todo = [(self._promise(evidence[i]), i) for i in state.unverified if state.decided[i].is_match]
            state.unverified.clear()
            self._verify_stage(state, todo, evidence)
            lap("verify_ms")
        ranked = sorted(state.decided.values(), key=_rank_key)
        timings["total_ms"] = round(sum(timings.values()), 3)
        return MatchOutcome(ranked, sig, timings, state.verifications, embeddings=embeddings)

    # -- stages -------------------------------------------------------------
    def _judge(self, evidence: dict[int, _Evidence], allowed: Callable[[int], bool] | None,
               state: "_Judging", loaded: LoadedImage | None, *, verify: bool) -> None:
        """Decide every candidate not decided yet (or whose evidence grew) and, with
        ``verify``, verify the most promising of those still open."""
        new = [i for i, e in evidence.items()
               if (i not in state.decided or e.changed or i in state.unverified)
               and (allowed is None or allowed(i))]
        for e in evidence.values():
            e.changed = False
        missing = [i for i in new if i not in state.records]
        if missing:
            state.records.update(self.store.records(missing))
        t = self.thresholds
        to_verify: list[tuple[float, int]] = []
        for ref_id in new:
            record = state.records.get(ref_id)
            if record is None:
                continue  # deleted since it was indexed
            previous = state.decided.get(ref_id)
            if previous is not None and previous.is_match and ref_id not in state.unverified:
                continue  # decided for good; a better crop score changes nothing
            e = evidence[ref_id]
            rt = record.thresholds or t
            scores = self._signal_scores(e)
            if e.exact:
                state.decided[ref_id] = Decision(ref_id, EXACT, 1.0, scores)
            elif (e.phash is not None and e.phash <= rt.phash_near_duplicate) or (
                e.pdq is not None and e.pdq <= rt.pdq_near_duplicate
            ):
                state.decided[ref_id] = Decision(ref_id, NEAR_DUPLICATE, self._hash_score(e), scores)
            else:
                state.decided[ref_id] = self._unverified(ref_id, e, rt, scores)
                if previous is not None and "verification" in previous.signal_scores:
                    # Verified against the whole query already: keep what it said.
                    state.decided[ref_id] = replace(state.decided[ref_id], signal_scores=dict(
                        scores, inliers=previous.signal_scores.get("inliers", 0),
                        verification=previous.signal_scores["verification"]))
                to_verify.append((self._promise(e), ref_id))
        if not verify:
            state.unverified.update(ref_id for _promise, ref_id in to_verify)
            return
        state.unverified.clear()
        if self.verify and to_verify and loaded is not None:
            self._verify_stage(state, to_verify, evidence)

    def _hash_stage(self, sig: dict[str, Any], ev: Callable[[int], _Evidence], top_k: int, *,
                    nearest: bool = True) -> None:
        """Radius searches of every variant; with ``nearest``, also the ``top_k`` nearest pHash codes,
        so that a check without the CNN still lists the closest images. (With the CNN they add
        nothing: beyond the radius a hash is no reason to verify, and at 1M codes the search
        costs 1.4 ms.)"""
        t = self.thresholds
        if self.indexes.phash is not None and len(self.indexes.phash):
            variants = [_bits(h) for h in sig.get("phash_variants") or [sig["phash"]]]
            for n, code in enumerate(variants):
                hits = self.indexes.phash.query_radius(code, t.phash_candidate)
                if n == 0 and nearest:
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
            # A flipped or turned variant decides at pdq_variant_copy: searching it wider only
            # costs time (at 1M codes: 2.2 ms at 48, 0.9 at 40, 0.24 at 31 a variant).
            variant_radius = min(t.pdq_candidate, t.pdq_variant_copy)
            for n, code in enumerate(variants):
                radius = t.pdq_candidate if n == 0 else variant_radius
                for ref_id, distance in self.indexes.pdq.query_radius(code, radius):
                    e = ev(ref_id)
                    if n == 0:
                        e.pdq = distance if e.pdq is None else min(e.pdq, distance)
                    e.pdq_variant = distance if e.pdq_variant is None else min(e.pdq_variant, distance)

    def _cnn_stage(self, loaded: LoadedImage, ev: Callable[[int], _Evidence], top_k: int, *, tiles: bool,
                   keep: dict[str, Any] | None = None) -> None:
        """Embed the whole query (``tiles=False``) or its tiles, and gather the nearest references."""
        embedder, index = self.embedder, self.indexes.vectors
        assert embedder is not None and index is not None  # match() runs this stage only with both
        if tiles:
            boxes, vectors = embedder.embed_crops(loaded.image, whole=False)
        else:
            boxes, vectors = [None], embedder.embed_one(loaded.image)[None, :]
        if keep is not None:
            keep["tiles" if tiles else "whole"] = vectors if tiles else vectors[0]
        from matching.core.marks import MARK_VIEWS, vector_reference

        per_crop = max(top_k, self.thresholds.verify_top)
        # A picture's mark adds MARK_VIEWS vectors (marks.mark_views): search as much deeper, so
        # that one mark's views do not crowd the other candidates out (the search is cheap).
        for box, hits in zip(boxes, index.search(vectors, per_crop * (1 + MARK_VIEWS)), strict=True):
            for vector_id, score in hits:
                ref_id = vector_reference(vector_id)
                e = ev(ref_id)
                if e.cnn is None or score > e.cnn:
                    e.cnn = float(score)
                    e.cnn_box = None if box is None else tuple(box)
                    e.cnn_mark = ref_id != vector_id
                    e.changed = True

    def _verify_stage(self, state: "_Judging", candidates: list[tuple[float, int]],
                      evidence: dict[int, _Evidence]) -> None:
        """Verify the ``verify_top`` most promising of ``candidates`` ((promise, id) pairs)
        against the whole query, once each; a candidate the CNN
        found through a tile (a logo pasted into a photo, a corner of a picture)
        that the whole query does not confirm is verified again against that part
        of the query, enlarged (``geometry.extract_region_features``)."""
        from matching.core import geometry

        for _promise, ref_id in sorted(candidates, reverse=True)[: self.thresholds.verify_top]:
            if _promise <= 0:
                continue
            e = evidence[ref_id]
            box = e.cnn_box
            done = state.verifications.get(ref_id)
            mirror = state.mirror_all or _flip_suspected(e)
            whole_again = done is None or (not done.accepted and mirror and ref_id not in state.mirror_tried)
            # The partial-copy pass gives candidates the answer's passes left unconfirmed their
            # low-resolution look (kept off the answer's path: it costs ~20 ms a check).
            low_due = ref_id in state.low_due and ref_id not in state.low_looked  # filled when the pass starts
            crop_due = ref_id in state.crop_due  # filled when the partial-copy pass starts
            if done is not None and (done.accepted or (not whole_again and not low_due and not crop_due and (
                    box is None or box in state.region_tried.get(ref_id, ())))):
                continue
            reference = self.store.features(ref_id)
            if reference is None:
                continue
            rt = state.records[ref_id].thresholds or self.thresholds
            if whole_again:
                result = geometry.verify(state.query.whole(mirror=mirror), reference, min_inliers=rt.min_inliers,
                                         plain=state.whole_plain.get(ref_id) if mirror else None)
                if mirror:
                    state.mirror_tried.add(ref_id)
                else:
                    state.whole_plain[ref_id] = result
                if done is not None and not result.accepted and done.inliers > result.inliers:
                    result = done  # keep the closer miss (a tile's, say) for the report
            else:
                assert done is not None  # whole_again is true when there is none
                result = done
            if not result.accepted and box is not None and box not in state.region_tried.get(ref_id, ()):
                state.region_tried.setdefault(ref_id, set()).add(box)
                in_region = geometry.verify(state.query.region(box), reference, min_inliers=rt.min_inliers)
                if in_region.accepted or in_region.inliers > result.inliers:
                    result = in_region
            if (not result.accepted and ref_id not in state.second_looked and e.cnn is not None
                    and e.cnn >= rt.cnn_similar and len(state.second_looked) < SECOND_LOOKS):
                state.second_looked.add(ref_id)
                looks = [("ratio", state.query.whole(mirror=mirror)), *state.query.second_looks(reference)]
                for _name, looked in looks:
                    again = geometry.verify(looked, reference, min_inliers=rt.min_inliers,
                                            ratio=geometry.SECOND_LOOK_RATIO[looked.kind],
                                            min_appearance=geometry.SECOND_LOOK_APPEARANCE)
                    if again.accepted:
                        result = again
                        break
            if not result.accepted:
                result = self._low_resolution_look(state, ref_id, reference, rt, mirror=mirror) or result
            if not result.accepted and crop_due:
                # The crop look (about 10 ms): the query's thumbnail found in the reference's, for a
                # part of the reference cut out whose flat shapes keep too few keypoints.
                state.crop_due.discard(ref_id)
                result = geometry.crop_verification(state.query.whole(), reference) or result
                if not result.accepted:
                    # The aligned look (about 20 ms): the thumbnails aligned by ECC, for a copy
                    # stretched, turned, padded or mirrored whose keypoints did not survive.
                    # Then the median look (pixel shuffling) and the turned look (a copy turned by
                    # more than ECC turns an upright start), about as long again and half as long more,
                    # for a candidate the CNN finds near enough (FURTHER_LOOKS_MIN_CNN).
                    query = state.query.whole()
                    aligned = geometry.aligned_verification(query, reference)
                    if aligned is None and e.cnn is not None and e.cnn >= FURTHER_LOOKS_MIN_CNN:
                        aligned = (geometry.aligned_verification(query, reference, median=True)
                                  or geometry.aligned_verification(query, reference, turned=True))
                    result = aligned or result
            if not result.accepted:
                result = self._verify_mark(state, ref_id, e) or result
            elif result.model not in ("mark", "crop"):  # a crop's box is the part of the tile cut out
                result = self._as_mark(state, ref_id, result)
            state.verifications[ref_id] = result
            current = state.decided[ref_id]
            scores = dict(current.signal_scores, inliers=result.inliers)
            if result.accepted:
                score = self._verified_score(e, result.inliers)
                if result.model in ("mark", "crop", "aligned"):  # a correlation of pixels, no inliers
                    scores[f"{result.model}_score"] = round(result.inlier_ratio, 4)
                    score = self._correlation_score(state, ref_id, e, result)
                self._decide_copy(state, ref_id, score, scores, result)
            else:
                missed = (self._evidence_score(e, result.inliers, bar=rt.min_inliers)
                          if current.verdict == NONE else current.score)
                state.decided[ref_id] = replace(current, score=missed,
                                                signal_scores=dict(scores, verification=result.reason))

    @staticmethod
    def _low_resolution_look(state: "_Judging", ref_id: int, reference: Features, rt: Thresholds, *,
                             mirror: bool) -> Verification | None:
        """The query's and the reference's filtered thumbnails verified with the usual rules
        (``geometry.low_resolution_features``: pixel shuffling, pixelation, heavy noise), for the
        candidates due one (``_Judging.low_due``: at most ``LOW_RES_LOOKS`` a check), once each
        (again when the mirror image is tried after a plain look, as the whole query's verification
        is); the result when accepted."""
        from matching.core import geometry

        if ref_id not in state.low_due:  # empty before the partial-copy pass
            return None
        if ref_id in state.low_looked and (state.low_looked[ref_id] or not mirror):
            return None
        state.low_looked[ref_id] = mirror
        query, low = state.query.low_resolution(mirror=mirror), geometry.low_resolution_features(reference)
        if query is None or low is None:
            return None
        again = geometry.verify(query, low, min_inliers=rt.min_inliers, min_appearance=geometry.LOW_RES_APPEARANCE)
        return again if again.accepted else None

    def _verify_mark(self, state: "_Judging", ref_id: int, e: _Evidence) -> Verification | None:
        """When the reference has a mark (a logo keyed out of its tile, marks.py) and the local
        features did not confirm it, look for the mark itself in the query, once per candidate
        and for at most ``marks.VERIFY_TOP`` candidates a check (each costs tens of ms), of which
        the answer's passes leave ``marks.PARTIAL_RESERVE`` to a partial-copy pass that follows; the
        searches after the first ``marks.SURE_SEARCHES`` accept at ``marks.LATE_MIN_SCORE`` and, where
        the CNN can tell, only when it confirms the place as it does an unsure mark's."""
        from matching.core import marks

        find = getattr(self.store, "mark", None)
        loaded = state.query.loaded
        budget = marks.VERIFY_TOP
        if state.partial_follows and not state.low_res:
            # The tiles point at a mark better than the whole picture does: the answer's
            # candidates must not spend the searches a mark found by a tile needs.
            budget -= marks.PARTIAL_RESERVE
        if find is None or loaded is None or ref_id in state.marks_tried or len(state.marks_tried) >= budget:
            return None
        similar = (state.records[ref_id].thresholds or self.thresholds).cnn_similar
        if state.weak_marks_left and (e.cnn is None or e.cnn < similar):
            return None  # left to the partial-copy pass (a check's runs apart, with "auto")
        mark = find(ref_id)
        if mark is None:
            return None
        late = len(state.marks_tried) >= marks.SURE_SEARCHES
        floor = marks.LATE_MIN_SCORE if late else marks.MIN_SCORE
        state.marks_tried.add(ref_id)
        box = tile_width = None
        if e.cnn_box is not None:  # found through a tile: the mark is in or near it, at about the tile's scale
            box, tile_width = _enlarge(e.cnn_box, loaded.image.size), e.cnn_box[2] - e.cnn_box[0]
        vectors = self.indexes.vectors
        confirm = self.unsure_marks and self.embedder is not None and vectors is not None and len(vectors) > 0
        result = marks.mark_verification(loaded.image, mark, frame=_frame(loaded), box=box, tile_width=tile_width,
                                         min_score=floor, weak_score=marks.WEAK_SCORE if confirm else None)
        # A late search's mark needs the CNN as an unsure one does: chance look-alikes pile up with
        # every search; so does a mark whose detail inside its outline did not correlate where it
        # was found (marks.indistinct: a look-alike of the same outline, or a solid shape).
        # A late mark whose detail correlates as only the mark itself does (marks.DETAIL_SURE) needs
        # no more: the CNN's crop misses small and slanted true marks that their detail shows.
        if result is None:
            return None
        needs_cnn = (late and not marks.detailed(result)) or marks.indistinct(result)
        if result.accepted and not (needs_cnn and confirm):
            return result
        if not result.accepted and not state.low_res:  # before the partial-copy pass: settled at its end
            state.marks_unsure[ref_id] = result
            return None
        return self._confirm_mark(state, ref_id, result)

    def _confirm_mark(self, state: "_Judging", ref_id: int, result: Verification) -> Verification | None:
        """An unsure mark (marks.WEAK_SCORE) accepted when the CNN sees this reference's mark in
        the place (marks.mark_crop, marks.crop_confirms), or None."""
        from matching.core import marks

        loaded, vectors = state.query.loaded, self.indexes.vectors
        if loaded is None:
            return None
        crop = marks.mark_crop(loaded.image, result.query_polygon, frame=_frame(loaded))
        if crop is None or self.embedder is None or vectors is None:
            return None
        hits = vectors.search(self.embedder.embed_one(crop)[None, :], 1)[0]
        cosine = marks.crop_confirms(hits, ref_id, floor=marks.crop_floor(result))
        if cosine is None:
            return None
        state.marks_confirmed[ref_id] = round(cosine, 4)
        return replace(result, accepted=True, reason="mark")

    def _mark_stage(self, state: "_Judging", evidence: dict[int, _Evidence],
                    allowed: Callable[[int], bool] | None) -> None:
        """The partial-copy pass's last step: references whose mark's views (marks.mark_views) are
        the nearest vectors to a tile of the query, even under the CNN candidate threshold (a
        small mark on a busy scene often scores 0.2-0.35), are looked for by their mark, best
        first, up to ``marks.VERIFY_TOP`` a check in all."""
        from matching.core import marks

        # Unsure marks the answer's passes found, for candidates nothing has confirmed since.
        for ref_id, unsure in state.marks_unsure.items():
            if ref_id in state.decided and state.decided[ref_id].is_match:
                continue
            if (allowed is None or allowed(ref_id)) and ref_id in state.records:
                confirmed = self._confirm_mark(state, ref_id, unsure)
                if confirmed is not None:
                    self._accept_mark(state, ref_id, evidence[ref_id], confirmed)
        state.marks_unsure.clear()
        open_ = sorted(((e.cnn, i) for i, e in evidence.items()
                        if e.cnn_mark and e.cnn is not None and e.cnn >= marks.MARK_CANDIDATE
                        and i not in state.marks_tried and (allowed is None or allowed(i))
                        and not (i in state.decided and state.decided[i].is_match)), reverse=True)
        for _score, ref_id in open_[: max(0, marks.VERIFY_TOP - len(state.marks_tried))]:
            if ref_id not in state.records:
                state.records.update(self.store.records([ref_id]))
            if ref_id not in state.records:
                continue  # deleted since it was indexed
            e = evidence[ref_id]
            result = self._verify_mark(state, ref_id, e)
            if result is not None:
                self._accept_mark(state, ref_id, e, result)

    def _accept_mark(self, state: "_Judging", ref_id: int, e: _Evidence, result: Verification) -> None:
        """Decide ``ref_id`` a modified copy on its mark, found by the partial-copy pass's search."""
        state.verifications[ref_id] = result
        scores = dict(self._signal_scores(e), inliers=0, mark_score=result.inlier_ratio)
        self._decide_copy(state, ref_id, self._correlation_score(state, ref_id, e, result), scores, result)

    @staticmethod
    def _decide_copy(state: "_Judging", ref_id: int, score: float, scores: dict[str, Any],
                     result: Verification) -> None:
        """Decide ``ref_id`` a modified copy on ``result`` (an accepted verification) at ``score``:
        ``scores`` gain the aligned pictures' correlation (for a mark, that of its inner detail) and
        the CNN's confirmation of a mark, and the decision carries the region and the edit."""
        assert result.edit is not None  # an accepted verification reports its edit
        # An earlier attempt's failure (the answer's full-size verification, say) is no evidence of
        # this copy: the portal would show "Geometric check: too few inliers" beside the match.
        scores.pop("verification", None)
        if result.appearance is not None:
            scores["mark_detail" if result.model == "mark" else "appearance"] = round(result.appearance, 4)
        if ref_id in state.marks_confirmed:
            scores["mark_crop_cosine"] = state.marks_confirmed[ref_id]
        state.decided[ref_id] = Decision(
            ref_id, MODIFIED_COPY, score, scores,
            region={"query": result.query_polygon, "reference": result.reference_polygon},
            edit={**_edit_json(result.edit), "description": result.edit.describe()})

    def _as_mark(self, state: "_Judging", ref_id: int, result: Verification) -> Verification:
        """An accepted verification of a reference that has a mark, boxed and told as the mark's
        when the copy is the mark small in the query (``marks.as_mark``)."""
        from matching.core import marks

        find = getattr(self.store, "mark", None)
        mark = find(ref_id) if find is not None else None
        if mark is None or state.query.loaded is None:
            return result
        return marks.as_mark(result, mark, frame=_frame(state.query.loaded), query=state.query.loaded.image)

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
        """Best similarity in [0, 1] any signal gives, whatever the orientation (raw: a hash
        distance d scores 1 - d/bits, so unrelated pictures score about 0.5)."""
        sims = [0.0]
        if e.phash_variant is not None:
            sims.append(1 - e.phash_variant / 64)
        if e.pdq_variant is not None:
            sims.append(1 - e.pdq_variant / 256)
        if e.cnn is not None:
            sims.append(max(0.0, float(e.cnn)))
        return max(sims)

    def _evidence_score(self, e: _Evidence, inliers: int = 0, *, bar: int | None = None) -> float:
        """How far above chance the signals of an undecided candidate lie, in [0, 1]: a signal's
        level is 0 at its candidate threshold and 1 at a perfect match. Raw similarities do not
        compare across signals (two unrelated logos are often 16 pHash bits apart, a raw
        0.75, while the CNN gives a pasted copy a cosine of 0.5), so the ranking of what
        no stage confirmed uses this instead. The hashes (pHash and PDQ read the same
        downscaled picture: their best level counts once) and the CNN are two independent
        witnesses, combined as a noisy-or, 1 - (1 - hash)(1 - cnn): a candidate both find
        above chance ranks above one only the CNN finds a little nearer (a pixel-shuffled
        logo 8 pHash bits and a cosine of 0.48 from its original, against a look-alike logo
        at a cosine of 0.54). With one witness it is that witness's level.

        A failed verification's agreeing ``inliers`` are a third witness when they reached the
        ``bar`` that verification applied (its ``min_inliers``; the matcher's own by default) and a
        later rule turned the fit down (the appearance check, the perspective bound): level 0 at
        the bar, 1 at twice the bar. Under the bar they add nothing: look-alikes reach 9-11 by
        chance. Past it they are evidence, not proof: an unrelated picture's best candidate can
        reach 15-30 agreeing inliers that the appearance check then turns down (docs/benchmarks.md
        section 7, "A failed fit's inliers"). A turned copy in perspective that 18 inliers fit
        before the appearance check turned it down ranks above a look-alike the CNN puts a little
        nearer with 5. It orders what no stage confirmed; it decides nothing."""
        t = self.thresholds
        hashes = [0.0]
        if e.phash_variant is not None and t.phash_candidate > 0:
            hashes.append(1 - e.phash_variant / t.phash_candidate)
        if e.pdq_variant is not None and t.pdq_candidate > 0:
            hashes.append(1 - e.pdq_variant / t.pdq_candidate)
        cnn = 0.0
        if e.cnn is not None and t.cnn_candidate < 1:
            cnn = (float(e.cnn) - t.cnn_candidate) / (1 - t.cnn_candidate)
        hash_level = max(0.0, min(1.0, max(hashes)))
        cnn_level = max(0.0, min(1.0, cnn))
        bar = t.min_inliers if bar is None else bar
        fit_level = max(0.0, min(1.0, inliers / bar - 1)) if bar > 0 else 0.0
        return round(1 - (1 - hash_level) * (1 - cnn_level) * (1 - fit_level), 6)

    def _hash_score(self, e: _Evidence) -> float:
        sims = []
        if e.phash is not None:
            sims.append(1 - e.phash / 64)
        if e.pdq is not None:
            sims.append(1 - e.pdq / 256)
        return round(max(sims + [self._similarity(e)]), 6)

    def _correlation_score(self, state: "_Judging", ref_id: int, e: _Evidence, result: Verification) -> float:
        """The score of a copy confirmed by a correlation of pixels (a mark, a crop, an aligned look):
        0.7 plus a quarter of the correlation, above keypoint verifications (from 0.75) once the
        correlation is sure (a mark at MIN_SCORE: 0.84); an unsure mark the CNN confirmed starts
        from 0.6 instead (0.71-0.74), below every sure verification, so that a ranking by score
        (recall at a precision) trusts it least."""
        base = 0.6 if ref_id in state.marks_confirmed else 0.7
        return round(max(self._similarity(e), base + 0.25 * result.inlier_ratio), 6)

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
        return Decision(ref_id, NONE, self._evidence_score(e), scores)


def _flip_suspected(e: _Evidence) -> bool:
    """A flipped or turned variant of the query's hashes is closer to the candidate than the query
    as given: worth trying the mirror image in verification (4 of the 8 variants flip)."""
    return any(variant is not None and (plain is None or variant < plain)
               for plain, variant in ((e.phash, e.phash_variant), (e.pdq, e.pdq_variant)))


def _rank_key(d: Decision) -> tuple[int, float, int, int]:
    """Matches first, then ``similar``, then the rest; by score within each tier."""
    tier = 0 if d.is_match else 1 if d.verdict == SIMILAR else 2
    return tier, -d.score, VERDICT_ORDER[d.verdict], d.reference_id


def _enlarge(box: tuple[int, int, int, int], size: tuple[int, int]) -> tuple[int, int, int, int]:
    """``box`` grown by half its width and height on every side, inside ``size``: a pasted
    logo that straddles the edge of the crop that found it lies wholly inside."""
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) // 2, (y1 - y0) // 2
    return max(0, x0 - dx), max(0, y0 - dy), min(size[0], x1 + dx), min(size[1], y1 + dy)


def _edit_json(edit: EditReport) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(edit)



class MemoryStore:
    """``ReferenceStore`` held in memory: the benchmark's, and any caller without a database."""

    def __init__(self) -> None:
        self._records: dict[int, RefRecord] = {}
        self._features: dict[int, Any] = {}
        self._marks: dict[int, Any] = {}
        self._by_digest: dict[str, set[int]] = {}

    def put(self, record: RefRecord, features: Any | None = None, mark: Any | None = None) -> None:
        self._records[record.id] = record
        if features is not None:
            self._features[record.id] = features
        if mark is not None:
            self._marks[record.id] = mark
        for digest in (record.sha256_bytes, record.sha256_pixels):
            self._by_digest.setdefault(digest, set()).add(record.id)

    def records(self, ids: Collection[int]) -> dict[int, RefRecord]:
        return {i: self._records[i] for i in ids if i in self._records}

    def exact(self, *, sha256_bytes: str, sha256_pixels: str) -> list[int]:
        return sorted(self._by_digest.get(sha256_bytes, set()) | self._by_digest.get(sha256_pixels, set()))

    def features(self, ref_id: int) -> Any | None:
        return self._features.get(ref_id)

    def mark(self, ref_id: int) -> Any | None:
        """The reference's ``marks.Mark``, or None."""
        return self._marks.get(ref_id)


@dataclass
class IndexedReferences:
    """Protected pictures turned into what a ``Matcher`` needs, in memory: the store
    (records + ORB features) and the arrays the hash and vector indexes are built from."""

    store: MemoryStore
    ids: Any            # (n,) int64
    phashes: Any        # (n, 1) uint64
    pdq_ids: Any        # (m,) int64: the references whose PDQ is good enough to index
    pdq_words: Any      # (m, 4) uint64, big-endian words
    vectors: Any = None  # (n, 256) float32 CNN embeddings, or None without the CNN
    # The views of the references' marks (marks.mark_views), under marks.mark_vector_id ids.
    mark_ids: Any = None
    mark_vectors: Any = None

    def indexes(self) -> Indexes:
        import numpy as np

        from matching.core.hashindex import make_hash_index
        from matching.core.vectorindex import VectorIndex

        out = Indexes(phash=make_hash_index(1, codes=self.phashes, ids=self.ids),
                      pdq=make_hash_index(4, codes=self.pdq_words, ids=self.pdq_ids))
        if self.vectors is not None:
            ids, vectors = self.ids, self.vectors
            if self.mark_vectors is not None and len(self.mark_vectors):
                ids, vectors = np.concatenate([ids, self.mark_ids]), np.concatenate([vectors, self.mark_vectors])
            out.vectors = VectorIndex.build(ids, vectors)
        return out


def index_references(refs: list[tuple[int, Any]], *, embedder: Any | None = None) -> IndexedReferences:
    """Signals, ORB features, marks and (with ``embedder``) CNN embeddings of ``(id, PIL image)``
    pairs (an RGBA picture keeps its transparency as its mark's mask), computed as the service
    computes them for an upload (the picture goes through a PNG file)."""
    import io

    import numpy as np

    from matching.core import geometry, marks
    from matching.core.loading import load_image
    from matching.core.signals import PDQ_MIN_QUALITY, compute_signals

    store = MemoryStore()
    ids, phashes, pdq_ids, pdqs, images = [], [], [], [], []
    mark_ids: list[int] = []
    views: list[Any] = []
    for ref_id, image in refs:
        buf = io.BytesIO()
        image.convert("RGBA" if image.mode in ("RGBA", "LA", "PA") else "RGB").save(buf, format="PNG")
        loaded = load_image(buf.getvalue())
        mark = marks.extract_mark(loaded.image, loaded.alpha, frame=_frame(loaded))
        if mark is not None and embedder is not None:
            for slot, view in enumerate(marks.mark_views(mark)):
                mark_ids.append(marks.mark_vector_id(ref_id, slot))
                views.append(view)
        sig = compute_signals(loaded)
        pdq = int(sig["pdq"], 16) if sig["pdq_quality"] >= PDQ_MIN_QUALITY else None
        store.put(RefRecord(ref_id, sig["sha256_bytes"], sig["sha256_pixels"], int(sig["phash"], 16), pdq,
                            sig["pdq_quality"]), geometry.extract_features(loaded.image, frame=_frame(loaded)),
                  mark)
        ids.append(ref_id)
        phashes.append(int(sig["phash"], 16))
        if pdq is not None:
            pdq_ids.append(ref_id)
            pdqs.append(sig["pdq"])
        images.append(loaded.image)
    vectors = embedder.embed(images) if embedder is not None and images else None
    mark_vectors = embedder.embed(views) if embedder is not None and views else None
    return IndexedReferences(store, np.array(ids, dtype=np.int64), np.array(phashes, dtype=np.uint64).reshape(-1, 1),
                             np.array(pdq_ids, dtype=np.int64), pdq_words(pdqs), vectors,
                             np.array(mark_ids, dtype=np.int64), mark_vectors)

