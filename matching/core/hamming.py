"""Hamming codes: their array layout, distances, and the pending buffer the hash indexes share.

A code of ``W`` 64-bit words is stored word-major in the indexes (``cols``:
``(W, n)`` uint64) so one word of every code streams through xor+popcount at a
time; callers pass codes as ``(n, W)`` or, for ``W = 1``, ``(n,)``. Ids are
int64. Plain numpy, no index structure (see ``vptree`` and ``hashindex``).
"""
from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "CodeArray",
    "IntArray",
    "PendingCodes",
    "as_codes",
    "as_id_array",
    "as_ids",
    "as_query",
    "checked_entries",
    "dedupe_last",
    "distances",
    "has_duplicates",
    "pdq_words",
    "ranked_pairs",
]

IntArray = npt.NDArray[np.int64]
CodeArray = npt.NDArray[np.uint64]
_BLOCK = 1 << 16  # codes per popcount block: xor temporaries stay in L2


def as_codes(codes: Any, words: int | None = None) -> CodeArray:
    """Codes as a C-contiguous (n, W) uint64 array.

    int64 input is reinterpreted bit for bit (databases store 64-bit hashes
    as signed bigint); other integer types must be non-negative.
    """
    if isinstance(codes, np.ndarray):
        a = codes
        if a.dtype == np.int64:
            a = a.view(np.uint64)
        elif a.dtype != np.uint64:
            if a.dtype.kind not in "ui" or (a.size and a.min() < 0):
                raise TypeError(f"codes must be unsigned 64-bit integers, got {a.dtype}")
            a = a.astype(np.uint64)
    else:
        a = np.array(codes, dtype=np.uint64)  # raises on negative / too large ints
    if a.ndim == 1:
        a = a.reshape(-1, 1)
    if a.ndim != 2 or (words is not None and a.shape[1] != words):
        raise ValueError(f"codes must have shape (n, {words or 'W'}), got {a.shape}")
    return np.ascontiguousarray(a)


def as_ids(ids: Any) -> IntArray:
    a = np.asarray(ids)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1 or (a.size and a.dtype.kind not in "ui"):
        raise TypeError(f"ids must be a 1-D integer array, got {a.dtype} {a.shape}")
    if a.dtype == np.uint64 and a.size and a.max() > np.iinfo(np.int64).max:
        raise ValueError("ids must fit in int64")
    return a.astype(np.int64)


def as_id_array(id_: object) -> IntArray | None:
    """``id_`` as a one-element int64 array, or None when it cannot be an id (not an integer,
    a bool, or outside int64): membership tests answer False for those."""
    if not isinstance(id_, (int, np.integer)) or isinstance(id_, bool):
        return None
    if not -(2**63) <= int(id_) < 2**63:
        return None
    return np.array([id_], dtype=np.int64)


def as_query(code: Any, words: int) -> CodeArray:
    """One code as (W,) uint64: a Python/numpy int (negative = two's complement) or W words."""
    if isinstance(code, (int, np.integer)) and not isinstance(code, bool):
        bits = 64 * words
        v = int(code)
        if v < 0 and v >= -(1 << (bits - 1)):
            v += 1 << bits
        if not 0 <= v < (1 << bits):
            raise ValueError(f"code does not fit in {bits} bits: {code}")
        mask = (1 << 64) - 1
        return np.array([(v >> (64 * (words - 1 - i))) & mask for i in range(words)], dtype=np.uint64)
    a = code if isinstance(code, np.ndarray) else np.array(code, dtype=np.uint64)
    a = as_codes(a.reshape(1, -1) if a.ndim <= 1 else a, words)
    if a.shape[0] != 1:
        raise ValueError(f"expected one code of {words} words, got shape {a.shape}")
    row: CodeArray = a[0]
    return row


