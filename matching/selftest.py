"""The protection self-test: would this protected image still be found after the usual edits?

Each edit makes a copy of the stored picture (deterministic: a fixed seed per
edit), saves it as a JPEG as copies are posted, and runs it through the engine a
check uses (``matching.engine.find_candidates`` over the organisation's live
index, the partial-copy pass included where a check would run it). Nothing is
written but the ``SelfTest`` row: no check, no match, no alert. docs/self-test.md.

The edits are plain PIL and numpy; the photos that collages and marks are set
into are scikit-image's bundled pictures, which the package ships.
"""
from __future__ import annotations

import io
import logging
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from PIL import Image, ImageDraw, ImageFont, ImageOps

from catalog.models import Organisation, ProtectedImage
from imgprotect.dispatch import enqueue_on_commit
from imgprotect.errors import Conflict
from matching.core.errors import ImageError
from matching.core.loading import LoadedImage, heavy_work, load_image
from matching.core.signals import phash64
from matching.engine import cnn_enabled, find_candidates
from matching.index_registry import registry
from matching.models import SelfTest

log = logging.getLogger(__name__)

TOP_K = 5  # as many candidates as a check's answer lists
# Past this a queued or running self-test lost its worker or its message (the task's hard time limit,
# workers/tasks.py, is far shorter): asking again fails it and starts a new one.
STALE_AFTER = timedelta(minutes=15)
# scikit-image's bundled photos, in the order collages and marks take them; one that is itself
# protected in the organisation (its pHash in the index) is passed over, so it cannot outrank the image.
BACKGROUNDS = ("immunohistochemistry", "hubble_deep_field", "coffee", "chelsea", "rocket", "astronaut", "retina")
_BACKGROUND_RADIUS = 10  # pHash bits: a background this close to a protected image counts as protected
_MARK_BORDER_SHARE = 0.92  # of the border ring within _MARK_TOLERANCE of its median: a flat tile
_MARK_TOLERANCE = 24.0


# -- the edits ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Edit:
    name: str
    label: str
    apply: Callable[[Image.Image, np.random.Generator, list[Image.Image]], Image.Image]
    marks_only: bool = False


def _crop(image: Image.Image, area: float, fx: float, fy: float) -> Image.Image:
    w, h = image.size
    cw, ch = max(1, round(w * math.sqrt(area))), max(1, round(h * math.sqrt(area)))
    x0, y0 = round((w - cw) * fx), round((h - ch) * fy)
    return image.crop((x0, y0, x0 + cw, y0 + ch))


def _crop_60(image: Image.Image, rng: np.random.Generator, photos: list[Image.Image]) -> Image.Image:
    return _crop(image, 0.60, 0.5, 0.5)  # the centre, 60 % of the area


def _crop_40(image: Image.Image, rng: np.random.Generator, photos: list[Image.Image]) -> Image.Image:
    return _crop(image, 0.40, float(rng.integers(0, 2)), float(rng.integers(0, 2)))  # a corner, 40 %


def _rotate_7(image: Image.Image, rng: np.random.Generator, photos: list[Image.Image]) -> Image.Image:
    # expand: every pixel kept, black corners, as most editors do
    return image.rotate(7.0, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(0, 0, 0))


def _rotate_90(image: Image.Image, rng: np.random.Generator, photos: list[Image.Image]) -> Image.Image:
    return image.transpose(Image.Transpose.ROTATE_90)


def _mirror(image: Image.Image, rng: np.random.Generator, photos: list[Image.Image]) -> Image.Image:
    return ImageOps.mirror(image)


def _recolour(image: Image.Image, rng: np.random.Generator, photos: list[Image.Image]) -> Image.Image:
    # hue turned by 40 degrees, saturation raised by half, a little darker
    hsv = np.asarray(image.convert("HSV"), dtype=np.int16).copy()
    hsv[..., 0] = (hsv[..., 0] + round(40 * 256 / 360)) % 256
    hsv[..., 1] = np.clip(hsv[..., 1] * 1.5, 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * 0.85, 0, 255)
    return Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")


