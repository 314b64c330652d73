"""A stand-in for the CNN embedder in Spark tests: cheap, deterministic, observable.

Each construction and each batch is appended to the file named by
``FAKE_EMBEDDER_LOG`` (with the process id), so tests can prove the model is
built once per Python worker and fed in batches. ``FAKE_EMBEDDER_DELAY``
seconds are slept per batch, to make a job slow enough to kill half-way.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from matching.core.errors import ImageTooSmall


def _log(event: str, **fields: object) -> None:
    path = os.environ.get("FAKE_EMBEDDER_LOG")
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"event": event, "pid": os.getpid(), **fields}) + "\n")


class FakeEmbedder:
    dim = 8

    def __init__(self) -> None:
        _log("load")

    def embed(self, images):  # type: ignore[no-untyped-def]
        images = list(images)
        _log("batch", size=len(images))
        time.sleep(float(os.environ.get("FAKE_EMBEDDER_DELAY", "0")))
        rows = []
        for image in images:
            if image.width < 16:  # stands in for an image the model refuses
                raise ImageTooSmall("too narrow to embed")
            small = np.asarray(image.convert("RGB").resize((2, 2)), dtype=np.float32).reshape(-1)[: self.dim]
            rows.append(small / (np.linalg.norm(small) or 1.0))
        return np.stack(rows)


class FakeTileEmbedder(FakeEmbedder):
    """The fake with the two calls a scan's matcher needs (the whole picture alone, and its tiles)."""

    def embed_one(self, image):  # type: ignore[no-untyped-def]
        return self.embed([image])[0]

    def embed_crops(self, image, *, whole=True):  # type: ignore[no-untyped-def]
        from matching.core.cnn.embedder import CROP_WINDOWS, crop_boxes

        boxes = crop_boxes(image.size, CROP_WINDOWS if whole else CROP_WINDOWS[1:])
        return boxes, self.embed([image.crop(box) for box in boxes])
