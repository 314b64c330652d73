from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from skimage import data

from matching.core.hashindex import MIHIndex
from matching.core.loading import load_image
from matching.core.signals import (
    DIHEDRAL,
    PDQ_MIN_QUALITY,
    SIGNAL_VERSION,
    compute_signals,
    from_hex64,
    from_hex256,
    hamming64,
    hamming256,
    hex64,
    hex256,
    pdq256,
    pdq_dihedral,
    phash64,
    phash_dihedral,
    query_signals,
)

from .helpers import encode

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket"]
PDQ_THRESHOLD = 31  # Meta's default match distance


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    return {name: Image.fromarray(getattr(data, name)()).convert("RGB") for name in PHOTOS}


# Computed once with Meta's reference implementation (the pdqhash package's C++ PDQ) on each photo's full
# pixels, as ThreatExchange's pdq_hasher does, printed as ThreatExchange prints it (bit 0 of pdqhash's
# vector first, big-endian hex). Quality 100 for all four.
REFERENCE_PDQ = {
    "astronaut": "2d6b1af3a956c529e79ca3d2526fa834d4196c81cedd04de0a26b855fc99b724",
    "coffee": "8c629e779a663698b9a33866c026726c21a679f61eb6e1f8c79ba7e23c8299e0",
    "chelsea": "5feb5321f01da156898e2bf629a5d3438412cdbd23f48942464526315db33ffd",
    "rocket": "8792786c87937064bf1bc0e43f1fc0e03f1cc2e33da4c2537cec821b2ce4f376",
}
# Our hash feeds pdqhash a 320x320 bilinear luma (signals._pdq_input) instead of the full image: coffee's,
# computed once with pdqhash on that input. It pins the recipe and the bit order.
COFFEE_PDQ = "0c609e769a66364cf9833866c826f26c21a679f61eb6e1f8c799a7f63c8299e0"


@pytest.mark.parametrize("name", PHOTOS)
def test_hash_agrees_with_the_reference_implementation(name: str, photos: dict[str, Image.Image]) -> None:
    value, quality = pdq256(photos[name])
    assert quality == 100
    # The shrunk input moves a few bits (4-14 on these photos), far inside Meta's match distance: a hash we
    # exchange matches the one a ThreatExchange member computes from the same picture. A wrong bit order or
    # hex format would put it ~128 bits away.
    assert hamming256(value, from_hex256(REFERENCE_PDQ[name])) <= 16


def test_hex_is_threatexchange_format(photos: dict[str, Image.Image]) -> None:
    value, _ = pdq256(photos["coffee"])
    assert hex256(value) == COFFEE_PDQ
    s = hex256(value)
    assert len(s) == 64 and s == s.lower() and from_hex256(s) == value


def test_hex256_round_trip_and_validation() -> None:
    for v in (0, 1, 2**128 + 5, 2**256 - 1):
        assert from_hex256(hex256(v)) == v and len(hex256(v)) == 64
    assert hex256(255) == "0" * 62 + "ff"
    for bad in (-1, 2**256):
        with pytest.raises(ValueError):
            hex256(bad)
    for bad in ("ff", "0x" + "0" * 62, " " + "0" * 63, "g" * 64, "0" * 65):
        with pytest.raises(ValueError):
            from_hex256(bad)
    assert hamming256(0, 2**256 - 1) == 256 and hamming256(0b1011, 0b0110) == 3


@pytest.mark.parametrize("name", PHOTOS)
def test_dihedral_variants_are_the_hashes_of_the_transformed_image(
        name: str, photos: dict[str, Image.Image]) -> None:
    img = photos[name]
    pdqs, quality = pdq_dihedral(img)
    phashes = phash_dihedral(img)
    assert len(pdqs) == len(phashes) == len(DIHEDRAL) == 8
    assert (pdqs[0], quality) == pdq256(img) and phashes[0] == phash64(img)
    for j, (label, op) in enumerate(DIHEDRAL[1:], start=1):
        turned = img.transpose(op)
        # Variant j is (up to rounding) the hash of the turned picture...
        assert hamming256(pdqs[j], pdq256(turned)[0]) <= 4, label
        assert hamming64(phashes[j], phash64(turned)) <= 2, label
        # ...and far from every other variant.
        assert min(hamming256(pdqs[j], p) for i, p in enumerate(pdqs) if i != j) > 64, label


