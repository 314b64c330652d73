"""A synthetic crawl: N JPEGs augmented from ``../shared/datasets`` (bench.bulk, bench.throughput).

No Django here, so a benchmark that runs the executors' code alone can build one too.
"""
from __future__ import annotations

import random
from pathlib import Path

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def dataset_sources(dataset: Path = DATASETS) -> list[Path]:
    """The dataset's photos, then its logos, sorted."""
    sources = sorted(p for p in (dataset / "photos").glob("*/*") if p.is_file())
    sources += sorted((dataset / "logos").glob("*.png"))
    if not sources:
        raise FileNotFoundError(f"no images under {dataset}")
    return sources


def build_images(n: int, dest: Path, *, seed: int = 1, dataset: Path = DATASETS) -> list[Path]:
    """``n`` JPEGs, each a random crop/resize/flip/re-encode of a dataset photo or logo."""
    from PIL import Image, ImageOps

    sources = dataset_sources(dataset)
    rng = random.Random(seed)
    picked = [rng.choice(sources) for _ in range(n)]
    cache: dict[Path, Image.Image] = {}
    out = []
    for i, path in enumerate(picked):
        if path not in cache:
            with Image.open(path) as im:
                cache[path] = ImageOps.exif_transpose(im).convert("RGB")
        im = cache[path]
        w, h = im.size
        share = rng.uniform(0.75, 1.0)
        cw, ch = max(16, int(w * share)), max(16, int(h * share))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        crop = im.crop((x, y, x + cw, y + ch))
        side = rng.randint(256, 640)
        scale = side / max(cw, ch)
        crop = crop.resize((max(16, int(cw * scale)), max(16, int(ch * scale))), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            crop = ImageOps.mirror(crop)
        target = dest / f"batch-{i // 500:03d}" / f"img-{i:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        crop.save(target, "JPEG", quality=rng.randint(70, 95))
        out.append(target)
    return out

