from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, PngImagePlugin

from matching.core import loading
from matching.core.errors import (
    CorruptImage,
    EmptyFile,
    FileTooLarge,
    ImageError,
    ImageTooSmall,
    TooManyPixels,
    UnsupportedFormat,
)
from matching.core.loading import (
    DEFAULT_MAX_BYTES,
    MIN_SIDE,
    LoadedImage,
    load_image,
    load_image_file,
    sha256_hex,
)

from .helpers import encode, gradient


def png_header_only(width: int, height: int) -> bytes:
    """A valid-looking PNG declaring ``width`` x ``height`` 1-bit pixels with a
    tiny IDAT: a decompression bomb's header without its payload."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


# -- every allowed format loads ---------------------------------------------------

@pytest.mark.parametrize(
    ("fmt", "params"),
    [("JPEG", {"quality": 95}), ("PNG", {}), ("WEBP", {"lossless": True}),
     ("BMP", {}), ("TIFF", {}), ("GIF", {})],
)
def test_each_allowed_format_loads(fmt: str, params: dict[str, object]) -> None:
    data = encode(gradient(64, 48), fmt, **params)
    loaded = load_image(data)
    assert isinstance(loaded, LoadedImage)
    assert (loaded.format, loaded.width, loaded.height) == (fmt, 64, 48)
    assert loaded.image.mode == "RGB" and loaded.image.size == (64, 48)
    assert loaded.sha256_bytes == hashlib.sha256(data).hexdigest()


def test_lossless_formats_keep_pixels_exactly() -> None:
    src = gradient(40, 30)
    for fmt in ("PNG", "BMP", "TIFF"):
        assert np.array_equal(np.asarray(load_image(encode(src, fmt)).image), np.asarray(src))


def test_png_alpha_is_flattened_onto_white() -> None:
    rgba = Image.new("RGBA", (20, 10), (255, 0, 0, 255))
    rgba.paste((0, 0, 255, 0), (10, 0, 20, 10))  # right half fully transparent
    rgba.putpixel((0, 0), (0, 0, 0, 128))  # half-transparent black
    img = load_image(encode(rgba, "PNG")).image
    assert img.mode == "RGB"
    assert img.getpixel((5, 5)) == (255, 0, 0)
    assert img.getpixel((15, 5)) == (255, 255, 255)
    assert all(126 <= c <= 128 for c in img.getpixel((0, 0)))


def test_palette_transparency_is_flattened_onto_white() -> None:
    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.paste(0, (0, 0, 8, 16))
    img = load_image(encode(pal, "PNG", transparency=0)).image
    assert img.getpixel((2, 2)) == (255, 255, 255)
    assert img.getpixel((12, 2)) == (0, 255, 0)


def test_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (32, 32), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    loaded = load_image(data)
    assert loaded.format == "GIF"
    assert loaded.image.getpixel((16, 16)) == (255, 0, 0)


def test_sixteen_bit_greyscale_is_scaled_not_clipped() -> None:
    arr = np.full((16, 16), 32768, dtype=np.uint16)  # mid grey in 16 bits
    img = load_image(encode(Image.fromarray(arr), "PNG")).image
    assert all(abs(c - 128) <= 1 for c in img.getpixel((3, 3)))


def test_exif_orientation_6_swaps_width_and_height() -> None:
    src = Image.new("RGB", (40, 20), (200, 30, 30))
    src.paste((30, 30, 200), (0, 0, 20, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    loaded = load_image(encode(src, "JPEG", exif=exif.tobytes(), quality=95))
    assert (loaded.width, loaded.height) == (20, 40)
    assert loaded.image.size == (20, 40)
    # The stored left (blue) half is displayed on top after a clockwise turn.
    top, bottom = loaded.image.getpixel((10, 5)), loaded.image.getpixel((10, 35))
    assert top[2] > 150 and bottom[0] > 150


# -- digests ---------------------------------------------------------------------------

def test_sha256_pixels_ignores_the_container() -> None:
    src = gradient(33, 17)
    png, bmp = load_image(encode(src, "PNG")), load_image(encode(src, "BMP"))
    assert png.sha256_pixels == bmp.sha256_pixels
    assert png.sha256_bytes != bmp.sha256_bytes
    expected = hashlib.sha256(b"RGB" + (33).to_bytes(4, "big") + (17).to_bytes(4, "big")
                              + src.tobytes()).hexdigest()
    assert png.sha256_pixels == expected


def test_sha256_hex() -> None:
    assert sha256_hex(b"abc") == hashlib.sha256(b"abc").hexdigest()


# -- refusals ------------------------------------------------------------------------------

def test_empty_file() -> None:
    with pytest.raises(EmptyFile) as info:
        load_image(b"")
    assert info.value.code == "empty_file"
    assert str(info.value) == info.value.reason and info.value.reason


def test_text_named_like_a_jpeg_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "holiday.jpg"
    path.write_text("this is not a picture\n" * 10)
    with pytest.raises(UnsupportedFormat) as info:
        load_image_file(path)
    assert info.value.code == "unsupported_format"


@pytest.mark.parametrize("fmt", ["ICO", "PCX", "PPM", "TGA"])
def test_formats_outside_the_allow_list_are_unsupported(fmt: str) -> None:
    data = encode(gradient(32, 32), fmt)
    assert Image.open(io.BytesIO(data)).format == fmt  # a valid file...
    with pytest.raises(UnsupportedFormat):
        load_image(data)  # ...that the service does not accept


def test_truncated_jpeg_is_corrupt(photo_jpeg: bytes) -> None:
    with pytest.raises(CorruptImage) as info:
        load_image(photo_jpeg[: len(photo_jpeg) // 2])
    assert info.value.code == "corrupt_image"
    assert load_image(photo_jpeg).width == 512  # the whole file is fine


def test_truncated_png_is_corrupt() -> None:
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encode(noisy, "PNG")
    with pytest.raises(CorruptImage):
        load_image(data[: len(data) // 2])


@pytest.mark.parametrize(
    "side",
    [
        7000,  # 49M: above our 40M budget, below Pillow's own warning level
        10000,  # 100M: Pillow warns (DecompressionBombWarning) at open
        30000,  # 900M: Pillow raises DecompressionBombError at open
    ],
)
def test_pixel_bomb_is_refused_from_the_header(side: int, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self: object) -> None:
        raise AssertionError("pixels must not be decoded")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", no_decoding)
    data = png_header_only(side, side)
    assert len(data) < 200
    with pytest.raises(TooManyPixels) as info:
        load_image(data)
    assert info.value.code == "too_many_pixels"


def test_max_pixels_is_configurable() -> None:
    data = encode(gradient(100, 100), "PNG")
    with pytest.raises(TooManyPixels):
        load_image(data, max_pixels=9_999)
    assert load_image(data, max_pixels=10_000).width == 100


def test_global_pillow_limit_is_left_alone() -> None:
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(TooManyPixels):
        load_image(png_header_only(30000, 30000))
    assert Image.MAX_IMAGE_PIXELS == before


def test_too_many_bytes() -> None:
    data = encode(gradient(), "PNG")
    with pytest.raises(FileTooLarge) as info:
        load_image(data, max_bytes=len(data) - 1)
    assert info.value.code == "file_too_large"
    assert load_image(data, max_bytes=len(data)).width == 64


def test_huge_file_is_refused_without_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "huge.png"
    with open(path, "wb") as f:
        f.truncate(DEFAULT_MAX_BYTES + 1)  # sparse: costs no disk

    def no_open(*args: object, **kwargs: object) -> None:
        raise AssertionError("the file must not be opened")

    monkeypatch.setattr(loading, "open", no_open, raising=False)
    with pytest.raises(FileTooLarge):
        load_image_file(path)


def test_load_image_file_reads_and_loads(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(encode(gradient(), "PNG"))
    assert load_image_file(path).format == "PNG"
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(EmptyFile):
        load_image_file(tmp_path / "empty.png")
    with pytest.raises(FileTooLarge):
        load_image_file(path, max_bytes=10)


def test_image_too_small() -> None:
    with pytest.raises(ImageTooSmall) as info:
        load_image(encode(gradient(MIN_SIDE - 1, 50), "PNG"))
    assert info.value.code == "image_too_small"
    assert load_image(encode(gradient(MIN_SIDE, MIN_SIDE), "PNG")).width == MIN_SIDE


def test_error_codes_are_fixed() -> None:
    codes = {cls: cls("x").code for cls in (EmptyFile, FileTooLarge, UnsupportedFormat,
                                             CorruptImage, TooManyPixels, ImageTooSmall)}
    assert list(codes.values()) == ["empty_file", "file_too_large", "unsupported_format",
                                    "corrupt_image", "too_many_pixels", "image_too_small"]
    assert all(issubclass(cls, ImageError) for cls in codes)


# -- fuzzing: only ImageError may escape ------------------------------------------

def _seed_files() -> list[bytes]:
    src = gradient(24, 20)
    return [encode(src, "PNG"), encode(src, "JPEG", quality=80), encode(src, "GIF"),
            encode(src, "BMP"), encode(src, "TIFF"), encode(src, "WEBP")]


SEEDS = _seed_files()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _load_or_image_error(data: bytes) -> None:
    try:
        loaded = load_image(data)
    except ImageError as e:
        assert e.code and e.reason
    else:
        assert loaded.image.mode == "RGB" and min(loaded.width, loaded.height) >= MIN_SIDE


@FUZZ
@given(st.binary(max_size=2048))
def test_fuzz_random_bytes(data: bytes) -> None:
    _load_or_image_error(data)


@FUZZ
@given(
    seed=st.sampled_from(SEEDS),
    flips=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=8),
    cut=st.floats(0.0, 1.0),
)
def test_fuzz_mutated_real_files(seed: bytes, flips: list[tuple[float, int]], cut: float) -> None:
    data = bytearray(seed)
    for where, value in flips:
        data[int(where * len(data))] = value
    _load_or_image_error(bytes(data[: max(1, int(cut * len(data)))]))


@pytest.mark.parametrize("seed", SEEDS, ids=["png", "jpeg", "gif", "bmp", "tiff", "webp"])
def test_every_truncation_prefix_is_handled(seed: bytes) -> None:
    for end in range(0, len(seed), max(1, len(seed) // 60)):
        _load_or_image_error(seed[:end])


# -- finding 4: memory per image is bounded ------------------------------------------------

_PEAK_PROBE = """
import resource, sys
from matching.core.loading import load_image
from matching.core.matcher import Matcher, Thresholds, index_references
from tests.images import encode, photo

