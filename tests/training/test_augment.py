"""The training views (``training.augment``): DISC21-style edit chains and marks composited into photos."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from training import augment


def _photo(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").resize(size, Image.Resampling.BILINEAR)


def _logo() -> Image.Image:
    tile = Image.new("RGB", (64, 64), (255, 255, 255))
    ImageDraw.Draw(tile).polygon([(12, 50), (32, 10), (52, 50)], fill=(200, 30, 40))
    return tile


@pytest.mark.parametrize("name", sorted(augment.CHAIN_EDITS))
def test_every_chain_edit_is_a_function_of_its_seed_and_gives_a_picture(name: str) -> None:
    edit = augment.CHAIN_EDITS[name]
    backgrounds = [_photo(1), _photo(2, (80, 80))]
    image = _photo(0)
    first = edit(image, np.random.default_rng(5), backgrounds)
    again = edit(image, np.random.default_rng(5), backgrounds)
    assert first.mode == "RGB" and min(first.size) >= 1
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first.resize(image.size)), np.asarray(image)) or name == "sharpen"
    # Edits that need another photo fall back to flat colours without one.
    assert edit(image, np.random.default_rng(5), []).mode == "RGB"


def test_random_views_chain_one_to_three_edits_deterministically_and_stay_a_usable_size() -> None:
    backgrounds = [_photo(3)]
    for seed in range(12):
        tiny = _photo(seed, (20, 18))
        view = augment.random_view(tiny, np.random.default_rng(seed), backgrounds=backgrounds)
        same = augment.random_view(tiny, np.random.default_rng(seed), backgrounds=backgrounds)
        assert np.array_equal(np.asarray(view), np.asarray(same))
        assert view.mode == "RGB" and min(view.size) >= 16 and max(view.size) <= 1024


def test_shuffled_blocks_keep_the_pixels_and_move_some() -> None:
    image = _photo(4, (100, 100))
    shuffled = augment.shuffle_blocks(image, np.random.default_rng(0))
    a, b = np.asarray(image), np.asarray(shuffled)
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert np.array_equal(np.sort(a.reshape(-1, 3), axis=0), np.sort(b.reshape(-1, 3), axis=0))


def test_the_mark_is_keyed_out_of_its_flat_tile_and_composited_alone() -> None:
    mark = augment.mark_of(_logo())
    assert mark is not None and mark.mode == "RGBA"
    assert 36 <= mark.width <= 44 and 36 <= mark.height <= 44  # cropped to the triangle
    alpha = np.asarray(mark.getchannel("A"))
    assert alpha[-2, mark.width // 2] == 255 and alpha[0, 0] == 0  # inside opaque, the corner keyed out
    assert augment.mark_of(Image.new("RGB", (32, 32), (9, 9, 9))) is None  # nothing stands out
    background = _photo(6, (200, 150))
    scene, (x0, y0, x1, y1) = augment.composite_mark(mark, background, np.random.default_rng(1))
    assert scene.size == background.size
    assert 0.1 * 200 - 1 <= x1 - x0 <= 0.25 * 200 + 1 and 0 <= x0 < x1 <= 200 and 0 <= y0 < y1 <= 150
    # No white tile travels with the mark: the box's corners still show the photo around it.
    assert np.asarray(scene)[y0, x0].tolist() != [255, 255, 255]


def test_mark_views_are_seeded_windows_around_the_mark() -> None:
    backgrounds = [_photo(7, (240, 160)), _photo(8, (200, 200))]
    for seed in range(4):
        view = augment.mark_view(_logo(), backgrounds, np.random.default_rng(seed))
        same = augment.mark_view(_logo(), backgrounds, np.random.default_rng(seed))
        assert np.array_equal(np.asarray(view), np.asarray(same))
        assert view.mode == "RGB" and min(view.size) >= 4 and view.width <= 240
    # A blank tile has no mark: it is pasted whole instead.
    assert augment.mark_view(Image.new("RGB", (64, 64), "white"), backgrounds, np.random.default_rng(0)).mode == "RGB"
