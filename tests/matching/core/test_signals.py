from __future__ import annotations

import hashlib
import itertools
import json

import imagehash
import numpy as np
import pytest
from PIL import Image
from skimage import data

from matching.core.loading import load_image
from matching.core.signals import (
    SIGNAL_VERSION,
    compute_signals,
    from_hex64,
    hamming64,
    hex64,
    phash64,
)

from .helpers import encode

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera"]


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: Image.fromarray(getattr(data, name)()) for name in PHOTOS}


@pytest.mark.parametrize("name", PHOTOS)
def test_phash_equals_imagehash(name: str, photos: dict[str, Image.Image]) -> None:
    # Same recipe (LANCZOS 32x32 greyscale, unnormalised DCT, median of the
    # 8x8 block) and the same bit order, so the hex strings are identical.
    assert hex64(phash64(photos[name])) == str(imagehash.phash(photos[name]))


def test_phash_bit_order_is_row_major_msb_first(photos: dict[str, Image.Image]) -> None:
    bits = imagehash.phash(photos["chelsea"]).hash.ravel()
    value = phash64(photos["chelsea"])
    assert [(value >> (63 - i)) & 1 for i in range(64)] == [int(b) for b in bits]
    assert 0 <= value < 2**64


@pytest.mark.parametrize("name", PHOTOS)
def test_resized_reencoded_copy_is_near(name: str, photos: dict[str, Image.Image]) -> None:
    img = photos[name].convert("RGB")
    copy = img.resize((img.width * 3 // 5, img.height * 3 // 5), Image.LANCZOS)
    reloaded = load_image(encode(copy, "JPEG", quality=60)).image
    assert hamming64(phash64(img), phash64(reloaded)) <= 6


def test_unrelated_photos_are_far(photos: dict[str, Image.Image]) -> None:
    hashes = {name: phash64(img) for name, img in photos.items()}
    for a, b in itertools.combinations(PHOTOS, 2):
        assert hamming64(hashes[a], hashes[b]) > 16, (a, b)


def test_hex_round_trip_and_validation() -> None:
    for v in (0, 1, 0xDEADBEEF, 2**63, 2**64 - 1):
        s = hex64(v)
        assert len(s) == 16 and s == s.lower() and from_hex64(s) == v
    assert hex64(255) == "00000000000000ff"
    for bad in (-1, 2**64):
        with pytest.raises(ValueError):
            hex64(bad)
    for bad in ("ff", "0x00000000000000f", " 000000000000000", "00000000_0000000", "g" * 16):
        with pytest.raises(ValueError):
            from_hex64(bad)


def test_hamming64() -> None:
    assert hamming64(0, 0) == 0
    assert hamming64(0, 2**64 - 1) == 64
    assert hamming64(0b1011, 0b0110) == 3


# Computed once for skimage's coffee (600x400 RGB) with the reference implementations: ImageHash 4.3.2's
# phash and pdqhash on signals._pdq_input's 320x320 luma (test_pdq.py compares that with PDQ on the full image).
COFFEE_PIXELS_SHA256 = "0ce2b51640b9c95f19617f03eabf40c3f0368589cc1ee1190b70966165ac184f"
COFFEE_PHASH = "bb8320376c0f3637"
COFFEE_PDQ = "0c609e769a66364cf9833866c826f26c21a679f61eb6e1f8c799a7f63c8299e0"


def test_compute_signals(photos: dict[str, Image.Image]) -> None:
    pixels = np.asarray(photos["coffee"])
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == COFFEE_PIXELS_SHA256  # the fixture itself
    raw = encode(photos["coffee"], "PNG")
    sig = compute_signals(load_image(raw))
    # sha256_pixels as loading.py documents it: "RGB", width and height (4 bytes, big-endian), the pixels.
    pixel_digest = hashlib.sha256(b"RGB" + (600).to_bytes(4, "big") + (400).to_bytes(4, "big") + pixels.tobytes())
    assert sig == {
        "version": 2,
        "phash": COFFEE_PHASH,
        "pdq": COFFEE_PDQ,
        "pdq_quality": 100,
        "sha256_bytes": hashlib.sha256(raw).hexdigest(),
        "sha256_pixels": pixel_digest.hexdigest(),
        "width": 600,
        "height": 400,
        "format": "PNG",
    }
    assert SIGNAL_VERSION == 2
    assert json.loads(json.dumps(sig)) == sig


def test_phash_of_flat_image_is_defined() -> None:
    # Degenerate input (all AC coefficients ~0, ties at the median): still imagehash's bits.
    flat = Image.fromarray(np.full((16, 16, 3), 90, dtype=np.uint8))
    assert hex64(phash64(flat)) == str(imagehash.phash(flat))