def distances(cols: CodeArray, q: CodeArray) -> npt.NDArray[np.integer[Any]]:
    """Hamming distances between word-major codes (W, m) and one code (W,).

    uint8 for one word, uint16 beyond (4 words can differ in 256 bits). Long
    inputs go in cache-sized blocks: the xor temporary of a 10M-code scan
    would otherwise stream 80 MB through memory (measured ~2.5x slower).
    """
    words, m = cols.shape
    out: npt.NDArray[np.integer[Any]] = np.empty(m, dtype=np.uint8 if words == 1 else np.uint16)
    for s in range(0, m, _BLOCK):
        block, dst = cols[:, s:s + _BLOCK], out[s:s + _BLOCK]
        np.bitwise_count(np.bitwise_xor(block[0], q[0]), out=dst, casting="unsafe")
        for w in range(1, words):
            np.add(dst, np.bitwise_count(np.bitwise_xor(block[w], q[w])), out=dst, casting="unsafe")
    return out


def ranked_pairs(ids: IntArray, dists: npt.NDArray[Any], k: int | None = None) -> list[tuple[int, int]]:
    order = np.lexsort((ids, dists))[:k]
    return list(zip(ids[order].tolist(), dists[order].tolist()))


def dedupe_last(ids: IntArray, codes: CodeArray) -> tuple[IntArray, CodeArray]:
    """Keep the last occurrence of each id (later writes win, as with add)."""
    if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])):  # the common case: added in id order
        return ids, codes
    rev_unique, rev_first = np.unique(ids[::-1], return_index=True)
    if len(rev_unique) == len(ids):
        return ids, codes
    keep = np.sort(len(ids) - 1 - rev_first)
    return ids[keep], codes[keep]


def has_duplicates(ids: IntArray) -> bool:
    if len(ids) < 2 or bool(np.all(ids[1:] > ids[:-1])):  # the common case: built in id order
        return False
    s = np.sort(ids)
    return bool(np.any(s[1:] == s[:-1]))


def checked_entries(ids: Any, codes: Any, words: int) -> tuple[IntArray, CodeArray]:
    """``add``'s arguments as int64 ids and ``(n, words)`` codes, one entry per id (the last wins)."""
    i, c = as_ids(ids), as_codes(codes, words)
    if len(i) != len(c):
        raise ValueError(f"{len(i)} ids but {len(c)} codes")
    return dedupe_last(i, c)


def pdq_words(hex_codes: Collection[str]) -> CodeArray:
    """256-bit PDQ codes (64 hex digits each) as ``(n, 4)`` uint64, big-endian words (the hash
    indexes' layout)."""
    if not hex_codes:
        return np.zeros((0, 4), np.uint64)
    return np.frombuffer(bytes.fromhex("".join(hex_codes)), dtype=">u8").astype(np.uint64).reshape(-1, 4)


class PendingCodes:
    """Codes added since an index last rebuilt its structure, each id at most once.

    Every query scans them along with the structure; the index folds them in
    when its own rule says so (``VPTree``: past 5 % of its size, ``MIHIndex``:
    into its delta segment) and then calls :meth:`clear`.
    """

    def __init__(self, words: int, ids: IntArray | None = None, cols: CodeArray | None = None) -> None:
        self.words = words
        self.ids: IntArray = ids if ids is not None else np.empty(0, dtype=np.int64)
        self.cols: CodeArray = cols if cols is not None else np.empty((words, 0), dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, id_: object) -> bool:
        return bool(np.any(self.ids == id_))

    def append(self, ids: IntArray, codes: CodeArray) -> None:
        """``ids`` (absent from the buffer: :meth:`discard` them first) with their ``(n, W)`` codes."""
        self.ids = np.concatenate((self.ids, ids))
        self.cols = np.concatenate((self.cols, codes.T), axis=1)

    def discard(self, ids: IntArray) -> None:
        if len(self.ids):
            keep = ~np.isin(self.ids, ids)
            self.ids, self.cols = self.ids[keep], self.cols[:, keep]

    def clear(self) -> None:
        self.ids = np.empty(0, dtype=np.int64)
        self.cols = np.empty((self.words, 0), dtype=np.uint64)
