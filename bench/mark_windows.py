"""What the partial-copy pass's windows find of a small mark, and what they cost (issue 14 item 2).

    python -m bench.mark_windows [--dataset PATH] [--refs 40] [--copies-per-ref 2]

On the ``marks`` suite's copies (bench/suites.py: a held-out logo's mark alone in a photo or
printed on a surface, 10-25 % of the width), every set of windows below is embedded with the
service's CNN (``Embedder.embed`` on the crops, as ``embed_crops`` does with its own
``CROP_WINDOWS``) and its tiles compared with every reference's vectors (its picture and its
mark's four views, ``marks.mark_views``) by cosine. Per set: the share of copies whose true logo
is the best reference of some tile (rank 1) and in the top 5, the share whose best tile for the
true logo reached ``marks.MARK_CANDIDATE`` (the mark search is then tried), the share where that
tile holds at least half the mark's box, and the cost: tiles per query and CNN CPU ms per query
(``time.process_time``, this process). Nothing here changes what the service does.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

Window = tuple[float, float, float, float]


def _grid(n: int) -> tuple[Window, ...]:
    return tuple((x / n, y / n, (x + 1) / n, (y + 1) / n) for y in range(n) for x in range(n))


def _between(n: int) -> tuple[Window, ...]:
    """Windows of 1/n, centred on the inner corners of the n x n grid."""
    step = 1 / n
    return tuple((x * step - step / 2, y * step - step / 2, x * step + step / 2, y * step + step / 2)
                 for y in range(1, n) for x in range(1, n))


def window_sets() -> dict[str, tuple[Window, ...]]:
    from matching.core.cnn.embedder import CROP_WINDOWS

    current = tuple(CROP_WINDOWS[1:])
    return {
        "halves 2x2 (4)": _grid(2),
        "thirds 3x3 (9)": _grid(3),
        "thirds + 4 between (13, the service's)": current,
        "quarters 4x4 (16)": _grid(4),
        "quarters + 9 between (25)": _grid(4) + _between(4),
        "service's 13 + quarters 4x4 (29)": current + _grid(4),
    }


def _covered(box: tuple[int, int, int, int], region: Sequence[Sequence[float]]) -> float:
    """Share of the region's bounding box that lies inside ``box``."""
    xs, ys = [p[0] for p in region], [p[1] for p in region]
    rx0, ry0, rx1, ry1 = min(xs), min(ys), max(xs), max(ys)
    ix = max(0.0, min(box[2], rx1) - max(box[0], rx0))
    iy = max(0.0, min(box[3], ry1) - max(box[1], ry0))
    area = max(1e-9, (rx1 - rx0) * (ry1 - ry0))
    return ix * iy / area


def measure(refs: int, copies: int, dataset: str | None, log: Any = sys.stderr) -> dict[str, dict[str, Any]]:
    from matching.core.cnn.embedder import crop_boxes, get_embedder
    from matching.core.marks import MARK_CANDIDATE, vector_reference
    from matching.core.matcher import index_references

    from .suites import build_suite

    data = build_suite("marks", dataset, refs=refs, copies_per_ref=copies, distractors=0)
    embedder = get_embedder()
    indexed = index_references(data.reference_images(), embedder=embedder)
    ids = np.concatenate([indexed.ids, indexed.mark_ids]) if indexed.mark_vectors is not None else indexed.ids
    vectors = (np.concatenate([indexed.vectors, indexed.mark_vectors]) if indexed.mark_vectors is not None
               else indexed.vectors)
    owner = np.array([vector_reference(int(i)) for i in ids])
    ref_ids = np.unique(owner)
    sets = window_sets()
    stats: dict[str, dict[str, list[float]]] = {name: {"rank1": [], "top5": [], "candidate": [], "holds": [],
                                                       "ms": [], "tiles": []} for name in sets}
    for n, query in enumerate(data.queries()):
        if query.ref_id is None or query.region is None:
            continue
        for name, windows in sets.items():
            boxes = crop_boxes(query.image.size, [(max(0.0, a), max(0.0, b), min(1.0, c), min(1.0, d))
                                                  for a, b, c, d in windows])
            started = time.process_time()
            tiles = embedder.embed([query.image.crop(box) for box in boxes], batch_size=len(boxes))
            stats[name]["ms"].append(1000 * (time.process_time() - started))
            stats[name]["tiles"].append(len(boxes))
            scores = np.asarray(tiles, dtype=np.float32) @ np.asarray(vectors, dtype=np.float32).T  # (tiles, vectors)
            per_ref = np.full((len(boxes), len(ref_ids)), -1.0, np.float32)
            for j, ref in enumerate(ref_ids):
                per_ref[:, j] = scores[:, owner == ref].max(axis=1)
            best = per_ref.max(axis=0)
            true = int(np.searchsorted(ref_ids, query.ref_id))
            rank = int((best > best[true]).sum()) + 1
            tile = int(per_ref[:, true].argmax())
            stats[name]["rank1"].append(rank == 1)
            stats[name]["top5"].append(rank <= 5)
            stats[name]["candidate"].append(best[true] >= MARK_CANDIDATE)
            stats[name]["holds"].append(_covered(boxes[tile], query.region) >= 0.5)
        if log and (n + 1) % 20 == 0:
            print(f"[mark_windows] {n + 1} copies", file=log)
    return {name: {"copies": len(s["rank1"]), **{k: float(np.mean(v)) for k, v in s.items()}}
            for name, s in stats.items()}


def render(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| windows | copies | rank 1 | top 5 | true logo >= MARK_CANDIDATE | its best tile holds the mark | "
             "tiles | CNN CPU ms / query |", "| --- | --: | --: | --: | --: | --: | --: | --: |"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['copies']} | {r['rank1']:.2f} | {r['top5']:.2f} | {r['candidate']:.2f} | "
                     f"{r['holds']:.2f} | {r['tiles']:.0f} | {r['ms']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mark_windows")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--refs", type=int, default=40)
    parser.add_argument("--copies-per-ref", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    table = render(measure(args.refs, args.copies_per_ref, args.dataset))
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
