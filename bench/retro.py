"""Retroactive re-check benchmark: N past suspects searched for copies of M newly protected images.

    python -m bench.retro --suspects 100000 --new 100

The new references are real pictures of the evaluation dataset (photos and logos), indexed as the
service indexes them (signals, ORB features, CNN embedding). The suspects are what
``SuspectSignals`` keeps of each: eight pHash and eight PDQ variants and float16 CNN embeddings of
the whole picture and its 13 partial-copy tiles. Most are synthetic (random hashes; embeddings
drawn near real embeddings of other dataset pictures, so their cosines to the references are as
spread as real ones, not the near-zero of random vectors); a few are real edited copies of new
references (``--planted``, one attack each), planted among them so recall is measured. Their rows
are streamed in batches through ``matching.core.retro.search`` exactly as ``matching/retro.py``
streams database rows, and each candidate pair is judged with the ``Matcher``: the planted ones
with their pixels (their check's upload is kept), the chance candidates on signals alone.

Reports wall and CPU time of each stage, peak Python/numpy memory (tracemalloc) and the process's
peak RSS, candidates, and found/planted. Making the synthetic rows is timed apart (in the service
they come from the database).
"""
from __future__ import annotations

import argparse
import io
import json
import resource
import sys
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from matching.core import retro as core
from matching.core.loading import load_image
from matching.core.matcher import IndexedReferences, Matcher, Thresholds, index_references
from matching.core.signals import PDQ_MIN_QUALITY, query_signals

from .attacks import ATTACKS
from .dataset import PHOTO_SUFFIXES, as_rgb, default_dataset_root, photo_paths

PLANTED_ATTACKS = ["resize_30", "jpeg_q15", "crop_centre_60", "rotate_7", "mirror", "caption_bar",
                   "border_screenshot", "grayscale", "rotate_90", "brightness_contrast", "crop_corner_40",
                   "collage_2x2"]
WORK_SIDE = 640  # pictures are reduced to this long side first: the cost measured is the search's


def _pictures(root: Path, count: int, seed: int) -> list[Path]:
    paths = photo_paths(root) + sorted(p for p in (root / "logos").glob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
    if len(paths) < count:
        raise SystemExit(f"{root} holds {len(paths)} pictures; {count} are needed")
    order = np.random.default_rng(seed).permutation(len(paths))[:count]
    return [paths[i] for i in order]


def _open(path: Path) -> Image.Image:
    image = as_rgb(Image.open(path))
    image.thumbnail((WORK_SIDE, WORK_SIDE))
    return image


def _loaded(image: Image.Image) -> Any:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)
    return load_image(buf.getvalue())


@dataclass
class Planted:
    suspect_id: int
    reference_id: int
    attack: str
    loaded: Any
    row: tuple[int, str, str, bytes, bytes, bytes | None, bytes | None]


def _suspect_row(suspect_id: int, signals: dict[str, Any], whole: Any, tiles: Any
                 ) -> tuple[int, str, str, bytes, bytes, bytes | None, bytes | None]:
    """A suspect as ``SuspectSignals`` stores it (matching/suspects.py)."""
    pdq = core.hash_bytes(signals["pdq_variants"], 4) if signals["pdq_quality"] >= PDQ_MIN_QUALITY else b""
    return (suspect_id, signals["sha256_bytes"], signals["sha256_pixels"], core.hash_bytes(signals["phash_variants"], 1),
            pdq, core.embedding_bytes(whole) if whole is not None else None,
            core.embedding_bytes(tiles) if tiles is not None else None)


def _synthetic_rows(ids: np.ndarray, pool: np.ndarray | None, rng: np.random.Generator, tiles: int
                    ) -> list[tuple[int, str, str, bytes, bytes, bytes | None, bytes | None]]:
    m = len(ids)
    phash = rng.integers(0, 2**63, size=(m, 8), dtype=np.int64).astype(">u8")
    pdq = rng.integers(0, 2**63, size=(m, 8 * 4), dtype=np.int64).astype(">u8")
    whole = grid = None
    if pool is not None:
        d = pool.shape[1]
        vectors = pool[rng.integers(0, len(pool), size=m * (1 + tiles))].astype(np.float32)
        vectors += rng.standard_normal(size=vectors.shape, dtype=np.float32) * np.float32(0.5 / np.sqrt(d))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors.astype(np.float16)
        whole, grid = vectors[:m], vectors[m:].reshape(m, tiles, d)
    return [(int(ids[i]), f"s{ids[i]}", f"p{ids[i]}", phash[i].tobytes(), pdq[i].tobytes(),
             whole[i].tobytes() if whole is not None else None,
             grid[i].tobytes() if grid is not None and tiles else None) for i in range(m)]


