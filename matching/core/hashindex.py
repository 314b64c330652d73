"""Exact Hamming search over binary codes with multi-index hashing (MIH).

Same contract as :class:`~matching.core.vptree.VPTree`: codes are ``W``
64-bit words per item (W=1 pHash, W=4 PDQ; a Python int query is split
big-endian), ids are unique int64 and re-adding one replaces its code,
results are exact and sorted by (distance, id), equal to
:func:`~matching.core.vptree.brute_force_radius` /
:func:`~matching.core.vptree.brute_force_knn`.

Multi-index hashing (Norouzi, Punjani and Fleet, "Fast search in Hamming
space with multi-index hashing", CVPR 2012): the 64W bits are cut into ``m``
contiguous substrings and each substring indexes a hash table. Write the
search radius as ``r = m*t + a`` (0 <= a < m). If every one of the first
``a + 1`` substrings of a code differed from the query's in more than ``t``
bits and every other substring in more than ``t - 1``, the code would be at
least ``(a+1)(t+1) + (m-a-1)t = r + 1`` away. So every code within ``r`` sits
in a bucket of table j <= a whose key is within ``t`` of the query's
substring, or of a later table within ``t - 1``. The search enumerates those
keys (query substring xor every mask of that many bits), gathers the buckets
and verifies the candidates with an exact popcount: no false negatives, and
false positives are removed by the verification.

Tables are numpy CSR arrays, not dicts: for table j, ``order`` lists the
item positions sorted by their substring and ``offsets[key]:offsets[key+1]``
is the bucket of ``key`` (direct addressing; with substrings of about
log2(n) bits the offsets array is about as long as the item count). All m
tables live in two concatenated arrays, so one query is a fixed handful of
numpy calls whatever m is. A cost model compares the bucket sizes (known
from the offsets before anything is gathered) with one blocked scan of the
whole segment and scans when that is cheaper, so a wide radius is never
much slower than brute force. k-NN searches every table at substring
distance 0, then 1, ...: once table j has been searched at distance t it
has seen every code within ``m*t + j``, and it stops as soon as k codes lie
within that. Whether that is likely to happen before it costs a scan is
decided after the first round, from the codes found and from the distances
to a small fixed sample of the segment; if not, it scans (blocked, keeping
only codes within the running k-th distance).

Updates: new codes go to a small pending buffer (scanned), which is folded
into a "delta" segment with its own tables; the delta is merged into the
main segment when it reaches 1/8 of it, so an add never rebuilds the whole
index except at those merges. Deletions are tombstones until 20% of a
segment is dead.

Measured choices (``python -m bench.hashindex``, docs/hash-index.md):
:func:`auto_substrings` picks m, and :func:`make_hash_index` returns the
structure that was fastest with identical results.
"""
from __future__ import annotations

import hashlib
import itertools
import math
import os
from functools import lru_cache
from typing import Any, Protocol, runtime_checkable

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
    has_duplicates,
    ranked_pairs,
)
from .snapshots import SnapshotError, atomic_savez
from .vptree import VPTree

__all__ = [
    "FORMAT_VERSION",
    "FaissBinaryIndex",
    "HashIndex",
    "MIHIndex",
    "auto_substrings",
    "make_hash_index",
]

FORMAT_VERSION = 1

# Cost model, nanoseconds on one core, fitted to timings on the bench's
# realistic banks (1M codes): a blocked scan streams a code in ~1.1 ns per
# word (the k-NN scan about the same); one round of table lookups costs ~20 us
# of numpy calls, ~25 ns per enumerated key (two offset reads plus its
# share of the bucket expansion) and per candidate a random read of the
# order array plus one per word and the popcount. Large rounds get slower
# per item (caches), so the tables are only chosen when the estimate is
# under half the scan: near the break-even point both cost about the same.
_SCAN_NS_PER_WORD = 1.1
_KNN_SCAN_FACTOR = 1.0
_CALL_NS = 20_000.0
_KEY_NS = 25.0
_CAND_NS = 10.0
_CAND_NS_PER_WORD = 6.0
_SAFETY = 2.0
# Tables are only built where a scan costs more than this (about 100k pHash
# or 25k PDQ codes): below it, one round of lookups costs what a scan does.
_MIN_SCAN_NS = 100_000.0
_MAX_KEY_BITS = 26  # direct-addressed tables: 2**26 offsets at most
_PENDING_MAX = 4096
_DELTA_SHARE = 1 / 8
_DEAD_SHARE = 0.20
_PLAN_CACHE = 512
_BATCH_KEYS = 4096
_SCAN_BLOCK = 1 << 16  # codes per k-NN scan block: the distances stay in L2
_KNN_HEAD = 4096  # codes whose k-th distance seeds the k-NN scan's bound
_SAMPLE = 2048  # codes sampled per segment to estimate how many lie within a radius
_SNAPSHOT_SEGMENT_KEYS = ("cols", "ids", "alive", "offsets", "order")


# -- substring layout ------------------------------------------------------------

