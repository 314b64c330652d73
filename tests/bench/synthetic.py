"""Small synthetic pictures for the bench tests: flat logo tiles, photo-like fields, and a dataset
folder laid out as ``../shared/datasets`` is (``photos/<set>/``, ``logos/``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def tile(i: int, side: int = 128) -> Image.Image:
    """A flat tile with a mark in one colour, as the dataset's logos are drawn."""
    rng = np.random.default_rng(i)
    out = Image.new("RGB", (side, side), (255, 255, 255) if i % 2 else (30, 30, 30))
    draw = ImageDraw.Draw(out)
    ink = tuple(int(v) for v in rng.integers(0, 256, 3))
    draw.ellipse((20 + i % 7, 30, 100, 96 - i % 5), fill=ink)
    draw.rectangle((40, 14, 60 + i % 9, 110), fill=ink)
    return out


def synthetic_photo(i: int) -> Image.Image:
    rng = np.random.default_rng(100 + i)
    field = rng.integers(0, 256, (5, 6, 3)).astype(np.uint8)
    image = Image.fromarray(field).resize((150, 120), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = (int(v) for v in rng.integers(0, 130, 2))
        draw.rectangle((x, y % 100, x + 25, y % 100 + 18), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


def write_dataset(root: Path) -> Path:
    """15 photos and 40 logos under ``root``: the held-out fifth (training.data) is 3 photos and 8 logos."""
    (root / "photos" / "set").mkdir(parents=True)
    (root / "logos").mkdir()
    for i in range(15):
        synthetic_photo(i).save(root / "photos" / "set" / f"p{i:02d}.png")
    for i in range(40):
        tile(i, 96).save(root / "logos" / f"brand{i:02d}.png")
    return root
