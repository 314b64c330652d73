"""Quick VP-tree benchmark against an exhaustive numpy popcount scan.

    python -m bench.vptree --n 100000 --radius 10 --queries 200

The data imitates a hash bank: a share of the codes are near-duplicate
clusters (a random centre plus copies with 0-8 flipped bits, as re-encoded or
resized copies of one picture give), the rest are unrelated random codes.
Half of the queries are near-duplicates of stored codes (0-6 flipped bits),
half are unrelated. Every tree answer is checked against the exhaustive one.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from matching.core.hamming import distances, ranked_pairs
from matching.core.vptree import VPTree

_ONE = np.uint64(1)


def flip_bits(codes: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Copies of ``codes`` (m, W) with up to ``counts[i]`` random bits flipped in row i."""
    m, words = codes.shape
    kmax = int(counts.max(initial=0))
    out = codes.copy()
    if kmax == 0:
        return out
    bit = rng.integers(0, 64 * words, size=(m, kmax))
    use = np.arange(kmax) < counts[:, None]
    for j in range(kmax):  # kmax is small; each step is vectorised over rows
        rows = np.flatnonzero(use[:, j])
        word, shift = np.divmod(bit[rows, j], 64)
        out[rows, word] ^= _ONE << shift.astype(np.uint64)
    return out


def make_codes(n: int, words: int = 1, *, clustered: float = 0.5, cluster_size: int = 20,
               seed: int = 0) -> np.ndarray:
    """``n`` codes (n, W): ``clustered`` share in near-duplicate clusters, rest uniform."""
    rng = np.random.default_rng(seed)
    n_cl = int(n * clustered)
    centres = rng.integers(0, 2**64, size=(max(1, n_cl // cluster_size), words), dtype=np.uint64)
    members = flip_bits(centres[rng.integers(0, len(centres), size=n_cl)],
                        rng.integers(0, 9, size=n_cl), rng)
    rand = rng.integers(0, 2**64, size=(n - n_cl, words), dtype=np.uint64)
    return rng.permutation(np.concatenate((members, rand)))


def make_queries(codes: np.ndarray, count: int, *, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    near = count // 2
    dup = flip_bits(codes[rng.integers(0, len(codes), size=near)], rng.integers(0, 7, size=near), rng)
    rand = rng.integers(0, 2**64, size=(count - near, codes.shape[1]), dtype=np.uint64)
    return np.concatenate((dup, rand))


def exhaustive_radius(cols: np.ndarray, ids: np.ndarray, q: np.ndarray, radius: int) -> list[tuple[int, int]]:
    """The fastest plain numpy scan we know: one xor + popcount pass per word."""
    d = distances(cols, q)
    sel = np.flatnonzero(d <= radius)
    return ranked_pairs(ids[sel], d[sel])


def exhaustive_knn(cols: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> list[tuple[int, int]]:
    """All distances, then the k-th smallest from a histogram (linear, and
    several times faster than np.partition over a million small integers)."""
    d = distances(cols, q)
    kth = int(np.searchsorted(np.cumsum(np.bincount(d)), min(k, len(d))))
    sel = np.flatnonzero(d <= kth)
    return ranked_pairs(ids[sel], d[sel], k)


def _mean_ms(fn, queries: np.ndarray) -> tuple[float, list]:
    out = []
    t0 = time.perf_counter()
    for q in queries:
        out.append(fn(q))
    return (time.perf_counter() - t0) * 1000 / len(queries), out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--words", type=int, default=1)
    ap.add_argument("--radius", type=int, default=10)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--leaf-size", type=int, default=64)
    ap.add_argument("--clustered", type=float, default=0.5, help="share of codes in clusters")
    args = ap.parse_args(argv)

    codes = make_codes(args.n, args.words, clustered=args.clustered)
    ids = np.arange(args.n, dtype=np.int64)
    queries = make_queries(codes, args.queries)
    cols = np.ascontiguousarray(codes.T)

    t0 = time.perf_counter()
    tree = VPTree.build(codes, ids, leaf_size=args.leaf_size)
    build_s = time.perf_counter() - t0
    print(f"n={args.n} words={args.words} leaf_size={args.leaf_size} clustered={args.clustered} "
          f"queries={len(queries)} (half near-duplicates)")
    print(f"build                      {build_s:8.2f} s")

    half = len(queries) // 2
    rows = [
        ("vptree radius", lambda q: tree.query_radius(q, args.radius)),
        ("exhaustive radius", lambda q: exhaustive_radius(cols, ids, q, args.radius)),
        (f"vptree knn k={args.k}", lambda q: tree.query_knn(q, args.k)),
        (f"exhaustive knn k={args.k}", lambda q: exhaustive_knn(cols, ids, q, args.k)),
    ]
    results = {}
    for name, fn in rows:
        _mean_ms(fn, queries[:5])  # warm caches
        ms, out = _mean_ms(fn, queries)
        near_ms, _ = _mean_ms(fn, queries[:half])
        far_ms, _ = _mean_ms(fn, queries[half:])
        results[name] = out
        label = f"{name} (r={args.radius})" if "radius" in name else name
        print(f"{label:28s} {ms:8.3f} ms/query   near-dup {near_ms:7.3f}   unrelated {far_ms:7.3f}")
    names = [name for name, _ in rows]
    same_r = results[names[0]] == results[names[1]]
    same_k = results[names[2]] == results[names[3]]
    hits = sum(len(r) for r in results[names[0]]) / len(queries)
    print(f"identical results: radius {same_r}, knn {same_k}; mean radius hits {hits:.1f}")
    if not (same_r and same_k):
        raise SystemExit("MISMATCH between VP-tree and exhaustive scan")


if __name__ == "__main__":
    main()
