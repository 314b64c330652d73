"""Pixelated pictures: telling a mosaic, smoothing it back, and what that gives the CNN (measured, not
used by the service: docs/benchmarks.md section 7, "Measured and not taken: pixelated copies smoothed
back").

    python -m bench.mosaic [--dataset PATH] [--n 300] [--seed 5]

A copy pixelated (every block of k x k pixels filled with its mean colour) keeps the picture's colours
and layout, but the CNN reads the blocks' edges as detail. :func:`mosaic_of` finds the block size from
where a picture's edges lie: in a mosaic nearly all of the brightness change between neighbouring
pixels sits on one column (and one row) of every block, so the columns' mean change, less its local
median (noise), folded by the block size, gathers in one phase; in a photo or a drawing it spreads over
all phases. Both axes must agree on the period, edges must sit on at least ``MIN_BORDERS`` block
borders, and a period of 8 pixels is JPEG's own block grid unless the blocks are flat inside.
:func:`depixelated` smooths a mosaic back (one pixel a block, enlarged bicubically).

The command: on ``--n`` pictures of the dataset's held-out fifth (``bench.dataset.held_out``: the CNN
head never trained on them; at most 640 px wide), each pixelated once with blocks of 2-4 % of its long
side as the chains suite's ``pixelate`` does (bench/chains.py):

- **told**: the share of pictures :func:`mosaic_of` tells a mosaic, for the
  originals (and the originals at JPEG quality 10 and 30: JPEG's own 8 x 8 blocks), and for the
  mosaics as they are, at JPEG quality 60, scaled by 0.7 and 1.3, padded, and with noise (sigma 12);
  with the median error of the block size told;
- **CNN**: each mosaic's embedding compared by cosine with the ``--n`` originals' (``Embedder.embed``):
  the share whose own original ranks first, and the mean cosine to it, for the mosaics as they are,
  smoothed back (:func:`depixelated`) where told, and the better of the two (as a matcher searching
  both would see them).

The figures are in docs/benchmarks.md section 7.
"""
from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from bench.attacks import jpeg_roundtrip, resized
from bench.chains import pixelate_block, pixelated

ANALYSIS_SIDE = 512  # the long side the edges are read at (a larger picture is reduced first)
MIN_PERIOD = 4.0     # px at ANALYSIS_SIDE: finer blocks hide little, and the CNN sees through them
MAX_PERIOD_SHARE = 1 / 8  # of the side: at least eight blocks across
PERIOD_STEP = 1.01   # periods tried: a geometric series of this ratio
PHASES = 16          # phase bins a period's profile is folded into
WINDOW = 3           # neighbouring bins a block border may spread over (scaled, JPEG-blurred)
MIN_LIFT = 3.5       # at most PHASES / WINDOW (all the change on the borders); about 1.3-1.6 at random
NEARLY = 0.85        # a longer period within this share of the best lift is the block size
MIN_BORDERS = 8      # block borders with an edge, on each axis
SAME_PERIOD = 0.06   # the two axes' periods agree within this share
# JPEG codes 8 x 8 blocks: a picture compressed hard shows their borders as a mosaic of 8 pixels
# would (scikit-image's photos at quality 5-20: lift 3.0-4.9). A period this close to 8 of the
# picture's own pixels is JPEG's unless the blocks are flat inside, as a mosaic's are (the mean
# change off the borders over that on them: JPEG's 0.30-0.82, a mosaic's 0.03-0.07; JPEG codes a
# flat block exactly).
JPEG_BLOCK = 8
JPEG_SHARE = 0.03
JPEG_FLAT = 0.2
BASELINE = 9         # positions whose median change is the baseline a border stands out of


@dataclass(frozen=True)
class Mosaic:
    """A pixelated picture's block size, in pixels of the picture given (x and y)."""

    period_x: float
    period_y: float
    lift: float  # the weaker axis's lift (how much of the change sits on the block borders)


