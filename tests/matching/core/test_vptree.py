from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from matching.core import vptree
from matching.core.snapshots import SnapshotError
from matching.core.vptree import (
    FORMAT_VERSION,
    VPTree,
    brute_force_knn,
    brute_force_radius,
)

from .helpers import assert_same_as_brute_force, clustered_codes, queries_for, uniform_codes

MODES = ("auto", "walk", "mixed")


@contextlib.contextmanager
def search_mode(mode: str) -> Iterator[None]:
    """Small test trees would always take the exhaustive-scan shortcut; "walk"
    forces the tree traversal to the leaves and "mixed" walks a few levels and
    then switches to the scan mid-way, so all three code paths are checked."""
    saved = vptree._LEVEL_COST, vptree._GATHER_COST, vptree._GIVE_UP_AFTER
    if mode == "walk":
        vptree._LEVEL_COST, vptree._GATHER_COST, vptree._GIVE_UP_AFTER = 0, 0, 10**9
    elif mode == "mixed":
        vptree._LEVEL_COST, vptree._GATHER_COST, vptree._GIVE_UP_AFTER = 0, 10**9, 10**9
    try:
        yield
    finally:
        vptree._LEVEL_COST, vptree._GATHER_COST, vptree._GIVE_UP_AFTER = saved


@contextlib.contextmanager
def rebuild_thresholds(pending_min: int, dead_share: float) -> Iterator[None]:
    saved = vptree._PENDING_MIN, vptree._DEAD_SHARE
    vptree._PENDING_MIN, vptree._DEAD_SHARE = pending_min, dead_share
    try:
        yield
    finally:
        vptree._PENDING_MIN, vptree._DEAD_SHARE = saved


# -- static trees against brute force ------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("words", [1, 4])
@pytest.mark.parametrize("kind", ["uniform", "clustered"])
@pytest.mark.parametrize(("n", "leaf_size"), [(0, 4), (1, 2), (2, 2), (57, 2), (300, 8), (2000, 64)])
def test_static_tree_equals_brute_force(mode: str, words: int, kind: str, n: int, leaf_size: int) -> None:
    rng = np.random.default_rng([n, words, leaf_size])
    codes = (uniform_codes if kind == "uniform" else clustered_codes)(rng, n, words)
    ids = rng.permutation(n * 10 + 1)[:n].astype(np.int64) - 5 * n  # negative ids too
    with search_mode(mode):
        tree = VPTree.build(codes, ids, leaf_size=leaf_size)
        assert len(tree) == n
        assert_same_as_brute_force(tree, codes, ids, queries_for(rng, codes, words))


def test_radius_edge_is_inclusive() -> None:
    # Item i differs from the query 0 in exactly i bits.
    codes = np.array([(1 << i) - 1 for i in range(65)], dtype=np.uint64)
    ids = np.arange(65, dtype=np.int64)
    with search_mode("walk"):
        tree = VPTree.build(codes, ids, leaf_size=2)
        for r in range(65):
            assert [d for _, d in tree.query_radius(0, r)] == list(range(r + 1))
        assert tree.query_radius(0, -1) == []
        assert tree.query_radius(0, 1000) == [(i, i) for i in range(65)]


def test_knn_ties_go_to_smaller_ids() -> None:
    codes = np.array([7, 7, 7, 0, 7], dtype=np.uint64)
    ids = np.array([40, 10, 30, 99, 20])
    for mode in MODES:
        with search_mode(mode):
            tree = VPTree.build(codes, ids, leaf_size=2)
            assert tree.query_knn(7, 3) == [(10, 0), (20, 0), (30, 0)]
            assert tree.query_knn(7, 5) == [(10, 0), (20, 0), (30, 0), (40, 0), (99, 3)]
            assert tree.query_knn(7, 0) == [] and tree.query_knn(7, -2) == []


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_hypothesis_static_trees(data: st.DataObject) -> None:
    words = data.draw(st.sampled_from([1, 4]), label="words")
    word = st.integers(0, 2**64 - 1)
    # A small pool makes duplicate codes, equal distances and ties likely.
    pool = data.draw(st.lists(st.lists(word, min_size=words, max_size=words), min_size=1, max_size=6))
    rows = data.draw(st.lists(st.sampled_from(range(len(pool))) | st.just(-1), max_size=120))
    codes = np.array([pool[r] if r >= 0 else data.draw(st.lists(word, min_size=words, max_size=words))
                      for r in rows], dtype=np.uint64).reshape(-1, words)
    ids = np.array(data.draw(st.lists(st.integers(-2**40, 2**40), min_size=len(rows),
                                      max_size=len(rows), unique=True)), dtype=np.int64)
    leaf_size = data.draw(st.sampled_from([2, 3, 5, 16]))
    q = np.array(data.draw(st.sampled_from(pool) | st.lists(word, min_size=words, max_size=words)),
                 dtype=np.uint64)
    radius = data.draw(st.integers(0, 64 * words))
    k = data.draw(st.integers(0, len(rows) + 2))
    with search_mode(data.draw(st.sampled_from(MODES))):
        tree = VPTree.build(codes, ids, leaf_size=leaf_size)
        assert tree.query_radius(q, radius) == brute_force_radius(codes, ids, q, radius)
        assert tree.query_knn(q, k) == brute_force_knn(codes, ids, q, k)


