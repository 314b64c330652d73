"""Latency of one check against a large protected set, and the memory each protected image costs.

    python -m bench.check --n 1000000 [--refs 60] [--unrelated 120] [--threads 1]
        [--cache var/bench-check] [--structure ivf|hnsw] [--partial background|auto|always|never]
        [--datasets ../shared/datasets] [--seed 0] [--every K] [--explain N] [--profile FILE]

What a warm worker does for a check, timed per query: decode the upload
(``load_image`` of PNG bytes), signals (digests, pHash and PDQ with their
eight flip/rotation variants), the hash-index lookups, the CNN embedding of the
whole picture and its vector search, geometric verification of the best
candidates and, when none of that found a match, the partial-copy pass (CNN
tiles, their vector searches, verification against the enlarged tile). That
is ``Matcher.match`` over a ``MemoryStore``; the service's database store adds
one indexed SELECT and a feature-cache lookup per candidate. With
``--partial background`` (the default, as the service runs by default) the
answer is timed without the partial-copy pass (``partial="never"``, which
leaves the mark search of candidates the CNN does not find similar to the
task that follows, docs/matching.md), and for each answer that found
no copy, the partial-copy task that follows it (``check_partial_run``: the
cascade again, with the pass) is timed apart; rank 1 and false positives are
those of the final result.

The protected set (``--n`` images) is:

- ``--refs`` real references from ``../shared/datasets`` (the benchmark's
  seeded split), fully indexed: records, ORB features, hashes, embedding;
- and ``n - refs`` synthetic ones built from other dataset pictures (the
  "pool", disjoint from the references and the queries): half of their
  pHash/PDQ codes are a pool picture's codes with 6-14 (pHash) or 24-56 (PDQ)
  bits flipped, the other half uniform random; half of their embeddings are a
  pool picture's embedding (clean or under a copy attack) plus noise of norm
  1.0, the other half random unit vectors (``bench.vectorindex.make_vectors``);
  their ORB features are those of a pool picture, so a synthetic candidate
  costs a real verification; a synthetic reference whose pool picture is a
  logo with a mark (``marks.extract_mark``) has that mark, and its four
  views' embeddings plus noise of norm 1.0 are in the vector index, as the
  service indexes a logo's mark (``--no-marks`` leaves every mark out, the
  set as this benchmark built it before 2026-12-06's seventh session).

Queries: every benchmark attack (``bench.attacks``) on every reference, and
``--unrelated`` dataset pictures that are not protected. Reported: latency
p50/p95 over all queries and per group (whole-frame copies, partial copies,
unrelated), the median time of each stage, rank-1 of the true reference among
the 1M, false positives, and memory per protected image (the in-memory
indexes a worker holds; records and features live in the database and
storage). With ``--cache`` the synthetic set and the HNSW graph (~10 minutes
to build at 1M on one core) are saved and reused by the next run with the same
``--n`` and ``--seed``.
"""
from __future__ import annotations

import argparse
import io
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.vectorindex import DEFAULT_DATASETS, rss_bytes, make_vectors
from matching.core.vectorindex import DEFAULT_STRUCTURE, STRUCTURES

SYNTHETIC_BASE_ID = 1 << 40  # synthetic ids start here, far from the real references'


def _flip_bits(codes: np.ndarray, low: int, high: int, rng: np.random.Generator) -> np.ndarray:
    """Each row of ``codes`` ((n, words) uint64) with ``low..high`` random bits flipped."""
    out = codes.copy()
    n, words = codes.shape
    flips = rng.integers(low, high + 1, n)
    for bit_count in np.unique(flips):
        rows = np.flatnonzero(flips == bit_count)
        for _ in range(int(bit_count)):
            pos = rng.integers(0, 64 * words, len(rows))
            word, bit = pos // 64, (pos % 64).astype(np.uint64)
            out[rows, word] ^= np.left_shift(np.uint64(1), bit)
    return out


def _random_codes(n: int, words: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, np.iinfo(np.uint64).max, (n, words), dtype=np.uint64, endpoint=True)


