"""The retroactive search: suspects' stored signals streamed against a small index of new references."""
from __future__ import annotations

import numpy as np

from matching.core.matcher import Thresholds
from matching.core.retro import NewReferences, SuspectBatch, embedding_bytes, hash_bytes, search

DIM = 64  # chance cosines of random vectors stay far below the re-check bar (retro.CNN_CANDIDATE)
T = Thresholds(phash_candidate=10, pdq_candidate=48, pdq_variant_copy=31, cnn_similar=0.8)


def _flip(code: int, bits: int, width: int) -> int:
    for b in range(bits):
        code ^= 1 << (b * 7 % width)
    return code


def _unit(v):  # type: ignore[no-untyped-def]
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _row(i: int, phashes: list[int], pdqs: list[int] | None, emb=None, tiles=None,  # type: ignore[no-untyped-def]
         sha: str = ""):
    """A row as ``SuspectSignals`` keeps it (unit vectors, as the embedder gives them)."""
    emb, tiles = (None if v is None else _unit(v) for v in (emb, tiles))
    return (i, sha or f"b{i}", f"p{i}", hash_bytes([f"{p:016x}" for p in phashes], 1),
            hash_bytes([f"{p:064x}" for p in pdqs], 4) if pdqs else b"",
            embedding_bytes(emb) if emb is not None else None, embedding_bytes(tiles) if tiles is not None else None)


def test_each_signal_finds_its_planted_copy_and_chance_finds_nothing():
    rng = np.random.default_rng(7)
    ph = [int(x) for x in rng.integers(0, 2**63, 4)]
    pdq = [int.from_bytes(rng.bytes(32), "big") for _ in range(4)]
    vec = rng.normal(size=(4, DIM)).astype(np.float32)
    refs = NewReferences.build([(10 + j, ph[j], pdq[j], f"rb{j}", f"rp{j}", vec[j] if j != 3 else None)
                                for j in range(4)])

    def noise_hashes() -> tuple[list[int], list[int]]:
        return ([int(x) for x in rng.integers(0, 2**63, 8)], [int.from_bytes(rng.bytes(32), "big") for _ in range(8)])

    rows = []
    for i in range(200):  # unrelated suspects
        p, q = noise_hashes()
        rows.append(_row(i, p, q, rng.normal(size=DIM), rng.normal(size=(13, DIM))))
    p, q = noise_hashes()
    p[5] = _flip(ph[0], 4, 64)  # a flipped copy of reference 10: its 6th pHash variant is close
    rows.append(_row(1000, p, q, rng.normal(size=DIM)))
    p, q = noise_hashes()
    q[0] = _flip(pdq[1], 20, 256)  # reference 11 resized: PDQ as given within the radius
    rows.append(_row(1001, p, q))
    p, q = noise_hashes()
    tiles = rng.normal(size=(13, DIM))
    tiles[4] = vec[2] + 0.05 * rng.normal(size=DIM)  # reference 12 pasted into one tile
    rows.append(_row(1002, p, q, rng.normal(size=DIM), tiles))
    p, q = noise_hashes()
    rows.append(_row(1003, p, None, sha="rb3"))  # the same file as reference 13 (which has no embedding)
    batch = SuspectBatch.from_rows(rows, DIM)
    found = {(c.suspect_id, c.reference_id): c for c in search(refs, batch, T)}
    assert set(found) == {(1000, 10), (1001, 11), (1002, 12), (1003, 13)}
    assert found[1000, 10].phash_variant == 4 and found[1000, 10].phash > 10
    assert found[1001, 11].pdq == 20 and found[1001, 11].pdq_variant == 20
    assert found[1002, 12].cnn is not None and found[1002, 12].cnn > 0.9 and not found[1002, 12].by_hash
    assert found[1000, 10].by_hash and found[1003, 13].by_hash
    assert found[1003, 13].exact and found[1003, 13].pdq is None


