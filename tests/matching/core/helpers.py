"""Small image makers shared by the core tests."""
from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

from matching.core.vptree import brute_force_knn, brute_force_radius


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **params)
    return buf.getvalue()


def gradient(width: int = 64, height: int = 48) -> Image.Image:
    """A small RGB picture with structure in both directions (not flat)."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                    (x + y) % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


# -- binary codes for the Hamming indexes (MIH, VP-tree) --------------------------------

def uniform_codes(rng: np.random.Generator, n: int, words: int) -> np.ndarray:
    return rng.integers(0, 2**64, size=(n, words), dtype=np.uint64)


def clustered_codes(rng: np.random.Generator, n: int, words: int, centres: int = 3) -> np.ndarray:
    """A few centres plus copies with 0-3 flipped bits: many exact ties."""
    base = uniform_codes(rng, centres, words)
    out = base[rng.integers(0, centres, size=n)].copy()
    flips = rng.integers(0, 4, size=n)
    for j in range(3):
        rows = np.flatnonzero(flips > j)
        bit = rng.integers(0, 64 * words, size=len(rows))
        out[rows, bit // 64] ^= np.uint64(1) << (bit % 64).astype(np.uint64)
    return out


def queries_for(rng: np.random.Generator, codes: np.ndarray, words: int, count: int = 6) -> list[np.ndarray]:
    qs = list(uniform_codes(rng, 2, words))
    if len(codes):
        picked = codes[rng.integers(0, len(codes), size=count - 2)].copy()
        picked[::2, 0] ^= np.uint64(0b101)  # near, not equal
        qs += list(picked)
    return qs


def assert_same_as_brute_force(index: Any, codes: np.ndarray, ids: np.ndarray,
                               queries: list[np.ndarray], radii: tuple[int, ...] = (0, 1, 3, 10)) -> None:
    words = index.words
    for q in queries:
        d = np.bitwise_count(codes ^ q).sum(axis=1) if len(codes) else np.empty(0, int)
        # Radii at 0, small, the full width, and exactly at stored distances
        # so that items sit on the edge of the ball.
        for r in sorted({*radii, 64 * words, *(int(x) for x in d[:3])}):
            assert index.query_radius(q, r) == brute_force_radius(codes, ids, q, r), r
        for k in sorted({1, 3, 10, len(ids), len(ids) + 3}):
            assert index.query_knn(q, k) == brute_force_knn(codes, ids, q, k), k
