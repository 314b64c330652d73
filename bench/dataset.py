"""The benchmark's data: protected references, unrelated queries and attacked copies.

From a dataset folder (``photos/**`` and ``logos/*.png``, see the folder's
README) a seeded split picks references (indexed by every system) and
unrelated images (queried, never indexed: they measure false positives; the
unrelated photos are also the backgrounds of ``paste_logo`` and the other
tiles of ``collage_2x2``). Attacked copies are made in memory as they are
queried and never written anywhere: each one is a function of (seed, attack
name, reference id), so any subset of attacks or systems sees the same copies.
"""
from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from .attacks import ATTACKS, Polygon

__all__ = ["Benchmark", "Item", "Query", "build_benchmark", "default_dataset_root"]

PHOTO_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"})
DEFAULT_REF_PHOTOS = 60
DEFAULT_REF_LOGOS = 400
DEFAULT_UNRELATED_LOGOS = 200
DEFAULT_REFS = 120  # with 200 unrelated logos, fits the held-out fifth (694 logos, 25 photos)
# Backgrounds for paste_logo / collage_2x2 must exist, so the split never takes every photo.
MIN_UNRELATED_PHOTOS = 4


def default_dataset_root() -> Path:
    """``<repo>/../shared/datasets``, where the checkout and CI keep the evaluation images."""
    return Path(__file__).resolve().parents[2] / "shared" / "datasets"


@dataclass(frozen=True)
class Item:
    """One image of the benchmark: ``key`` is its path relative to the dataset root."""

    key: str
    kind: str  # "photo" | "logo"
    load: Callable[[], Image.Image] = field(repr=False, compare=False)

    def image(self) -> Image.Image:
        return as_rgb(self.load())


@dataclass(frozen=True)
class Query:
    key: str
    image: Image.Image
    attack: str | None  # None: an unrelated image, no reference is the right answer
    ref_id: int | None  # the reference this is a copy of
    region: Polygon | None  # where that reference lies in ``image``
    kind: str  # "photo" | "logo": of the reference for a copy, of the image itself otherwise


def as_rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def file_loader(path: Path) -> Callable[[], Image.Image]:
    def load() -> Image.Image:
        with Image.open(path) as im:
            im.load()  # decode before the file closes
            return as_rgb(im)
    return load


def attack_rng(seed: int, attack: str, ref_id: int) -> np.random.Generator:
    # crc32 of the name, not its position: adding an attack must not change the others' copies.
    return np.random.default_rng([seed, zlib.crc32(attack.encode()), ref_id])


class Benchmark:
    """References (ids 0..n-1, in this order), unrelated images and the attacks to apply."""

    def __init__(self, references: Sequence[Item], unrelated: Sequence[Item], *, seed: int = 0,
                 backgrounds: Sequence[Item] | None = None) -> None:
        self.references = list(references)
        self.unrelated = list(unrelated)
        self.seed = seed
        bgs = list(backgrounds) if backgrounds is not None else [
            i for i in self.unrelated if i.kind == "photo"]
        if not bgs:
            raise ValueError("the benchmark needs at least one unrelated photo as a background")
        self._backgrounds = bgs
        self._background_cache: dict[int, Image.Image] = {}

    def distractor(self, rng: np.random.Generator) -> Image.Image:
        """A random unrelated photo (decoded once, then shared: attacks copy before drawing)."""
        i = int(rng.integers(0, len(self._backgrounds)))
        if i not in self._background_cache:
            self._background_cache[i] = self._backgrounds[i].image()
        return self._background_cache[i]

    def attacks_for(self, item: Item, attacks: Sequence[str]) -> list[str]:
        return [a for a in attacks if not ATTACKS[a].logos_only or item.kind == "logo"]

    def count_attacked(self, attacks: Sequence[str]) -> int:
        return sum(len(self.attacks_for(item, attacks)) for item in self.references)

    def reference_images(self) -> list[tuple[int, Image.Image]]:
        return [(ref_id, item.image()) for ref_id, item in enumerate(self.references)]

    def attacked_queries(self, attacks: Sequence[str]) -> Iterator[Query]:
        """Every applicable attack of every reference, reference by reference
        (so each reference is decoded once)."""
        unknown = [a for a in attacks if a not in ATTACKS]
        if unknown:
            raise ValueError(f"unknown attacks: {', '.join(unknown)}")
        for ref_id, item in enumerate(self.references):
            todo = self.attacks_for(item, attacks)
            if not todo:
                continue
            original = item.image()
            for name in todo:
                result = ATTACKS[name](original, attack_rng(self.seed, name, ref_id), self.distractor)
                yield Query(f"{name}/{item.key}", result.image, name, ref_id, result.region, item.kind)

    def unrelated_queries(self) -> Iterator[Query]:
        for item in self.unrelated:
            yield Query(item.key, item.image(), None, None, None, item.kind)


