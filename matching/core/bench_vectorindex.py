"""Benchmark the vector index at scale: build time, memory, recall@10 against exact search, query latency.

    python -m matching.core.bench_vectorindex --n 1000000 --dim 256 [--queries 1000] [--threads 1]

Vectors (one seed): half are real CNN embeddings replicated with noise
(``--images`` photos and logos of ``../shared/datasets``, each embedded
clean and under ``--views`` random copy attacks; every stored vector is one
of those plus Gaussian noise, renormalised, so the index holds many tight
clusters like a real collection of similar images), half are random unit
vectors (the unstructured bulk that makes graph search hardest). Queries are
embeddings of fresh attacked copies of the same images: what a check asks.
Ground truth is exact inner-product search (``faiss.IndexFlatIP``).
Latency is one query at a time through ``VectorIndex.search`` on ``--threads``
OpenMP threads, as a check runs. With ``--dim`` other than 256 (no embedder
of that width) every vector is synthetic.
"""
from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np

from .vectorindex import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, VectorIndex

DEFAULT_DATASETS = Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def real_embeddings(datasets: Path, images: int, views: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(base (images * (views + 1), 256), queries (images, 256)): clean + attacked views, and one fresh
    attacked copy per image for the queries."""
    from PIL import Image

    from .cnn import augment
    from .cnn.embedder import get_embedder

    paths = sorted((datasets / "photos").rglob("*.png")) + sorted((datasets / "logos").glob("*.png"))
    rng = np.random.default_rng(seed)
    chosen = [paths[i] for i in sorted(rng.choice(len(paths), size=min(images, len(paths)), replace=False))]
    embedder = get_embedder()
    base, queries = [], []
    for i, path in enumerate(chosen):
        with Image.open(path) as im:
            original = im.convert("RGB")
        vrng = np.random.default_rng([seed, i])
        views_i = [original] + [augment.random_view(original, vrng) for _ in range(views)]
        base.append(embedder.embed(views_i))
        queries.append(embedder.embed_one(augment.random_view(original, vrng)))
    return np.concatenate(base), np.stack(queries)


def make_vectors(n: int, dim: int, base: np.ndarray | None, seed: int, noise: float) -> np.ndarray:
    """Half noisy copies of ``base`` rows (cosine ~0.8 to their source), half random unit vectors."""
    rng = np.random.default_rng([seed, 1])
    out = np.empty((n, dim), np.float32)
    n_real = n // 2 if base is not None else 0
    for s in range(0, n, 65536):
        e = min(n, s + 65536)
        block = rng.standard_normal((e - s, dim), dtype=np.float32)
        real = slice(0, max(0, min(e, n_real) - s))
        if base is not None and real.stop > 0:
            src = base[rng.integers(0, len(base), real.stop)]
            block[real] = src + block[real] * (noise / np.sqrt(dim))
        out[s:e] = _unit(block)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m matching.core.bench_vectorindex")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=500, help="dataset images whose embeddings seed the data")
    parser.add_argument("--views", type=int, default=4, help="attacked views embedded per image")
    parser.add_argument("--noise", type=float, default=0.75, help="noise norm added to replicated embeddings")
    parser.add_argument("--ef-search", type=int, nargs="*", default=[HNSW_EF_SEARCH])
    parser.add_argument("--m", type=int, default=HNSW_M)
    parser.add_argument("--ef-construction", type=int, default=HNSW_EF_CONSTRUCTION)
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    os.environ.setdefault("IMGPROTECT_TF_THREADS", str(args.threads))
    import faiss

    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    base = queries = None
    if args.dim == 256 and args.datasets.is_dir():
        base, q_real = real_embeddings(args.datasets, args.images, args.views, args.seed)
        # As many queries as asked: the real attacked copies, then noisy copies of them.
        reps = -(-args.queries // len(q_real))
        queries = make_vectors(len(q_real) * reps * 2, args.dim, np.tile(q_real, (reps, 1)), args.seed + 1,
                               args.noise / 3)[: args.queries]
        print(f"embeddings: {len(base)} base vectors from {args.images} images x {args.views + 1} views, "
              f"{len(q_real)} attacked query copies, {time.perf_counter() - t0:.0f} s")
    data = make_vectors(args.n, args.dim, base, args.seed, args.noise)
    if queries is None:
        queries = make_vectors(args.queries * 2, args.dim, data[: args.n // 2], args.seed + 1, args.noise / 3)
        queries = queries[: args.queries]
    ids = np.arange(args.n, dtype=np.int64) * 7 + 3  # ids need not be positions

    start = time.perf_counter()
    exact = faiss.IndexFlatIP(args.dim)
    exact.add(data)
    _, truth = exact.search(queries, 10)
    exact_s = time.perf_counter() - start
    truth_ids = ids[truth]
    one = []
    for q in queries[:200]:
        s = time.perf_counter()
        exact.search(q[None], 10)
        one.append(time.perf_counter() - s)
    print(f"exact (IndexFlatIP): {len(queries)} queries in {exact_s:.1f} s incl. add; one query "
          f"{1e3 * np.median(one):.2f} ms median")
    del exact

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    index = VectorIndex.build(ids, data, m=args.m, ef_construction=args.ef_construction)
    build_s = time.perf_counter() - start
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mem = index.memory_bytes()
    print(f"build: {index.kind} M={args.m} efConstruction={args.ef_construction}, n={args.n}, dim={args.dim}, "
          f"{build_s:.1f} s ({args.n / build_s:.0f} vectors/s) on {args.threads} thread(s)")
    print(f"memory: {mem / args.n:.0f} bytes/vector ({mem / 2**20:.0f} MiB; raw vectors "
          f"{4 * args.dim} B/vector); peak RSS grew {(rss1 - rss0) / 1024:.0f} MiB during the build")
    for ef in args.ef_search:
        index.ef_search = ef
        index.search(queries[:10], 10)  # warm-up
        times, found = [], []
        for q, t in zip(queries, truth_ids, strict=True):
            s = time.perf_counter()
            hits = index.search(q, 10)[0]
            times.append(time.perf_counter() - s)
            found.append(len({i for i, _ in hits} & set(t.tolist())) / 10)
        ms = 1e3 * np.array(times)
        print(f"efSearch={ef}: recall@10 {np.mean(found):.4f}; query ms mean {ms.mean():.3f} "
              f"p50 {np.percentile(ms, 50):.3f} p95 {np.percentile(ms, 95):.3f} ({len(queries)} queries, one at a time)")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