def _caption_bar(image: Image.Image, rng: np.random.Generator, photos: list[Image.Image]) -> Image.Image:
    w, h = image.size
    bar = max(20, round(0.18 * h))
    canvas = Image.new("RGB", (w, h + bar), (0, 0, 0))
    canvas.paste(image, (0, 0))
    text = "Seen on the feed today"
    size = max(8, round(bar * 0.55))
    font = ImageFont.load_default(size=size)
    while size > 8 and font.getlength(text) > 0.92 * w:
        size -= 2
        font = ImageFont.load_default(size=size)
    ImageDraw.Draw(canvas).text((w / 2, h + bar / 2), text, font=font, anchor="mm", fill=(255, 255, 255))
    return canvas


def _screenshot(image: Image.Image, rng: np.random.Generator, photos: list[Image.Image]) -> Image.Image:
    """The picture on a coloured mat inside a browser-like window: a title bar, a side panel, a status strip."""
    w, h = image.size
    border, title = max(4, round(0.05 * max(w, h))), max(16, round(0.08 * h))
    side, status = max(12, round(0.12 * w)), max(8, round(0.04 * h))
    canvas = Image.new("RGB", (side + w + 2 * border, title + h + 2 * border + status),
                       tuple(int(v) for v in rng.integers(0, 256, 3)))
    canvas.paste(image, (side + border, title + border))
    draw = ImageDraw.Draw(canvas)
    chrome = (222, 225, 230)
    draw.rectangle((0, 0, canvas.width - 1, title - 1), fill=chrome)
    draw.rounded_rectangle((title * 3.2, title * 0.2, canvas.width - title * 0.5, title * 0.8),
                           radius=title * 0.3, fill=(255, 255, 255))
    draw.rectangle((0, title, side - 1, canvas.height - 1), fill=chrome)
    draw.rectangle((0, canvas.height - status, canvas.width - 1, canvas.height - 1), fill=chrome)
    return canvas


def _collage(image: Image.Image, rng: np.random.Generator, photos: list[Image.Image]) -> Image.Image:
    """A 2x2 collage, cells at most 320 px (collages are posted at screen size), the image in one cell."""
    scale = min(1.0, 320 / max(image.size))
    cw, ch = max(8, round(image.width * scale)), max(8, round(image.height * scale))
    gap = 6
    canvas = Image.new("RGB", (2 * cw + 3 * gap, 2 * ch + 3 * gap), (255, 255, 255))
    slot = int(rng.integers(0, 4))
    others = iter(photos)
    for cell in range(4):
        x0, y0 = gap + (cell % 2) * (cw + gap), gap + (cell // 2) * (ch + gap)
        tile = image.resize((cw, ch), Image.Resampling.BILINEAR) if cell == slot else ImageOps.fit(
            next(others), (cw, ch), Image.Resampling.BILINEAR)
        canvas.paste(tile, (x0, y0))
    return canvas


def _mark_in_photo(image: Image.Image, rng: np.random.Generator, photos: list[Image.Image]) -> Image.Image:
    """The mark keyed out of its flat tile, at a fifth of a photo's width, turned a little, composited in."""
    mark = key_mark(image)
    photo = photos[0].copy()
    mw = max(8, round(photo.width * 0.2))
    mh = max(4, min(photo.height - 2, round(mw * mark.height / mark.width)))
    sprite = mark.convert("RGBa").resize((mw, mh), Image.Resampling.LANCZOS)
    sprite = sprite.rotate(5.0, resample=Image.Resampling.BICUBIC, expand=True).convert("RGBA")
    x0 = int(rng.integers(0, max(1, photo.width - sprite.width)))
    y0 = int(rng.integers(0, max(1, photo.height - sprite.height)))
    photo.paste(sprite, (x0, y0), sprite)
    return photo


EDITS: tuple[Edit, ...] = (
    Edit("crop_60", "Crop to 60 %", _crop_60),
    Edit("crop_40", "Crop to 40 %", _crop_40),
    Edit("rotate_7", "Rotated 7°", _rotate_7),
    Edit("rotate_90", "Rotated 90°", _rotate_90),
    Edit("mirror", "Mirrored", _mirror),
    Edit("recolour", "Recoloured", _recolour),
    Edit("caption_bar", "Caption bar", _caption_bar),
    Edit("screenshot", "Screenshot border", _screenshot),
    Edit("collage", "Small in a collage", _collage),
    Edit("mark_in_photo", "Mark in a photo", _mark_in_photo, marks_only=True),
)


def _border_ring(rgb: np.ndarray) -> np.ndarray:
    return np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])