def synthetic_codes(pool: np.ndarray, n: int, low: int, high: int, seed: int) -> np.ndarray:
    """``n`` codes: half pool codes with ``low..high`` bits flipped, half uniform random."""
    rng = np.random.default_rng(seed)
    words = pool.shape[1]
    near = pool[rng.integers(0, len(pool), n // 2)]
    return np.concatenate([_flip_bits(near, low, high, rng), _random_codes(n - n // 2, words, rng)])


class ScaledStore:
    """A ``ReferenceStore``: the real references' ``MemoryStore`` plus synthetic ids whose
    records come from arrays and whose features are those of a pool picture."""

    def __init__(self, real: Any, phashes: np.ndarray, pdqs: np.ndarray, pool_features: list[Any],
                 pool_marks: list[Any] | None = None) -> None:
        self.real = real
        self.phashes = phashes
        self.pdqs = pdqs
        self.pool_features = pool_features
        self.pool_marks = pool_marks

    def records(self, ids: Any) -> dict[int, Any]:
        from matching.core.matcher import RefRecord

        out = self.real.records([i for i in ids if i < SYNTHETIC_BASE_ID])
        for i in ids:
            if i >= SYNTHETIC_BASE_ID:
                k = i - SYNTHETIC_BASE_ID
                pdq = int.from_bytes(self.pdqs[k].astype(">u8").tobytes(), "big")
                out[i] = RefRecord(i, f"synthetic-{i}", f"synthetic-{i}", int(self.phashes[k, 0]), pdq, 100)
        return out

    def exact(self, *, sha256_bytes: str, sha256_pixels: str) -> list[int]:
        return self.real.exact(sha256_bytes=sha256_bytes, sha256_pixels=sha256_pixels)

    def features(self, ref_id: int) -> Any | None:
        if ref_id < SYNTHETIC_BASE_ID:
            return self.real.features(ref_id)
        return self.pool_features[(ref_id - SYNTHETIC_BASE_ID) % len(self.pool_features)]

    def mark(self, ref_id: int) -> Any | None:
        """The reference's mark (a synthetic id has its pool picture's), or None without marks."""
        if self.pool_marks is None:
            return None
        if ref_id < SYNTHETIC_BASE_ID:
            return self.real.mark(ref_id)
        return self.pool_marks[(ref_id - SYNTHETIC_BASE_ID) % len(self.pool_marks)]


def _synthetic_mark_views(pool_marks: list[Any], syn_ids: np.ndarray, embedder: Any,
                          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The vector-index entries of the synthetic references' marks: a synthetic reference whose
    pool picture has a mark gets that mark's ``MARK_VIEWS`` view embeddings, each plus noise of
    norm 1.0 (as ``make_vectors`` does to whole pictures), under its own mark-view ids, as a
    protected set of that many logos would hold them."""
    from matching.core.marks import MARK_ID_BASE, MARK_SLOTS, MARK_VIEWS, mark_vector_id, mark_views

    have = [k for k, m in enumerate(pool_marks) if m is not None]
    views = np.zeros((len(pool_marks), MARK_VIEWS, 256), np.float32)
    for k in have:
        views[k] = embedder.embed(mark_views(pool_marks[k]))
    chosen = syn_ids[np.isin((syn_ids - SYNTHETIC_BASE_ID) % len(pool_marks), have)]
    out = np.empty((len(chosen) * MARK_VIEWS, 256), np.float32)
    rng = np.random.default_rng([seed, 11])
    for s in range(0, len(chosen), 65536):
        block = chosen[s: s + 65536]
        base = views[(block - SYNTHETIC_BASE_ID) % len(pool_marks)].reshape(-1, 256)
        noisy = base + rng.standard_normal(base.shape, dtype=np.float32) / np.sqrt(base.shape[1])
        out[s * MARK_VIEWS: (s + len(block)) * MARK_VIEWS] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    ids = (MARK_ID_BASE + chosen[:, None] * MARK_SLOTS + np.arange(MARK_VIEWS)).ravel()
    assert not len(ids) or ids[-1] == mark_vector_id(int(chosen[-1]), MARK_VIEWS - 1)
    return ids.astype(np.int64), out


def _pool_items(datasets: Path, exclude: set[str], count: int, seed: int) -> list[Any]:
    from bench.dataset import Item, file_loader, photo_paths

    photos = [p for p in photo_paths(datasets) if p.relative_to(datasets).as_posix() not in exclude]
    logos = [p for p in sorted((datasets / "logos").glob("*.png"))
             if p.relative_to(datasets).as_posix() not in exclude]
    rng = np.random.default_rng([seed, 7])
    n_photos = min(len(photos), count // 8)
    chosen = ([photos[i] for i in rng.permutation(len(photos))[:n_photos]]
              + [logos[i] for i in rng.permutation(len(logos))[: count - n_photos]])
    return [Item(p.relative_to(datasets).as_posix(), "pool", file_loader(p)) for p in chosen]


def deep_nbytes(obj: Any, _seen: set[int] | None = None) -> int:
    """Bytes of the numpy arrays reachable from ``obj`` through attributes, lists, tuples and dicts."""
    seen = _seen if _seen is not None else set()
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, dict):
        return sum(deep_nbytes(v, seen) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(deep_nbytes(v, seen) for v in obj)
    if hasattr(obj, "__dict__"):
        return deep_nbytes(vars(obj), seen)
    return 0


def _percentiles(values: list[float]) -> str:
    if not values:
        return "n/a"
    a = np.asarray(values)
    return f"p50 {np.percentile(a, 50):6.1f}  p95 {np.percentile(a, 95):6.1f}  mean {a.mean():6.1f}  (n={len(a)})"


def _reach(vectors: Any, embedder: Any, queries: list[tuple[str, int | None, bytes]], k: int) -> int:
    """Share of whole-frame copies whose reference the vector index returns in its top ``k``."""
    from matching.core.loading import load_image

    copies = [(ref, embedder.embed_one(load_image(data).image)) for group, ref, data in queries
              if group == "whole-frame copy"]
    settings = ([("nprobe", v) for v in (8, 16, 32, 48, 64, 96, 128)] if vectors.kind == "ivf"
                else [("efSearch", v) for v in (64, 128, 256, 512)])
    for name, value in settings:
        if name == "nprobe":
            vectors.nprobe = value
        else:
            vectors.ef_search = value
        times, found = [], 0
        for ref, vector in copies:
            start = time.perf_counter()
            hits = vectors.search(vector, k)[0]
            times.append(1000 * (time.perf_counter() - start))
            found += any(i == ref for i, _ in hits)
        print(f"{vectors.kind} {name}={value}: reference in the top {k} for {found / len(copies):.3f} of "
              f"{len(copies)} whole-frame copies; search p50 {np.percentile(times, 50):.2f} ms")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="protected images in the index (default 1M)")
    parser.add_argument("--refs", type=int, default=60, help="real references (each attacked 19 ways)")
    parser.add_argument("--unrelated", type=int, default=120, help="unrelated query pictures")
    parser.add_argument("--pool", type=int, default=400, help="dataset pictures the synthetic set is made from")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow and FAISS threads of the worker")
    parser.add_argument("--partial", default="background", choices=("background", "auto", "always", "never"),
                        help="background (the service's default): time the answer (no partial-copy pass), then, "
                             "when it found no copy, the partial-copy task (the cascade with the pass) apart; "
                             "auto/always/never: one Matcher.match call in that mode")
    parser.add_argument("--structure", default=DEFAULT_STRUCTURE, choices=STRUCTURES,
                        help="the vector index's structure above 10k vectors")
    parser.add_argument("--cache", type=Path, default=None, help="folder to keep the synthetic set and HNSW graph")
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--include-training-images", action="store_true",
                        help="take the real references from every image, not only the fifth the CNN head's "
                             "training holds out")
    parser.add_argument("--no-marks", action="store_true",
                        help="leave the logos' marks out (no mark views in the vector index, no mark search): "
                             "the protected set as this benchmark built it before marks existed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--explain", type=int, default=0, help="print this many missed copies with their top hits")
    parser.add_argument("--profile", type=Path, default=None,
                        help="write a cProfile of the partial-copy tasks to this file (pstats format)")
    parser.add_argument("--every", type=int, default=1, help="query every k-th copy only (a quicker look)")
    parser.add_argument("--reach", action="store_true",
                        help="only measure how often a whole-frame copy's reference is among the vector index's "
                             "top 6 for its whole-image embedding, at several search settings")
    args = parser.parse_args(argv)
    if args.n < args.refs:
        parser.error("--n must be at least --refs")

    from matching.core.cnn.config import configure

    configure(tf_threads=args.threads)
    import faiss

    from bench.attacks import ATTACK_NAMES, PARTIAL_COPY_ATTACKS
    from bench.dataset import build_benchmark
    from matching.core.cnn.embedder import get_embedder
    from matching.core.hashindex import make_hash_index
    from matching.core.loading import load_image
    from matching.core.matcher import Indexes, Matcher, Thresholds, index_references
    from matching.core.vectorindex import VectorIndex
    from training import augment

    faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    bench = build_benchmark(args.datasets, refs=args.refs, distractors=args.unrelated, seed=args.seed,
                            held_out_only=not args.include_training_images)
    unrelated = bench.unrelated[: args.unrelated]
    embedder = get_embedder()
    real = index_references(bench.reference_images(), embedder=embedder)
    exclude = {item.key for item in bench.references} | {item.key for item in bench.unrelated}
    pool_items = _pool_items(args.datasets, exclude, args.pool, args.seed)
    pool = index_references([(k, item.image()) for k, item in enumerate(pool_items)])
    pool_features = [pool.store.features(k) for k in range(len(pool_items))]
    pool_marks = None if args.no_marks else [pool.store.mark(k) for k in range(len(pool_items))]
    print(f"real references: {len(real.ids)}; pool: {len(pool_items)} pictures; {time.perf_counter() - t0:.0f} s",
          flush=True)

    n_syn = args.n - len(real.ids)
    syn_ids = SYNTHETIC_BASE_ID + np.arange(n_syn, dtype=np.int64)
    cache = args.cache / f"n{args.n}-refs{args.refs}-pool{args.pool}-seed{args.seed}" if args.cache else None
    vectors_file = cache / f"vectors-{args.structure}{'' if args.no_marks else '-marks'}.faiss" if cache else None
    codes_file = cache / "codes.npz" if cache else None
    start = time.perf_counter()
    if codes_file is not None and codes_file.exists():
        with np.load(codes_file, allow_pickle=False) as z:
            syn_phash, syn_pdq = z["phash"], z["pdq"]
    else:
        pool_pdq = pool.pdq_words if len(pool.pdq_words) else _random_codes(1, 4, np.random.default_rng(0))
        syn_phash = synthetic_codes(pool.phashes, n_syn, 6, 14, args.seed + 1)
        syn_pdq = synthetic_codes(pool_pdq, n_syn, 24, 56, args.seed + 2)
        if codes_file is not None:
            codes_file.parent.mkdir(parents=True, exist_ok=True)
            np.savez(codes_file, phash=syn_phash, pdq=syn_pdq)
    rss0 = rss_bytes()
    phash_index = make_hash_index(1, codes=np.concatenate([real.phashes, syn_phash]),
                                  ids=np.concatenate([real.ids, syn_ids]))
    pdq_index = make_hash_index(4, codes=np.concatenate([real.pdq_words, syn_pdq]),
                                ids=np.concatenate([real.pdq_ids, syn_ids]))
    rss2 = rss_bytes()
    hash_s = time.perf_counter() - start
    print(f"hash indexes ({args.n} pHash, {len(real.pdq_ids) + n_syn} PDQ codes): built in {hash_s:.1f} s", flush=True)

    start = time.perf_counter()
    if vectors_file is not None and vectors_file.exists():
        vectors = VectorIndex.load(vectors_file)
        how = f"loaded from {vectors_file}"
    else:
        # Pool embeddings, clean and under two copy attacks, seed the synthetic clusters.
        rng = np.random.default_rng([args.seed, 3])
        pool_images = [item.image() for item in pool_items]
        base = embedder.embed(pool_images + [augment.random_view(im, rng) for im in pool_images for _ in range(2)])
        data = make_vectors(n_syn, 256, base, args.seed, 1.0)
        ids, parts = [real.ids, syn_ids], [real.vectors, data]
        if pool_marks is not None:
            mark_ids, mark_data = _synthetic_mark_views(pool_marks, syn_ids, embedder, args.seed)
            if real.mark_vectors is not None:  # None when no real reference has a mark
                ids.append(real.mark_ids)
                parts.append(real.mark_vectors)
            ids.append(mark_ids)
            parts.append(mark_data)
            print(f"mark views: {len(real.mark_ids)} of the real references, {len(mark_ids)} synthetic", flush=True)
        vectors = VectorIndex.build(np.concatenate(ids), np.concatenate(parts), structure=args.structure)
        del data, parts
        how = "built"
        if vectors_file is not None:
            vectors.save(vectors_file)
    rss3 = rss_bytes()
    print(f"vector index ({vectors.kind}, {len(vectors)} vectors): {how} in {time.perf_counter() - start:.0f} s",
          flush=True)

    store = ScaledStore(real.store, syn_phash, syn_pdq, pool_features, pool_marks)
    matcher = Matcher(store=store, indexes=Indexes(phash=phash_index, pdq=pdq_index, vectors=vectors),
                      thresholds=Thresholds.load(), embedder=embedder)

    queries: list[tuple[str, int | None, bytes]] = []
    for k, q in enumerate(bench.attacked_queries(list(ATTACK_NAMES))):
        if k % args.every:
            continue
        group = "partial copy" if q.attack in PARTIAL_COPY_ATTACKS else "whole-frame copy"
        buf = io.BytesIO()
        q.image.convert("RGB").save(buf, format="PNG")
        queries.append((group, q.ref_id, buf.getvalue()))
    for item in unrelated:
        buf = io.BytesIO()
        item.image().convert("RGB").save(buf, format="PNG")
        queries.append(("unrelated", None, buf.getvalue()))
    if args.reach:
        return _reach(vectors, embedder, queries, matcher.thresholds.verify_top)
    background = args.partial == "background"
    first_mode = "never" if background else args.partial
    for _group, _ref, data_bytes in queries[:3]:  # warm-up: graph tracing, caches
        matcher.match(load_image(data_bytes), partial="always")

    times: dict[str, list[float]] = {}
    later: dict[str, list[float]] = {}  # background: the partial-copy task, when it ran
    stages: dict[str, list[float]] = {}
    rank1: dict[str, list[bool]] = {}
    false_positives = 0
    profile = None
    if args.profile is not None:
        import cProfile

        profile = cProfile.Profile()
    for group, ref_id, data_bytes in queries:
        start = time.perf_counter()
        outcome = matcher.match(load_image(data_bytes), partial=first_mode)
        ms = 1000 * (time.perf_counter() - start)
        times.setdefault(group, []).append(ms)
        for name, value in outcome.timings_ms.items():
            stages.setdefault(name, []).append(value)
        if background and not outcome.positives:
            # What check_partial_run does on a worker after the answer: the cascade with the pass.
            start = time.perf_counter()
            if profile is not None:
                profile.enable()
            outcome = matcher.match(load_image(data_bytes), partial="auto")
            if profile is not None:
                profile.disable()
            later.setdefault(group, []).append(1000 * (time.perf_counter() - start))
        if ref_id is None:
            false_positives += bool(outcome.positives)
        else:
            top = outcome.decisions[0].reference_id if outcome.decisions else None
            rank1.setdefault(group, []).append(top == ref_id)
            if top != ref_id and args.explain > 0:
                args.explain -= 1
                true = next((d for d in outcome.decisions if d.reference_id == ref_id), None)
                print(f"missed ({group}, {len(outcome.decisions)} candidates): top {outcome.decisions[:2]}; "
                      f"true {true}", flush=True)

    if profile is not None:
        profile.dump_stats(str(args.profile))
        print(f"profile of the partial-copy tasks: {args.profile} (python -m pstats)", flush=True)
    everything = [v for values in times.values() for v in values]
    what = "the answer (no partial-copy pass)" if background else f"Matcher.match(partial={args.partial!r})"
    print(f"\ncheck latency, ms, one query at a time on {args.threads} thread(s), {args.n:,} protected images, "
          f"{what}, vector index {vectors.kind} (nprobe {getattr(vectors, 'nprobe', '-')}):")
    print(f"  all queries        {_percentiles(everything)}")
    for group in ("whole-frame copy", "partial copy", "unrelated"):
        print(f"  {group:<18} {_percentiles(times.get(group, []))}")
    if background:
        print("the partial-copy task that follows an answer with no copy (ms; its own latency, off the answer's path):")
        print(f"  all that ran it    {_percentiles([v for values in later.values() for v in values])}")
        for group in ("whole-frame copy", "partial copy", "unrelated"):
            print(f"  {group:<18} {_percentiles(later.get(group, []))}")
    print("stage times of the answer, ms (over all queries; a stage that did not run counts 0):")
    for name, values in stages.items():
        padded = values + [0.0] * (len(everything) - len(values))
        print(f"  {name:<14} p50 {np.percentile(padded, 50):6.1f}  p95 {np.percentile(padded, 95):6.1f}")
    for group, hits in rank1.items():
        print(f"rank-1 among {args.n:,}: {group} {np.mean(hits):.3f} ({sum(hits)}/{len(hits)})")
    print(f"false positives: {false_positives}/{len(unrelated)} unrelated queries")
    n = args.n
    phash_b, pdq_b, vec_b = deep_nbytes(phash_index), deep_nbytes(pdq_index), vectors.memory_bytes()
    print(f"memory per protected image (worker, in RAM): pHash MIH {phash_b / n:.0f} B, PDQ MIH {pdq_b / n:.0f} B, "
          f"vectors {vec_b / n:.0f} B (FAISS), total {(phash_b + pdq_b + vec_b) / n:.0f} B; resident growth while "
          f"building: hashes {(rss2 - rss0) / n:.0f} B, vectors {(rss3 - rss2) / n:.0f} B; "
          f"process RSS {rss3 / 2**30:.2f} GiB")
    print(f"total {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