@pytest.mark.parametrize("name", PHOTOS)
@pytest.mark.parametrize("op", [Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.ROTATE_90])
def test_mirrored_and_rotated_copies_are_found_through_variants(
        name: str, op: Image.Transpose, photos: dict[str, Image.Image]) -> None:
    original = photos[name]
    reference, _ = pdq256(original)
    # The copy is also resized and re-encoded, as copies on the web are.
    turned = original.transpose(op)
    copy = load_image(encode(turned.resize((turned.width * 3 // 4, turned.height * 3 // 4)),
                             "JPEG", quality=75)).image
    plain, quality = pdq256(copy)
    assert quality >= PDQ_MIN_QUALITY
    assert hamming256(plain, reference) > PDQ_THRESHOLD  # the plain hash misses the copy
    variants, _ = pdq_dihedral(copy)
    assert min(hamming256(v, reference) for v in variants) <= PDQ_THRESHOLD
    # The same through an index holding the reference among other photos.
    others = [pdq256(photos[o])[0] for o in PHOTOS if o != name]
    words = [[(h >> (64 * (3 - i))) & (2**64 - 1) for i in range(4)] for h in [reference, *others]]
    index = MIHIndex.build(np.array(words, dtype=np.uint64), np.arange(len(words)), substrings=16)
    hits = {i for v in variants for i, _ in index.query_radius(v, PDQ_THRESHOLD)}
    assert hits == {0}
    assert index.query_radius(plain, PDQ_THRESHOLD) == []
    # pHash variants find them too, under the original design's rule (<= 10).
    ph = phash64(original)
    assert min(hamming64(v, ph) for v in phash_dihedral(copy)) <= 10 < hamming64(phash64(copy), ph)


def test_unrelated_photos_are_far_in_every_variant(photos: dict[str, Image.Image]) -> None:
    refs = {name: pdq256(img)[0] for name, img in photos.items()}
    for name, img in photos.items():
        variants, _ = pdq_dihedral(img)
        for other, ref in refs.items():
            if other != name:
                assert min(hamming256(v, ref) for v in variants) > 2 * PDQ_THRESHOLD, (name, other)


@pytest.mark.parametrize("colour", [0, 128, 255])
def test_flat_images_have_low_quality(colour: int) -> None:
    flat = Image.new("RGB", (200, 150), (colour, colour, colour))
    assert pdq256(flat)[1] < PDQ_MIN_QUALITY
    assert pdq_dihedral(flat)[1] < PDQ_MIN_QUALITY
    # A faint gradient is not detail either; a real photo is.
    ramp = np.tile(np.linspace(100, 104, 200, dtype=np.uint8), (150, 1))
    assert pdq256(Image.fromarray(ramp).convert("RGB"))[1] < PDQ_MIN_QUALITY
    assert pdq256(Image.fromarray(data.astronaut()))[1] >= PDQ_MIN_QUALITY


def test_tiny_and_odd_images_hash() -> None:
    for size in [(8, 8), (9, 300), (300, 9)]:
        rng = np.random.default_rng(size)
        img = Image.fromarray(rng.integers(0, 256, size=(*size[::-1], 3), dtype=np.uint8))
        value, quality = pdq256(img)
        assert 0 <= value < 2**256 and 0 <= quality <= 100
    grey = Image.fromarray(data.camera())  # mode "L" input works without conversion
    assert pdq256(grey) == pdq256(grey.convert("RGB"))


def test_signals_carry_pdq_and_queries_carry_variants(photos: dict[str, Image.Image]) -> None:
    loaded = load_image(encode(photos["chelsea"], "PNG"))
    sig = compute_signals(loaded)
    assert SIGNAL_VERSION == 2 and sig["version"] == 2
    assert sig["pdq"] == hex256(pdq256(photos["chelsea"])[0])
    assert sig["pdq_quality"] == pdq256(photos["chelsea"])[1] >= PDQ_MIN_QUALITY
    assert sig["phash"] == hex64(phash64(photos["chelsea"]))
    query = query_signals(loaded)
    assert {k: v for k, v in query.items() if not k.endswith("_variants")} == sig
    assert query["phash_variants"] == [hex64(v) for v in phash_dihedral(photos["chelsea"])]
    assert query["pdq_variants"] == [hex256(v) for v in pdq_dihedral(photos["chelsea"])[0]]
    assert query["phash_variants"][0] == sig["phash"] and query["pdq_variants"][0] == sig["pdq"]
    assert json.loads(json.dumps(query)) == query
    assert all(from_hex64(h) >= 0 for h in query["phash_variants"])
