"""Exact Hamming-distance search over fixed-width binary codes with a VP-tree.

Codes are ``W`` 64-bit words per item (W=1: pHash, W=4: PDQ); a Python int
query is split big-endian, word 0 holding the most significant bits. Results
are exact and deterministic: sorted by (distance, id), and equal to
:func:`brute_force_radius` / :func:`brute_force_knn`.

Layout: the tree is a handful of flat numpy arrays. Items are stored permuted
so every subtree is one contiguous range ``[start, end)``; an internal node's
vantage point sits at ``start`` and its two children share the rest. For each
child the parent stores the interval [lo, hi] of distances from the parent's
vantage point to the child's items: a child is skipped when the query ball
``[d(q, v) - r, d(q, v) + r]`` misses that interval (triangle inequality).
Traversal is breadth-first and vectorised per level (one numpy call handles
the whole frontier), so Python overhead grows with depth, not with the number
of nodes visited. Codes are kept word-major, shape (W, n), because a popcount
over a contiguous column is several times faster than over rows of W words.

A cost model extrapolates how much of the tree the walk will still touch;
when that is a large share (high-entropy codes and a wide radius defeat any
metric tree), the search switches to one blocked contiguous scan, so it is
never much slower than brute force. Measured on 1M 64-bit codes (half
near-duplicate clusters, half random; ``python -m bench.vptree``):
the walk wins up to radius ~3 (about 3x at radius 0-2); at radius 10 a VP-tree
must visit over 80% of the items, so the scan does the work.

Updates go to a pending buffer scanned exhaustively, deletions are tombstones;
both fold into a rebuild once they grow past a fraction of the tree.
"""
from __future__ import annotations

import hashlib
import math
import os
from array import array
from typing import Any

import numpy as np
import numpy.typing as npt

from .hamming import (
    CodeArray,
    IntArray,
    PendingCodes,
    as_codes,
    as_id_array,
    as_ids,
    as_query,
    checked_entries,
    dedupe_last,
    distances,
    ranked_pairs,
)
from .snapshots import SnapshotError, atomic_savez

__all__ = [
    "FORMAT_VERSION",
    "VPTree",
    "brute_force_knn",
    "brute_force_radius",
]

FORMAT_VERSION = 1
# Cost model deciding between descending further and one contiguous scan,
# in units of "one code streamed through xor+popcount" (~0.7 ns on one core,
# measured): one tree level costs ~13 us of numpy call overhead whatever the
# frontier size, and an item gathered from leaf ranges costs ~8 streamed ones.
_LEVEL_COST = 18_000
_GATHER_COST = 8
# Levels walked before the first estimate: one level's shrink is too noisy
# (a query tied with the median keeps both children).
_MIN_EVIDENCE_DEPTH = 3
# Abandoned walks at one radius after which that radius always scans.
_GIVE_UP_AFTER = 8
# Leaves explored greedily to seed the k-NN bound before the exact pass.
_KNN_BEAM = 8
_PENDING_MIN = 1024
_PENDING_SHARE = 0.05
_DEAD_SHARE = 0.20
_SEED = 0x5EED
_SNAPSHOT_KEYS = (
    "meta", "cols", "ids", "alive", "start", "end", "child", "clo", "chi",
    "pend_ids", "pend_cols",
)



def _ranges(starts: IntArray, ends: IntArray) -> IntArray:
    """All positions of the half-open ranges, concatenated, without a Python loop."""
    lens = ends - starts
    total = int(lens.sum())
    shift = np.repeat(starts - (np.cumsum(lens) - lens), lens)
    return shift + np.arange(total, dtype=np.int64)


# -- brute force (the reference the tree must equal) --------------------------

def brute_force_radius(codes: Any, ids: Any, code: Any, radius: int) -> list[tuple[int, int]]:
    """All (id, distance) with distance <= radius, sorted by (distance, id)."""
    c, i = as_codes(codes), as_ids(ids)
    d = np.bitwise_count(np.bitwise_xor(c, as_query(code, c.shape[1]))).sum(axis=1)
    sel = d <= radius
    return ranked_pairs(i[sel], d[sel])


