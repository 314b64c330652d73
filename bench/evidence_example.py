"""Render docs/evidence-example.png, the evidence picture docs/geometry.md shows, and
docs/evidence-mark-example.png, a mark found alone in a scene (docs/matching.md, "Marks").

    python -m bench.evidence_example docs/evidence-example.png
    python -m bench.evidence_example --mark docs/evidence-mark-example.png
"""
from __future__ import annotations

import io
import sys

from PIL import Image


def render_example(path: str) -> str:
    """Render the documentation example: a rotated-and-cropped copy of
    scikit-image's astronaut, downscaled and re-encoded, against the original."""
    from skimage import data

    from matching.core.evidence import render_evidence
    from matching.core.geometry import DEFAULT_QUERY_MAX_FEATURES, extract_features, verify

    reference = Image.fromarray(data.astronaut())
    # Straightened by 8 degrees, cropped to the upper left, saved small as a JPEG.
    copy = reference.rotate(8, resample=Image.Resampling.BICUBIC).crop((40, 30, 400, 380))
    buf = io.BytesIO()
    copy.resize((300, 292), Image.Resampling.LANCZOS).save(buf, "JPEG", quality=60)
    query = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    v = verify(extract_features(query, max_features=DEFAULT_QUERY_MAX_FEATURES, with_mirror=True),
               extract_features(reference))
    with open(path, "wb") as f:
        f.write(render_evidence(query, reference, v, title="modified_copy · example: astronaut.png"))
    return v.edit.describe() if v.edit else v.reason


def example_mark() -> Image.Image:
    """A made-up brand mark on a white tile, as its owner would protect it."""
    from PIL import ImageDraw, ImageFont

    tile = Image.new("RGB", (260, 260), (255, 255, 255))
    draw = ImageDraw.Draw(tile)
    draw.ellipse((40, 30, 220, 210), fill=(0, 110, 180))
    draw.polygon([(80, 170), (130, 60), (180, 170)], fill=(255, 200, 0))
    draw.text((130, 235), "NORDA", fill=(0, 60, 110), font=ImageFont.load_default(size=34), anchor="mm")
    return tile


def render_mark_example(path: str) -> str:
    """The mark of ``example_mark`` keyed out and composited at 16 % of the width, turned 6°, low
    on the left of scikit-image's astronaut (saved as a JPEG); the service's matcher, with the
    logo and two photos protected, finds and boxes it; the evidence shows both regions."""
    from skimage import data

    from matching.core.cnn.embedder import get_embedder
    from matching.core.evidence import render_evidence
    from matching.core.loading import load_image
    from matching.core.marks import extract_mark
    from matching.core.matcher import Matcher, Thresholds, index_references

    logo = example_mark()
    photos = [Image.fromarray(getattr(data, name)()).convert("RGB") for name in ("coffee", "rocket")]
    embedder = get_embedder()
    indexed = index_references([(1, photos[0]), (2, photos[1]), (7, logo)], embedder=embedder)
    matcher = Matcher(store=indexed.store, indexes=indexed.indexes(), thresholds=Thresholds.load(), embedder=embedder)
    mark = extract_mark(logo)
    assert mark is not None
    scene = Image.fromarray(data.astronaut()).convert("RGB")
    w = round(0.16 * scene.width)
    sprite = mark.image.convert("RGBa").resize((w, round(w * mark.image.height / mark.image.width)),
                                                Image.Resampling.LANCZOS)
    sprite = sprite.rotate(6, resample=Image.Resampling.BICUBIC, expand=True).convert("RGBA")
    scene.paste(sprite, (60, 330), sprite)
    buf = io.BytesIO()
    scene.save(buf, "JPEG", quality=80)
    loaded = load_image(buf.getvalue())
    outcome = matcher.match(loaded)
    best = outcome.decisions[0]
    verification = outcome.verifications.get(best.reference_id)
    with open(path, "wb") as f:
        f.write(render_evidence(loaded.image, logo, verification if best.reference_id == 7 else None,
                                title=f"{best.verdict} · example: a mark in a scene (norda.png)",
                                query_frame=(loaded.width, loaded.height)))
    return f"{best.reference_id} {best.verdict}: {(best.edit or {}).get('description', '')}"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--mark"]:
        print(render_mark_example(sys.argv[2] if len(sys.argv) > 2 else "evidence-mark-example.png"))
    else:
        print(render_example(sys.argv[1] if len(sys.argv) > 1 else "evidence-example.png"))