def is_mark(image: Image.Image) -> bool:
    """A mark (a logo on a flat or transparent tile; transparency is flattened onto white when loaded):
    nearly all of the picture's outer ring is one colour, and something inside stands out of it."""
    small = np.asarray(image.convert("RGB").resize((128, 128), Image.Resampling.BOX), dtype=np.float32)
    ring = _border_ring(small)
    bg = np.median(ring, axis=0)
    flat = float((np.linalg.norm(ring - bg, axis=1) <= _MARK_TOLERANCE).mean())
    return flat >= _MARK_BORDER_SHARE and float(np.linalg.norm(small - bg, axis=2).max()) > 2 * _MARK_TOLERANCE


def key_mark(tile: Image.Image) -> Image.Image:
    """The mark alone (RGBA, cropped to it): alpha grows with the distance from the tile's colour (the
    median of the border), so antialiased edges stay soft."""
    rgb = np.asarray(tile.convert("RGB"), dtype=np.float32)
    bg = np.median(_border_ring(rgb), axis=0)
    distance = np.linalg.norm(rgb - bg, axis=2)
    alpha = np.clip((distance - 8.0) / 48.0, 0.0, 1.0)
    ys, xs = np.nonzero(alpha > 0)
    if not len(ys):
        return tile.convert("RGBA")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    a = alpha[y0:y1, x0:x1, None]
    colour = (rgb[y0:y1, x0:x1] - (1.0 - a) * bg) / np.maximum(a, 1e-3)
    rgba = np.concatenate([np.clip(colour, 0, 255), 255.0 * a], axis=2)
    return Image.fromarray((rgba + 0.5).astype(np.uint8), "RGBA")


@lru_cache(maxsize=len(BACKGROUNDS))
def _background(name: str) -> Image.Image:
    import skimage.data  # the package ships these pictures

    pixels = getattr(skimage.data, name)()
    image = Image.fromarray(pixels).convert("RGB")
    image.thumbnail((640, 640), Image.Resampling.BILINEAR)
    return image


def backgrounds(protected: Callable[[int], bool], count: int = 3) -> list[Image.Image]:
    """``count`` photos to set copies into, skipping any that ``protected`` says is (close to) a
    protected picture, given its pHash."""
    chosen = [_background(name) for name in BACKGROUNDS if not protected(phash64(_background(name)))]
    if len(chosen) < count:  # every bundled photo is protected: use them all the same
        chosen += [_background(name) for name in BACKGROUNDS][: count - len(chosen)]
    return chosen[:count]


def edited_copies(image: Image.Image, *, mark: bool, photos: list[Image.Image]) -> list[tuple[Edit, bytes]]:
    """Each edit's copy of ``image``, as JPEG bytes (quality 90), in ``EDITS`` order."""
    out = []
    for edit in EDITS:
        if edit.marks_only and not mark:
            continue
        rng = np.random.default_rng(zlib.crc32(edit.name.encode()))
        buf = io.BytesIO()
        edit.apply(image.convert("RGB"), rng, photos).convert("RGB").save(buf, "JPEG", quality=90)
        out.append((edit, buf.getvalue()))
    return out


# -- the service ------------------------------------------------------------------------------

def selftest_start(*, image: ProtectedImage, user: Any | None = None) -> SelfTest:
    """Queue a self-test of ``image``; one already queued or running is returned instead, unless it is
    older than ``STALE_AFTER`` (lost with its worker): that one fails and a new one starts. The edits are
    deterministic, so a finished test run on the index as it still is (same generation, same engine
    settings) is returned too: it would come out the same."""
    if image.status != ProtectedImage.Status.INDEXED:
        raise Conflict("Only an indexed image can be self-tested; this one is "
                       f"{image.get_status_display().lower()}.", code="not_indexed")
    latest = SelfTest.objects.filter(image=image, status=SelfTest.Status.DONE).order_by("-created", "-id").first()
    if latest is not None and (latest.results or {}).get("conditions") == _conditions(image.organisation_id):
        return latest
    with transaction.atomic():
        unfinished = SelfTest.objects.select_for_update().filter(
            image=image, status__in=[SelfTest.Status.QUEUED, SelfTest.Status.RUNNING])
        unfinished.filter(created__lt=timezone.now() - STALE_AFTER).update(
            status=SelfTest.Status.FAILED, failure_reason="The self-test was lost with its worker.",
            finished=timezone.now())
        running = unfinished.first()
        if running is not None:
            return running
        test = SelfTest.objects.create(organisation_id=image.organisation_id, image=image,
                                       requested_by=user if user is not None and user.is_authenticated else None)
        enqueue_on_commit("workers.tasks.run_self_test", test.pk)
    return test


