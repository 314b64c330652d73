"""Retroactive re-checks: which suspects seen before may copy images protected since.

The new references are few (a collection's upload: tens to hundreds) and the suspects many (every
checked and scanned image kept: hundreds of thousands), so the search runs the other way round
from a check: a small in-memory index over the new references' signals (``NewReferences``), and
the suspects' stored signals streamed against it in numpy batches (``SuspectBatch``): Hamming
distances of every flip/rotation variant of the suspects' pHash and PDQ to each reference
(``hamming.distances``), cosine similarities of their CNN embeddings (the whole picture and the
partial-copy tiles) as one matrix product. Nothing is indexed per suspect and memory stays one
batch.

A ``Candidate`` pair is what the cascade's own candidate radii would have sent to judging
(``Thresholds``: ``phash_candidate``, ``pdq_candidate``, ``pdq_variant_copy``,
``cnn_candidate``); the caller judges it with the ``Matcher`` as a check does, with the suspect's
pixels when they are still kept, on its signals alone when not. Plain numpy, no Django.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from matching.core.hamming import distances
from matching.core.matcher import Thresholds

__all__ = ["Candidate", "NewReferences", "SuspectBatch", "VARIANTS", "search"]

VARIANTS = 8  # the dihedral variants stored per hash (entry 0: the picture as given)
PDQ_WORDS = 4
EMBEDDING_DTYPE = np.float16  # as the protected images' embeddings are stored

FloatArray = npt.NDArray[np.float32]


def _unit(vectors: FloatArray) -> FloatArray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    out: FloatArray = (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


@dataclass(frozen=True)
class NewReferences:
    """The references a re-check looks for: ids, hashes and (optionally) CNN embeddings."""

    ids: npt.NDArray[np.int64]              # (n,)
    phash: npt.NDArray[np.uint64]           # (n,)
    pdq: npt.NDArray[np.uint64]             # (n, 4) big-endian words; rows of unusable PDQ are ignored
    has_pdq: npt.NDArray[np.bool_]          # (n,)
    sha256: dict[str, list[int]]            # digest (bytes or pixels) -> reference ids
    vectors: FloatArray | None = None       # (n, d) unit vectors; a reference without one is a zero row

    @classmethod
    def build(cls, refs: Sequence[tuple[int, int, int | None, str, str, Any]]) -> "NewReferences":
        """From ``(id, phash, pdq or None, sha256_bytes, sha256_pixels, embedding or None)``."""
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
        if vectors is not None:
            vectors = _unit(vectors)
            vectors[~np.isfinite(vectors).all(axis=1)] = 0
        return cls(ids=np.array([r[0] for r in refs], dtype=np.int64),
                   phash=np.array([r[1] & mask for r in refs], dtype=np.uint64),
                   pdq=pdq, has_pdq=has_pdq, sha256=sha, vectors=vectors)

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
    embeddings: FloatArray | None = None       # (m, d) unit vectors, zero rows where none
    tiles: FloatArray | None = None            # (t, d) unit vectors of the tiles, grouped by owner
    tile_owner: npt.NDArray[np.int64] | None = None  # (t,) row of the owner in this batch, ascending

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[int, str, str, bytes, bytes, bytes | None, bytes | None]],
                  dim: int | None) -> "SuspectBatch":
        """From stored rows ``(id, sha256_bytes, sha256_pixels, phash_variants, pdq_variants, embedding,
        tile_embeddings)``, the byte layouts ``SuspectSignals`` keeps (big-endian words, float16).
        ``dim``: the references' embedding size (None: no CNN to compare, embeddings are not read)."""
        m = len(rows)
        phash = np.zeros((m, VARIANTS), dtype=np.uint64)
        pdq = np.zeros((m, VARIANTS, PDQ_WORDS), dtype=np.uint64)
        has_pdq = np.zeros(m, dtype=np.bool_)
        whole = np.zeros((m, dim), dtype=np.float32) if dim else None
        tiles: list[FloatArray] = []
        owners: list[npt.NDArray[np.int64]] = []
        big = np.dtype(">u8")
        for i, (_id, _b, _p, ph, pq, emb, tl) in enumerate(rows):
            codes = np.frombuffer(bytes(ph), dtype=big)
            phash[i, : min(len(codes), VARIANTS)] = codes[:VARIANTS]
            if len(codes) < VARIANTS:  # an older row with the plain hash only: repeat it
                phash[i, len(codes):] = codes[0] if len(codes) else 0
            if pq:
                words = np.frombuffer(bytes(pq), dtype=big).reshape(-1, PDQ_WORDS)
                pdq[i, : len(words)] = words[:VARIANTS]
                pdq[i, len(words):] = words[0]
                has_pdq[i] = True
            if whole is not None and dim:
                if emb:
                    vector = np.frombuffer(bytes(emb), dtype=EMBEDDING_DTYPE)
                    if vector.size == dim:
                        whole[i] = vector
                if tl:
                    grid = np.frombuffer(bytes(tl), dtype=EMBEDDING_DTYPE)
                    if grid.size and grid.size % dim == 0:
                        tiles.append(grid.reshape(-1, dim).astype(np.float32))
                        owners.append(np.full(grid.size // dim, i, dtype=np.int64))
        batch = cls(ids=np.array([r[0] for r in rows], dtype=np.int64), phash=phash, pdq=pdq, has_pdq=has_pdq,
                    sha256_bytes=[r[1] for r in rows], sha256_pixels=[r[2] for r in rows])
        if whole is not None:
            batch.embeddings = _unit(whole)
            if tiles:
                batch.tiles = _unit(np.concatenate(tiles))
                batch.tile_owner = np.concatenate(owners)
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
    cnn: float | None     # best cosine over the whole picture and its tiles


def _hamming_table(suspects: npt.NDArray[np.uint64], refs: npt.NDArray[np.uint64], words: int) -> npt.NDArray[Any]:
    """Distances ``(m, 8, n)`` from every variant of every suspect to every reference."""
    m = suspects.shape[0]
    cols = np.ascontiguousarray(suspects.reshape(m * VARIANTS, words).T)  # word-major, as the indexes keep them
    out = np.empty((m * VARIANTS, len(refs)), dtype=np.uint16)
    for j in range(len(refs)):
        out[:, j] = distances(cols, refs[j].reshape(words))
    return out.reshape(m, VARIANTS, len(refs))


def _best_cosines(batch: SuspectBatch, refs: NewReferences) -> FloatArray | None:
    """``(m, n)``: the best cosine of each suspect (whole picture or any tile) to each reference."""
    if refs.vectors is None or batch.embeddings is None:
        return None
    best: FloatArray = batch.embeddings @ refs.vectors.T
    if batch.tiles is not None and batch.tile_owner is not None and len(batch.tiles):
        per_tile = batch.tiles @ refs.vectors.T
        owners, starts = np.unique(batch.tile_owner, return_index=True)  # owners are grouped, ascending
        best[owners] = np.maximum(best[owners], np.maximum.reduceat(per_tile, starts, axis=0))
    return best


def search(refs: NewReferences, batch: SuspectBatch, thresholds: Thresholds) -> list[Candidate]:
    """Every (suspect, reference) pair of the batch within the cascade's candidate radii."""
    if not len(refs) or not len(batch):
        return []
    t = thresholds
    ph = _hamming_table(batch.phash, refs.phash.reshape(-1, 1), 1)
    ph_plain, ph_best = ph[:, 0, :], ph.min(axis=1)
    mask = ph_best <= t.phash_candidate
    pdq_plain = pdq_best = None
    if bool(refs.has_pdq.any()) and bool(batch.has_pdq.any()):
        pq = _hamming_table(batch.pdq, refs.pdq, PDQ_WORDS)
        usable = batch.has_pdq[:, None] & refs.has_pdq[None, :]
        pdq_plain = np.where(usable, pq[:, 0, :], 256)
        pdq_best = np.where(usable, pq.min(axis=1), 256)
        variant_radius = min(t.pdq_candidate, t.pdq_variant_copy)
        mask |= (pdq_plain <= t.pdq_candidate) | (pdq_best <= variant_radius)
    cnn = _best_cosines(batch, refs)
    if cnn is not None:
        mask |= cnn >= t.cnn_candidate
    exact: set[tuple[int, int]] = set()
    ref_row = {int(r): j for j, r in enumerate(refs.ids.tolist())}
    if refs.sha256:
        for i, digests in enumerate(zip(batch.sha256_bytes, batch.sha256_pixels, strict=True)):
            for digest in digests:
                for ref_id in refs.sha256.get(digest, ()):
                    exact.add((i, ref_row[ref_id]))
                    mask[i, ref_row[ref_id]] = True
    out = []
    for i, j in zip(*np.nonzero(mask), strict=True):
        i, j = int(i), int(j)
        out.append(Candidate(
            suspect_id=int(batch.ids[i]), reference_id=int(refs.ids[j]), exact=(i, j) in exact,
            phash=int(ph_plain[i, j]), phash_variant=int(ph_best[i, j]),
            pdq=int(pdq_plain[i, j]) if pdq_plain is not None and pdq_plain[i, j] < 256 else None,
            pdq_variant=int(pdq_best[i, j]) if pdq_best is not None and pdq_best[i, j] < 256 else None,
            cnn=round(float(cnn[i, j]), 6) if cnn is not None else None,
        ))
    return out


def hash_bytes(hex_codes: Sequence[str], words: int) -> bytes:
    """Hex codes as the big-endian words ``SuspectSignals`` keeps (``words`` 64-bit words each)."""
    return b"".join(int(h, 16).to_bytes(8 * words, "big") for h in hex_codes)


def embedding_bytes(vectors: Any) -> bytes:
    return np.asarray(vectors, dtype=EMBEDDING_DTYPE).tobytes()
