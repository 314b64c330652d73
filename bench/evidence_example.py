"""Render docs/evidence-example.png, the evidence picture docs/geometry.md shows.

    python -m bench.evidence_example docs/evidence-example.png
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


if __name__ == "__main__":
    print(render_example(sys.argv[1] if len(sys.argv) > 1 else "evidence-example.png"))
