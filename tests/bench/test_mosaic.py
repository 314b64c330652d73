"""`python -m bench.mosaic`: telling a pixelated picture and smoothing it back (real photos, real JPEG,
the real CNN), and its report."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import mosaic
from bench.attacks import jpeg_roundtrip
from bench.chains import pixelated
from tests.images import drawn_logo, photo

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "horse")


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("block", [12, 18])
def test_a_pixelated_photo_is_told_with_its_block_size(name: str, block: int) -> None:
    picture = photo(name)
    found = mosaic.mosaic_of(pixelated(picture, block))
    assert found is not None
    # The blocks are the picture's size over the grid's (NEAREST enlarges the grid to the size).
    assert found.period_x == pytest.approx(picture.width / (picture.width // block), rel=0.03)
    assert found.period_y == pytest.approx(picture.height / (picture.height // block), rel=0.03)


@pytest.mark.parametrize("name", PHOTOS)
def test_a_mosaic_scaled_and_compressed_after_keeps_its_period(name: str) -> None:
    # Scaled by 0.8 (blocks of 9.6 pixels, their borders blurred), then JPEG at quality 60.
    picture = photo(name)
    found = mosaic.mosaic_of(jpeg_roundtrip(mosaic._scaled(pixelated(picture, 12), 0.8), 60))
    assert found is not None and found.period_x == pytest.approx(0.8 * picture.width / (picture.width // 12), rel=0.04)


def test_a_mosaic_padded_or_noisy_is_told() -> None:
    picture = pixelated(photo("coffee"), 14)
    padded = Image.new("RGB", (picture.width + 160, picture.height + 90), (30, 30, 30))
    padded.paste(picture, (70, 40))
    assert mosaic.mosaic_of(padded) is not None
    noisy = np.asarray(picture, np.float32) + np.random.default_rng(0).normal(0, 12, (picture.height, picture.width, 3))
    assert mosaic.mosaic_of(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))) is not None


@pytest.mark.parametrize("name", PHOTOS)
def test_photos_and_hard_jpeg_are_no_mosaic(name: str) -> None:
    # JPEG's own 8 x 8 blocks show at quality 5-20; they are not flat inside as a mosaic's are.
    for picture in (photo(name), jpeg_roundtrip(photo(name), 20), jpeg_roundtrip(photo(name), 5)):
        assert mosaic.mosaic_of(picture) is None
    assert mosaic.mosaic_of(drawn_logo()) is None


def test_a_mosaic_of_jpegs_own_block_size_is_told_when_its_blocks_are_flat() -> None:
    for name in ("astronaut", "camera"):  # 512 x 512: blocks of exactly 8 pixels, on JPEG's grid
        assert mosaic.mosaic_of(jpeg_roundtrip(pixelated(photo(name), 8), 60)) is not None, name


def test_a_drawing_of_a_few_evenly_spaced_lines_is_no_mosaic() -> None:
    # A noughts-and-crosses board folds onto one phase as a mosaic does, but its edges sit on four
    # borders, not on most of them (MIN_BORDERS).
    from PIL import ImageDraw

    board = Image.new("RGB", (400, 400), "white")
    draw = ImageDraw.Draw(board)
    for i in range(1, 5):
        draw.line((i * 80, 0, i * 80, 400), fill="black", width=3)
        draw.line((0, i * 80, 400, i * 80), fill="black", width=3)
    assert mosaic.mosaic_of(board) is None


def test_small_or_flat_pictures_are_no_mosaic() -> None:
    assert mosaic.mosaic_of(Image.new("RGB", (300, 200), (120, 40, 10))) is None
    assert mosaic.mosaic_of(pixelated(photo("coffee"), 12).resize((24, 16))) is None
    assert mosaic.mosaic_period(np.zeros((3, 300))) is None


def test_smoothed_back_the_cnn_sees_the_original_again() -> None:
    from matching.core.cnn.embedder import get_embedder

    embedder = get_embedder()
    originals = [photo(name) for name in PHOTOS]
    mosaics = [pixelated(p, max(2, round(0.035 * max(p.size)))) for p in originals]
    found = [mosaic.mosaic_of(p) for p in mosaics]
    assert all(found)
    smoothed = [mosaic.depixelated(p, m) for p, m in zip(mosaics, found, strict=True) if m is not None]
    assert all(s.size == p.size for s, p in zip(smoothed, mosaics, strict=True))
    ref, pix, smooth = (embedder.embed(batch) for batch in (originals, mosaics, smoothed))
    before, after = np.sum(ref * pix, axis=1), np.sum(ref * smooth, axis=1)
    assert after.mean() > before.mean() + 0.1, (before, after)


def test_the_report_counts_every_picture_and_smoothing_never_loses_the_better_cosine(dataset: Path) -> None:
    result = mosaic.run(dataset, n=6, seed=1)
    assert result["n"] == 6
    told = dict((name, share) for name, share, _ in result["rows"])
    assert set(told) >= {"originals", "mosaics", "mosaics, JPEG quality 60", "mosaics padded"}
    assert all(0.0 <= share <= 1.0 for share in told.values())
    (_, plain_rank1, plain_cos), (_, _, _), (_, best_rank1, best_cos) = result["cnn"]
    # The better of the two cosines is at least the plain one, for every picture.
    assert best_cos >= plain_cos and 0.0 <= plain_rank1 <= 1.0 and 0.0 <= best_rank1 <= 1.0
    text = mosaic.report(result)
    assert "6 held-out pictures" in text
    assert text.count("\n| mosaics") == 6 + 1  # six edits, and the CNN table's header
