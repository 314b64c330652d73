"""The training data list (``training.data``): which images the head learns from and which are held out."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from training.data import HOLDOUT_EVERY, SKIMAGE_TRAIN, list_items


def _dataset(root: Path) -> Path:
    for i in range(7):
        (root / "photos" / ("a" if i < 4 else "b")).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 8), (i, 0, 0)).save(root / "photos" / ("a" if i < 4 else "b") / f"p{i}.png")
    (root / "logos").mkdir()
    for i in range(11):
        Image.new("RGB", (8, 8), (0, i, 0)).save(root / "logos" / f"logo{i:02d}.png")
    (root / "logos" / "notes.txt").write_text("not an image")
    return root


def test_every_fifth_photo_and_logo_by_sorted_name_is_held_out_and_scikit_image_is_trained_on(
        tmp_path: Path) -> None:
    split = list_items(_dataset(tmp_path / "datasets"))
    assert HOLDOUT_EVERY == 5
    assert [it.name for it in split.heldout] == ["photo:b/p4.png", "logo:logo04.png", "logo:logo09.png"]
    trained = [it.name for it in split.train]
    assert not set(trained) & {it.name for it in split.heldout}
    assert trained[:6] == ["photo:a/p0.png", "photo:a/p1.png", "photo:a/p2.png", "photo:a/p3.png",
                           "photo:b/p5.png", "photo:b/p6.png"]
    assert trained[-len(SKIMAGE_TRAIN):] == [f"skimage:{name}" for name in SKIMAGE_TRAIN]
    assert len(trained) == 6 + 9 + len(SKIMAGE_TRAIN)
    assert {it.kind for it in split.train if it.name.startswith("skimage:")} == {"photo"}


def test_the_scikit_image_logo_loads_composited_on_white(tmp_path: Path) -> None:
    split = list_items(_dataset(tmp_path / "datasets"))
    logo = next(it for it in split.train if it.name == "skimage:logo").load()
    assert logo.mode == "RGB" and logo.getpixel((0, 0)) == (255, 255, 255)


def test_an_empty_dataset_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no photos/logos"):
        list_items(tmp_path)
