"""Benchmark the vector index at scale: build time, memory, recall@10 against exact search, query latency.

    python -m bench.vectorindex --n 1000000 --dim 256 [--queries 1000] [--threads 1]
        [--build-threads 2] [--m 32] [--ef-construction 80] [--ef-search 64 128]

Vectors (one seed): half are real CNN embeddings replicated with noise
(``--images`` photos and logos of ``../shared/datasets``, each embedded
clean and under ``--views`` random copy attacks; every stored vector is one
of those plus Gaussian noise of norm ``--noise``, renormalised, so the index
holds many clusters of similar images), half are random unit vectors (the
unstructured bulk that makes graph search hardest). Queries: half are
embeddings of fresh attacked copies of base images (a check that finds a
copy), half embeddings of other dataset images that are not in the index (a
check that finds nothing: most checks), reported separately.
Ground truth is exact inner-product search (``faiss.IndexFlatIP``).
Latency is one query at a time through ``VectorIndex.search`` on ``--threads``
OpenMP threads, as a check runs. With ``--dim`` other than 256 (no embedder
of that width) every vector is synthetic.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from matching.core.vectorindex import (
    DEFAULT_STRUCTURE, HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, IVF_NPROBE, STRUCTURES, VectorIndex,
)

DEFAULT_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def real_embeddings(datasets: Path, images: int, views: int, seed: int, queries: int,
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embeddings of dataset images: ``base`` (``images`` x (clean + ``views`` attacked views)),
    ``copies`` (a fresh attacked copy of each of the first ``queries // 2`` base images) and
    ``unrelated`` (``queries - queries // 2`` other images, clean: what most checks look like)."""
    from PIL import Image

    from matching.core.cnn.embedder import get_embedder
    from training import augment

    paths = sorted((datasets / "photos").rglob("*.png")) + sorted((datasets / "logos").glob("*.png"))
    rng = np.random.default_rng(seed)
    n_unrelated = queries - queries // 2
    order = rng.permutation(len(paths))[: images + n_unrelated]
    if len(order) < images + n_unrelated:
        raise SystemExit(f"only {len(paths)} dataset images; lower --images or --queries")
    embedder = get_embedder()

    def load(i: int) -> Image.Image:
        with Image.open(paths[i]) as im:
            return im.convert("RGB")

    base, copies = [], []
    for k, i in enumerate(order[:images]):
        original = load(int(i))
        vrng = np.random.default_rng([seed, int(i)])
        base.append(embedder.embed([original] + [augment.random_view(original, vrng) for _ in range(views)]))
        if k < queries // 2:
            copies.append(embedder.embed_one(augment.random_view(original, vrng)))
    unrelated = embedder.embed([load(int(i)) for i in order[images:]])
    return np.concatenate(base), np.stack(copies), unrelated


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


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
    parser = argparse.ArgumentParser(prog="python -m bench.vectorindex")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads for the searches")
    parser.add_argument("--build-threads", type=int, default=None, help="OpenMP threads for the build (default --threads)")
    parser.add_argument("--images", type=int, default=1000, help="dataset images whose embeddings seed the data")
    parser.add_argument("--views", type=int, default=4, help="attacked views embedded per image")
    parser.add_argument("--noise", type=float, default=1.0,
                        help="norm of the noise added to a replicated embedding (1.0: cosine ~0.7 to its source)")
    parser.add_argument("--structure", choices=STRUCTURES, default=DEFAULT_STRUCTURE)
    parser.add_argument("--ef-search", type=int, nargs="*", default=[HNSW_EF_SEARCH], help="HNSW settings to time")
    parser.add_argument("--nprobe", type=int, nargs="*", default=[IVF_NPROBE], help="IVF settings to time")
    parser.add_argument("--m", type=int, default=HNSW_M)
    parser.add_argument("--ef-construction", type=int, default=HNSW_EF_CONSTRUCTION)
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from matching.core.cnn.config import configure

    configure(tf_threads=args.threads)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    base = None
    kinds = np.zeros(args.queries, bool)  # True: a copy of an indexed image's source
    if args.dim == 256 and args.datasets.is_dir():
        base, copies, unrelated = real_embeddings(args.datasets, args.images, args.views, args.seed, args.queries)
        queries = np.concatenate([copies, unrelated])
        kinds[: len(copies)] = True
        print(f"embeddings: {len(base)} base vectors from {args.images} images x {args.views + 1} views; "
              f"queries: {len(copies)} attacked copies of base images, {len(unrelated)} unrelated images; "
              f"{time.perf_counter() - t0:.0f} s")
    data = make_vectors(args.n, args.dim, base, args.seed, args.noise)
    if base is None:
        queries = make_vectors(args.queries * 2, args.dim, data[: args.n // 2], args.seed + 1, args.noise / 3)
        queries = queries[: args.queries]
        kinds[:] = True
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

    rss0 = rss_bytes()
    build_threads = args.build_threads or args.threads
    faiss.omp_set_num_threads(build_threads)
    start = time.perf_counter()
    index = VectorIndex.build(ids, data, m=args.m, ef_construction=args.ef_construction, structure=args.structure)
    build_s = time.perf_counter() - start
    faiss.omp_set_num_threads(args.threads)
    rss1 = rss_bytes()
    mem = index.memory_bytes()
    shape = (f"M={args.m} efConstruction={args.ef_construction}" if index.kind == "hnsw"
             else f"{index._index.nlist} cells" if index.kind == "ivf" else "exact")
    print(f"build: {index.kind} {shape}, n={args.n}, dim={args.dim}, "
          f"{build_s:.1f} s ({args.n / build_s:.0f} vectors/s) on {build_threads} thread(s)")
    print(f"memory: {mem / args.n:.0f} bytes/vector ({mem / 2**20:.0f} MiB; raw vectors "
          f"{4 * args.dim} B/vector); resident memory grew {(rss1 - rss0) / args.n:.0f} bytes/vector with the build")
    settings = ([("efSearch", ef) for ef in args.ef_search] if index.kind == "hnsw"
                else [("nprobe", p) for p in args.nprobe] if index.kind == "ivf" else [("exact", 0)])
    for name, value in settings:
        if name == "efSearch":
            index.ef_search = value
        elif name == "nprobe":
            index.nprobe = value
        index.search(queries[:10], 10)  # warm-up
        times, found = [], []
        for q, t in zip(queries, truth_ids, strict=True):
            s = time.perf_counter()
            hits = index.search(q, 10)[0]
            times.append(time.perf_counter() - s)
            found.append(len({i for i, _ in hits} & set(t.tolist())) / 10)
        ms, found_arr = 1e3 * np.array(times), np.array(found)
        print(f"{name}={value}: recall@10 {found_arr.mean():.4f} (copies {found_arr[kinds].mean():.4f}, "
              f"unrelated {found_arr[~kinds].mean() if (~kinds).any() else float('nan'):.4f}); query ms mean "
              f"{ms.mean():.3f} p50 {np.percentile(ms, 50):.3f} p95 {np.percentile(ms, 95):.3f} "
              f"({len(queries)} queries, one at a time)")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