def _signals_of(row: tuple[int, str, str, bytes, bytes, bytes | None, bytes | None]) -> dict[str, Any]:
    return core.stored_signals(sha256_bytes=row[1], sha256_pixels=row[2], phash_variants=row[3],
                               pdq_variants=row[4], pdq_quality=100 if row[4] else 0)


class _Clock:
    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def add(self, name: str, wall: float, cpu: float) -> None:
        self.wall[name] = self.wall.get(name, 0.0) + wall
        self.cpu[name] = self.cpu.get(name, 0.0) + cpu


def _timed(clock: _Clock, name: str) -> Any:
    class _Lap:
        def __enter__(self) -> None:
            self.w, self.c = time.perf_counter(), time.process_time()

        def __exit__(self, *exc: object) -> None:
            clock.add(name, time.perf_counter() - self.w, time.process_time() - self.c)
    return _Lap()


def run(*, suspects: int, new: int, planted: int, batch: int, tiles: int, pool_size: int, cnn: bool, seed: int,
        root: Path) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    clock = _Clock()
    embedder = None
    if cnn:
        from matching.core.cnn.embedder import get_embedder

        embedder = get_embedder()
    pictures = _pictures(root, new + pool_size, seed)
    with _timed(clock, "index the new references (done by indexing, not the re-check)"):
        refs_images = [(i + 1, _open(p)) for i, p in enumerate(pictures[:new])]
        indexed: IndexedReferences = index_references(refs_images, embedder=embedder)
    pool = None
    with _timed(clock, "embed the pool the synthetic embeddings are drawn near"):
        if embedder is not None:
            pool = np.concatenate([embedder.embed_crops(_open(p), whole=True)[1] for p in pictures[new:]])
    # Planted copies: one attack each on a real reference, kept as a check would have kept them.
    slots = np.linspace(suspects // (planted + 1), suspects - 1, planted).astype(np.int64) + 1 if planted else []
    plants: dict[int, Planted] = {}
    by_id = dict(refs_images)
    with _timed(clock, "make the planted copies (their checks)"):
        for n, suspect_id in enumerate(slots):
            attack = PLANTED_ATTACKS[n % len(PLANTED_ATTACKS)]
            ref_id = int(n % new) + 1
            copy = ATTACKS[attack](by_id[ref_id], np.random.default_rng([seed, n]),
                                   lambda r: _open(pictures[new + int(r.integers(0, pool_size))])).image
            loaded = _loaded(copy)
            whole = grid = None
            if embedder is not None:
                whole = embedder.embed_one(loaded.image)
                grid = embedder.embed_crops(loaded.image, whole=False)[1]
            plants[int(suspect_id)] = Planted(int(suspect_id), ref_id, attack, loaded,
                                              _suspect_row(int(suspect_id), query_signals(loaded), whole, grid))
    thresholds = Thresholds.load(cnn=embedder is not None)
    records = indexed.store.records([int(i) for i in indexed.ids])
    new_refs = core.NewReferences.build([
        (int(i), int(indexed.phashes[k, 0]), records[int(i)].pdq, records[int(i)].sha256_bytes,
         records[int(i)].sha256_pixels, indexed.vectors[k] if indexed.vectors is not None else None)
        for k, i in enumerate(indexed.ids)
    ])
    dim = new_refs.vectors.shape[1] if new_refs.vectors is not None else None

    def rows() -> Iterator[list[tuple[int, str, str, bytes, bytes, bytes | None, bytes | None]]]:
        for start in range(1, suspects + 1, batch):
            ids = np.arange(start, min(start + batch, suspects + 1), dtype=np.int64)
            with _timed(clock, "make the synthetic rows (the database's part)"):
                chunk = _synthetic_rows(ids, pool, rng, tiles)
                chunk = [plants[r[0]].row if r[0] in plants else r for r in chunk]
            yield chunk

    tracemalloc.start()
    wall0, cpu0 = time.perf_counter(), time.process_time()
    pairs: dict[int, set[int]] = {}
    kept_rows: dict[int, tuple[int, str, str, bytes, bytes, bytes | None, bytes | None]] = {}
    peak_search = 0  # the most the decode and search of one batch held, its rows included
    for chunk in rows():
        tracemalloc.reset_peak()
        with _timed(clock, "re-check: decode + search (numpy)"):
            b = core.SuspectBatch.from_rows(chunk, dim)
            for c in core.search(new_refs, b, thresholds):
                pairs.setdefault(c.suspect_id, set()).add(c.reference_id)
                kept_rows[c.suspect_id] = chunk[c.suspect_id - chunk[0][0]]
        peak_search = max(peak_search, tracemalloc.get_traced_memory()[1])
        del b
    # Judging: the Matcher over indexes of the new references only, as matching/retro.py does.
    tracemalloc.reset_peak()
    matcher = Matcher(store=indexed.store, indexes=indexed.indexes(), thresholds=thresholds, embedder=embedder)
    found: dict[int, list[str]] = {}
    for suspect_id, ref_ids in sorted(pairs.items()):
        if suspect_id in plants:
            with _timed(clock, "re-check: judge planted (pixels kept: verification)"):
                outcome = matcher.match(plants[suspect_id].loaded, partial="auto", allowed=ref_ids.__contains__)
        else:
            with _timed(clock, "re-check: judge chance candidates (signals only)"):
                outcome = matcher.match(None, signals=_signals_of(kept_rows[suspect_id]),
                                        allowed=ref_ids.__contains__)
        found[suspect_id] = [f"{d.reference_id}:{d.verdict}" for d in outcome.positives]
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    _, peak_all = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    generated = clock.wall.get("make the synthetic rows (the database's part)", 0.0)
    generated_cpu = clock.cpu.get("make the synthetic rows (the database's part)", 0.0)
    recalled = [p for p in plants.values() if any(f.startswith(f"{p.reference_id}:") for f in found.get(p.suspect_id, []))]
    # What the missed copies scored: their best cosine (whole or tile) to their original.
    everything = Thresholds(phash_candidate=64, pdq_candidate=256, cnn_similar=-1.0)
    missed = {}
    for p in plants.values():
        if p not in recalled:
            pair = [c for c in core.search(new_refs, core.SuspectBatch.from_rows([p.row], dim), everything)
                    if c.reference_id == p.reference_id]
            missed[p.attack] = {"cnn": pair[0].cnn if pair else None,
                                "phash_variant": pair[0].phash_variant if pair else None}
    false_positives = sum(1 for s, f in found.items() if s not in plants and f)
    return {
        "command": "python -m bench.retro " + " ".join(sys.argv[1:]),
        "suspects": suspects, "new_references": new, "batch": batch, "tiles_per_suspect": tiles,
        "cnn": embedder is not None,
        "recheck_wall_s": round(wall - generated, 2), "recheck_cpu_s": round(cpu - generated_cpu, 2),
        "stages_wall_s": {k: round(v, 2) for k, v in clock.wall.items()},
        "stages_cpu_s": {k: round(v, 2) for k, v in clock.cpu.items()},
        "tracemalloc_peak_mb_one_batch": round(peak_search / 2**20, 1),
        "tracemalloc_peak_mb_judging": round(peak_all / 2**20, 1),
        "peak_rss_mb_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "candidate_suspects": len(pairs), "candidate_pairs": sum(len(v) for v in pairs.values()),
        "chance_candidates": sum(1 for s in pairs if s not in plants),
        "found": len(recalled), "planted": len(plants),
        "missed": missed,
        "false_positives": false_positives,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.retro", description=__doc__.split("\n\n")[0])
    parser.add_argument("--suspects", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=100, help="newly protected images")
    parser.add_argument("--planted", type=int, default=12, help="real edited copies among the suspects")
    parser.add_argument("--batch", type=int, default=2000, help="suspects per numpy batch (matching/retro.py BATCH)")
    parser.add_argument("--tiles", type=int, default=13, help="partial-copy tile embeddings kept per suspect")
    parser.add_argument("--pool", type=int, default=20, help="dataset pictures the synthetic embeddings are drawn near")
    parser.add_argument("--no-cnn", action="store_true", help="hashes only (no embeddings kept or compared)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", type=Path, default=None, help="default: ../shared/datasets")
    args = parser.parse_args(argv)
    if args.suspects < args.planted or args.new < 1:
        parser.error("need at least one new image and as many suspects as planted copies")
    report = run(suspects=args.suspects, new=args.new, planted=args.planted, batch=args.batch, tiles=args.tiles,
                 pool_size=args.pool, cnn=not args.no_cnn, seed=args.seed, root=args.dataset or default_dataset_root())
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