def auto_substrings(words: int, n: int) -> int:
    """Number of substrings m for ``n`` codes of ``words`` words (0 = scan only).

    Norouzi et al. recommend substrings of about log2(n) bits, so that a
    bucket holds about one code: longer ones multiply the keys to
    enumerate, shorter ones the candidates to verify. Segments where a scan
    costs under ~0.1 ms get no tables (0). Measured on realistic
    pHash (W=1, r=10) and PDQ (W=4, r=31) codes, see docs/hash-index.md.
    """
    if n * words * _SCAN_NS_PER_WORD < _MIN_SCAN_NS:
        return 0
    bits = 64 * words
    key_bits = min(max(math.log2(n), 12.0), float(_MAX_KEY_BITS))
    # ceil: substrings of at most log2(n) bits, so each table's offsets array
    # is no longer than the codes (memory) and buckets hold about one code or
    # more; k-NN, which must reach wider radii, prefers the shorter keys.
    return max(-(-bits // _MAX_KEY_BITS), min(bits // 8, math.ceil(bits / key_bits)))


def _layout(words: int, m: int) -> tuple[tuple[int, int], ...]:
    """(start bit, length) of each substring, bit 0 = most significant of word 0."""
    base, extra = divmod(64 * words, m)
    out, start = [], 0
    for j in range(m):
        length = base + (j < extra)
        out.append((start, length))
        start += length
    return tuple(out)


def _extract(cols: CodeArray, start: int, length: int) -> CodeArray:
    """Bits [start, start + length) of each word-major code (W, n), as integers."""
    w, off = divmod(start, 64)
    mask = np.uint64((1 << length) - 1)
    out: CodeArray
    if off + length <= 64:
        out = (cols[w] >> np.uint64(64 - off - length)) & mask
        return out
    hi, lo = 64 - off, off + length - 64  # the substring spans words w and w+1
    out = ((cols[w] & np.uint64((1 << hi) - 1)) << np.uint64(lo)) | (cols[w + 1] >> np.uint64(64 - lo))
    return out


@lru_cache(maxsize=1024)
def _shell(bits: int, t: int) -> CodeArray:
    """Every ``bits``-bit mask with exactly ``t`` bits set (read-only)."""
    out: CodeArray
    if t < 0 or t > bits:
        out = np.empty(0, dtype=np.uint64)
    else:
        out = np.fromiter((sum(1 << i for i in c) for c in itertools.combinations(range(bits), t)),
                          dtype=np.uint64, count=math.comb(bits, t))
    out.flags.writeable = False
    return out


def _bucket_items(starts: npt.NDArray[np.integer[Any]], ends: npt.NDArray[np.integer[Any]]) -> IntArray:
    """Concatenated ranges [starts[i], ends[i]) without a Python loop; most
    enumerated keys hit empty buckets, which are dropped first."""
    lens = (ends - starts).astype(np.int64)
    nz = np.flatnonzero(lens)
    if not len(nz):
        return np.empty(0, dtype=np.int64)
    first, lens = starts[nz].astype(np.int64), lens[nz]
    cum = np.cumsum(lens)
    # Steps of +1 inside a range, a jump to the next range's start after it.
    step = np.ones(int(cum[-1]), dtype=np.int64)
    step[0] = first[0]
    step[cum[:-1]] = first[1:] - first[:-1] - lens[:-1] + 1
    return np.cumsum(step)


@lru_cache(maxsize=_PLAN_CACHE)
def _plan(words: int, m: int, kind: str, t: int) -> tuple[CodeArray, IntArray, IntArray]:
    """Masks to enumerate and, per mask, its table and offsets base.

    kind "ball": the radius-``t`` search (t is the radius); "shell": every
    table at substring distance exactly ``t``; "step" ``t*m + j``: table j
    alone at substring distance exactly ``t`` (the k-NN steps). Plans depend
    on the layout only, so segments of the same shape share them.
    """
    layout = _layout(words, m)
    masks, tables = [], []
    if kind == "ball":
        s, a = divmod(t, m)
        for j, (_, length) in enumerate(layout):
            for u in range(s + 1 if j <= a else s):
                masks.append(_shell(length, u))
                tables.append(np.full(len(masks[-1]), j, dtype=np.int64))
    elif kind == "shell":
        for j, (_, length) in enumerate(layout):
            masks.append(_shell(length, t))
            tables.append(np.full(len(masks[-1]), j, dtype=np.int64))
    else:
        u, j = divmod(t, m)
        masks.append(_shell(layout[j][1], u))
        tables.append(np.full(len(masks[-1]), j, dtype=np.int64))
    mask = np.concatenate(masks) if masks else np.empty(0, dtype=np.uint64)
    tab = np.concatenate(tables) if tables else np.empty(0, dtype=np.int64)
    base = _bases(words, m)[tab]
    for arr in (mask, tab, base):
        arr.flags.writeable = False
    return mask, tab, base


@lru_cache(maxsize=64)
def _bases(words: int, m: int) -> IntArray:
    """Where each table's offsets start in the concatenated offsets array."""
    sizes = [(1 << length) + 1 for _, length in _layout(words, m)]
    return np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)


def _ball_size(bits: int, t: int) -> int:
    return sum(math.comb(bits, i) for i in range(t + 1))


# -- one immutable segment ------------------------------------------------------------

class _Segment:
    """Codes with their m CSR tables and tombstones; never changes except ``alive``."""

    def __init__(self, cols: CodeArray, ids: IntArray, m: int,
                 tables: tuple[npt.NDArray[Any], npt.NDArray[Any]] | None = None,
                 alive: npt.NDArray[np.bool_] | None = None) -> None:
        self.cols, self.ids = cols, ids
        self.words, n = cols.shape
        self.m = m if n else 0
        self.layout = _layout(self.words, self.m) if self.m else ()
        self.alive = np.ones(n, dtype=bool) if alive is None else alive
        self.n_dead = int(n - np.count_nonzero(self.alive))
        if tables is None:
            tables = self._build_tables()
        self.offsets, self.order = tables
        self._id_index: tuple[IntArray, IntArray] | None = None  # built on first use
        self._sample: CodeArray | None = None  # for k-NN's radius estimate, built on first use
        self._reach: int | None = None
        self.scan_ns = _SCAN_NS_PER_WORD * self.words * n

    def __len__(self) -> int:
        return len(self.ids) - self.n_dead

    def _build_tables(self) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        n = len(self.ids)
        if not self.m:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
        pos_t = np.int32 if n < 2**31 else np.int64
        off_t = np.int32 if self.m * n < 2**31 else np.int64
        offsets, order = [], []
        positions = np.arange(n, dtype=np.uint64)
        for j, (start, length) in enumerate(self.layout):
            keys = _extract(self.cols, start, length)
            counts = np.bincount(keys.view(np.int64), minlength=1 << length)
            offsets.append(np.concatenate(([0], np.cumsum(counts))) + j * n)
            if n < 2**32:
                # Sorting (key << 32 | position) as one uint64 is ~5x faster
                # than argsort (numpy's SIMD sort); positions come out of the
                # low half grouped by key, ascending inside a bucket.
                packed = np.sort((keys << np.uint64(32)) | positions)
                order.append((packed & np.uint64(0xFFFFFFFF)).astype(pos_t))
            else:
                order.append(np.argsort(keys, kind="stable").astype(pos_t))
        return np.concatenate(offsets).astype(off_t), np.concatenate(order)

    # lookups --------------------------------------------------------------------

    def positions(self, ids: IntArray) -> IntArray:
        """Positions of those ``ids`` stored here (dead or alive)."""
        if not len(self.ids) or not len(ids):
            return np.empty(0, dtype=np.int64)
        if self._id_index is None:
            # Only updates and membership tests need it; a query-only worker
            # never pays its 16 bytes per code.
            order = np.argsort(self.ids)  # ids are unique: stability is moot
            self._id_index = (self.ids[order], order)
        sorted_ids, order = self._id_index
        i = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
        positions: IntArray = order[i[sorted_ids[i] == ids]]
        return positions

    def kill(self, ids: IntArray) -> None:
        pos = self.positions(ids)
        pos = pos[self.alive[pos]]
        self.alive[pos] = False
        self.n_dead += len(pos)

    def _keys_cost(self, kind: str, t: int) -> int:
        """How many keys a plan enumerates, without building it."""
        if kind == "ball":
            s, a = divmod(t, self.m)
            return sum(_ball_size(length, s if j <= a else s - 1) for j, (_, length) in enumerate(self.layout))
        if kind == "shell":
            return sum(math.comb(length, t) for _, length in self.layout)
        u, j = divmod(t, self.m)
        return math.comb(self.layout[j][1], u)

    def _candidates(self, qkeys: CodeArray, kind: str, t: int,
                    budget_ns: float) -> tuple[npt.NDArray[np.integer[Any]], float] | None:
        """Positions in the buckets of a plan (with repeats) and their
        estimated cost, or None when that would exceed ``budget_ns``."""
        if _SAFETY * (_CALL_NS + self._keys_cost(kind, t) * _KEY_NS) > budget_ns:
            return None
        masks, tab, base = _plan(self.words, self.m, kind, t)
        gk = (qkeys[tab] ^ masks).astype(np.int64) + base
        starts, ends = self.offsets[gk], self.offsets[gk + 1]
        total = int((ends - starts).sum(dtype=np.int64))
        cost = _SAFETY * (_CALL_NS + len(gk) * _KEY_NS + total * (_CAND_NS + _CAND_NS_PER_WORD * self.words))
        if cost > budget_ns:
            return None
        return self.order[_bucket_items(starts, ends)], cost

    def _query_keys(self, q: CodeArray) -> CodeArray:
        v = 0
        for word in q.tolist():
            v = (v << 64) | word
        top = 64 * self.words
        return np.array([(v >> (top - s - ln)) & ((1 << ln) - 1) for s, ln in self.layout], dtype=np.uint64)

    # queries ---------------------------------------------------------------------

    def radius(self, q: CodeArray, r: int) -> tuple[IntArray, npt.NDArray[Any]]:
        """(ids, distances) of live items within ``r``, unsorted."""
        found = None
        # Once table 0 is searched to its full width every code is a
        # candidate: the scan gives the same answer cheaper.
        if self.m and r // self.m < self.layout[0][1]:
            found = self._candidates(self._query_keys(q), "ball", r, self.scan_ns)
        pos: npt.NDArray[np.integer[Any]]
        if found is None:
            d = distances(self.cols, q)
            pos = np.flatnonzero(d <= r)
            d = d[pos]
        else:
            pos = found[0]
            d = distances(self.cols[:, pos], q)
            sel = d <= r
            pos, d = pos[sel], d[sel]
            if len(pos) > 1:  # a code can sit in the buckets of several tables
                pos, first = np.unique(pos, return_index=True)
                d = d[first]
        if self.n_dead:
            live = self.alive[pos]
            pos, d = pos[live], d[live]
        return self.ids[pos], d

    def knn(self, q: CodeArray, k: int) -> tuple[IntArray, npt.NDArray[Any]]:
        """(ids, distances) of every live item up to this segment's k-th
        smallest distance (ties included), unsorted."""
        k = min(k, len(self))
        found = self._knn_steps(q, k) if self.m else None
        if found is None:
            found = knn_scan(self.cols, q, k, self.alive if self.n_dead else None)
        pos, d = found
        return self.ids[pos], d

    def _knn_steps(self, q: CodeArray, k: int) -> tuple[IntArray, npt.NDArray[Any]] | None:
        """Multi-index k-NN, or None once it would cost more than a scan.

        Every table at substring distance 0, then 1, ... (see
        :func:`_knn_schedule`); after table j is searched at distance t every
        code within ``m*t + j`` has been seen (the pigeonhole argument of the
        module docstring), so the search stops once k codes are known within that.
        """
        qkeys = self._query_keys(q)
        budget = self.scan_ns * _KNN_SCAN_FACTOR
        pool_pos: IntArray = np.empty(0, dtype=np.int64)
        pool_d: IntArray = np.empty(0, dtype=np.int64)
        bound = 64 * self.words  # the k-th distance among the codes seen, once k are seen
        decided = False
        for kind, t, reach in _knn_schedule(self.words, self.m):
            if t and not decided:
                # Every table's exact bucket has been read (one cheap round).
                # Go on only where the k-th distance is likely within the
                # radius the tables reach for less than a scan; otherwise
                # scan now rather than after spending the budget.
                decided = True
                affordable = self._affordable_reach()
                if not ((len(pool_d) >= k and bound <= affordable)
                        or self._expected_within(q, affordable) >= k):
                    return None
            found = self._candidates(qkeys, kind, t, budget)
            if found is None:
                return None
            pos, cost = found
            budget -= cost
            if len(pos):
                d = distances(self.cols[:, pos], q).astype(np.int64)
                keep = d <= bound
                if self.n_dead:
                    keep &= self.alive[pos]
                pool_pos, first = np.unique(np.concatenate((pool_pos, pos[keep])), return_index=True)
                pool_d = np.concatenate((pool_d, d[keep]))[first]
                if len(pool_d) >= k:
                    bound = int(np.partition(pool_d, k - 1)[k - 1])
                    sel = pool_d <= bound
                    pool_pos, pool_d = pool_pos[sel], pool_d[sel]
            if len(pool_d) >= k and bound <= reach:
                return pool_pos, pool_d
        return None

    def _affordable_reach(self) -> int:
        """The radius the k-NN schedule completes for less than a scan by the
        cost model, assuming buckets as full as uniform codes would make them
        (times 2: real hashes are skewed). Fixed per segment, so computed once."""
        if self._reach is not None:
            return self._reach
        budget = self.scan_ns * _KNN_SCAN_FACTOR
        spent, reach = 0.0, -1
        per_cand = _CAND_NS + _CAND_NS_PER_WORD * self.words
        for kind, t, step_reach in _knn_schedule(self.words, self.m):
            keys = self._keys_cost(kind, t)
            tables = self.layout if kind == "shell" else (self.layout[t % self.m],)
            cands = sum(2 * self.ids.size / (1 << ln) for _, ln in tables) * (keys / len(tables))
            spent += _SAFETY * (_CALL_NS + keys * _KEY_NS + cands * per_cand)
            if spent > budget:
                break
            reach = step_reach
        self._reach = reach
        return reach

    def _expected_within(self, q: CodeArray, radius: int) -> float:
        """Estimated number of live codes within ``radius`` of ``q``, from a
        fixed sample: its empirical share, or a binomial tail with the
        sample's mean distance where that share is below the sample's resolution."""
        if radius < 0:
            return 0.0
        if self._sample is None:
            step = max(1, len(self.ids) // _SAMPLE)
            self._sample = np.ascontiguousarray(self.cols[:, ::step][:, :_SAMPLE])
        d = distances(self._sample, q)
        bits = 64 * self.words
        p = min(max(float(d.mean()) / bits, 1e-6), 1 - 1e-6)
        i = np.arange(radius + 1)
        tail = float(np.exp(_log_comb(bits)[: radius + 1] + i * math.log(p) + (bits - i) * math.log1p(-p)).sum())
        share = max(float(np.count_nonzero(d <= radius)) / len(d), tail)
        return share * len(self)


@lru_cache(maxsize=8)
def _log_comb(bits: int) -> npt.NDArray[np.float64]:
    return np.array([math.lgamma(bits + 1) - math.lgamma(i + 1) - math.lgamma(bits - i + 1)
                     for i in range(bits + 1)])


@lru_cache(maxsize=64)
def _knn_schedule(words: int, m: int) -> tuple[tuple[str, int, int], ...]:
    """The k-NN steps: (plan kind, plan argument, radius complete afterwards).

    Small shells are searched in all tables at once (one round of numpy
    calls); from the first shell with more than _BATCH_KEYS keys on, table
    by table, so the search can stop as soon as the radius suffices.
    """
    layout = _layout(words, m)
    full, widest = 64 * words, max(ln for _, ln in layout)
    out: list[tuple[str, int, int]] = []
    batched = True
    for t in range(widest + 1):
        batched = batched and sum(math.comb(ln, t) for _, ln in layout) <= _BATCH_KEYS
        if batched:
            out.append(("shell", t, full if t >= layout[-1][1] else m * t + m - 1))
            continue
        for j, (_, length) in enumerate(layout):
            # Once a table has been searched to its full width every code
            # has been seen: nothing is out of reach.
            out.append(("step", m * t + j, full if t >= length else m * t + j))
    return tuple(out)


def knn_scan(cols: CodeArray, q: CodeArray, k: int,
              alive: npt.NDArray[np.bool_] | None = None) -> tuple[IntArray, npt.NDArray[Any]]:
    """Exhaustive k-NN in cache-sized blocks: positions and distances of
    every (live) code up to the k-th distance, ties included.

    The k-th distance among the first few thousand codes bounds the answer
    from above; each block then keeps only the codes within the running
    bound, so the bookkeeping stays tiny next to the scan itself.
    """
    words, n = cols.shape
    head = min(n, max(_KNN_HEAD, 8 * k))
    d = distances(cols[:, :head], q)
    pos = np.arange(head) if alive is None else np.flatnonzero(alive[:head])
    kept_d = d[pos]
    bound = 64 * words
    if len(kept_d) >= k:
        bound = int(np.partition(kept_d, k - 1)[k - 1])
        sel = kept_d <= bound
        pos, kept_d = pos[sel], kept_d[sel]
    pos_parts, d_parts, kept = [pos], [kept_d], len(pos)
    for s in range(head, n, _SCAN_BLOCK):
        d = distances(cols[:, s:s + _SCAN_BLOCK], q)
        sel = np.flatnonzero(d <= bound)
        if alive is not None and len(sel):
            sel = sel[alive[s + sel]]
        if not len(sel):
            continue
        pos_parts.append(sel + s)
        d_parts.append(d[sel])
        kept += len(sel)
        if kept >= 4 * k:
            p, dd = np.concatenate(pos_parts), np.concatenate(d_parts)
            bound = int(np.partition(dd, k - 1)[k - 1])
            keep = dd <= bound
            pos_parts, d_parts, kept = [p[keep]], [dd[keep]], int(np.count_nonzero(keep))
    p, dd = np.concatenate(pos_parts), np.concatenate(d_parts).astype(np.int64)
    if len(dd) > k:
        keep = dd <= np.partition(dd, k - 1)[k - 1]
        p, dd = p[keep], dd[keep]
    return p, dd


# -- the index ------------------------------------------------------------------------

@runtime_checkable
class HashIndex(Protocol):
    """What the matcher needs from an exact Hamming index (VPTree, MIHIndex, FaissBinaryIndex)."""

    words: int

    def add(self, ids: Any, codes: Any) -> None: ...
    def remove(self, ids: Any) -> None: ...
    def query_radius(self, code: Any, radius: int) -> list[tuple[int, int]]: ...
    def query_knn(self, code: Any, k: int) -> list[tuple[int, int]]: ...
    def save(self, path: str | os.PathLike[str]) -> None: ...
    def __len__(self) -> int: ...
    def __contains__(self, id_: object) -> bool: ...
    def ids(self) -> IntArray: ...


def _empty_segment(words: int) -> _Segment:
    return _Segment(np.empty((words, 0), dtype=np.uint64), np.empty(0, dtype=np.int64), 0)


class MIHIndex:
    """Exact radius and k-NN Hamming search by multi-index hashing.

    ``substrings`` fixes m for every segment (None: :func:`auto_substrings`
    per segment size, which leaves segments too small to gain from tables
    to the scan). Queries may run concurrently; guard updates against them.
    """

    def __init__(self, words: int = 1, substrings: int | None = None) -> None:
        if words < 1:
            raise ValueError("words must be >= 1")
        if substrings is not None and not 1 <= substrings <= 64 * words:
            raise ValueError(f"substrings must be in [1, {64 * words}]")
        if substrings is not None and 64 * words / substrings > _MAX_KEY_BITS:
            raise ValueError(f"substrings of more than {_MAX_KEY_BITS} bits are not supported")
        self.words = int(words)
        self.substrings = substrings
        self._main = _empty_segment(self.words)
        self._delta = _empty_segment(self.words)
        self._pending = PendingCodes(self.words)

    def _m_for(self, n: int) -> int:
        if self.substrings is not None:  # explicit: tables whatever the size
            return self.substrings if n else 0
        return auto_substrings(self.words, n)

    def _segment(self, cols: CodeArray, ids: IntArray) -> _Segment:
        return _Segment(np.ascontiguousarray(cols), ids, self._m_for(len(ids)))

    # construction ----------------------------------------------------------------

    @classmethod
    def build(cls, codes: Any, ids: Any, *, substrings: int | None = None) -> MIHIndex:
        """An index over ``codes`` (n, W) or (n,) for W=1; a repeated id keeps its last code."""
        c, i = as_codes(codes), as_ids(ids)
        if len(c) != len(i):
            raise ValueError(f"{len(c)} codes but {len(i)} ids")
        index = cls(words=c.shape[1], substrings=substrings)
        i, c = dedupe_last(i, c)
        index._main = index._segment(c.T, i.copy())
        return index

    def _live(self, seg: _Segment) -> tuple[CodeArray, IntArray]:
        if not seg.n_dead:
            return seg.cols, seg.ids
        return seg.cols[:, seg.alive], seg.ids[seg.alive]

    def _rebuild(self) -> None:
        """Everything into one main segment."""
        parts = [self._live(self._main), self._live(self._delta), (self._pending.cols, self._pending.ids)]
        cols = np.concatenate([p[0] for p in parts], axis=1)
        ids = np.concatenate([p[1] for p in parts])
        self._main = self._segment(cols, ids)
        self._delta = _empty_segment(self.words)
        self._pending.clear()

    def _fold_pending(self) -> None:
        """Pending items into the delta segment (rebuilt: it is small)."""
        cols, ids = self._live(self._delta)
        self._delta = self._segment(np.concatenate((cols, self._pending.cols), axis=1),
                                    np.concatenate((ids, self._pending.ids)))
        self._pending.clear()

    def _compact(self) -> None:
        main_live = len(self._main)
        if (self._main.n_dead > _DEAD_SHARE * len(self._main.ids)
                or len(self._delta) + len(self._pending.ids) > max(_DELTA_SHARE * main_live, _PENDING_MAX)):
            self._rebuild()
        elif (len(self._pending.ids) > _PENDING_MAX
              or self._delta.n_dead > max(_DEAD_SHARE * len(self._delta.ids), _PENDING_MAX)):
            self._fold_pending()

    def _forget(self, ids: IntArray) -> None:
        ids = np.unique(ids)
        self._main.kill(ids)
        self._delta.kill(ids)
        self._pending.discard(ids)

    def add(self, ids: Any, codes: Any) -> None:
        """Insert or replace codes; searchable when the call returns.

        Amortised cost: the pending buffer (4096 codes) is folded into the
        delta segment, rebuilt in time proportional to its size; a full
        rebuild happens only when the delta reaches 1/8 of the main segment.
        """
        i, c = checked_entries(ids, codes, self.words)
        self._forget(i)
        self._pending.append(i, c)
        self._compact()

    def remove(self, ids: Any) -> None:
        """Delete ids (tombstones, compacted past 20%); unknown ids are ignored."""
        self._forget(as_ids(ids))
        self._compact()

    # introspection -----------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._main) + len(self._delta) + len(self._pending.ids)

    def __contains__(self, id_: object) -> bool:
        i = as_id_array(id_)
        if i is None:
            return False
        if i[0] in self._pending:
            return True
        for seg in (self._main, self._delta):
            pos = seg.positions(i)
            if len(pos) and seg.alive[pos[0]]:
                return True
        return False

    def ids(self) -> IntArray:
        """All stored ids, ascending."""
        return np.sort(np.concatenate((self._live(self._main)[1], self._live(self._delta)[1],
                                       self._pending.ids)))

    # queries ---------------------------------------------------------------------------

    def query_radius(self, code: Any, radius: int) -> list[tuple[int, int]]:
        """All (id, distance) with distance <= radius, sorted by (distance, id)."""
        q = as_query(code, self.words)
        radius = min(math.floor(radius), 64 * self.words)
        if radius < 0:
            return []
        ids, ds = [], []
        for seg in (self._main, self._delta):
            if len(seg):
                i, d = seg.radius(q, radius)
                ids.append(i)
                ds.append(d.astype(np.int64))
        if len(self._pending.ids):
            d = distances(self._pending.cols, q)
            sel = d <= radius
            ids.append(self._pending.ids[sel])
            ds.append(d[sel].astype(np.int64))
        if not ids:
            return []
        return ranked_pairs(np.concatenate(ids), np.concatenate(ds))

    def query_knn(self, code: Any, k: int) -> list[tuple[int, int]]:
        """The k nearest (id, distance), sorted by (distance, id); ties at the
        k-th distance go to the smaller ids, so the answer is unique."""
        q = as_query(code, self.words)
        k = min(int(k), len(self))
        if k <= 0:
            return []
        ids, ds = [], []
        for seg in (self._main, self._delta):
            if len(seg):
                i, d = seg.knn(q, k)
                ids.append(i)
                ds.append(d.astype(np.int64))
        if len(self._pending.ids):
            ids.append(self._pending.ids)
            ds.append(distances(self._pending.cols, q).astype(np.int64))
        i, d = np.concatenate(ids), np.concatenate(ds)
        if len(d) > k:
            kth = int(np.searchsorted(np.cumsum(np.bincount(d)), k))
            sel = d <= kth
            i, d = i[sel], d[sel]
        return ranked_pairs(i, d, k)

    # snapshots -------------------------------------------------------------------------

    def _arrays(self) -> dict[str, npt.NDArray[Any]]:
        meta = [FORMAT_VERSION, self.words, -1 if self.substrings is None else self.substrings,
                self._main.m, self._delta.m]
        arrays: dict[str, npt.NDArray[Any]] = {"meta": np.array(meta, dtype=np.int64)}
        for name, seg in (("main", self._main), ("delta", self._delta)):
            for key in _SNAPSHOT_SEGMENT_KEYS:
                arrays[f"{name}_{key}"] = getattr(seg, key)
        arrays["pend_ids"], arrays["pend_cols"] = self._pending.ids, self._pending.cols
        return arrays

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write one ``.npz`` snapshot atomically (temp file + ``os.replace``),
        tables included, so loading does not re-sort anything."""
        _save_npz(path, self._arrays(), prefix=".mih-")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MIHIndex:
        """Read a snapshot written by :meth:`save`; any damage raises :class:`SnapshotError`."""
        keys = ("meta", "pend_ids", "pend_cols",
                *(f"{s}_{k}" for s in ("main", "delta") for k in _SNAPSHOT_SEGMENT_KEYS))
        a = _load_npz(path, keys, "MIH index")
        meta = a["meta"]
        if meta.dtype != np.int64 or meta.shape != (5,):
            raise SnapshotError("snapshot metadata is malformed")
        words, substrings = int(meta[1]), int(meta[2])
        try:
            index = cls(words=words, substrings=None if substrings < 0 else substrings)
            segs = [cls._load_segment(a, name, words, int(m)) for name, m in (("main", meta[3]), ("delta", meta[4]))]
            pend_ids, pend_cols = a["pend_ids"], a["pend_cols"]
            if (pend_ids.dtype != np.int64 or pend_ids.ndim != 1 or pend_cols.dtype != np.uint64
                    or pend_cols.shape != (words, len(pend_ids))):
                raise ValueError("pending arrays malformed")
            if has_duplicates(np.concatenate([s.ids[s.alive] for s in segs] + [pend_ids])):
                raise ValueError("duplicate ids")
        except (ValueError, TypeError, IndexError) as e:
            raise SnapshotError(f"snapshot is inconsistent: {e}") from e
        index._main, index._delta = segs
        index._pending = PendingCodes(words, pend_ids, pend_cols)
        return index

    @staticmethod
    def _load_segment(a: dict[str, npt.NDArray[Any]], name: str, words: int, m: int) -> _Segment:
        cols, ids, alive = a[f"{name}_cols"], a[f"{name}_ids"], a[f"{name}_alive"]
        offsets, order = a[f"{name}_offsets"], a[f"{name}_order"]
        n = len(ids)
        if (cols.dtype != np.uint64 or cols.shape != (words, n) or ids.dtype != np.int64 or ids.ndim != 1
                or alive.dtype != np.bool_ or alive.shape != (n,)):
            raise ValueError(f"{name}: code arrays malformed")
        if not 0 <= m <= 64 * words or (m and 64 * words / m > _MAX_KEY_BITS):
            raise ValueError(f"{name}: bad substring count {m}")
        if m and n:
            expect_off = sum((1 << length) + 1 for _, length in _layout(words, m))
            if (offsets.dtype.kind != "i" or order.dtype.kind != "i" or offsets.shape != (expect_off,)
                    or order.shape != (m * n,)):
                raise ValueError(f"{name}: table arrays malformed")
            # Bounds, so a well-checksummed file from a buggy writer fails
            # here rather than as an IndexError inside a query.
            # Offsets of consecutive tables continue each other: 0 ... m*n, non-decreasing.
            if (offsets[0] != 0 or offsets[-1] != m * n or np.any(np.diff(offsets) < 0)
                    or order.min() < 0 or order.max() >= n):
                raise ValueError(f"{name}: table entries out of range")
            return _Segment(np.ascontiguousarray(cols), ids, m, (offsets, order), alive.copy())
        return _Segment(np.ascontiguousarray(cols), ids, 0, None, alive.copy())


# -- snapshot files ---------------------------------------------------------------------

def _checksum(arrays: dict[str, npt.NDArray[Any]]) -> npt.NDArray[np.uint8]:
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.data.cast("B") if a.size else b"")
    return np.frombuffer(h.digest(), dtype=np.uint8)


def _save_npz(path: str | os.PathLike[str], arrays: dict[str, npt.NDArray[Any]], *, prefix: str) -> None:
    atomic_savez(path, dict(arrays, checksum=_checksum(arrays)), prefix=prefix)


def _load_npz(path: str | os.PathLike[str], keys: tuple[str, ...], what: str) -> dict[str, npt.NDArray[Any]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            if set(z.files) != {*keys, "checksum"}:
                raise ValueError(f"unexpected arrays {sorted(z.files)}")
            arrays = {key: z[key] for key in keys}
            checksum = z["checksum"]
    except Exception as e:  # BadZipFile, KeyError, ValueError, EOFError, OSError, ...
        raise SnapshotError(f"cannot read {what} snapshot {os.fspath(path)!r}: {e}") from e
    meta = arrays["meta"]
    if meta.dtype != np.int64 or meta.ndim != 1 or not len(meta):
        raise SnapshotError("snapshot metadata is malformed")
    if int(meta[0]) != FORMAT_VERSION:
        raise SnapshotError(f"snapshot format {int(meta[0])}, expected {FORMAT_VERSION}")
    if not np.array_equal(checksum, _checksum(arrays)):
        raise SnapshotError("snapshot checksum mismatch")
    return arrays


# -- FAISS, for comparison ------------------------------------------------------------------

class FaissBinaryIndex:
    """``faiss.IndexBinaryFlat`` (exhaustive SIMD popcount) behind the same
    contract: exact, (distance, id) order, ties by id, replace on re-add.

    FAISS returns k-NN ties in arbitrary order, so :meth:`query_knn` reads
    the k-th distance from ``search`` and collects every tie with a
    ``range_search``. FAISS uses OpenMP threads; benchmarks pin one with
    ``faiss.omp_set_num_threads(1)``.
    """

    def __init__(self, words: int = 1) -> None:
        import faiss  # lazy: heavy import, only this comparison needs it

        if words < 1:
            raise ValueError("words must be >= 1")
        self.words = int(words)
        self._index = faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(64 * self.words))

    @classmethod
    def build(cls, codes: Any, ids: Any) -> FaissBinaryIndex:
        c, i = as_codes(codes), as_ids(ids)
        if len(c) != len(i):
            raise ValueError(f"{len(c)} codes but {len(i)} ids")
        index = cls(words=c.shape[1])
        i, c = dedupe_last(i, c)
        index._index.add_with_ids(index._bytes(c), i)
        return index

    def _bytes(self, codes: CodeArray) -> npt.NDArray[np.uint8]:
        # Hamming distance does not care about byte order, only that every
        # code is laid out alike.
        return np.ascontiguousarray(codes).view(np.uint8).reshape(-1, 8 * self.words)

    def add(self, ids: Any, codes: Any) -> None:
        i, c = as_ids(ids), as_codes(codes, self.words)
        if len(i) != len(c):
            raise ValueError(f"{len(i)} ids but {len(c)} codes")
        i, c = dedupe_last(i, c)
        self.remove(i)
        self._index.add_with_ids(self._bytes(c), i)

    def remove(self, ids: Any) -> None:
        i = np.unique(as_ids(ids))
        if len(i) and len(self):
            self._index.remove_ids(i)

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def ids(self) -> IntArray:
        import faiss

        return np.sort(faiss.vector_to_array(self._index.id_map).astype(np.int64))

    def __contains__(self, id_: object) -> bool:
        i = as_id_array(id_)
        return i is not None and bool(np.any(self.ids() == i[0]))

    def _range(self, q: CodeArray, radius: int) -> tuple[IntArray, IntArray]:
        # FAISS's binary range search is strict (distance < radius).
        lims, dist, ids = self._index.range_search(self._bytes(q[None, :]), radius + 1)
        return ids.astype(np.int64), dist.astype(np.int64)

    def query_radius(self, code: Any, radius: int) -> list[tuple[int, int]]:
        q = as_query(code, self.words)
        radius = min(math.floor(radius), 64 * self.words)
        if radius < 0 or not len(self):
            return []
        return ranked_pairs(*self._range(q, radius))

    def query_knn(self, code: Any, k: int) -> list[tuple[int, int]]:
        q = as_query(code, self.words)
        k = min(int(k), len(self))
        if k <= 0:
            return []
        dist, _ = self._index.search(self._bytes(q[None, :]), k)
        return ranked_pairs(*self._range(q, int(dist[0, k - 1])), k)

    def save(self, path: str | os.PathLike[str]) -> None:
        import faiss

        blob = faiss.serialize_index_binary(self._index)
        _save_npz(path, {"meta": np.array([FORMAT_VERSION, self.words], dtype=np.int64), "faiss": blob},
                  prefix=".faiss-")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FaissBinaryIndex:
        import faiss

        a = _load_npz(path, ("meta", "faiss"), "FAISS index")
        if a["meta"].shape != (2,) or a["faiss"].dtype != np.uint8:
            raise SnapshotError("snapshot metadata is malformed")
        index = cls(words=int(a["meta"][1]))
        try:
            loaded = faiss.deserialize_index_binary(a["faiss"])
        except Exception as e:  # a checksummed blob from another writer
            raise SnapshotError(f"FAISS cannot read the index: {e}") from e
        if not isinstance(loaded, faiss.IndexBinaryIDMap2) or loaded.d != 64 * index.words:
            raise SnapshotError("snapshot holds another kind of FAISS index")
        index._index = loaded
        return index


# -- factory ------------------------------------------------------------------------------------

_KINDS = ("mih", "vptree", "faiss")


def make_hash_index(words: int, kind: str = "auto", *, codes: Any = None, ids: Any = None) -> HashIndex:
    """An exact Hamming index for codes of ``words`` 64-bit words.

    ``kind``: "mih" (:class:`MIHIndex`), "vptree" (:class:`VPTree`),
    "faiss" (:class:`FaissBinaryIndex`), or "auto": the fastest with
    identical results in docs/hash-index.md, which is MIH for pHash and
    PDQ at every size measured (100k to 10M). With ``codes`` and ``ids``
    the index is built over them.
    """
    if kind == "auto":
        kind = "mih"
    if kind not in _KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected 'auto' or one of {_KINDS}")
    if (codes is None) != (ids is None):
        raise ValueError("pass codes and ids together")
    kinds: dict[str, type[MIHIndex] | type[VPTree] | type[FaissBinaryIndex]] = {
        "mih": MIHIndex, "vptree": VPTree, "faiss": FaissBinaryIndex}
    cls = kinds[kind]
    if codes is None:
        return cls(words=words)
    index = cls.build(codes, ids)
    if index.words != words:
        raise ValueError(f"codes have {index.words} words, expected {words}")
    return index