def photo_paths(root: Path) -> list[Path]:
    return sorted(p for p in (root / "photos").rglob("*")
                  if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)


def held_out(root: Path) -> frozenset[Path]:
    """The images under ``root`` that the CNN head never trained on.

    The head trains on every image of ``training.data.list_items`` but every
    ``HOLDOUT_EVERY``-th photo and logo by sorted name; a benchmark that
    measured copies of training images would measure memory, not
    generalisation.
    """
    from training.data import list_items

    return frozenset(item.path for item in list_items(root).heldout if item.path is not None)


def build_benchmark(root: str | Path | None = None, *, refs: int | None = None,
                    distractors: int = DEFAULT_UNRELATED_LOGOS, seed: int = 0,
                    held_out_only: bool = True) -> Benchmark:
    """The seeded split of a dataset folder.

    ``refs`` references (default 120): photos take the default 60:400 share of
    them, capped so that some photos stay unrelated, logos the rest. Every
    other photo is an unrelated query, plus ``distractors`` other logos. With
    ``held_out_only`` (the default) every image comes from the fifth of the
    folder that the head's training holds out (:func:`held_out`).
    """
    base = Path(root) if root is not None else default_dataset_root()
    photos, logos = photo_paths(base), sorted((base / "logos").glob("*.png"))
    if held_out_only and photos and logos:
        kept = held_out(base)
        photos, logos = [p for p in photos if p in kept], [p for p in logos if p in kept]
    if not photos or not logos:
        raise FileNotFoundError(f"no photos/ or logos/*.png under {base}"
                                + (" (held-out fifth)" if held_out_only else ""))
    n_refs = DEFAULT_REFS if refs is None else refs
    n_photos = max(0, min(round(n_refs * DEFAULT_REF_PHOTOS / (DEFAULT_REF_PHOTOS + DEFAULT_REF_LOGOS)),
                          len(photos) - MIN_UNRELATED_PHOTOS))
    n_logos = n_refs - n_photos
    if n_refs < 1 or distractors < 0 or n_logos + distractors > len(logos):
        raise ValueError(f"{n_refs} references and {distractors} unrelated logos do not fit "
                         f"{len(photos)} photos and {len(logos)} logos")
    rng = np.random.default_rng(seed)
    photo_order = rng.permutation(len(photos))
    logo_order = rng.permutation(len(logos))

    def item(path: Path, kind: str) -> Item:
        return Item(path.relative_to(base).as_posix(), kind, file_loader(path))

    references = ([item(photos[i], "photo") for i in photo_order[:n_photos]]
                  + [item(logos[i], "logo") for i in logo_order[:n_logos]])
    unrelated = ([item(photos[i], "photo") for i in photo_order[n_photos:]]
                 + [item(logos[i], "logo") for i in logo_order[n_logos:n_logos + distractors]])
    return Benchmark(references, unrelated, seed=seed)