def brute_force_knn(codes: Any, ids: Any, code: Any, k: int) -> list[tuple[int, int]]:
    """The k nearest (id, distance), sorted by (distance, id): ties go to smaller ids."""
    c, i = as_codes(codes), as_ids(ids)
    d = np.bitwise_count(np.bitwise_xor(c, as_query(code, c.shape[1]))).sum(axis=1)
    k = max(int(k), 0)
    if 0 < k < len(d):  # only the candidates up to the k-th distance need sorting
        sel = d <= np.partition(d, k - 1)[k - 1]
        i, d = i[sel], d[sel]
    return ranked_pairs(i, d, k)


# -- the tree --------------------------------------------------------------------

def _build_arrays(cols: CodeArray, ids: IntArray, leaf_size: int) -> dict[str, npt.NDArray[Any]]:
    """Median-split VP-tree over word-major ``cols``; iterative, permutes copies.

    Node fields grow in typed ``array('q')`` buffers (no Python object per
    node) and become the flat numpy arrays the queries index.
    """
    cols, ids = cols.copy(), ids.copy()
    n = len(ids)
    rng = np.random.default_rng(_SEED)  # deterministic layout for a given input
    root = 1 if n else 0
    start, end = array("q", [0] * root), array("q", [n] * root)
    # Two entries per node, for its left and right child: the child's index
    # and the [lo, hi] shell of the child's distances to this vantage point.
    child, clo, chi = array("q", [-1, -1] * root), array("q", [0, 0] * root), array("q", [0, 0] * root)
    stack = [0] * root
    while stack:
        node = stack.pop()
        s, e = start[node], end[node]
        if e - s <= leaf_size:
            continue
        v = s + int(rng.integers(e - s))
        cols[:, [s, v]] = cols[:, [v, s]]
        ids[[s, v]] = ids[[v, s]]
        d = distances(cols[:, s + 1:e], cols[:, s])
        half = (e - s - 1) // 2  # >= 1 because leaf_size >= 2
        order = np.argpartition(d, half)
        cols[:, s + 1:e] = cols[:, s + 1:e][:, order]
        ids[s + 1:e] = ids[s + 1:e][order]
        d = d[order]
        left = len(start)
        start.extend((s + 1, s + 1 + half))
        end.extend((s + 1 + half, e))
        child.extend((-1, -1, -1, -1))
        clo.extend((0, 0, 0, 0))
        chi.extend((0, 0, 0, 0))
        child[2 * node], child[2 * node + 1] = left, left + 1
        clo[2 * node], clo[2 * node + 1] = int(d[:half].min()), int(d[half])
        chi[2 * node], chi[2 * node + 1] = int(d[:half].max()), int(d[half:].max())
        stack += [left + 1, left]
    return {
        "cols": cols,
        "ids": ids,
        "start": np.frombuffer(start, dtype=np.int64).copy(),
        "end": np.frombuffer(end, dtype=np.int64).copy(),
        "child": np.frombuffer(child, dtype=np.int64).reshape(-1, 2).copy(),
        "clo": np.frombuffer(clo, dtype=np.int64).reshape(-1, 2).copy(),
        "chi": np.frombuffer(chi, dtype=np.int64).reshape(-1, 2).copy(),
    }