# -- updates -----------------------------------------------------------------------------

def model_arrays(model: dict[int, np.ndarray], words: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array(sorted(model), dtype=np.int64)
    codes = np.array([model[i] for i in ids], dtype=np.uint64).reshape(-1, words)
    return codes, ids


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_hypothesis_updates_match_a_model(data: st.DataObject) -> None:
    words = data.draw(st.sampled_from([1, 4]), label="words")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    id_space = st.integers(0, 60)
    model: dict[int, np.ndarray] = {}
    init_ids = np.array(data.draw(st.lists(id_space, unique=True, max_size=40)), dtype=np.int64)
    init_codes = clustered_codes(rng, len(init_ids), words)
    model.update(zip(init_ids.tolist(), init_codes))
    # Small thresholds so that automatic rebuilds happen inside short sequences.
    with rebuild_thresholds(pending_min=5, dead_share=0.2), search_mode(data.draw(st.sampled_from(MODES))):
        tree = VPTree.build(init_codes, init_ids, leaf_size=3)
        for _ in range(data.draw(st.integers(1, 8), label="steps")):
            batch = data.draw(st.lists(id_space, max_size=8), label="batch")  # may repeat ids
            if data.draw(st.booleans(), label="add"):
                codes = clustered_codes(rng, len(batch), words)
                tree.add(batch, codes)
                model.update(zip(batch, codes))  # later duplicates win, as in add
            else:
                tree.remove(batch)
                for i in batch:
                    model.pop(i, None)
            codes, ids = model_arrays(model, words)
            assert len(tree) == len(model)
            assert tree.ids().tolist() == ids.tolist()
            assert_same_as_brute_force(tree, codes, ids, queries_for(rng, codes, words, 4))


def test_add_replaces_and_remove_forgets() -> None:
    tree = VPTree.build(np.array([1, 2, 3], dtype=np.uint64), np.array([10, 20, 30]))
    tree.add([20], np.array([0xFF], dtype=np.uint64))  # replace a tree item
    tree.add([40, 40], np.array([5, 6], dtype=np.uint64))  # last duplicate wins
    tree.add([40], np.array([7], dtype=np.uint64))  # replace a pending item
    assert tree.query_radius(2, 0) == []
    assert tree.query_radius(0xFF, 0) == [(20, 0)]
    assert tree.query_radius(7, 0) == [(40, 0)] and tree.query_radius(6, 0) == []
    assert len(tree) == 4 and tree.ids().tolist() == [10, 20, 30, 40]
    tree.remove([10, 40, 12345])  # unknown ids are ignored
    assert len(tree) == 2 and 10 not in tree and 40 not in tree and 20 in tree
    assert tree.query_knn(0, 10) == brute_force_knn(
        np.array([0xFF, 3], dtype=np.uint64), np.array([20, 30]), 0, 10)
    assert "x" not in tree and 2.5 not in tree


def test_repeated_id_in_remove_counts_once() -> None:
    tree = VPTree.build(np.arange(100, dtype=np.uint64), np.arange(100))
    tree.remove([5, 5, 5])
    assert len(tree) == 99 and 5 not in tree and tree._n_dead == 1


def test_default_thresholds_trigger_rebuilds() -> None:
    rng = np.random.default_rng(7)
    codes, ids = clustered_codes(rng, 3000, 1), np.arange(3000)
    tree = VPTree.build(codes, ids)
    extra = uniform_codes(rng, 1100, 1)
    tree.add(np.arange(3000, 4100), extra)  # more than max(1024, 5%) pending
    assert len(tree._pending) == 0 and len(tree._ids) == 4100
    tree.remove(np.arange(0, 900))  # 22% of the tree: tombstones are compacted
    assert tree._n_dead == 0 and len(tree) == 3200
    all_codes, all_ids = np.concatenate((codes, extra))[900:], np.arange(900, 4100)
    for mode in MODES:
        with search_mode(mode):
            assert_same_as_brute_force(tree, all_codes, all_ids, queries_for(rng, all_codes, 1))


def test_radius_that_never_prunes_goes_straight_to_the_scan(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(11)
    codes, ids = uniform_codes(rng, 3000, 1), np.arange(3000)
    tree = VPTree.build(codes, ids, leaf_size=4)
    monkeypatch.setattr(vptree, "_LEVEL_COST", 0)
    monkeypatch.setattr(vptree, "_GATHER_COST", 10**9)  # every walk is abandoned
    queries = queries_for(rng, codes, 1, 12)
    assert len(queries) > vptree._GIVE_UP_AFTER
    for q in queries:
        assert tree.query_radius(q, 20) == brute_force_radius(codes, ids, q, 20)
    # Every walk here is abandoned and counted: the count stopping at the
    # limit proves the later queries did not walk at all.
    assert tree._gave_up == {20: vptree._GIVE_UP_AFTER}
    tree.add(np.arange(3000, 4100), uniform_codes(rng, 1100, 1))  # rebuild: walk again
    assert tree._gave_up == {}


def test_empty_tree() -> None:
    tree = VPTree(words=4)
    assert len(tree) == 0 and tree.ids().tolist() == [] and 1 not in tree
    assert tree.query_radius(0, 256) == [] and tree.query_knn(0, 5) == []
    tree.remove([1])
    tree.add([1], np.zeros((1, 4), dtype=np.uint64))
    assert tree.query_knn(0, 5) == [(1, 0)]


def test_build_keeps_the_last_code_of_a_repeated_id() -> None:
    tree = VPTree.build(np.array([1, 2, 3], dtype=np.uint64), np.array([5, 6, 5]))
    assert len(tree) == 2 and tree.query_radius(1, 0) == [] and tree.query_radius(3, 0) == [(5, 0)]


def test_query_and_code_forms() -> None:
    signed = np.array([-1, 5], dtype=np.int64)  # databases keep 64-bit hashes signed
    tree = VPTree.build(signed, np.array([1, 2]))
    assert tree.query_radius(2**64 - 1, 0) == [(1, 0)]
    assert tree.query_radius(-1, 0) == [(1, 0)]  # two's complement
    assert tree.query_radius(np.uint64(5), 0) == [(2, 0)]
    assert tree.query_radius(np.array([5], dtype=np.uint64), 0) == [(2, 0)]
    with pytest.raises(ValueError):
        tree.query_radius(2**64, 0)
    wide = VPTree.build(np.array([[1, 2, 3, 4]], dtype=np.uint64), np.array([9]))
    as_int = (1 << 192) | (2 << 128) | (3 << 64) | 4  # word 0 is the most significant
    assert wide.query_radius(as_int, 0) == [(9, 0)]
    assert wide.query_radius([1, 2, 3, 4], 0) == [(9, 0)]
    with pytest.raises(ValueError):
        wide.query_radius([1, 2, 3], 0)
    with pytest.raises(ValueError):
        VPTree.build(np.zeros((3, 2), dtype=np.uint64), np.arange(2))
    with pytest.raises(ValueError):
        VPTree(leaf_size=1)
    with pytest.raises(TypeError):
        VPTree.build(np.zeros(3, dtype=np.float64), np.arange(3))


def test_brute_force_contract() -> None:
    codes = np.array([0b11, 0b01, 0b10, 0b00], dtype=np.uint64)
    ids = np.array([4, 3, 2, 1])
    assert brute_force_radius(codes, ids, 0, 1) == [(1, 0), (2, 1), (3, 1)]
    assert brute_force_radius(codes, ids, 0, -1) == []
    assert brute_force_knn(codes, ids, 0, 2) == [(1, 0), (2, 1)]
    assert brute_force_knn(codes, ids, 0, 10) == [(1, 0), (2, 1), (3, 1), (4, 2)]
    assert brute_force_knn(codes, ids, 0, 0) == []


# -- snapshots ------------------------------------------------------------------------------

@pytest.fixture
def mutated_tree() -> tuple[VPTree, np.ndarray, np.ndarray]:
    """A tree with pending items and tombstones, and the brute-force truth."""
    rng = np.random.default_rng(3)
    codes, ids = clustered_codes(rng, 500, 4), np.arange(500)
    tree = VPTree.build(codes, ids, leaf_size=8)
    extra = uniform_codes(rng, 30, 4)
    tree.add(np.arange(480, 510), extra)  # 20 replacements + 10 new
    tree.remove(np.arange(0, 50, 3))
    model = dict(zip(ids.tolist(), codes))
    model.update(zip(range(480, 510), extra))
    for i in range(0, 50, 3):
        model.pop(i)
    assert len(tree._pending) and tree._n_dead  # both survive into the snapshot
    c, i = model_arrays(model, 4)
    return tree, c, i


def test_snapshot_round_trip(tmp_path: Path, mutated_tree: tuple[VPTree, np.ndarray, np.ndarray]) -> None:
    tree, codes, ids = mutated_tree
    path = tmp_path / "phash.index"  # no .npz suffix: written exactly there
    tree.save(path)
    assert sorted(os.listdir(tmp_path)) == ["phash.index"]  # no temp file left behind
    loaded = VPTree.load(path)
    assert (loaded.words, loaded.leaf_size, len(loaded)) == (4, 8, len(ids))
    assert loaded.ids().tolist() == ids.tolist()
    for mode in MODES:
        with search_mode(mode):
            assert_same_as_brute_force(loaded, codes, ids, queries_for(np.random.default_rng(0), codes, 4))
    # Plain numpy can read it without unpickling anything.
    with np.load(path, allow_pickle=False) as z:
        assert int(z["meta"][0]) == FORMAT_VERSION
    tree.save(path)  # overwriting an existing snapshot is fine
    VPTree.load(path)
    empty = tmp_path / "empty.npz"
    VPTree(words=1).save(empty)
    assert len(VPTree.load(empty)) == 0


def test_every_damaged_byte_is_detected_or_harmless(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    codes, ids = uniform_codes(rng, 40, 1), np.arange(40)
    path = tmp_path / "t.npz"
    VPTree.build(codes, ids, leaf_size=4).save(path)
    raw = path.read_bytes()
    q = codes[0]
    want = brute_force_knn(codes, ids, q, 40)
    bad = tmp_path / "bad.npz"
    for offset in range(0, len(raw), 7):
        damaged = bytearray(raw)
        damaged[offset] ^= 0xFF
        bad.write_bytes(bytes(damaged))
        try:
            tree = VPTree.load(bad)
        except SnapshotError:
            continue
        # Bytes zip does not validate (timestamps, ...) may change: answers may not.
        assert tree.query_knn(q, 40) == want


@pytest.mark.parametrize("keep", [0, 10, 0.5, -1])
def test_truncated_snapshot(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "t.npz"
    VPTree.build(np.arange(100, dtype=np.uint64), np.arange(100)).save(path)
    raw = path.read_bytes()
    cut = int(len(raw) * keep) if isinstance(keep, float) else (len(raw) + keep if keep < 0 else keep)
    path.write_bytes(raw[:cut])
    with pytest.raises(SnapshotError):
        VPTree.load(path)


def test_missing_snapshot(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError):
        VPTree.load(tmp_path / "nope.npz")


def _rewrite(path: Path, change: dict[str, np.ndarray], *, fix_checksum: bool) -> None:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays.update(change)
    if fix_checksum:
        arrays["checksum"] = VPTree._checksum(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_checksum_catches_consistent_zip_with_wrong_data(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    VPTree.build(np.arange(100, dtype=np.uint64), np.arange(100)).save(path)
    with np.load(path) as z:
        ids = z["ids"].copy()
    ids[0] += 1000  # the zip is valid; only our checksum can tell
    _rewrite(path, {"ids": ids}, fix_checksum=False)
    with pytest.raises(SnapshotError, match="checksum"):
        VPTree.load(path)


def test_other_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    VPTree.build(np.arange(10, dtype=np.uint64), np.arange(10)).save(path)
    _rewrite(path, {"meta": np.array([FORMAT_VERSION + 1, 1, 64], dtype=np.int64)}, fix_checksum=True)
    with pytest.raises(SnapshotError, match="format"):
        VPTree.load(path)


def test_inconsistent_arrays_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    VPTree.build(np.arange(10, dtype=np.uint64), np.arange(10)).save(path)
    _rewrite(path, {"alive": np.ones(3, dtype=bool)}, fix_checksum=True)
    with pytest.raises(SnapshotError, match="inconsistent"):
        VPTree.load(path)


def test_pickled_content_is_never_loaded(tmp_path: Path) -> None:
    path = tmp_path / "t.npz"
    VPTree.build(np.arange(10, dtype=np.uint64), np.arange(10)).save(path)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["meta"] = np.array([FORMAT_VERSION, 1, 64], dtype=object)  # stored as a pickle
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    with pytest.raises(SnapshotError):
        VPTree.load(path)


def test_failed_save_leaves_old_snapshot_and_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.npz"
    tree = VPTree.build(np.arange(10, dtype=np.uint64), np.arange(10))
    tree.save(path)
    before = path.read_bytes()

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(vptree.np, "savez", boom)
    with pytest.raises(OSError):
        tree.save(path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["t.npz"]
