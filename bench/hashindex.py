"""Exact Hamming indexes against exhaustive search, on realistic hash banks.

    python -m bench.hashindex --n 100000,1000000,10000000 --words 1 --radius 10
    python -m bench.hashindex --n 100000,1000000 --words 4 --radius 31

Codes: real pHash (W=1) or PDQ (W=4) of the photos and logos in
``../shared/datasets`` under resize, crop, JPEG, brightness, contrast, blur
and greyscale edits (a few thousand, cached with ``--cache``); then, to
reach n, near-duplicate clusters around pseudo-images (each byte copied
from a randomly chosen real hash, which keeps the skewed bit statistics of
real hashes) with small bit noise, and half uniform random codes. Queries:
half near duplicates (held-out edits of stored photos, and stored codes
with bit noise), half unrelated (hashes of logos not stored, random codes).

Each structure (VPTree, MIH, FAISS IndexBinaryFlat, a numpy scan) is built,
measured (build time, memory, snapshot size and load time, radius and k-NN
query times) and dropped before the next; every answer must equal the
numpy scan's or the run fails. One thread: FAISS is pinned to one.
"""
from __future__ import annotations

import argparse
import gc
import io
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from bench.vptree import exhaustive_radius, flip_bits
from matching.core.hamming import ranked_pairs
from matching.core.hashindex import FaissBinaryIndex, MIHIndex, knn_scan
from matching.core.signals import compute_signals, pdq256, pdq_dihedral, phash64, phash_dihedral, query_signals
from matching.core.vptree import VPTree

DEFAULT_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


# -- real hashes -------------------------------------------------------------------------

