from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching.core import hashindex
from matching.core.hashindex import (
    FaissBinaryIndex,
    HashIndex,
    MIHIndex,
    auto_substrings,
    make_hash_index,
)
from matching.core.snapshots import SnapshotError
from matching.core.vptree import VPTree, brute_force_knn, brute_force_radius

from .helpers import assert_same_as_brute_force, clustered_codes, queries_for, uniform_codes

# "auto": the cost model decides (small test sets mostly scan); "tables":
# every lookup goes through the hash tables; "mixed": key enumeration is free
# but candidates are ruinous, so searches start in the tables and fall back
# to the scan as soon as a bucket is non-empty.
MODES = ("auto", "tables", "mixed")
_COSTS = ("_CALL_NS", "_KEY_NS", "_CAND_NS", "_CAND_NS_PER_WORD")


@contextlib.contextmanager
def search_mode(mode: str) -> Iterator[None]:
    saved = tuple(getattr(hashindex, name) for name in _COSTS)
    values = {"tables": (0.0, 0.0, 0.0, 0.0), "mixed": (0.0, 0.0, 1e12, 0.0)}.get(mode, saved)
    for name, value in zip(_COSTS, values):
        setattr(hashindex, name, value)
    try:
        yield
    finally:
        for name, value in zip(_COSTS, saved):
            setattr(hashindex, name, value)


@contextlib.contextmanager
def compaction(pending_max: int) -> Iterator[None]:
    """A tiny pending buffer, so deltas and merges happen in short sequences."""
    saved = hashindex._PENDING_MAX
    hashindex._PENDING_MAX = pending_max
    try:
        yield
    finally:
        hashindex._PENDING_MAX = saved


# -- static indexes against brute force --------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("words", "m"), [(1, 4), (1, 6), (4, 16), (4, 24)])
@pytest.mark.parametrize("kind", ["uniform", "clustered"])
@pytest.mark.parametrize("n", [0, 1, 2, 57, 700])
def test_static_index_equals_brute_force(mode: str, words: int, m: int, kind: str, n: int) -> None:
    rng = np.random.default_rng([n, words, m])
    codes = (uniform_codes if kind == "uniform" else clustered_codes)(rng, n, words)
    ids = rng.permutation(n * 10 + 1)[:n].astype(np.int64) - 5 * n  # negative ids too
    with search_mode(mode):
        index = MIHIndex.build(codes, ids, substrings=m)
        assert len(index) == n and index._main.m == (m if n else 0)
        assert_same_as_brute_force(index, codes, ids, queries_for(rng, codes, words))