embedder = None
if sys.argv[2] == "cnn":
    from matching.core.cnn.embedder import get_embedder
    embedder = get_embedder()
indexed = index_references([(i, photo(n)) for i, n in enumerate(["chelsea", "coffee", "rocket"], 1)],
                           embedder=embedder)
matcher = Matcher(store=indexed.store, indexes=indexed.indexes(), thresholds=Thresholds.load(), embedder=embedder)
matcher.match(load_image(encode(photo("coffee").resize((600, 400)), "JPEG")), partial="always")  # lazy imports
data = open(sys.argv[1], "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
best = matcher.match(load_image(data), partial="always").decisions[0]
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{(after - before) // 1024} {best.reference_id} {best.is_match}")
"""


@pytest.mark.parametrize(("fmt", "cnn"), [("PNG", False), ("JPEG", False), ("PNG", True)])
def test_finding_04_a_40_mpx_check_raises_peak_memory_by_under_300_mb(tmp_path: Path, fmt: str, cnn: bool) -> None:
    """A fresh process matching one 8000x5000 upscaled copy (an RGBA PNG of 1 MB, or a JPEG
    with an EXIF orientation): the decode, the signals and the matcher together raise its peak
    memory by < 300 MB (before the fix: 450-760 MB for the PNG, CNN off or on; 220-530 MB for
    the JPEG, depending on the path the match takes; after: 170-190 MB), and it still finds
    the original."""
    import subprocess
    import sys

    from tests.images import photo

    path = tmp_path / f"big.{fmt.lower()}"
    if fmt == "PNG":
        photo("chelsea").resize((8000, 5000), Image.NEAREST).convert("RGBA").save(path, compress_level=1)
    else:  # as a phone stores it: on its side, with the EXIF orientation that turns it upright
        upright = photo("chelsea").resize((8000, 5000), Image.BICUBIC)
        upright.transpose(Image.Transpose.ROTATE_90).save(path, quality=85, exif=_exif(6))
        del upright
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run([sys.executable, "-c", _PEAK_PROBE, str(path), "cnn" if cnn else "off"], cwd=root,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    grown_mb, best, is_match = done.stdout.split()[-3:]
    assert int(grown_mb) < 300, f"peak memory grew by {grown_mb} MB"
    assert (best, is_match) == ("1", "True")


def _upright_rgb_before(data: bytes) -> Image.Image:
    """The loader's recipe before finding 4: the whole picture turned, then converted."""
    from PIL import ImageOps

    im = ImageOps.exif_transpose(Image.open(io.BytesIO(data)))
    if im.mode == "I;16":
        im = Image.fromarray((np.asarray(im, dtype=np.float64) / 257).round().astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA") or "transparency" in im.info:
        canvas = Image.new("RGBA", im.size, (255, 255, 255, 255))
        canvas.alpha_composite(im.convert("RGBA"))
        im = canvas
    return im.convert("RGB")


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _sample(mode: str) -> Image.Image:
    rgb = gradient(53, 37)
    rgb.paste((10, 200, 90), (3, 4, 20, 11))  # an asymmetric mark, so every turn differs
    if mode == "RGBA":
        im = rgb.convert("RGBA")
        im.putalpha(Image.linear_gradient("L").resize(im.size))
        return im
    if mode == "P":
        return rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=32)
    if mode == "I;16":
        return Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    return rgb


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "I;16"])
@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("max_side", [2048, 20, 7])
def test_finding_04_strips_give_the_whole_pictures_digest_and_its_reduction(
        monkeypatch: pytest.MonkeyPatch, mode: str, orientation: int, max_side: int) -> None:
    """Converted, turned and reduced strip by strip (strips of 5 rows here), the picture is the
    one the whole-picture recipe gave, reduced by the integer factor that fits ``max_side``; the
    pixel digest and the reported size are those of the picture itself."""
    monkeypatch.setattr(loading, "_STRIP_BYTES", 5 * 4 * 53)
    im = _sample(mode)
    params: dict[str, object] = {"exif": _exif(orientation)}
    if mode == "P":
        params["transparency"] = 3
    data = encode(im, "PNG", **params)
    expected = _upright_rgb_before(data)
    loaded = load_image(data, max_side=max_side)
    assert (loaded.width, loaded.height) == expected.size
    assert loaded.sha256_pixels == hashlib.sha256(
        b"RGB" + expected.width.to_bytes(4, "big") + expected.height.to_bytes(4, "big") + expected.tobytes()
    ).hexdigest()
    k = -(-max(expected.size) // max_side)
    assert max(loaded.image.size) <= max_side
    assert np.array_equal(np.asarray(loaded.image), np.asarray(expected.reduce(k) if k > 1 else expected))


@pytest.mark.parametrize(("fmt", "mode"), [("PNG", "RGB"), ("PNG", "RGBA"), ("PNG", "P"), ("PNG", "L"),
                                           ("JPEG", "RGB"), ("JPEG", "L")])  # JPEG has no alpha or palette
@pytest.mark.parametrize("orientation", [1, 6])
def test_a_picture_of_one_strip_is_its_strip(monkeypatch: pytest.MonkeyPatch, mode: str, orientation: int,
                                             fmt: str) -> None:
    """A picture small enough for one strip is kept as that strip (no canvas pasted into): the same
    pixels, digest and alpha as when loaded in strips of 5 rows, usable after its file is closed."""
    data = encode(_sample(mode), fmt, exif=_exif(orientation))
    whole = load_image(data)
    monkeypatch.setattr(loading, "_STRIP_BYTES", 5 * 4 * 53)
    strips = load_image(data)
    assert whole.image.mode == "RGB" and whole.sha256_pixels == strips.sha256_pixels
    assert np.array_equal(np.asarray(whole.image), np.asarray(strips.image))
    assert (whole.alpha is None) == (strips.alpha is None)
    if whole.alpha is not None and strips.alpha is not None:
        assert np.array_equal(np.asarray(whole.alpha), np.asarray(strips.alpha))


def test_finding_04_a_large_jpeg_is_decoded_scaled_to_fit_the_budget() -> None:
    data = encode(gradient(1600, 1000), "JPEG", quality=90)
    loaded = load_image(data, max_side=200, max_decode_bytes=1_000_000)  # full: 6.4 MB, 1/8: 100 KB
    assert (loaded.width, loaded.height) == (1600, 1000)
    assert loaded.image.size == (200, 125)
    assert loaded.sha256_pixels != load_image(data, max_side=200).sha256_pixels  # of the scaled decode


def test_finding_04_a_png_over_the_decode_budget_is_refused() -> None:
    data = encode(gradient(1000, 1000).convert("RGBA"), "PNG")
    with pytest.raises(TooManyPixels, match="needs 3 MiB; the limit is 2 MiB"):
        load_image(data, max_decode_bytes=2 * 2**20)
    assert load_image(data, max_decode_bytes=4 * 2**20).width == 1000


def test_finding_04_heavy_work_admits_limit_threads_at_once() -> None:
    import threading
    import time

    inside, most, lock = 0, 0, threading.Lock()

    def work() -> None:
        nonlocal inside, most
        with loading.heavy_work(2):
            with loading.heavy_work(2):  # a thread inside enters again without a second slot
                with lock:
                    inside += 1
                    most = max(most, inside)
                time.sleep(0.05)
                with lock:
                    inside -= 1

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert most == 2