def _profile(grey: npt.NDArray[np.float32], axis: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Mean absolute change between neighbours along ``axis`` (1: columns, 0: rows), per position,
    less the median of the positions around it (noise adds the same change everywhere); and the
    change itself."""
    change = np.asarray(np.abs(np.diff(grey, axis=axis)).mean(axis=1 - axis), np.float64)
    r = BASELINE // 2
    padded = np.pad(change, r, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, BASELINE)
    out: npt.NDArray[np.float64] = np.maximum(change - np.median(windows, axis=1), 0.0)
    return out, change


def _phases(positions: npt.NDArray[Any], periods: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
    """The phase bin (of ``PHASES``) of each position for each period: ``(len(periods), len(positions))``."""
    scaled = np.asarray(positions, np.float64)[None, :] * (PHASES / periods)[:, None]
    phase = np.mod(scaled, PHASES).astype(np.int64)
    np.minimum(phase, PHASES - 1, out=phase)
    return phase


def _folds(profile: npt.NDArray[np.float64], periods: npt.NDArray[np.float64]
           ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """For each period: the share of the profile's change that ``WINDOW`` neighbouring phase bins
    (of ``PHASES``) hold at best, over the share they would hold were it spread evenly (the lift),
    and that window's phase (its first bin)."""
    m = len(periods)
    # Only the positions with a change count (after the baseline is taken off, about half of a
    # photo's and a tenth of a mosaic's): the same sums for less work.
    at = np.flatnonzero(profile > 0)
    phase = _phases(at, periods)
    phase += PHASES * np.arange(m)[:, None]
    sums = np.bincount(phase.ravel(), weights=np.tile(profile[at], m), minlength=m * PHASES).reshape(m, PHASES)
    windows = sums.copy()
    for i in range(1, WINDOW):
        windows += np.roll(sums, -i, axis=1)
    start = np.argmax(windows, axis=1).astype(np.int64)
    total = max(float(profile.sum()), 1e-9)
    lifts = np.asarray(windows[np.arange(m), start] / total * (PHASES / WINDOW), np.float64)
    return lifts, start


def _axis_period(profile: npt.NDArray[np.float64], change: npt.NDArray[np.float64]
                 ) -> tuple[float, float, int, float] | None:
    """(period, lift, borders, inside) of the period whose fold gathers the change best, the longest
    of those nearly as good (a half or a third of the period folds a mosaic as well, twice the period
    half as well), or None; ``inside``: the mean ``change`` off the borders over that on them."""
    longest = len(profile) * MAX_PERIOD_SHARE
    if longest < MIN_PERIOD or float(profile.sum()) <= 1e-6:
        return None
    steps = int(math.log(longest / MIN_PERIOD) / math.log(PERIOD_STEP)) + 1
    periods = np.asarray(MIN_PERIOD * PERIOD_STEP ** np.arange(steps), np.float64)
    lifts, starts = _folds(profile, periods)
    best = float(lifts.max())
    if best < MIN_LIFT:
        return None
    i = int(np.flatnonzero(lifts >= NEARLY * best)[-1])
    period = float(periods[i])
    x = np.arange(len(profile), dtype=np.float64)
    inside = np.mod(_phases(x, periods[i : i + 1])[0] - starts[i], PHASES) < WINDOW
    busy = inside & (profile > profile.mean())
    borders = len(np.unique(np.floor(x[busy] / period)))
    off = float(change[~inside].mean()) if (~inside).any() else 0.0
    on = float(change[inside].mean()) if inside.any() else 0.0
    return period, float(lifts[i]), borders, off / max(on, 1e-9)


def mosaic_period(grey: npt.NDArray[Any]) -> tuple[float, float, float, float] | None:
    """(period_x, period_y, lift, inside) in pixels of ``grey`` (2-D, any numeric type) when it is a
    mosaic of square blocks, else None; ``lift`` and ``inside`` the weaker axis's: how much of the
    change the block borders gather (``_folds``), and the mean change off them over that on them."""
    g = np.asarray(grey, np.float32)
    if g.ndim != 2 or min(g.shape) < 8 * MIN_PERIOD:
        return None
    found = [_axis_period(*_profile(g, axis)) for axis in (1, 0)]
    if found[0] is None or found[1] is None:
        return None
    (px, lx, bx, ix), (py, ly, by, iy) = found[0], found[1]
    if abs(px - py) > SAME_PERIOD * max(px, py) or min(bx, by) < MIN_BORDERS:
        return None
    return px, py, min(lx, ly), max(ix, iy)


def mosaic_of(image: Image.Image) -> Mosaic | None:
    """The block size of a pixelated ``image`` (any mode), in its own pixels, or None."""
    w, h = image.size
    k = min(1.0, ANALYSIS_SIDE / max(w, h))
    grey = image.convert("L")
    if k < 1.0:
        grey = grey.resize((max(1, round(w * k)), max(1, round(h * k))), Image.Resampling.BOX)
    found = mosaic_period(np.asarray(grey))
    if found is None:
        return None
    px, py, lift, inside = found
    if (abs(px / k - JPEG_BLOCK) <= JPEG_SHARE * JPEG_BLOCK and abs(py / k - JPEG_BLOCK) <= JPEG_SHARE * JPEG_BLOCK
            and inside > JPEG_FLAT):
        return None
    return Mosaic(px / k, py / k, lift)


def depixelated(image: Image.Image, mosaic: Mosaic) -> Image.Image:
    """``image`` with its blocks smoothed back: reduced to one pixel a block (box filter), then
    enlarged bicubically to its size again."""
    w, h = image.size
    grid = (max(1, round(w / mosaic.period_x)), max(1, round(h / mosaic.period_y)))
    return image.resize(grid, Image.Resampling.BOX).resize((w, h), Image.Resampling.BICUBIC)


def _padded(image: Image.Image) -> Image.Image:
    return image.crop((-image.width // 5, -image.height // 6, image.width * 6 // 5, image.height * 7 // 6))


def _scaled(image: Image.Image, factor: float) -> Image.Image:
    return resized(image, (round(image.width * factor), round(image.height * factor)))


def run(dataset: Path, n: int, seed: int) -> dict[str, Any]:
    from bench.dataset import held_out
    from matching.core.cnn.embedder import get_embedder

    paths = sorted(held_out(dataset))
    picked = random.Random(seed).sample(paths, min(n, len(paths)))
    originals = []
    for path in picked:
        with Image.open(path) as im:
            rgb = im.convert("RGB")
        k = min(1.0, 640 / rgb.width)
        originals.append(rgb.resize((max(8, round(rgb.width * k)), max(8, round(rgb.height * k)))))
    rng = np.random.default_rng(seed)
    mosaics = []  # (mosaic, its blocks' width: the picture's over the grid's)
    for im in originals:
        block = pixelate_block(im, rng)
        mosaics.append((pixelated(im, block), im.width / max(1, im.width // block)))
    noise = np.random.default_rng(seed + 1)

    def noisy(image: Image.Image) -> Image.Image:
        a = np.asarray(image, np.float32) + noise.normal(0, 12, (image.height, image.width, 3))
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))

    spent = 0.0  # CPU seconds in mosaic_of, the edits apart

    def told(picture: Image.Image) -> Mosaic | None:
        nonlocal spent
        started = time.process_time()
        found = mosaic_of(picture)
        spent += time.process_time() - started
        return found

    rows: list[tuple[str, float, float | None]] = []
    for name, pictures in (("originals", originals),
                           ("originals, JPEG quality 30", [jpeg_roundtrip(p, 30) for p in originals]),
                           ("originals, JPEG quality 10", [jpeg_roundtrip(p, 10) for p in originals])):
        rows.append((name, float(np.mean([told(p) is not None for p in pictures])), None))
    edits: list[tuple[str, Callable[[Image.Image], Image.Image], float]] = [
        ("mosaics", lambda p: p, 1.0), ("mosaics, JPEG quality 60", lambda p: jpeg_roundtrip(p, 60), 1.0),
        ("mosaics scaled by 0.7", lambda p: _scaled(p, 0.7), 0.7),
        ("mosaics scaled by 1.3", lambda p: _scaled(p, 1.3), 1.3),
        ("mosaics padded", _padded, 1.0), ("mosaics with noise", noisy, 1.0)]
    for name, edit, factor in edits:
        hits, errors = 0, []
        for picture, block in mosaics:
            found = told(edit(picture))
            if found is not None:
                hits += 1
                errors.append(abs(found.period_x - block * factor) / (block * factor))
        rows.append((name, hits / len(mosaics), float(np.median(errors)) if errors else None))
    ms = 1000 * spent / (len(originals) * 3 + len(mosaics) * len(edits))
    embedder = get_embedder()
    reference = embedder.embed(originals)
    each = [mosaic_of(p) for p, _ in mosaics]
    smoothed = [depixelated(p, m) if m is not None else p for (p, _), m in zip(mosaics, each, strict=True)]
    plain = embedder.embed([p for p, _ in mosaics]) @ reference.T
    smooth = embedder.embed(smoothed) @ reference.T
    cnn = []
    # A matcher searching both would keep each reference's better cosine.
    for name, cosines in (("as they are", plain), ("smoothed back where told", smooth),
                          ("both, the better cosine", np.maximum(plain, smooth))):
        own = np.diag(cosines)
        cnn.append((name, float(np.mean(np.argmax(cosines, axis=1) == np.arange(len(own)))), float(own.mean())))
    return {"n": len(originals), "rows": rows, "cnn": cnn, "ms_per_call": ms}


def report(result: dict[str, Any]) -> str:
    lines = [f"{result['n']} held-out pictures; `mosaic_of` {result['ms_per_call']:.1f} ms of CPU a call", "",
             "| pictures | told a mosaic | block size told, median error |", "| --- | --: | --: |"]
    for name, share, error in result["rows"]:
        lines.append(f"| {name} | {share:.3f} | {'—' if error is None else f'{error:.1%}'} |")
    lines += ["", "| mosaics, embedded | own original ranked first | mean cosine to it |", "| --- | --: | --: |"]
    for name, rank1, cosine in result["cnn"]:
        lines.append(f"| {name} | {rank1:.3f} | {cosine:.3f} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from bench.dataset import default_dataset_root

    parser = argparse.ArgumentParser(prog="python -m bench.mosaic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=None)
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args(argv)
    if args.n < 2:
        parser.error("--n must be at least 2")
    print(report(run(args.dataset or default_dataset_root(), args.n, args.seed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
