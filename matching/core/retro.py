"""Retroactive re-checks: which suspects seen before may copy images protected since.

The new references are few (a collection's upload: tens to hundreds) and the suspects many (every
checked and scanned image kept: hundreds of thousands), so the search runs the other way round
from a check: a small in-memory index over the new references' signals (``NewReferences``), and
the suspects' stored signals streamed against it in numpy batches (``SuspectBatch``): Hamming
distances of every flip/rotation variant of the suspects' pHash and PDQ to each reference
(``hamming.distances``), cosine similarities of their CNN embeddings (the whole picture and the
partial-copy tiles) as one matrix product. Nothing is indexed per suspect and memory stays one
batch.

A ``Candidate`` pair is what the cascade's own thresholds would send to judging (``Thresholds``):
a digest in common, a pHash variant within ``phash_candidate``, PDQ within ``pdq_candidate`` (its
flipped and turned variants within ``pdq_variant_copy``), or a CNN cosine (whole picture or any
tile) of at least ``CNN_CANDIDATE`` (below ``cnn_similar``, the level at which a check reports
a picture as similar without verifying it). A logo's
mark views (``marks.mark_views``, ids ``marks.mark_vector_id``) count as vectors of their picture,
as in a check's index, and, like a check's mark search (``Matcher._mark_stage``), a reference
whose mark view is at ``MARK_CANDIDATE`` or more from the suspect is a candidate too, for the
``marks.VERIFY_TOP`` best such references of a suspect. A check looks for marks from cosine 0.2
(``marks.MARK_CANDIDATE``), but only for the logos nearest its tiles in the whole index; here
every new logo is near, and at 0.2 half of all logo-rich suspects would be judged for one new
logo (docs/matching.md, "Retroactive re-checks"). (A check
also verifies its six nearest embeddings above ``cnn_candidate``; with only a hundred new
references nearly every suspect has six such, so that rule here would verify every suspect.) The
caller judges each pair with the ``Matcher`` as a check does, with the suspect's pixels when they
are still kept, on its signals alone when not. Plain numpy, no Django.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from matching.core.hamming import distances
from matching.core.marks import VERIFY_TOP, vector_reference
from matching.core.matcher import Thresholds

__all__ = ["MARK_CANDIDATE", "Candidate", "NewReferences", "SuspectBatch", "VARIANTS", "search"]

VARIANTS = 8  # the dihedral variants stored per hash (entry 0: the picture as given)
# Cosine of a suspect (whole or a tile) to a new logo's mark view at or above: the pair is judged.
# Measured on the marks suite (docs/matching.md): 0.68 of true composites reach it, and 3 % / 29 % /
# 61 % of logo-rich unrelated suspects for 1 / 10 / 60 new logos (0.2: 0.98 and 50 % / 99 % / 100 %).
MARK_CANDIDATE = 0.4
# Cosine of a suspect (whole or a tile) to a new picture at or above: the pair is judged, even below
# ``cnn_similar``. A check verifies its six nearest pictures from ``cnn_candidate`` (0.35); a re-check
# cannot (see above), but a centre crop of two thirds of a photo sits at 0.77 under the head of
# docs/training/report.md, below ``cnn_similar``, and a check finds it. On the per-attack benchmark's
# unrelated images, 11 % have some reference of 120 at 0.70 or more and 5 % at 0.75 (docs/matching.md).
CNN_CANDIDATE = 0.72
PDQ_WORDS = 4
EMBEDDING_DTYPE = np.float16  # as the protected images' embeddings are stored

FloatArray = npt.NDArray[np.float32]


def _unit(vectors: FloatArray) -> FloatArray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out: FloatArray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


def _codes(blobs: Sequence[bytes], words: int) -> npt.NDArray[np.uint64]:
    """Stored variants (big-endian words, ``VARIANTS`` codes a blob) as ``(len(blobs) * 8, words)``;
    a blob with fewer codes (the plain hash only) repeats its first."""
    size = 8 * words * VARIANTS
    if all(len(b) == size for b in blobs):
        flat = np.frombuffer(b"".join(bytes(b) for b in blobs), dtype=">u8")
        return flat.astype(np.uint64).reshape(-1, words)
    out = np.zeros((len(blobs), VARIANTS, words), dtype=np.uint64)
    for i, blob in enumerate(blobs):
        codes = np.frombuffer(bytes(blob), dtype=">u8").reshape(-1, words)[:VARIANTS]
        if len(codes):
            out[i, : len(codes)] = codes
            out[i, len(codes):] = codes[0]
    return out.reshape(-1, words)


@dataclass(frozen=True)
class NewReferences:
    """The references a re-check looks for: ids, hashes and (optionally) CNN embeddings."""

    ids: npt.NDArray[np.int64]              # (n,)
    phash: npt.NDArray[np.uint64]           # (n,)
    pdq: npt.NDArray[np.uint64]             # (n, 4) big-endian words; rows of unusable PDQ are ignored
    has_pdq: npt.NDArray[np.bool_]          # (n,)
    sha256: dict[str, list[int]]            # digest (bytes or pixels) -> reference ids
    vectors: FloatArray | None = None       # (n, d) unit vectors; a reference without one is a zero row
    # The logos' mark views (marks.mark_views): vector ids (marks.mark_vector_id) and unit vectors.
    mark_ids: npt.NDArray[np.int64] | None = None   # (k,)
    mark_vectors: FloatArray | None = None          # (k, d)

    @classmethod
    def build(cls, refs: Sequence[tuple[int, int, int | None, str, str, Any]],
              marks: Sequence[tuple[int, Any]] = ()) -> "NewReferences":
        """From ``(id, phash, pdq or None, sha256_bytes, sha256_pixels, embedding or None)`` and the
        marks' views ``(mark vector id, embedding)`` (kept only when the references have embeddings
        of the same size)."""
        n = len(refs)
        pdq = np.zeros((n, PDQ_WORDS), dtype=np.uint64)
        has_pdq = np.zeros(n, dtype=np.bool_)
        sha: dict[str, list[int]] = {}
        dims = {len(r[5]) for r in refs if r[5] is not None}
        if len(dims) > 1:
            raise ValueError(f"embeddings of different sizes: {sorted(dims)}")
        vectors: FloatArray | None = np.zeros((n, dims.pop()), dtype=np.float32) if dims else None
        mask = (1 << 64) - 1
        for i, (ref_id, _phash, code, sha_bytes, sha_pixels, vector) in enumerate(refs):
            if code is not None:
                pdq[i] = [(code >> (64 * (PDQ_WORDS - 1 - w))) & mask for w in range(PDQ_WORDS)]
                has_pdq[i] = True
            for digest in {sha_bytes, sha_pixels} - {""}:
                sha.setdefault(digest, []).append(ref_id)
            if vector is not None and vectors is not None:
                vectors[i] = np.asarray(vector, dtype=np.float32)
        mark_ids = mark_vectors = None
        if vectors is not None:
            vectors = _unit(vectors)
            vectors[~np.isfinite(vectors).all(axis=1)] = 0
            views = [(int(i), np.asarray(v, dtype=np.float32)) for i, v in marks if len(v) == vectors.shape[1]]
            if views:
                mark_ids = np.array([i for i, _v in views], dtype=np.int64)
                mark_vectors = _unit(np.stack([v for _i, v in views]))
                mark_vectors[~np.isfinite(mark_vectors).all(axis=1)] = 0
        return cls(ids=np.array([r[0] for r in refs], dtype=np.int64),
                   phash=np.array([r[1] & mask for r in refs], dtype=np.uint64),
                   pdq=pdq, has_pdq=has_pdq, sha256=sha, vectors=vectors, mark_ids=mark_ids,
                   mark_vectors=mark_vectors)

    def mark_columns(self) -> npt.NDArray[np.int64]:
        """For each mark view, the column (row of ``ids``) of the picture it belongs to (-1: none)."""
        if self.mark_ids is None:
            return np.zeros(0, dtype=np.int64)
        row = {int(r): j for j, r in enumerate(self.ids.tolist())}
        return np.array([row.get(vector_reference(int(i)), -1) for i in self.mark_ids], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class SuspectBatch:
    """Stored signals of up to a few thousand suspects, decoded into arrays."""

    ids: npt.NDArray[np.int64]                 # (m,)
    phash: npt.NDArray[np.uint64]              # (m, 8)
    pdq: npt.NDArray[np.uint64]                # (m, 8, 4)
    has_pdq: npt.NDArray[np.bool_]             # (m,)
    sha256_bytes: list[str]
    sha256_pixels: list[str]
    embeddings: FloatArray | None = None       # (m, d) unit vectors as stored, zero rows where none
    tiles: FloatArray | None = None            # (t, d) unit vectors of the tiles, grouped by owner
    tile_owner: npt.NDArray[np.int64] | None = None  # (t,) row of the owner in this batch, ascending

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, str, str, bytes, bytes, bytes | None, bytes | None]],
                  dim: int | None) -> "SuspectBatch":
        """From stored rows ``(id, sha256_bytes, sha256_pixels, phash_variants, pdq_variants, embedding,
        tile_embeddings)``, the byte layouts ``SuspectSignals`` keeps (big-endian words, float16).
        ``dim``: the references' embedding size (None: no CNN to compare, embeddings are not read)."""
        m = len(rows)
        phash = _codes([r[3] for r in rows], 1).reshape(m, VARIANTS)
        has_pdq = np.array([bool(r[4]) for r in rows], dtype=np.bool_)
        pdq = np.zeros((m, VARIANTS, PDQ_WORDS), dtype=np.uint64)
        if has_pdq.any():
            pdq[has_pdq] = _codes([r[4] for r in rows if r[4]], PDQ_WORDS).reshape(-1, VARIANTS, PDQ_WORDS)
        batch = cls(ids=np.array([r[0] for r in rows], dtype=np.int64), phash=phash, pdq=pdq, has_pdq=has_pdq,
                    sha256_bytes=[r[1] for r in rows], sha256_pixels=[r[2] for r in rows])
        if not dim:
            return batch
        size = 2 * dim  # float16 bytes of one vector
        whole = np.zeros((m, dim), dtype=np.float32)
        has = np.array([r[5] is not None and len(r[5]) == size for r in rows], dtype=np.bool_)
        if has.any():
            joined = b"".join(bytes(r[5]) for r, ok in zip(rows, has, strict=True) if ok)  # type: ignore[arg-type]
            whole[has] = np.frombuffer(joined, dtype=EMBEDDING_DTYPE).reshape(-1, dim)
        batch.embeddings = whole  # stored as unit vectors (float16 rounding is far below any threshold)
        counts = np.array([len(r[6]) // size if r[6] and len(r[6]) % size == 0 else 0 for r in rows], dtype=np.int64)
        if counts.any():
            joined = b"".join(bytes(r[6]) for r, n in zip(rows, counts, strict=True) if n)  # type: ignore[arg-type]
            batch.tiles = np.frombuffer(joined, dtype=EMBEDDING_DTYPE).reshape(-1, dim).astype(np.float32)
            batch.tile_owner = np.repeat(np.arange(m, dtype=np.int64), counts)
        return batch

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class Candidate:
    """A (suspect, new reference) pair worth judging, with the signals that made it one."""

    suspect_id: int
    reference_id: int
    exact: bool
    phash: int            # distance, picture as given
    phash_variant: int    # best over the eight variants
    pdq: int | None
    pdq_variant: int | None
    cnn: float | None     # best cosine over the whole picture and its tiles (to the picture or its mark's views)
    by_hash: bool = True  # a digest or a hash made it a candidate (else the CNN alone: judging needs pixels)
    mark: float | None = None  # best cosine to the reference's mark views (None: it has none)


def _hamming_table(suspects: npt.NDArray[np.uint64], refs: npt.NDArray[np.uint64], words: int) -> npt.NDArray[Any]:
    """Distances ``(m, 8, n)`` from every variant of every suspect to every reference."""
    m = suspects.shape[0]
    cols = np.ascontiguousarray(suspects.reshape(m * VARIANTS, words).T)  # word-major, as the indexes keep them
    out = np.empty((m * VARIANTS, len(refs)), dtype=np.uint16)
    for j in range(len(refs)):
        out[:, j] = distances(cols, refs[j].reshape(words))
    return out.reshape(m, VARIANTS, len(refs))


def _best_cosines(batch: SuspectBatch, vectors: FloatArray | None) -> FloatArray | None:
    """``(m, k)``: the best cosine of each suspect (whole picture or any tile) to each of ``vectors``."""
    if vectors is None or batch.embeddings is None:
        return None
    best: FloatArray = batch.embeddings @ vectors.T
    if batch.tiles is not None and batch.tile_owner is not None and len(batch.tiles):
        per_tile = batch.tiles @ vectors.T
        owners, starts = np.unique(batch.tile_owner, return_index=True)  # owners are grouped, ascending
        counts = np.diff(np.append(starts, len(per_tile)))
        if bool((counts == counts[0]).all()):  # the usual case: every suspect kept its 13 tiles
            tiles_best = per_tile.reshape(len(owners), int(counts[0]), -1).max(axis=1)
        else:
            tiles_best = np.maximum.reduceat(per_tile, starts, axis=0)
        best[owners] = np.maximum(best[owners], tiles_best)
    return best


def _best_mark_cosines(batch: SuspectBatch, refs: NewReferences) -> FloatArray | None:
    """``(m, n)``: the best cosine of each suspect (whole or any tile) to each reference's mark
    views; -1 where the reference has no mark."""
    per_view = _best_cosines(batch, refs.mark_vectors)
    if per_view is None:
        return None
    columns = refs.mark_columns()
    out = np.full((len(batch), len(refs)), -1.0, dtype=np.float32)
    for view, column in enumerate(columns.tolist()):
        if column >= 0:
            out[:, column] = np.maximum(out[:, column], per_view[:, view])
    return out


def _top_marks(marks: FloatArray) -> npt.NDArray[np.bool_]:
    """Pairs whose mark cosine reaches MARK_CANDIDATE, the VERIFY_TOP best of each suspect (a
    check looks for that many marks at most)."""
    chosen = marks >= MARK_CANDIDATE
    if marks.shape[1] > VERIFY_TOP:
        kth = np.partition(marks, -VERIFY_TOP, axis=1)[:, -VERIFY_TOP][:, None]
        chosen &= marks >= kth
    return chosen


def search(refs: NewReferences, batch: SuspectBatch, thresholds: Thresholds) -> list[Candidate]:
    """Every (suspect, reference) pair of the batch within the cascade's candidate radii."""
    if not len(refs) or not len(batch):
        return []
    t = thresholds
    ph = _hamming_table(batch.phash, refs.phash.reshape(-1, 1), 1)
    ph_plain, ph_best = ph[:, 0, :], ph.min(axis=1)
    hashes = ph_best <= t.phash_candidate
    pdq_plain = pdq_best = None
    if bool(refs.has_pdq.any()) and bool(batch.has_pdq.any()):
        pq = _hamming_table(batch.pdq, refs.pdq, PDQ_WORDS)
        usable = batch.has_pdq[:, None] & refs.has_pdq[None, :]
        pdq_plain = np.where(usable, pq[:, 0, :], 256)
        pdq_best = np.where(usable, pq.min(axis=1), 256)
        variant_radius = min(t.pdq_candidate, t.pdq_variant_copy)
        hashes |= (pdq_plain <= t.pdq_candidate) | (pdq_best <= variant_radius)
    mask = hashes.copy()
    cnn = _best_cosines(batch, refs.vectors)
    marks = _best_mark_cosines(batch, refs)
    if cnn is not None and marks is not None:
        cnn = np.maximum(cnn, marks)  # a mark's views are vectors of its picture (as in a check's index)
    if cnn is not None:
        mask |= cnn >= min(t.cnn_similar, CNN_CANDIDATE)
    if marks is not None:
        mask |= _top_marks(marks)
    exact: set[tuple[int, int]] = set()
    ref_row = {int(r): j for j, r in enumerate(refs.ids.tolist())}
    if refs.sha256:
        for i, digests in enumerate(zip(batch.sha256_bytes, batch.sha256_pixels, strict=True)):
            for digest in digests:
                for ref_id in refs.sha256.get(digest, ()):
                    exact.add((i, ref_row[ref_id]))
                    mask[i, ref_row[ref_id]] = hashes[i, ref_row[ref_id]] = True
    out = []
    for i, j in zip(*np.nonzero(mask), strict=True):
        i, j = int(i), int(j)
        out.append(Candidate(
            suspect_id=int(batch.ids[i]), reference_id=int(refs.ids[j]), exact=(i, j) in exact,
            phash=int(ph_plain[i, j]), phash_variant=int(ph_best[i, j]),
            pdq=int(pdq_plain[i, j]) if pdq_plain is not None and pdq_plain[i, j] < 256 else None,
            pdq_variant=int(pdq_best[i, j]) if pdq_best is not None and pdq_best[i, j] < 256 else None,
            cnn=round(float(cnn[i, j]), 6) if cnn is not None else None, by_hash=bool(hashes[i, j]),
            mark=round(float(marks[i, j]), 6) if marks is not None and marks[i, j] > -1 else None,
        ))
    return out


def stored_signals(*, sha256_bytes: str, sha256_pixels: str, phash_variants: bytes, pdq_variants: bytes,
                   pdq_quality: int) -> dict[str, Any]:
    """Stored hashes back as the ``Matcher`` takes a picture's signals (``Matcher.match(None, signals=...)``)."""
    from matching.core.signals import hex64, hex256

    phashes = [hex64(int(v)) for v in np.frombuffer(bytes(phash_variants), dtype=">u8")]
    signals: dict[str, Any] = {"sha256_bytes": sha256_bytes, "sha256_pixels": sha256_pixels, "phash": phashes[0],
                               "phash_variants": phashes, "pdq_quality": pdq_quality}
    if pdq_variants:
        raw = bytes(pdq_variants)
        pdqs = [hex256(int.from_bytes(raw[i:i + 32], "big")) for i in range(0, len(raw), 32)]
        signals.update(pdq=pdqs[0], pdq_variants=pdqs)
    return signals


def hash_bytes(hex_codes: Sequence[str], words: int) -> bytes:
    """Hex codes as the big-endian words ``SuspectSignals`` keeps (``words`` 64-bit words each)."""
    return b"".join(int(h, 16).to_bytes(8 * words, "big") for h in hex_codes)


def embedding_bytes(vectors: Any) -> bytes:
    return np.asarray(vectors, dtype=EMBEDDING_DTYPE).tobytes()
