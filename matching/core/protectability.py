"""Whether one picture can be protected well, from its pixels alone (docs/self-test.md).

A picture too small, too flat or too poor in local features gives the engine
little to find its copies by: hashes of a flat picture collide with other flat
pictures (PDQ refuses them outright), and geometric verification, which
confirms every cropped, rotated or pasted copy, needs keypoints. Whether the
picture is a near-duplicate of another protected one needs the index, so the
service decides that (``matching.protection``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from matching.core.signals import PDQ_MIN_QUALITY

MIN_SIDE = 128          # px, the shorter side; below it crops and pasted copies keep too few pixels
MIN_LUMA_STD = 10.0     # grey levels (0-255), standard deviation of a 64x64 grey copy
MIN_COLOURS = 4         # distinct colours of a 64x64 copy at 4 bits a channel
MIN_KEYPOINTS = 100     # ORB keypoints at indexing; verification needs 12 inliers of them on a copy
_PROBE_SIDE = 64


@dataclass(frozen=True)
class Flag:
    code: str    # tiny | flat | few_features | near_duplicate
    reason: str  # a sentence for people
    image_id: int | None = None  # the other picture, for near_duplicate

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "reason": self.reason}
        if self.image_id is not None:
            out["image_id"] = self.image_id
        return out


def flatness(image: Image.Image) -> tuple[float, int]:
    """(standard deviation of the grey levels, distinct colours at 4 bits a channel) of a 64x64 copy."""
    small = image.convert("RGB").resize((_PROBE_SIDE, _PROBE_SIDE), Image.Resampling.BOX)
    rgb = np.asarray(small, dtype=np.uint8)
    grey = np.asarray(small.convert("L"), dtype=np.float32)
    quantised = (rgb >> 4).astype(np.int32)
    codes = (quantised[..., 0] << 8) | (quantised[..., 1] << 4) | quantised[..., 2]
    return float(grey.std()), int(np.unique(codes).size)


def pixel_flags(image: Image.Image, *, width: int, height: int, pdq_quality: int | None = None,
                keypoints: int | None = None) -> list[Flag]:
    """The flags the picture earns on its own. ``pdq_quality`` and ``keypoints`` are indexing's (None: not
    computed yet, so not judged); ``width``/``height`` are the picture's own size."""
    flags: list[Flag] = []
    if min(width, height) < MIN_SIDE:
        flags.append(Flag("tiny", f"{width}x{height} px: the shorter side is under {MIN_SIDE} px, so crops and "
                                  "small copies keep too few pixels to be recognised."))
    spread, colours = flatness(image)
    why = []
    if spread < MIN_LUMA_STD:
        why.append(f"grey levels vary by {spread:.1f} (under {MIN_LUMA_STD:g})")
    if colours < MIN_COLOURS:
        why.append(f"{colours} distinct colour{'s' if colours != 1 else ''} (under {MIN_COLOURS})")
    if pdq_quality is not None and pdq_quality < PDQ_MIN_QUALITY:
        why.append(f"PDQ quality {pdq_quality} (under {PDQ_MIN_QUALITY}: no PDQ hash is kept)")
    if why:
        flags.append(Flag("flat", "Too flat for perceptual hashes: " + ", ".join(why) + "."))
    if keypoints is not None and keypoints < MIN_KEYPOINTS:
        flags.append(Flag("few_features", f"{keypoints} local features (under {MIN_KEYPOINTS}): cropped, rotated "
                                          "or pasted copies cannot be verified geometrically."))
    return flags