def selftest_run(*, self_test_id: int) -> SelfTest | None:
    """Run a queued self-test. Idempotent: only the delivery that claims it (queued -> running) does the
    work (docs/coding-habits.md, habit 3); image errors fail it for good, others put it back for a retry."""
    running = SelfTest.Status.RUNNING
    claimed = SelfTest.objects.filter(pk=self_test_id, status=SelfTest.Status.QUEUED).update(
        status=running, started=timezone.now())
    if not claimed:
        return SelfTest.objects.filter(pk=self_test_id).first()
    test = SelfTest.objects.select_related("image").get(pk=self_test_id)
    try:
        with heavy_work(settings.IMGPROTECT_HEAVY_WORK_SLOTS):
            results = _run_edits(test.image)
    except ImageError as exc:
        SelfTest.objects.filter(pk=self_test_id).update(status=SelfTest.Status.FAILED, failure_reason=exc.reason,
                                                         finished=timezone.now())
        raise
    except BaseException:
        SelfTest.objects.filter(pk=self_test_id, status=running).update(status=SelfTest.Status.QUEUED)
        raise
    SelfTest.objects.filter(pk=self_test_id, status=running).update(
        status=SelfTest.Status.DONE, results=results, finished=timezone.now())
    test.refresh_from_db()
    return test


def _load(data: bytes) -> LoadedImage:
    return load_image(data, max_bytes=max(settings.IMGPROTECT_MAX_UPLOAD_BYTES, len(data)),
                      max_pixels=settings.IMGPROTECT_MAX_PIXELS, max_side=settings.IMGPROTECT_WORK_MAX_SIDE,
                      max_decode_bytes=settings.IMGPROTECT_MAX_DECODE_BYTES)


def _partial_mode() -> str:
    # A check runs the partial-copy pass when its cheap passes found no copy (in the background by
    # default, or inline): "auto" does the same in one call. Without the CNN there is no such pass.
    return "never" if not cnn_enabled() or settings.IMGPROTECT_PARTIAL_SEARCH == "off" else "auto"


def _conditions(organisation_id: int) -> dict[str, Any]:
    """What a result depends on besides the image: the index's generation and the engine's switches."""
    generation = Organisation.objects.filter(pk=organisation_id).values_list("index_generation", flat=True).first()
    return {"index_generation": generation, "cnn": cnn_enabled(), "partial_search": _partial_mode()}


def _run_edits(image: ProtectedImage) -> dict[str, Any]:
    conditions = _conditions(image.organisation_id)
    with default_storage.open(image.file.name, "rb") as fh:
        original = _load(fh.read())
    indexes = registry.get(image.organisation_id)

    def protected(code: int) -> bool:
        return indexes.phash is not None and bool(len(indexes.phash)) and bool(
            indexes.phash.query_radius(code, _BACKGROUND_RADIUS))

    mark = is_mark(original.image)
    partial = conditions["partial_search"]
    rows = []
    for edit, data in edited_copies(original.image, mark=mark, photos=backgrounds(protected)):
        started = time.perf_counter()
        candidates, outcome = find_candidates(organisation_id=image.organisation_id, loaded=_load(data),
                                              top_k=TOP_K, partial=partial)
        rank = next((n for n, c in enumerate(candidates, 1) if c.image.pk == image.pk), None)
        mine = candidates[rank - 1].decision if rank else None
        top = candidates[0] if candidates and candidates[0].image.pk != image.pk else None
        rows.append({
            "edit": edit.name, "label": edit.label,
            "found": bool(mine and mine.is_match), "rank": rank,
            "verdict": mine.verdict if mine else "none", "score": round(mine.score, 4) if mine else 0.0,
            "partial_pass": "cnn_tiles_ms" in outcome.timings_ms,
            "outranked_by": top.image.pk if top is not None and top.decision.is_match else None,
            "elapsed_ms": round((time.perf_counter() - started) * 1000, 1),
        })
    found = sum(1 for r in rows if r["found"])
    log.info("self-test of image %s: %s of %s edits found", image.pk, found, len(rows))
    return {"kind": "mark" if mark else "photo", "edits": rows, "found": found,
            "total": len(rows), "cnn": conditions["cnn"], "partial_search": partial, "conditions": conditions}
