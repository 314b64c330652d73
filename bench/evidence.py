"""What the evidence PNG costs to make, by zlib level (docs/benchmarks.md section 12).

    python -m bench.evidence [--dataset PATH] [--n 40] [--levels 1,3,6,9] [--repeat 3]

Every match report a check or a scan writes carries an evidence PNG (``matching.core.evidence``):
the suspect and the protected picture side by side, the copied region outlined, the matched
keypoints joined, a caption. On ``--n`` dataset pictures (photos and logos, alternately), each
against a copy of itself (turned by 6 degrees, cropped to 85 %, shrunk to 70 %, JPEG at quality 75)
verified by its keypoints as a check would (``geometry.verify``), the evidence is rendered at each
zlib level: CPU per evidence (``time.process_time``, best of ``--repeat``), mean size, and whether
its pixels are those of Pillow's default level 6 (PNG is lossless, so they must be: the check is
that the level is all that changed). The service's level is ``evidence.PNG_LEVEL``.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

DEFAULT_LEVELS = (1, 3, 6, 9)


@dataclass(frozen=True)
class Row:
    level: int
    ms: float          # CPU per evidence
    kib: float         # mean size
    same_pixels: bool  # every evidence decodes to level 6's pixels


def pairs(root: Path, n: int) -> list[tuple[Image.Image, Image.Image, Any]]:
    """(copy, original, verification) for ``n`` dataset pictures, photos and logos alternately."""
    from bench.dataset import as_rgb, photo_paths
    from matching.core.geometry import DEFAULT_QUERY_MAX_FEATURES, extract_features, verify

    photos = photo_paths(root)
    logos = sorted((root / "logos").glob("*.png"))
    picked = [p for pair in zip(photos, logos[:: max(1, len(logos) // max(1, n))]) for p in pair][:n]
    out = []
    for path in picked:
        with Image.open(path) as im:
            im.load()
            original = as_rgb(im)
        w, h = original.size
        turned = original.rotate(6, resample=Image.Resampling.BICUBIC)
        cropped = turned.crop((round(0.075 * w), round(0.075 * h), round(0.925 * w), round(0.925 * h)))
        small = cropped.resize((max(1, round(cropped.width * 0.7)), max(1, round(cropped.height * 0.7))))
        buf = io.BytesIO()
        small.save(buf, "JPEG", quality=75)
        with Image.open(io.BytesIO(buf.getvalue())) as im:
            copy = im.convert("RGB")
        found = verify(extract_features(copy, max_features=DEFAULT_QUERY_MAX_FEATURES, with_mirror=True),
                       extract_features(original))
        out.append((copy, original, found))
    return out


def measure(items: Sequence[tuple[Image.Image, Image.Image, Any]], levels: Sequence[int], repeat: int) -> list[Row]:
    from matching.core import evidence

    saved = evidence.PNG_LEVEL
    try:
        evidence.PNG_LEVEL = 6
        default = [_pixels(evidence.render_evidence(q, r, v, title="modified_copy")) for q, r, v in items]
        rows = []
        for level in levels:
            evidence.PNG_LEVEL = level
            best, pngs = float("inf"), []
            for _ in range(repeat):
                started = time.process_time()
                pngs = [evidence.render_evidence(q, r, v, title="modified_copy") for q, r, v in items]
                best = min(best, time.process_time() - started)
            same = all(np.array_equal(_pixels(png), want) for png, want in zip(pngs, default, strict=True))
            rows.append(Row(level, 1000 * best / len(items), sum(map(len, pngs)) / len(pngs) / 1024, same))
        return rows
    finally:
        evidence.PNG_LEVEL = saved


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        return np.asarray(im.convert("RGB"))


def report(rows: Sequence[Row], n: int, verified: int) -> str:
    from matching.core import evidence

    lines = [f"{n} evidence PNGs ({verified} with a verified copy outlined), best of the repeats; "
             f"the service's level: {evidence.PNG_LEVEL}", "",
             "| zlib level | ms of CPU per evidence | mean KiB | pixels as at level 6 |", "| --: | --: | --: | --- |"]
    lines += [f"| {r.level} | {r.ms:.1f} | {r.kib:.0f} | {'yes' if r.same_pixels else 'NO'} |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from bench.dataset import default_dataset_root

    parser = argparse.ArgumentParser(prog="python -m bench.evidence", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=None)
    parser.add_argument("--n", type=int, default=40)
    parser.add_argument("--levels", default=",".join(map(str, DEFAULT_LEVELS)))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    try:
        levels = [int(x) for x in args.levels.split(",")]
    except ValueError:
        parser.error("--levels takes zlib levels 0-9, comma-separated")
    if not levels or any(not 0 <= x <= 9 for x in levels):
        parser.error("--levels takes zlib levels 0-9, comma-separated")
    if args.n < 1 or args.repeat < 1:
        parser.error("--n and --repeat must be at least 1")
    items = pairs(args.dataset or default_dataset_root(), args.n)
    print(report(measure(items, levels, args.repeat), len(items), sum(1 for *_, v in items if v.accepted)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