class VPTree:
    """Exact radius and k-NN search under Hamming distance, with updates and snapshots.

    Ids are unique: adding an id that is present replaces its code. Every
    query result equals the brute-force one, ordered by (distance, id).
    Not thread-safe: guard updates against concurrent queries.
    """

    def __init__(self, words: int = 1, leaf_size: int = 64) -> None:
        if words < 1:
            raise ValueError("words must be >= 1")
        if leaf_size < 2:
            raise ValueError("leaf_size must be >= 2")
        self.words = int(words)
        self.leaf_size = int(leaf_size)
        empty_ids = np.empty(0, dtype=np.int64)
        empty_cols = np.empty((self.words, 0), dtype=np.uint64)
        self._set_tree(_build_arrays(empty_cols, empty_ids, self.leaf_size),
                       np.ones(0, dtype=bool))
        self._pending = PendingCodes(self.words)

    # construction ---------------------------------------------------------------

    @classmethod
    def build(cls, codes: npt.NDArray[Any], ids: npt.NDArray[Any], *, leaf_size: int = 64) -> VPTree:
        """A tree over ``codes`` (n, W) or (n,) for W=1; a repeated id keeps its last code."""
        c, i = as_codes(codes), as_ids(ids)
        if len(c) != len(i):
            raise ValueError(f"{len(c)} codes but {len(i)} ids")
        tree = cls(words=c.shape[1], leaf_size=leaf_size)
        i, c = dedupe_last(i, c)
        tree._set_tree(_build_arrays(np.ascontiguousarray(c.T), i, tree.leaf_size),
                       np.ones(len(i), dtype=bool))
        return tree

    def _set_tree(self, arrays: dict[str, npt.NDArray[Any]], alive: npt.NDArray[np.bool_]) -> None:
        self._cols: CodeArray = arrays["cols"]
        self._ids: IntArray = arrays["ids"]
        self._start: IntArray = arrays["start"]
        self._end: IntArray = arrays["end"]
        self._child: IntArray = arrays["child"]
        self._clo: IntArray = arrays["clo"]
        self._chi: IntArray = arrays["chi"]
        self._alive = alive
        self._n_dead = int(len(alive) - np.count_nonzero(alive))
        # radius -> consecutive walks abandoned for a scan. Pruning depends on
        # the tree and the radius far more than on the query (measured: near-
        # duplicate and unrelated queries prune alike), so after a few
        # abandoned walks that radius goes straight to the scan until the
        # next rebuild. Only speed depends on this, never the results.
        self._gave_up: dict[int, int] = {}
        # id -> position lookup without a per-item dict: sorted ids + positions.
        self._id_order = np.argsort(self._ids, kind="stable")
        self._sorted_ids = self._ids[self._id_order]

    def _rebuild(self) -> None:
        alive = self._alive
        ids = np.concatenate((self._ids[alive], self._pending.ids))
        cols = np.concatenate((self._cols[:, alive], self._pending.cols), axis=1)
        self._set_tree(_build_arrays(cols, ids, self.leaf_size), np.ones(len(ids), dtype=bool))
        self._pending.clear()

    # updates ------------------------------------------------------------------------

    def _tree_positions(self, ids: IntArray) -> IntArray:
        """Positions in the tree arrays of those ``ids`` stored there (dead or alive)."""
        if not len(self._sorted_ids) or not len(ids):
            return np.empty(0, dtype=np.int64)
        i = np.minimum(np.searchsorted(self._sorted_ids, ids), len(self._sorted_ids) - 1)
        positions: IntArray = self._id_order[i[self._sorted_ids[i] == ids]]
        return positions

    def _forget(self, ids: IntArray) -> None:
        ids = np.unique(ids)  # a repeated id must not count as two deaths
        pos = self._tree_positions(ids)
        pos = pos[self._alive[pos]]
        self._alive[pos] = False
        self._n_dead += len(pos)
        self._pending.discard(ids)

    def add(self, ids: Any, codes: Any) -> None:
        """Insert or replace codes; searchable immediately (pending buffer).

        When pending items exceed max(1024, 5% of the size), or tombstones 20%
        of the tree, the call rebuilds the tree: O(n log n), ~0.6 s at 1M codes.
        """
        i, c = checked_entries(ids, codes, self.words)
        self._forget(i)
        self._pending.append(i, c)
        if (len(self._pending) > max(_PENDING_MIN, _PENDING_SHARE * len(self))
                or self._n_dead > _DEAD_SHARE * len(self._ids)):
            self._rebuild()

    def remove(self, ids: Any) -> None:
        """Delete ids (tombstones; rebuilt past 20% of the tree); unknown ids are ignored."""
        self._forget(as_ids(ids))
        if self._n_dead > _DEAD_SHARE * len(self._ids):
            self._rebuild()

    # introspection -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ids) - self._n_dead + len(self._pending)

    def __contains__(self, id_: object) -> bool:
        i = as_id_array(id_)
        if i is None:
            return False
        if i[0] in self._pending:
            return True
        pos = self._tree_positions(i)
        return bool(len(pos) and self._alive[pos[0]])

    def ids(self) -> IntArray:
        """All stored ids, ascending."""
        return np.sort(np.concatenate((self._ids[self._alive], self._pending.ids)))

    # queries ---------------------------------------------------------------------------

    def query_radius(self, code: Any, radius: int) -> list[tuple[int, int]]:
        """All (id, distance) with distance <= radius, sorted by (distance, id)."""
        q = as_query(code, self.words)
        radius = min(math.floor(radius), 64 * self.words)  # distances are integers
        if radius < 0:
            return []
        ids, d = self._search(q, radius)
        return ranked_pairs(ids, d)

    def query_knn(self, code: Any, k: int) -> list[tuple[int, int]]:
        """The k nearest (id, distance), sorted by (distance, id); ties at the
        k-th distance go to the smaller ids, so the answer is unique."""
        q = as_query(code, self.words)
        k = min(int(k), len(self))
        if k <= 0:
            return []
        if self._walk_pays(len(self._ids)):
            # Any k stored items bound the k-th distance from above; the exact
            # pass is then a radius search with that bound.
            ids, d = self._search(q, self._knn_bound(q, k))
        else:
            ids, d = self._knn_scan(q, k)
        if len(d) > k:
            # k-th smallest from a histogram of the (small integer) distances:
            # linear, and keeps every tie at the k-th distance.
            kth = int(np.searchsorted(np.cumsum(np.bincount(d)), k))
            sel = d <= kth
            ids, d = ids[sel], d[sel]
        return ranked_pairs(ids, d, k)

    def _knn_scan(self, q: CodeArray, k: int) -> tuple[IntArray, npt.NDArray[Any]]:
        """Exhaustive k-NN candidates: every live item up to the k-th distance (ties included)."""
        d, pd = distances(self._cols, q), distances(self._pending.cols, q)
        bins = 64 * self.words + 1
        counts = np.bincount(d[self._alive] if self._n_dead else d, minlength=bins)
        kth = int(np.searchsorted(np.cumsum(counts + np.bincount(pd, minlength=bins)), k))
        pos = np.flatnonzero(d <= kth)
        if self._n_dead:
            pos = pos[self._alive[pos]]
        psel = np.flatnonzero(pd <= kth)
        return (np.concatenate((self._ids[pos], self._pending.ids[psel])),
                np.concatenate((d[pos], pd[psel])))

    def _search(self, q: CodeArray, radius: int) -> tuple[IntArray, npt.NDArray[Any]]:
        """Unsorted (ids, distances) of live items within ``radius``."""
        pos, d = self._tree_radius(q, radius)
        if self._n_dead:
            live = self._alive[pos]
            pos, d = pos[live], d[live]
        ids = self._ids[pos]
        if len(self._pending.ids):
            pd = distances(self._pending.cols, q)
            sel = pd <= radius
            ids, d = np.concatenate((ids, self._pending.ids[sel])), np.concatenate((d, pd[sel]))
        return ids, d

    def _walk_pays(self, n: int) -> bool:
        """False for small trees, where walking the levels alone costs more than a scan."""
        return _LEVEL_COST * self._levels(n) < n

    def _levels(self, size: float) -> int:
        """Approximate depth of a subtree holding ``size`` items."""
        return max(0, int(np.ceil(np.log2(max(size, 1.0) / self.leaf_size))))

    def _full_scan(self, q: CodeArray, radius: int) -> tuple[IntArray, npt.NDArray[Any]]:
        d = distances(self._cols, q)
        pos = np.flatnonzero(d <= radius)
        return pos, d[pos]

    def _tree_radius(self, q: CodeArray, radius: int) -> tuple[IntArray, npt.NDArray[Any]]:
        """Positions and distances of tree items (dead included) within ``radius``."""
        n = len(self._ids)
        if not self._walk_pays(n) or self._gave_up.get(radius, 0) >= _GIVE_UP_AFTER:
            return self._full_scan(q, radius)
        depth = 0
        hit_pos: list[IntArray] = []
        hit_d: list[npt.NDArray[Any]] = []
        leaf_s: list[IntArray] = []
        leaf_e: list[IntArray] = []
        queued = 0
        front: IntArray = np.zeros(1, dtype=np.int64)
        while len(front):
            ch = self._child[front]
            leaf = ch[:, 0] < 0
            if leaf.any():
                lf = front[leaf]
                leaf_s.append(self._start[lf])
                leaf_e.append(self._end[lf])
                queued += int((leaf_e[-1] - leaf_s[-1]).sum())
                front, ch = front[~leaf], ch[~leaf]
                if not len(front):
                    break
            vpos = self._start[front]
            dq = distances(self._cols[:, vpos], q).astype(np.int64)
            hit = dq <= radius
            if hit.any():
                hit_pos.append(vpos[hit])
                hit_d.append(dq[hit])
            dq = dq[:, None]
            # Keep a child when the query ball [dq - r, dq + r] meets its shell [lo, hi].
            keep = (dq - radius <= self._chi[front]) & (dq + radius >= self._clo[front])
            front = ch[keep]
            depth += 1
            if depth < _MIN_EVIDENCE_DEPTH:
                continue
            # Extrapolate the mean shrink per level so far down to the leaves;
            # when pruning is weak (wide radius, high-entropy codes) stop walking.
            left = int((self._end[front] - self._start[front]).sum())
            shrink = ((queued + left) / n) ** (1 / depth)
            levels = self._levels(left / max(len(front), 1))
            expected = queued + left * shrink**levels
            if levels * _LEVEL_COST + expected * _GATHER_COST >= n:
                self._gave_up[radius] = self._gave_up.get(radius, 0) + 1
                return self._full_scan(q, radius)
        self._gave_up.pop(radius, None)
        if leaf_s:
            idx = _ranges(np.concatenate(leaf_s), np.concatenate(leaf_e))
            d = distances(self._cols[:, idx], q)
            sel = d <= radius
            hit_pos.append(idx[sel])
            hit_d.append(d[sel].astype(np.int64))
        if not hit_pos:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        return np.concatenate(hit_pos), np.concatenate(hit_d)

    def _knn_bound(self, q: CodeArray, k: int) -> int:
        """An upper bound on the k-th nearest distance: the k-th best of the
        pending items plus a greedy beam descent to a few promising leaves."""
        found: list[npt.NDArray[Any]] = []
        if len(self._pending.ids):
            found.append(distances(self._pending.cols, q).astype(np.int64))
        if len(self._ids):
            front: IntArray = np.zeros(1, dtype=np.int64)
            lower: IntArray = np.zeros(1, dtype=np.int64)
            while len(front):
                ch = self._child[front]
                leaf = ch[:, 0] < 0
                if leaf.any():
                    idx = _ranges(self._start[front[leaf]], self._end[front[leaf]])
                    idx = idx[self._alive[idx]]
                    found.append(distances(self._cols[:, idx], q).astype(np.int64))
                    front, ch, lower = front[~leaf], ch[~leaf], lower[~leaf]
                    if not len(front):
                        break
                vpos = self._start[front]
                dq = distances(self._cols[:, vpos], q).astype(np.int64)
                found.append(dq[self._alive[vpos]])
                dq = dq[:, None]
                # Smallest distance any item of the child can have to q.
                lb = np.maximum(np.maximum(lower[:, None], self._clo[front] - dq),
                                dq - self._chi[front]).ravel()
                ch = ch.ravel()
                if len(ch) > _KNN_BEAM:
                    best = np.argpartition(lb, _KNN_BEAM - 1)[:_KNN_BEAM]
                    ch, lb = ch[best], lb[best]
                front, lower = ch, lb
        d = np.concatenate(found) if found else np.empty(0, dtype=np.int64)
        if len(d) < k:
            return 64 * self.words
        return int(np.partition(d, k - 1)[k - 1])

    # snapshots -------------------------------------------------------------------------

    def _arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {
            "meta": np.array([FORMAT_VERSION, self.words, self.leaf_size], dtype=np.int64),
            "cols": self._cols, "ids": self._ids, "alive": self._alive,
            "start": self._start, "end": self._end, "child": self._child,
            "clo": self._clo, "chi": self._chi,
            "pend_ids": self._pending.ids, "pend_cols": self._pending.cols,
        }

    @staticmethod
    def _checksum(arrays: dict[str, npt.NDArray[Any]]) -> npt.NDArray[np.uint8]:
        h = hashlib.sha256()
        for key in _SNAPSHOT_KEYS:
            a = np.ascontiguousarray(arrays[key])
            h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
            h.update(a.tobytes())
        return np.frombuffer(h.digest(), dtype=np.uint8)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write one ``.npz`` snapshot atomically (temp file + ``os.replace``).

        Pending items and tombstones are stored as they are, so a loaded
        tree answers exactly like this one.
        """
        arrays = self._arrays()
        arrays["checksum"] = self._checksum(arrays)
        atomic_savez(path, arrays, prefix=".vptree-")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> VPTree:
        """Read a snapshot written by :meth:`save`; any damage raises :class:`SnapshotError`."""
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {key: z[key] for key in (*_SNAPSHOT_KEYS, "checksum")}
        except Exception as e:  # BadZipFile, KeyError, ValueError, EOFError, OSError, ...
            raise SnapshotError(f"cannot read VP-tree snapshot {os.fspath(path)!r}: {e}") from e
        meta = arrays["meta"]
        if meta.dtype != np.int64 or meta.shape != (3,):
            raise SnapshotError("snapshot metadata is malformed")
        if int(meta[0]) != FORMAT_VERSION:
            raise SnapshotError(f"snapshot format {int(meta[0])}, expected {FORMAT_VERSION}")
        if not np.array_equal(arrays["checksum"], cls._checksum(arrays)):
            raise SnapshotError("snapshot checksum mismatch")
        words, leaf_size = int(meta[1]), int(meta[2])
        try:
            tree = cls(words=words, leaf_size=leaf_size)
            cls._validate(arrays, words)
        except (ValueError, TypeError) as e:
            raise SnapshotError(f"snapshot is inconsistent: {e}") from e
        tree._set_tree(arrays, arrays["alive"].copy())
        tree._pending = PendingCodes(words, arrays["pend_ids"], arrays["pend_cols"])
        return tree

    @staticmethod
    def _validate(a: dict[str, npt.NDArray[Any]], words: int) -> None:
        """Shape and dtype checks, so a well-checksummed file from a buggy writer
        fails here rather than as an IndexError inside a query."""
        n, nodes = len(a["ids"]), len(a["start"])
        expect = {
            "cols": (np.uint64, (words, n)), "ids": (np.int64, (n,)), "alive": (np.bool_, (n,)),
            "start": (np.int64, (nodes,)), "end": (np.int64, (nodes,)),
            "child": (np.int64, (nodes, 2)), "clo": (np.int64, (nodes, 2)),
            "chi": (np.int64, (nodes, 2)),
            "pend_ids": (np.int64, (len(a["pend_ids"]),)),
            "pend_cols": (np.uint64, (words, len(a["pend_ids"]))),
        }
        for key, (dtype, shape) in expect.items():
            if a[key].dtype != dtype or a[key].shape != shape:
                raise ValueError(f"{key}: {a[key].dtype}{a[key].shape}, expected {np.dtype(dtype)}{shape}")
        if nodes and (a["child"].min() < -1 or a["child"].max() >= nodes
                      or a["start"].min() < 0 or a["end"].max() > n):
            raise ValueError("node arrays out of range")
        live = np.concatenate((a["ids"][a["alive"]], a["pend_ids"]))
        if len(np.unique(live)) != len(live):
            raise ValueError("duplicate ids")