def jpeg_roundtrip(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def resized(img: Image.Image, f: float) -> Image.Image:
    return img.resize((max(8, int(img.width * f)), max(8, int(img.height * f))), Image.BILINEAR)


def _crop(img: Image.Image, keep: float, corner: bool = False) -> Image.Image:
    w, h = int(img.width * keep), int(img.height * keep)
    x, y = (0, 0) if corner else ((img.width - w) // 2, (img.height - h) // 2)
    return img.crop((x, y, x + w, y + h))


Edit = Callable[[Image.Image], Image.Image]
STORE_EDITS: list[Edit] = [
    lambda im: im,
    lambda im: resized(im, 0.5),
    lambda im: resized(im, 0.3),
    lambda im: jpeg_roundtrip(im, 30),
    lambda im: jpeg_roundtrip(im, 70),
    lambda im: _crop(im, 0.9),
    lambda im: _crop(im, 0.8),
    lambda im: ImageEnhance.Brightness(im).enhance(1.2),
    lambda im: ImageEnhance.Brightness(im).enhance(0.8),
    lambda im: ImageEnhance.Contrast(im).enhance(1.3),
    lambda im: im.filter(ImageFilter.GaussianBlur(1.0)),
    lambda im: im.convert("L").convert("RGB"),
]
# Edits never stored: queries made with them are true near duplicates the
# index has not seen bit for bit.
QUERY_EDITS: list[Edit] = [
    lambda im: jpeg_roundtrip(resized(im, 0.7), 50),
    lambda im: ImageEnhance.Brightness(_crop(im, 0.85)).enhance(1.1),
    lambda im: resized(ImageEnhance.Contrast(im).enhance(0.8), 0.4),
    lambda im: _crop(im, 0.9, corner=True),
]


def _hashes(img: Image.Image) -> tuple[int, int]:
    return phash64(img), pdq256(img)[0]


def _words(values: list[int], words: int) -> np.ndarray:
    mask = (1 << 64) - 1
    return np.array([[(v >> (64 * (words - 1 - i))) & mask for i in range(words)] for v in values],
                    dtype=np.uint64).reshape(-1, words)


def real_codes(datasets: Path, cache: Path | None, logos: int = 600, unrelated: int = 300) -> dict[str, np.ndarray]:
    """pHash and PDQ of edited dataset images: ``store_*`` (stored edits,
    ``store_group`` = source image), ``near_*`` (held-out edits of stored
    photos) and ``far_*`` (logos that are never stored)."""
    if cache is not None and cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    photos = sorted(p for p in (datasets / "photos").rglob("*") if p.is_file())
    logo_files = sorted((datasets / "logos").glob("*.png"))
    rng = np.random.default_rng(7)
    picked = [logo_files[i] for i in rng.permutation(len(logo_files))[:logos + unrelated]]
    out: dict[str, list[Any]] = {k: [] for k in ("store_phash", "store_pdq", "store_group",
                                                 "near_phash", "near_pdq", "far_phash", "far_pdq")}

    def add(prefix: str, img: Image.Image, group: int | None = None) -> None:
        ph, pdq = _hashes(img)
        out[f"{prefix}_phash"].append(ph)
        out[f"{prefix}_pdq"].append(pdq)
        if group is not None:
            out["store_group"].append(group)

    t0 = time.perf_counter()
    for g, path in enumerate(photos):
        img = Image.open(path).convert("RGB")
        for edit in STORE_EDITS:
            add("store", edit(img), g)
        for edit in QUERY_EDITS:
            add("near", edit(img))
    for g, path in enumerate(picked[:logos], start=len(photos)):
        img = Image.open(path).convert("RGB")
        for edit in STORE_EDITS[:4]:
            add("store", edit(img), g)
    for path in picked[logos:]:
        add("far", Image.open(path).convert("RGB"))
    print(f"hashed {sum(len(v) for k, v in out.items() if k.endswith('_phash'))} images "
          f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    result = {
        k: (np.array(v, dtype=np.int64) if k == "store_group"
            else _words(v, 1 if k.endswith("phash") else 4))
        for k, v in out.items()
    }
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **result)
    return result


# -- synthetic banks ----------------------------------------------------------------------

def _recombine(real: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Pseudo-image codes: byte b of each is byte b of a random real code."""
    by = real.view(np.uint8).reshape(len(real), -1)
    pick = rng.integers(0, len(real), size=(count, by.shape[1]))
    return np.ascontiguousarray(by[pick, np.arange(by.shape[1])]).view(np.uint64).reshape(count, -1)


def make_bank(real: dict[str, np.ndarray], n: int, words: int, *, seed: int = 0) -> np.ndarray:
    """``n`` codes: the real stored hashes, near-duplicate clusters around
    pseudo-images for half of the rest, uniform random codes for the other half."""
    rng = np.random.default_rng(seed)
    key = "phash" if words == 1 else "pdq"
    stored = real[f"store_{key}"][:n]
    n_cl = (n - len(stored)) // 2
    noise = 6 if words == 1 else 24  # typical near-duplicate distances of each hash
    sizes = np.minimum(rng.geometric(0.1, size=max(1, n_cl // 10 + 1)), 50)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), n_cl) + 1]
    centres = _recombine(real[f"store_{key}"], len(sizes), rng)
    members = np.repeat(centres, sizes, axis=0)[:n_cl]
    members = flip_bits(members, rng.integers(0, noise + 1, size=len(members)), rng)
    rand = rng.integers(0, 2**64, size=(n - len(stored) - len(members), words), dtype=np.uint64)
    return rng.permutation(np.concatenate((stored, members, rand)))


def make_queries(real: dict[str, np.ndarray], bank: np.ndarray, count: int, *, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    words = bank.shape[1]
    key = "phash" if words == 1 else "pdq"
    near, far = count // 2, count - count // 2
    held = real[f"near_{key}"]
    a = held[rng.permutation(len(held))[: near // 2]]
    b = flip_bits(bank[rng.integers(0, len(bank), size=near - len(a))],
                  rng.integers(0, (4 if words == 1 else 16) + 1, size=near - len(a)), rng)
    logos = real[f"far_{key}"]
    c = logos[rng.permutation(len(logos))[: far // 2]]
    d = rng.integers(0, 2**64, size=(far - len(c), words), dtype=np.uint64)
    return np.concatenate((a, b, c, d))


# -- measurement -----------------------------------------------------------------------------

def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _array_bytes(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of the numpy arrays an index holds (attributes, segments, lists)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, (list, tuple)):
        return sum(_array_bytes(x, seen) for x in obj)
    if isinstance(obj, dict):
        return sum(_array_bytes(x, seen) for x in obj.values())
    if hasattr(obj, "__dict__") and type(obj).__module__.startswith(("matching.", "__main__")):
        return sum(_array_bytes(x, seen) for k, x in vars(obj).items() if k != "_plans")
    return 0


def _time_queries(fn: Callable[[np.ndarray], Any], queries: np.ndarray,
                  repeats: int) -> tuple[list[Any], np.ndarray]:
    """Answers and per-query times in ms: the best of ``repeats`` passes, so
    that other processes on a shared machine do not end up in the figures."""
    for q in queries[:3]:
        fn(q)  # warm caches and lazily built plans
    times = np.full(len(queries), np.inf)
    out: list[Any] = []
    for rep in range(repeats):
        for j, q in enumerate(queries):
            t0 = time.perf_counter()
            ans = fn(q)
            times[j] = min(times[j], time.perf_counter() - t0)
            if rep == 0:
                out.append(ans)
    return out, times * 1000


class _Scan:
    """The exhaustive numpy baseline: word-major codes, blocked xor+popcount;
    k-NN keeps only codes within the running k-th distance of each block."""

    def __init__(self, codes: np.ndarray, ids: np.ndarray) -> None:
        self.cols, self.ids = np.ascontiguousarray(codes.T), ids

    def query_radius(self, q: np.ndarray, r: int) -> list[tuple[int, int]]:
        return exhaustive_radius(self.cols, self.ids, q, r)

    def query_knn(self, q: np.ndarray, k: int) -> list[tuple[int, int]]:
        pos, d = knn_scan(self.cols, q, k)
        return ranked_pairs(self.ids[pos], d, k)

    def save(self, path: str) -> None:
        np.savez(path, cols=self.cols, ids=self.ids)

    @classmethod
    def load(cls, path: str) -> _Scan:
        with np.load(path, allow_pickle=False) as z:
            s = cls.__new__(cls)
            s.cols, s.ids = z["cols"], z["ids"]
            return s


STRUCTURES: dict[str, tuple[Callable[..., Any], Callable[[str], Any]]] = {
    "scan": (lambda c, i, a: _Scan(c, i), _Scan.load),
    "mih": (lambda c, i, a: MIHIndex.build(c, i, substrings=a.substrings), MIHIndex.load),
    "faiss": (lambda c, i, a: FaissBinaryIndex.build(c, i), FaissBinaryIndex.load),
    "vptree": (lambda c, i, a: VPTree.build(c, i), VPTree.load),
}


def run(n: int, args: argparse.Namespace, real: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    bank = make_bank(real, n, args.words)
    ids = np.arange(n, dtype=np.int64)
    queries = make_queries(real, bank, args.queries)
    rows: list[dict[str, Any]] = []
    reference: dict[str, list[Any]] = {}
    for name in ["scan"] + [s for s in args.structures if s != "scan"]:
        build, load = STRUCTURES[name]
        gc.collect()
        rss0 = _rss()
        t0 = time.perf_counter()
        index = build(bank, ids, args)
        build_s = time.perf_counter() - t0
        # numpy arrays counted exactly; FAISS's C++ memory as resident-set growth.
        mem = (max(_rss() - rss0, 0) if name == "faiss" else _array_bytes(index)) / n
        with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
            path = os.path.join(tmp, "snap.npz")
            index.save(path)
            size = os.path.getsize(path) / n
            del index
            gc.collect()
            t0 = time.perf_counter()
            index = load(path)
            load_s = time.perf_counter() - t0
        r_out, r_ms = _time_queries(lambda q: index.query_radius(q, args.radius), queries, args.repeats)
        k_out, k_ms = _time_queries(lambda q: index.query_knn(q, args.k), queries, args.repeats)
        if name == "scan":
            reference = {"radius": r_out, "knn": k_out}
        elif r_out != reference["radius"] or k_out != reference["knn"]:
            raise SystemExit(f"MISMATCH: {name} differs from the exhaustive scan at n={n}")
        half = len(queries) // 2
        rows.append({
            "n": n, "structure": name, "build_s": build_s, "bytes_per_code": mem, "file_bytes_per_code": size,
            "load_s": load_s, "radius_mean": r_ms.mean(), "radius_p95": np.percentile(r_ms, 95),
            "radius_near": r_ms[:half].mean(), "radius_far": r_ms[half:].mean(),
            "knn_mean": k_ms.mean(), "knn_p95": np.percentile(k_ms, 95),
            "knn_near": k_ms[:half].mean(), "knn_far": k_ms[half:].mean(),
            "hits": sum(len(r) for r in r_out) / len(queries),
        })
        print(_fmt(rows[-1]), flush=True)
        del index
    return rows


def time_signals(repeats: int = 5, number: int = 20) -> None:
    """ms per call of each hash on a 1024x683 JPEG photo (best of ``repeats``)."""
    from skimage import data

    from matching.core.loading import load_image

    photo = Image.fromarray(data.coffee()).resize((1024, 683), Image.LANCZOS)
    buf = io.BytesIO()
    photo.save(buf, "JPEG", quality=90)
    loaded = load_image(buf.getvalue())
    rows: list[tuple[str, Callable[[], Any]]] = [
        ("phash64", lambda: phash64(loaded.image)),
        ("phash_dihedral (8 variants)", lambda: phash_dihedral(loaded.image)),
        ("pdq256", lambda: pdq256(loaded.image)),
        ("pdq_dihedral (8 variants)", lambda: pdq_dihedral(loaded.image)),
        ("compute_signals (pHash + PDQ)", lambda: compute_signals(loaded)),
        ("query_signals (+ 16 variants)", lambda: query_signals(loaded)),
    ]
    print("| function, 1024x683 JPEG photo | ms per image |\n|---|---|")
    for name, fn in rows:
        fn()
        best = min(_timeit(fn, number) for _ in range(repeats))
        print(f"| {name} | {best:.2f} |")


def _timeit(fn: Callable[[], Any], number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) * 1000 / number


HEADER = ("| n | structure | build s | memory B/code | file B/code | load s | radius mean ms | radius p95 ms "
          "| (near / unrelated) | k-NN mean ms | k-NN p95 ms | (near / unrelated) |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|")


def _fmt(r: dict[str, Any]) -> str:
    return (f"| {r['n']:,} | {r['structure']} | {r['build_s']:.2f} | {r['bytes_per_code']:.0f} "
            f"| {r['file_bytes_per_code']:.0f} | {r['load_s']:.2f} | {r['radius_mean']:.3f} | {r['radius_p95']:.3f} "
            f"| {r['radius_near']:.3f} / {r['radius_far']:.3f} | {r['knn_mean']:.3f} | {r['knn_p95']:.3f} "
            f"| {r['knn_near']:.3f} / {r['knn_far']:.3f} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="100000", help="comma-separated bank sizes")
    ap.add_argument("--words", type=int, choices=(1, 4), default=1, help="1 = pHash, 4 = PDQ")
    ap.add_argument("--radius", type=int, default=10)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--structures", default="vptree,mih,faiss", help="besides the numpy scan")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the queries; each query's best counts")
    ap.add_argument("--substrings", type=int, default=None, help="MIH m (default: auto)")
    ap.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    ap.add_argument("--cache", type=Path, default=None, help="npz file caching the real hashes")
    ap.add_argument("--tmp", default=None, help="directory for snapshot files")
    ap.add_argument("--time-signals", action="store_true", help="only time the hash functions")
    args = ap.parse_args(argv)
    if args.time_signals:
        time_signals()
        return
    args.structures = [s for s in args.structures.split(",") if s]
    import faiss

    faiss.omp_set_num_threads(1)
    real = real_codes(args.datasets, args.cache)
    print(f"words={args.words} radius={args.radius} k={args.k} queries={args.queries} "
          f"(half near duplicates); real stored codes: {len(real['store_group'])}; one thread")
    print(HEADER, flush=True)
    for n in (int(x) for x in args.n.split(",")):
        run(n, args, real)


if __name__ == "__main__":
    main()