def test_without_embeddings_only_hashes_and_digests_are_compared():
    refs = NewReferences.build([(1, 0xFF, None, "x", "y", None)])
    assert refs.vectors is None
    batch = SuspectBatch.from_rows([_row(5, [0xFF] * 8, None, np.ones(DIM))], None)
    assert batch.embeddings is None
    [c] = search(refs, batch, T)
    assert (c.suspect_id, c.reference_id, c.phash, c.cnn) == (5, 1, 0, None)
    assert search(refs, SuspectBatch.from_rows([], None), T) == []


def test_a_logos_mark_views_count_as_its_vectors_and_a_weak_mark_hit_is_a_candidate():
    """A suspect's tile near a view of a new logo's mark (marks.mark_views) is a candidate for that
    logo at retro.MARK_CANDIDATE, far under ``cnn_similar``, as a check looks for a mark under it;
    at most marks.VERIFY_TOP logos a suspect; chance does not reach it."""
    from matching.core.marks import VERIFY_TOP, mark_vector_id
    from matching.core.retro import MARK_CANDIDATE

    dim = 1024  # random unit vectors: cosines spread about 0.03, far under MARK_CANDIDATE
    rng = np.random.default_rng(3)
    vec = _unit(rng.normal(size=(5, dim)))
    views = _unit(rng.normal(size=(5, 4, dim)))
    refs = NewReferences.build(
        [(20 + j, int(rng.integers(0, 2**63)), None, f"rb{j}", f"rp{j}", vec[j]) for j in range(5)],
        marks=[(mark_vector_id(20 + j, s), views[j, s]) for j in range(4) for s in range(4)])  # 24 has no mark
    assert refs.mark_ids is not None and len(refs.mark_ids) == 16

    def near(target, cosine):  # type: ignore[no-untyped-def]
        noise = _unit(rng.normal(size=dim))
        noise = _unit(noise - (noise @ target) * target)
        return cosine * target + np.sqrt(1 - cosine ** 2) * noise

    rows = [_row(i, [int(x) for x in rng.integers(0, 2**63, 8)], None, rng.normal(size=dim),
                 rng.normal(size=(13, dim))) for i in range(100)]
    tiles = rng.normal(size=(13, dim))
    tiles[6] = near(views[1, 2], MARK_CANDIDATE + 0.1)  # logo 21's mark small in a scene: a weak hit
    rows.append(_row(500, [int(x) for x in rng.integers(0, 2**63, 8)], None, rng.normal(size=dim), tiles))
    tiles = rng.normal(size=(13, dim))
    cosines = (0.45, 0.48, 0.5, 0.55)  # four logos' marks: the VERIFY_TOP best are looked for
    assert VERIFY_TOP < len(cosines)
    for j, cosine in enumerate(cosines):
        tiles[j] = near(views[j, 0], cosine)
    rows.append(_row(501, [int(x) for x in rng.integers(0, 2**63, 8)], None, rng.normal(size=dim), tiles))
    tiles = rng.normal(size=(13, dim))
    tiles[0] = near(views[0, 3], 0.9)  # a mark view's cosine is the picture's, for cnn_similar too
    rows.append(_row(502, [int(x) for x in rng.integers(0, 2**63, 8)], None, rng.normal(size=dim), tiles))
    tiles = rng.normal(size=(13, dim))
    tiles[2] = near(views[1, 0], MARK_CANDIDATE - 0.1)  # under it: not judged
    rows.append(_row(503, [int(x) for x in rng.integers(0, 2**63, 8)], None, rng.normal(size=dim), tiles))
    found = {(c.suspect_id, c.reference_id): c for c in search(refs, SuspectBatch.from_rows(rows, dim), T)}
    best = {(501, 20 + j) for j in np.argsort(cosines)[-VERIFY_TOP:]}
    assert set(found) == {(500, 21), (502, 20)} | best
    hit = found[500, 21]
    assert hit.mark is not None and abs(hit.mark - (MARK_CANDIDATE + 0.1)) < 0.02 and not hit.by_hash
    assert hit.cnn is not None and hit.cnn < T.cnn_similar
    assert found[502, 20].cnn is not None and found[502, 20].cnn > 0.85