@pytest.mark.parametrize(("words", "n", "radii"), [(1, 120_000, (6, 10, 12, 16)), (4, 40_000, (16, 31, 40))])
def test_auto_layout_on_a_bank_large_enough_for_tables(words: int, n: int, radii: tuple[int, ...]) -> None:
    # Near-duplicate clusters plus random codes, enough of them for the
    # automatic m to build tables; the default cost model takes the tables
    # for near queries and may fall back to the scan for wide ones.
    rng = np.random.default_rng(words)
    codes = np.concatenate((clustered_codes(rng, n // 2, words, centres=2000), uniform_codes(rng, n // 2, words)))
    ids = rng.permutation(n).astype(np.int64)
    index = MIHIndex.build(codes, ids)
    seg = index._main
    assert seg.m == auto_substrings(words, n) > 0
    qs = queries_for(rng, codes, words, 10)
    assert seg._candidates(seg._query_keys(qs[3]), "ball", radii[0], seg.scan_ns) is not None
    for q in qs:
        for r in radii:
            assert index.query_radius(q, r) == brute_force_radius(codes, ids, q, r), r
        for k in (1, 10, 100):
            assert index.query_knn(q, k) == brute_force_knn(codes, ids, q, k), k


def test_radius_edge_is_inclusive() -> None:
    # Item i differs from the query 0 in exactly i bits.
    codes = np.array([(1 << i) - 1 for i in range(65)], dtype=np.uint64)
    ids = np.arange(65, dtype=np.int64)
    for mode in MODES:
        with search_mode(mode):
            index = MIHIndex.build(codes, ids, substrings=4)
            for r in range(65):
                assert [d for _, d in index.query_radius(0, r)] == list(range(r + 1))
            assert index.query_radius(0, -1) == []
            assert index.query_radius(0, 1000) == [(i, i) for i in range(65)]
            assert index.query_radius(0, 2.7) == [(0, 0), (1, 1), (2, 2)]  # distances are integers


def test_knn_ties_go_to_smaller_ids() -> None:
    codes = np.array([7, 7, 7, 0, 7], dtype=np.uint64)
    ids = np.array([40, 10, 30, 99, 20])
    for mode in MODES:
        with search_mode(mode):
            index = MIHIndex.build(codes, ids, substrings=4)
            assert index.query_knn(7, 3) == [(10, 0), (20, 0), (30, 0)]
            assert index.query_knn(7, 5) == [(10, 0), (20, 0), (30, 0), (40, 0), (99, 3)]
            assert index.query_knn(7, 50) == index.query_knn(7, 5)
            assert index.query_knn(7, 0) == [] and index.query_knn(7, -2) == []


def test_pigeonhole_covers_every_split_of_the_errors() -> None:
    # Codes at distance exactly r from the query, with the r flipped bits
    # spread over the substrings in every proportion, including the worst
    # case the refined bound exists for: t+1 errors in the first a+1
    # substrings and t in the rest.
    words, m = 1, 4
    layout = hashindex._layout(words, m)
    rng = np.random.default_rng(1)
    q = int(rng.integers(0, 2**63))
    for r in range(0, 17):
        codes = []
        for _ in range(60):
            share = rng.multinomial(r, np.ones(m) / m)
            if np.any(share > [ln for _, ln in layout]):
                continue
            flip = 0
            for (start, length), count in zip(layout, share):
                for b in rng.choice(length, size=count, replace=False):
                    flip |= 1 << (63 - start - int(b))
            codes.append(q ^ flip)
        arr = np.array(codes, dtype=np.uint64)
        ids = np.arange(len(arr))
        with search_mode("tables"):
            index = MIHIndex.build(arr, ids, substrings=m)
            assert index.query_radius(q, r) == brute_force_radius(arr, ids, q, r)
            assert index.query_radius(q, r - 1) == brute_force_radius(arr, ids, q, r - 1) == []


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_hypothesis_static_indexes(data: st.DataObject) -> None:
    words = data.draw(st.sampled_from([1, 4]), label="words")
    m = data.draw(st.sampled_from([4, 5, 8] if words == 1 else [16, 20, 32]), label="m")
    word = st.integers(0, 2**64 - 1)
    # A small pool makes duplicate codes, equal distances and ties likely.
    pool = data.draw(st.lists(st.lists(word, min_size=words, max_size=words), min_size=1, max_size=6))
    rows = data.draw(st.lists(st.sampled_from(range(len(pool))) | st.just(-1), max_size=120))
    codes = np.array([pool[r] if r >= 0 else data.draw(st.lists(word, min_size=words, max_size=words))
                      for r in rows], dtype=np.uint64).reshape(-1, words)
    ids = np.array(data.draw(st.lists(st.integers(-2**40, 2**40), min_size=len(rows),
                                      max_size=len(rows), unique=True)), dtype=np.int64)
    base = data.draw(st.sampled_from(pool) | st.lists(word, min_size=words, max_size=words))
    q = np.array(base, dtype=np.uint64)
    for bit in data.draw(st.lists(st.integers(0, 64 * words - 1), max_size=12), label="flips"):
        q[bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    radius = data.draw(st.integers(0, 64 * words))
    k = data.draw(st.integers(0, len(rows) + 2))
    with search_mode(data.draw(st.sampled_from(MODES))):
        index = MIHIndex.build(codes, ids, substrings=m)
        assert index.query_radius(q, radius) == brute_force_radius(codes, ids, q, radius)
        assert index.query_knn(q, k) == brute_force_knn(codes, ids, q, k)


# -- updates -------------------------------------------------------------------------------

def model_arrays(model: dict[int, np.ndarray], words: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array(sorted(model), dtype=np.int64)
    codes = np.array([model[i] for i in ids], dtype=np.uint64).reshape(-1, words)
    return codes, ids


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_hypothesis_updates_match_a_model(data: st.DataObject) -> None:
    words = data.draw(st.sampled_from([1, 4]), label="words")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    id_space = st.integers(0, 80)
    model: dict[int, np.ndarray] = {}
    init_ids = np.array(data.draw(st.lists(id_space, unique=True, max_size=50)), dtype=np.int64)
    init_codes = clustered_codes(rng, len(init_ids), words)
    model.update(zip(init_ids.tolist(), init_codes))
    m = 4 if words == 1 else 16
    # A pending buffer of 4 makes the delta segment, its tombstones and the
    # merges into the main segment happen inside short sequences.
    # "tables" would enumerate every key of 16-bit tables for the wide radii
    # this test also asks for: the static tests cover that mode.
    with compaction(4), search_mode(data.draw(st.sampled_from(["auto", "mixed"]))):
        index = MIHIndex.build(init_codes, init_ids, substrings=m)
        for _ in range(data.draw(st.integers(1, 10), label="steps")):
            batch = data.draw(st.lists(id_space, max_size=9), label="batch")  # may repeat ids
            if data.draw(st.booleans(), label="add"):
                codes = clustered_codes(rng, len(batch), words)
                index.add(batch, codes)
                model.update(zip(batch, codes))  # later duplicates win, as in add
            else:
                index.remove(batch)
                for i in batch:
                    model.pop(i, None)
            codes, ids = model_arrays(model, words)
            assert len(index) == len(model)
            assert index.ids().tolist() == ids.tolist()
            assert all(i in index for i in ids.tolist()[:5]) and 81 not in index
            assert_same_as_brute_force(index, codes, ids, queries_for(rng, codes, words, 4))


def test_segments_pending_delta_and_merges() -> None:
    rng = np.random.default_rng(9)
    codes, ids = clustered_codes(rng, 40_000, 1, centres=500), np.arange(40_000)
    index = MIHIndex.build(codes, ids, substrings=4)  # every segment gets tables
    model = dict(zip(ids.tolist(), codes))
    extra = uniform_codes(rng, 4500, 1)
    index.add(np.arange(38_000, 40_100), extra[:2100])  # 2000 replacements + 100 new: pending
    model.update(zip(range(38_000, 40_100), extra[:2100]))
    assert len(index._pending) == 2100 and index._main.n_dead == 2000
    # Past the pending limit (4096) but under 1/8 of the main segment: a delta segment.
    index.add(np.arange(40_100, 42_500), extra[2100:])
    model.update(zip(range(40_100, 42_500), extra[2100:]))
    assert len(index._pending) == 0 and len(index._delta) == 4500 and index._main.n_dead == 2000
    assert index._delta.m == 4
    index.remove(np.arange(0, 1000))
    for i in range(1000):
        model.pop(i)
    c, i = model_arrays(model, 1)
    assert len(index) == len(model) and index.ids().tolist() == i.tolist()
    for mode in MODES:
        with search_mode(mode):
            assert_same_as_brute_force(index, c, i, queries_for(rng, c, 1, 8), radii=(0, 4, 10, 16))
    index.remove(np.arange(1000, 8000))  # past 20% dead: one main segment again
    for j in range(1000, 8000):
        model.pop(j)
    assert index._main.n_dead == 0 and len(index._delta) == 0 and len(index) == len(model)
    c, i = model_arrays(model, 1)
    assert_same_as_brute_force(index, c, i, queries_for(rng, c, 1, 4))


def test_add_replaces_and_remove_forgets() -> None:
    index = MIHIndex.build(np.array([1, 2, 3], dtype=np.uint64), np.array([10, 20, 30]), substrings=4)
    index.add([20], np.array([0xFF], dtype=np.uint64))  # replace an indexed item
    index.add([40, 40], np.array([5, 6], dtype=np.uint64))  # last duplicate wins
    index.add([40], np.array([7], dtype=np.uint64))  # replace a pending item
    assert index.query_radius(2, 0) == []
    assert index.query_radius(0xFF, 0) == [(20, 0)]
    assert index.query_radius(7, 0) == [(40, 0)] and index.query_radius(6, 0) == []
    assert len(index) == 4 and index.ids().tolist() == [10, 20, 30, 40]
    index.remove([10, 40, 12345, 40])  # unknown and repeated ids are ignored
    assert len(index) == 2 and 10 not in index and 40 not in index and 20 in index
    assert index.query_knn(0, 10) == brute_force_knn(
        np.array([0xFF, 3], dtype=np.uint64), np.array([20, 30]), 0, 10)
    assert "x" not in index and 2.5 not in index and True not in index and 2**70 not in index


def test_empty_index() -> None:
    index = MIHIndex(words=4)
    assert len(index) == 0 and index.ids().tolist() == [] and 1 not in index
    assert index.query_radius(0, 256) == [] and index.query_knn(0, 5) == []
    index.remove([1])
    index.add([1], np.zeros((1, 4), dtype=np.uint64))
    assert index.query_knn(0, 5) == [(1, 0)]


def test_query_and_code_forms() -> None:
    signed = np.array([-1, 5], dtype=np.int64)  # databases keep 64-bit hashes signed
    index = MIHIndex.build(signed, np.array([1, 2]), substrings=4)
    assert index.query_radius(2**64 - 1, 0) == [(1, 0)]
    assert index.query_radius(-1, 0) == [(1, 0)]  # two's complement
    assert index.query_radius(np.uint64(5), 0) == [(2, 0)]
    with pytest.raises(ValueError):
        index.query_radius(2**64, 0)
    wide = MIHIndex.build(np.array([[1, 2, 3, 4]], dtype=np.uint64), np.array([9]), substrings=16)
    as_int = (1 << 192) | (2 << 128) | (3 << 64) | 4  # word 0 is the most significant
    assert wide.query_radius(as_int, 0) == [(9, 0)]
    assert wide.query_radius([1, 2, 3, 4], 0) == [(9, 0)]
    with pytest.raises(ValueError):
        wide.query_radius([1, 2, 3], 0)
    with pytest.raises(ValueError):
        MIHIndex.build(np.zeros((3, 2), dtype=np.uint64), np.arange(2))
    with pytest.raises(ValueError):
        MIHIndex(words=1, substrings=2)  # 32-bit substrings: tables too large
    with pytest.raises(ValueError):
        MIHIndex(words=0)
    with pytest.raises(TypeError):
        MIHIndex.build(np.zeros(3, dtype=np.float64), np.arange(3))


def test_substrings_that_span_words_are_extracted_right() -> None:
    # 256 bits in 12 substrings: lengths 22/21, several straddle word boundaries.
    layout = hashindex._layout(4, 12)
    assert sum(ln for _, ln in layout) == 256 and {ln for _, ln in layout} == {21, 22}
    rng = np.random.default_rng(2)
    codes = uniform_codes(rng, 50, 4)
    cols = np.ascontiguousarray(codes.T)
    for start, length in layout:
        want = [(int.from_bytes(b"".join(int(w).to_bytes(8, "big") for w in row), "big")
                 >> (256 - start - length)) & ((1 << length) - 1) for row in codes]
        assert hashindex._extract(cols, start, length).tolist() == want


def test_auto_substrings_follows_log2_n() -> None:
    assert auto_substrings(1, 1000) == 0  # small: scanned
    assert auto_substrings(1, 1_000_000) == 4 and auto_substrings(1, 10_000_000) == 3
    assert auto_substrings(4, 1_000_000) == 13 and auto_substrings(4, 10_000_000) == 12
    for words in (1, 4):
        for n in (120_000, 10**6, 10**8):
            m = auto_substrings(words, n)
            assert max(ln for _, ln in hashindex._layout(words, m)) <= hashindex._MAX_KEY_BITS


# -- snapshots -------------------------------------------------------------------------------

@pytest.fixture
def mutated_index() -> tuple[MIHIndex, np.ndarray, np.ndarray]:
    """An index with a delta segment, pending items and tombstones, and the truth."""
    rng = np.random.default_rng(3)
    codes, ids = clustered_codes(rng, 500, 4), np.arange(500)
    model = dict(zip(ids.tolist(), codes))
    with compaction(8):
        index = MIHIndex.build(codes, ids, substrings=16)
        extra = uniform_codes(rng, 26, 4)
        index.add(np.arange(480, 500), extra[:20])  # 20 replacements: into the delta
        index.add(np.arange(500, 506), extra[20:])  # 6 new: pending
        index.remove(np.arange(0, 50, 3))
    model.update(zip(range(480, 506), extra))
    for i in range(0, 50, 3):
        model.pop(i)
    assert len(index._pending) and index._main.n_dead and len(index._delta)
    c, i = model_arrays(model, 4)
    return index, c, i


def test_snapshot_round_trip(tmp_path: Path, mutated_index: tuple[MIHIndex, np.ndarray, np.ndarray]) -> None:
    index, codes, ids = mutated_index
    path = tmp_path / "pdq.index"  # no .npz suffix: written exactly there
    index.save(path)
    assert sorted(os.listdir(tmp_path)) == ["pdq.index"]  # no temp file left behind
    loaded = MIHIndex.load(path)
    assert (loaded.words, loaded.substrings, len(loaded)) == (4, 16, len(ids))
    assert loaded.ids().tolist() == ids.tolist()
    for mode in MODES:
        with search_mode(mode):
            assert_same_as_brute_force(loaded, codes, ids, queries_for(np.random.default_rng(0), codes, 4),
                                       radii=(0, 8, 31))
    # Tables are stored, not rebuilt: the arrays are the saved ones.
    assert np.array_equal(loaded._main.order, index._main.order)
    with np.load(path, allow_pickle=False) as z:  # plain numpy reads it without unpickling
        assert int(z["meta"][0]) == hashindex.FORMAT_VERSION
    loaded.add([9999], codes[:1])  # a loaded index keeps working
    assert loaded.query_radius(codes[0], 0)[-1] == (9999, 0)
    empty = tmp_path / "empty.npz"
    MIHIndex(words=1).save(empty)
    assert len(MIHIndex.load(empty)) == 0


def test_every_damaged_byte_is_detected_or_harmless(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    codes, ids = uniform_codes(rng, 40, 1), np.arange(40)
    path = tmp_path / "t.npz"
    MIHIndex.build(codes, ids, substrings=8).save(path)
    raw = path.read_bytes()
    q = codes[0]
    want = brute_force_knn(codes, ids, q, 40)
    bad = tmp_path / "bad.npz"
    for offset in range(0, len(raw), 11):
        damaged = bytearray(raw)
        damaged[offset] ^= 0xFF
        bad.write_bytes(bytes(damaged))
        try:
            index = MIHIndex.load(bad)
        except SnapshotError:
            continue
        # Bytes zip does not validate (timestamps, ...) may change: answers may not.
        assert index.query_knn(q, 40) == want


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1])
def test_truncated_snapshot(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "t.npz"
    MIHIndex.build(np.arange(100, dtype=np.uint64), np.arange(100), substrings=4).save(path)
    raw = path.read_bytes()
    cut = int(len(raw) * keep) if isinstance(keep, float) else (len(raw) + keep if keep < 0 else keep)
    path.write_bytes(raw[:cut])
    with pytest.raises(SnapshotError):
        MIHIndex.load(path)


def test_missing_and_foreign_snapshots(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError):
        MIHIndex.load(tmp_path / "nope.npz")
    vp = tmp_path / "vp.npz"
    VPTree.build(np.arange(10, dtype=np.uint64), np.arange(10)).save(vp)
    with pytest.raises(SnapshotError):
        MIHIndex.load(vp)
    with pytest.raises(SnapshotError):
        FaissBinaryIndex.load(vp)


def _rewrite(path: Path, change: dict[str, np.ndarray], *, fix_checksum: bool) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files if k != "checksum"}
        checksum = z["checksum"]
    arrays.update(change)
    arrays["checksum"] = hashindex._checksum(arrays) if fix_checksum else checksum
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_checksum_catches_consistent_zip_with_wrong_data(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    MIHIndex.build(np.arange(100, dtype=np.uint64), np.arange(100), substrings=4).save(path)
    with np.load(path) as z:
        ids = z["main_ids"].copy()
    ids[0] += 1000  # the zip is valid; only our checksum can tell
    _rewrite(path, {"main_ids": ids}, fix_checksum=False)
    with pytest.raises(SnapshotError, match="checksum"):
        MIHIndex.load(path)


def test_other_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    MIHIndex.build(np.arange(10, dtype=np.uint64), np.arange(10), substrings=4).save(path)
    meta = np.array([hashindex.FORMAT_VERSION + 1, 1, 4, 4, 0], dtype=np.int64)
    _rewrite(path, {"meta": meta}, fix_checksum=True)
    with pytest.raises(SnapshotError, match="format"):
        MIHIndex.load(path)


@pytest.mark.parametrize("change", [
    {"main_alive": np.ones(3, dtype=bool)},
    {"main_order": np.full(40, 10**6, dtype=np.int32)},  # positions beyond the codes
    {"main_offsets": np.zeros(4 * ((1 << 16) + 1), dtype=np.int32)},
    {"meta": np.array([hashindex.FORMAT_VERSION, 1, 4, 2, 0], dtype=np.int64)},  # 32-bit keys
    {"main_ids": np.zeros(10, dtype=np.int64)},  # duplicate ids
])
def test_inconsistent_arrays_are_refused(tmp_path: Path, change: dict[str, np.ndarray]) -> None:
    path = tmp_path / "t.npz"
    MIHIndex.build(np.arange(10, dtype=np.uint64), np.arange(10), substrings=4).save(path)
    _rewrite(path, change, fix_checksum=True)
    with pytest.raises(SnapshotError, match="inconsistent|malformed"):
        MIHIndex.load(path)


def test_pickled_content_is_never_loaded(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    MIHIndex.build(np.arange(10, dtype=np.uint64), np.arange(10), substrings=4).save(path)
    _rewrite(path, {"meta": np.array([hashindex.FORMAT_VERSION, 1, 4, 4, 0], dtype=object)}, fix_checksum=False)
    with pytest.raises(SnapshotError):
        MIHIndex.load(path)


def test_failed_save_leaves_old_snapshot_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.npz"
    index = MIHIndex.build(np.arange(10, dtype=np.uint64), np.arange(10))
    index.save(path)
    before = path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(hashindex.np, "savez", boom)
    with pytest.raises(OSError):
        index.save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["t.npz"]


# -- FAISS and the factory ---------------------------------------------------------------------

@pytest.mark.parametrize("words", [1, 4])
def test_faiss_index_equals_brute_force_with_updates_and_snapshot(words: int, tmp_path: Path) -> None:
    rng = np.random.default_rng(words + 10)
    codes, ids = clustered_codes(rng, 300, words), rng.permutation(10_000)[:300].astype(np.int64)
    index = FaissBinaryIndex.build(codes, ids)
    assert_same_as_brute_force(index, codes, ids, queries_for(rng, codes, words))
    model = dict(zip(ids.tolist(), codes))
    new = clustered_codes(rng, 20, words)
    index.add(ids[:20], new)  # replacements
    index.remove(ids[20:40])
    model.update(zip(ids[:20].tolist(), new))
    for i in ids[20:40].tolist():
        model.pop(i)
    c, i = model_arrays(model, words)
    assert len(index) == len(model) and index.ids().tolist() == i.tolist() and int(i[0]) in index
    assert_same_as_brute_force(index, c, i, queries_for(rng, c, words))
    path = tmp_path / "f.npz"
    index.save(path)
    loaded = FaissBinaryIndex.load(path)
    assert_same_as_brute_force(loaded, c, i, queries_for(rng, c, words, 4))
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(SnapshotError):
        FaissBinaryIndex.load(path)


def test_faiss_knn_ties_and_empty() -> None:
    index = FaissBinaryIndex.build(np.array([7, 7, 7, 0, 7], dtype=np.uint64), np.array([40, 10, 30, 99, 20]))
    assert index.query_knn(7, 3) == [(10, 0), (20, 0), (30, 0)]
    assert index.query_radius(0, 64) == index.query_knn(0, 99) == brute_force_knn(
        np.array([7, 7, 7, 0, 7], dtype=np.uint64), np.array([40, 10, 30, 99, 20]), 0, 99)
    empty = FaissBinaryIndex(words=4)
    assert empty.query_radius(0, 10) == [] and empty.query_knn(0, 3) == [] and len(empty) == 0


@pytest.mark.parametrize(("kind", "cls"), [("auto", MIHIndex), ("mih", MIHIndex), ("vptree", VPTree),
                                           ("faiss", FaissBinaryIndex)])
def test_make_hash_index(kind: str, cls: type) -> None:
    rng = np.random.default_rng(4)
    codes, ids = clustered_codes(rng, 200, 4), np.arange(200)
    index = make_hash_index(4, kind, codes=codes, ids=ids)
    assert isinstance(index, cls) and isinstance(index, HashIndex) and index.words == 4
    assert_same_as_brute_force(index, codes, ids, queries_for(rng, codes, 4, 4))
    empty = make_hash_index(1, kind)
    assert isinstance(empty, cls) and len(empty) == 0
    empty.add([1, 2], np.array([3, 5], dtype=np.uint64))
    assert empty.query_knn(1, 1) == [(1, 1)]


def test_make_hash_index_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown index kind"):
        make_hash_index(1, "lsh")
    with pytest.raises(ValueError):
        make_hash_index(1, codes=np.zeros(3, dtype=np.uint64))
    with pytest.raises(ValueError):
        make_hash_index(4, codes=np.zeros(3, dtype=np.uint64), ids=np.arange(3))
