"""VectorIndex: exact, IVF and HNSW search, add/remove, snapshots and their checkpoint."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from matching.core.vectorindex import IVF_NPROBE, IVF_REGROW, VectorIndex, ivf_lists, read_checkpoint
from matching.core.snapshots import SnapshotError

DIM = 32


def unit(rows: int, seed: int, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def exact_top(data: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> list[list[int]]:
    scores = queries @ data.T
    return [ids[np.lexsort((ids, -row))][:k].tolist() for row in scores]


def noisy(x: np.ndarray, seed: int, scale: float = 0.3) -> np.ndarray:
    y = x + scale * np.random.default_rng(seed).standard_normal(x.shape).astype(np.float32) / np.sqrt(x.shape[1])
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def test_exact_search_orders_by_score_then_id() -> None:
    data = unit(50, 0)
    data[10] = data[3]  # a tie: same vector under ids 30 and 100
    ids = np.arange(50, dtype=np.int64) * 10
    index = VectorIndex.build(ids, data)
    assert index.kind == "flat"
    hits = index.search(data[3], k=4)[0]
    assert [i for i, _ in hits[:2]] == [30, 100]
    assert hits[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [i for i, _ in hits] == exact_top(data, ids, data[3:4], 4)[0]
    assert all(a[1] >= b[1] for a, b in zip(hits, hits[1:], strict=False))


def test_k_larger_than_index_and_empty_index() -> None:
    empty = VectorIndex(DIM)
    assert empty.search(unit(2, 1), k=5) == [[], []]
    index = VectorIndex.build([7, 8], unit(2, 2))
    assert len(index.search(unit(1, 3), k=10)[0]) == 2


def test_flat_add_remove_readd() -> None:
    data = unit(100, 4)
    index = VectorIndex(DIM)
    index.add(np.arange(60), data[:60])
    index.add(np.arange(60, 100), data[60:])
    assert len(index) == 100 and index.last_id == 99
    assert index.remove([5, 6, 12345]) == 2
    assert 5 not in index and 7 in index
    assert all(i not in (5, 6) for i, _ in index.search(data[5], k=100)[0])
    index.add([5], data[5])  # an id may come back after removal
    assert index.search(data[5], k=1)[0][0][0] == 5
    with pytest.raises(ValueError, match="already in the index"):
        index.add([7], data[7])


@pytest.mark.parametrize("bad", [
    pytest.param(lambda d: (np.arange(3), d[:3] * 2), id="not-normalised"),
    pytest.param(lambda d: (np.arange(3), d[:3, :10]), id="wrong-dim"),
    pytest.param(lambda d: ([1, 1, 2], d[:3]), id="duplicate-ids"),
    pytest.param(lambda d: ([-1, 0, 2], d[:3]), id="negative-id"),
    pytest.param(lambda d: (np.arange(2), d[:3]), id="count-mismatch"),
    pytest.param(lambda d: (np.arange(3), np.where(np.eye(3, DIM) > 0, np.nan, d[:3])), id="nan"),
])
def test_bad_input_is_refused_and_changes_nothing(bad) -> None:  # type: ignore[no-untyped-def]
    index = VectorIndex.build([100], unit(1, 5))
    ids, vectors = bad(unit(3, 6))
    with pytest.raises(ValueError):
        index.add(ids, vectors)
    assert len(index) == 1 and index.generation == 1


def test_hnsw_agrees_with_exact_search() -> None:
    data = unit(2000, 7)
    ids = np.arange(2000, dtype=np.int64) * 3 + 1
    queries = noisy(data[:100], 8)
    hnsw = VectorIndex.build(ids, data, hnsw_threshold=1000, ef_search=512, structure="hnsw")
    assert hnsw.kind == "hnsw"
    got = [[i for i, _ in row] for row in hnsw.search(queries, k=10)]
    assert got == exact_top(data, ids, queries, 10)


def test_hnsw_tombstones_are_filtered_then_compacted() -> None:
    data = unit(2000, 9)
    ids = np.arange(2000, dtype=np.int64)
    index = VectorIndex.build(ids, data, hnsw_threshold=1000, ef_search=256, structure="hnsw")
    removed = np.arange(0, 2000, 10)  # 10 %: tombstones, no rebuild yet
    index.remove(removed)
    assert index.kind == "hnsw" and index.n_dead == 200 and len(index) == 1800
    live = np.setdiff1d(ids, removed)
    got = [[i for i, _ in row] for row in index.search(data[:50], k=10)]
    assert got == exact_top(data[live], live, data[:50], 10)  # k live results, none removed
    index.remove(np.arange(1, 2000, 10))  # exactly 20 % dead: still tombstones
    assert index.n_dead == 400
    index.remove([2])  # past 20 %: rebuilt from the live vectors
    assert index.n_dead == 0 and len(index) == 1599 and index.kind == "hnsw"
    index.remove(np.arange(3, 2000, 2))  # 799 left, below the threshold: the rebuild turns it exact
    assert index.kind == "flat" and len(index) == 799
    live = np.array(sorted(set(range(2000)) - set(range(0, 2000, 10)) - set(range(1, 2000, 10))
                           - {2} - set(range(3, 2000, 2))))
    got = [[i for i, _ in row] for row in index.search(data[:20], k=5)]
    assert got == exact_top(data[live], live, data[:20], 5)


@pytest.mark.parametrize("structure", ["ivf", "hnsw"])
def test_flat_grows_into_the_approximate_structure(structure: str) -> None:
    data = unit(1500, 10)
    index = VectorIndex(DIM, hnsw_threshold=1000, ef_search=256, structure=structure)
    index.add(np.arange(900), data[:900])
    assert index.kind == "flat"
    index.add(np.arange(900, 1500), data[900:])
    assert index.kind == structure and len(index) == 1500
    assert [row[0][0] for row in index.search(data[::100], k=1)] == list(range(0, 1500, 100))


@pytest.mark.parametrize(("threshold", "structure"), [(10_000, "ivf"), (500, "ivf"), (500, "hnsw")],
                         ids=["flat", "ivf", "hnsw"])
def test_snapshot_round_trip(tmp_path: Path, threshold: int, structure: str) -> None:
    data = unit(1200, 11)
    index = VectorIndex.build(np.arange(1200) * 2, data, hnsw_threshold=threshold, structure=structure)
    index.remove([0, 2, 4])
    queries = noisy(data[:30], 12)
    path = tmp_path / "vectors.faiss"
    saved = index.save(path)
    assert read_checkpoint(path) == saved == index.checkpoint
    assert saved.count == 1197 and saved.last_id == 2398
    loaded = VectorIndex.load(path)
    assert loaded.kind == index.kind and loaded.checkpoint == index.checkpoint
    assert loaded.search(queries, k=10) == index.search(queries, k=10)
    loaded.add([5000], data[0])  # still usable incrementally
    assert loaded.search(data[0], k=1)[0][0][0] == 5000


def test_ivf_agrees_with_exact_search_when_every_cell_is_probed() -> None:
    data = unit(3000, 16)
    ids = np.arange(3000, dtype=np.int64) * 5 + 2
    queries = noisy(data[:100], 17)
    ivf = VectorIndex.build(ids, data, hnsw_threshold=1000, nprobe=10_000)
    assert ivf.kind == "ivf" and ivf._index.nlist == ivf_lists(3000) > 1
    got = [[i for i, _ in row] for row in ivf.search(queries, k=10)]
    assert got == exact_top(data, ids, queries, 10)


def test_ivf_finds_its_cells_through_a_graph_whose_breadth_follows_nprobe(tmp_path: Path) -> None:
    import faiss

    data = unit(3000, 24)
    index = VectorIndex.build(np.arange(3000), data, hnsw_threshold=1000)
    quantizer = faiss.downcast_index(index._index.quantizer)
    assert isinstance(quantizer, faiss.IndexHNSWFlat) and quantizer.ntotal == index._index.nlist
    assert index._index.nprobe == IVF_NPROBE and quantizer.hnsw.efSearch >= IVF_NPROBE
    index.nprobe = 70
    assert index._index.nprobe == 70 and quantizer.hnsw.efSearch == 70
    index.nprobe = IVF_NPROBE
    path = tmp_path / "v.faiss"
    index.save(path)
    loaded = VectorIndex.load(path)
    assert loaded._index.nprobe == IVF_NPROBE
    assert loaded.search(data[:20], k=5) == index.search(data[:20], k=5)


def test_ivf_finds_isolated_copies_among_clusters() -> None:
    # Dense clusters plus a few isolated vectors (a picture protected once): the copy of an
    # isolated vector lies in its cell, which is probed, so it is found at the default nprobe.
    rng = np.random.default_rng(18)
    centres = unit(40, 19)
    clustered = noisy(np.repeat(centres, 150, axis=0), 20, scale=2.0)
    isolated = unit(30, 21)
    data = np.concatenate([clustered, isolated])
    ids = rng.permutation(len(data)).astype(np.int64)
    index = VectorIndex.build(ids, data, hnsw_threshold=1000)
    assert index.kind == "ivf"
    copies = noisy(isolated, 22, scale=0.3)
    top = [row[0][0] for row in index.search(copies, k=1)]
    assert top == ids[len(clustered):].tolist()


def test_ivf_removes_for_real_and_retrains_when_it_has_grown() -> None:
    data = unit(1100 * IVF_REGROW + 200, 23)
    index = VectorIndex.build(np.arange(1100), data[:1100], hnsw_threshold=1000)
    assert index.kind == "ivf" and index._trained_count == 1100
    assert index.remove(np.arange(0, 100)) == 100
    assert index.n_dead == 0 and len(index) == 1000 and 50 not in index
    assert all(i >= 100 for i, _ in index.search(data[50], k=5)[0])
    index.add(np.arange(1100, 4000), data[1100:4000])  # under 8x the trained size: no retraining
    assert index._trained_count == 1100
    index.add(np.arange(4000, len(data)), data[4000:])  # past it: the cells are trained again
    assert index._trained_count == len(data) - 100 and len(index) == len(data) - 100
    assert index.search(data[5000], k=1)[0][0][0] == 5000


def test_checkpoint_tells_unchanged_from_changed(tmp_path: Path) -> None:
    path = tmp_path / "v.faiss"
    index = VectorIndex.build(np.arange(10), unit(10, 13))
    index.save(path)
    before = read_checkpoint(path)
    assert VectorIndex.load(path).checkpoint == before  # nothing changed: a worker can keep its copy
    index.add([10], unit(1, 14))
    assert index.checkpoint.generation > before.generation and index.checkpoint.last_id == 10


def test_damaged_snapshots_raise_snapshot_error(tmp_path: Path) -> None:
    path = tmp_path / "v.faiss"
    VectorIndex.build(np.arange(600), unit(600, 15), hnsw_threshold=100).save(path)
    ckpt = tmp_path / "v.faiss.ckpt.npz"
    good_index, good_ckpt = path.read_bytes(), ckpt.read_bytes()

    flipped = bytearray(good_index)
    flipped[len(flipped) // 2] ^= 0xFF
    path.write_bytes(bytes(flipped))
    with pytest.raises(SnapshotError, match="checksum"):
        VectorIndex.load(path)

    path.write_bytes(good_index[:100])
    with pytest.raises(SnapshotError):
        VectorIndex.load(path)

    path.write_bytes(good_index)
    ckpt.write_bytes(good_ckpt[:50])
    with pytest.raises(SnapshotError):
        VectorIndex.load(path)
    with pytest.raises(SnapshotError):
        read_checkpoint(path)

    ckpt.unlink()
    with pytest.raises(SnapshotError):
        VectorIndex.load(path)
    with pytest.raises(SnapshotError):
        VectorIndex.load(tmp_path / "missing.faiss")


def test_holds_tells_which_ids_are_live() -> None:
    vectors = np.eye(4, 8, dtype=np.float32)
    index = VectorIndex.build(np.array([1, 5, 9, 12]), vectors)
    assert index.holds([5, 2, 9, 13]).tolist() == [True, False, True, False]
    index.remove([5])
    assert index.holds([5, 2, 9, 12]).tolist() == [False, False, True, True]
    assert VectorIndex(dim=8).holds([1]).tolist() == [False]
