"""What the ranking head is trained on: the one list of training images.

Everything ``python -m training.train`` learns from is named here, and nothing
else is: ``SKIMAGE_TRAIN`` (scikit-image's bundled pictures, by name) and the
photos and logos of ``../shared/datasets`` that ``list_items`` does not hold
out (every ``HOLDOUT_EVERY``-th photo and logo, by sorted name, is held out
for evaluation). Training views are made from these images only, including
the photos that pasted views use as backgrounds. Tests that need pictures the
head has never seen must take them from outside this list.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["DEFAULT_DATASETS", "HOLDOUT_EVERY", "SKIMAGE_TRAIN", "Item", "Split", "list_items"]

DEFAULT_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
# Trained on; astronaut, camera, chelsea/cat, coffee, rocket and coins are kept
# out because the tests use them as unseen pictures.
SKIMAGE_TRAIN = ("moon", "page", "text", "clock", "immunohistochemistry", "hubble_deep_field", "retina",
                 "brick", "grass", "gravel", "colorwheel", "stereo_motorcycle", "cell", "logo")
HOLDOUT_EVERY = 5


@dataclass(frozen=True)
class Item:
    name: str  # "photo:kodak24/kodim01.png", "logo:adidas.png", "skimage:moon"
    kind: str  # "photo" or "logo" (skimage pictures count as photos)
    path: Path | None = None

    def load(self) -> Image.Image:
        if self.path is not None:
            with Image.open(self.path) as im:
                return im.convert("RGB")
        from skimage import data

        pixels = getattr(data, self.name.split(":", 1)[1])()
        pixels = pixels[0] if isinstance(pixels, tuple) else pixels
        image = Image.fromarray(np.asarray(pixels))
        if image.mode == "RGBA":  # skimage's logo: composite over white, as the embedder does
            rgb = Image.new("RGB", image.size, (255, 255, 255))
            rgb.paste(image, mask=image.getchannel("A"))
            return rgb
        return image.convert("RGB")


@dataclass(frozen=True)
class Split:
    train: list[Item]
    heldout: list[Item]


def list_items(datasets: Path) -> Split:
    """The data list: sorted names, every ``HOLDOUT_EVERY``-th photo and logo held out."""
    photos = sorted(p for p in (datasets / "photos").rglob("*") if p.suffix.lower() in {".png", ".tif", ".tiff", ".jpg"})
    logos = sorted((datasets / "logos").glob("*.png"))
    if not photos or not logos:
        raise SystemExit(f"no photos/logos under {datasets}; pass --datasets")
    train: list[Item] = []
    heldout: list[Item] = []
    for kind, paths in (("photo", photos), ("logo", logos)):
        base = datasets / ("photos" if kind == "photo" else "logos")
        for i, path in enumerate(paths):
            item = Item(f"{kind}:{path.relative_to(base).as_posix()}", kind, path)
            (heldout if i % HOLDOUT_EVERY == HOLDOUT_EVERY - 1 else train).append(item)
    train += [Item(f"skimage:{name}", "photo") for name in SKIMAGE_TRAIN]
    return Split(train=train, heldout=heldout)
