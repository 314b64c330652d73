"""Source folders for bulk tests: good images with odd names, and every kind of bad file."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.images import encode, photo, photo_png, png_declaring, resized_jpeg, truncated_jpeg

GOOD: dict[str, Callable[[], bytes]] = {
    "coffee.png": lambda: photo_png("coffee"),
    "sub dir/chelsea 'q' \"qq\".jpg": lambda: resized_jpeg("chelsea", 0.8, 85),
    "ünïcødé/ロケット.jpg": lambda: resized_jpeg("rocket", 0.7),
    "astronaut.png": lambda: photo_png("astronaut"),
    " leading space.jpg": lambda: resized_jpeg("camera", 0.6),
}
BAD: dict[str, tuple[Callable[[], bytes], str]] = {
    "bad/truncated.jpg": (truncated_jpeg, "corrupt_image"),
    "bad/notes.txt": (lambda: b"not an image", "unsupported_format"),
    "bad/empty.png": (lambda: b"", "empty_file"),
    "bad/bomb.png": (lambda: png_declaring(9000, 9000), "too_many_pixels"),
    "bad/oversized.png": (lambda: photo_png("coffee") + b"\0" * 1_200_000, "file_too_large"),
    "bad/tiny.png": (lambda: encode(photo("coffee").resize((5, 5))), "image_too_small"),
}
MAX_BYTES = 1_500_000  # astronaut.png and coffee.png fit, bad/oversized.png does not


def write(root: Path, files: dict[str, bytes]) -> Path:
    for key, data in files.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return root


def good_and_bad(root: Path) -> Path:
    return write(root, {**{k: make() for k, make in GOOD.items()}, **{k: v[0]() for k, v in BAD.items()}})


def cropped_turned_jpeg(name: str, degrees: float = 7.0) -> bytes:
    """A crop of about three quarters of the picture, turned by ``degrees``: a copy the perceptual
    hashes miss and a check finds (CNN candidates, then geometric verification)."""
    from PIL import Image

    img = photo(name)
    w, h = img.size
    crop = img.crop((int(w * 0.12), int(h * 0.10), int(w * 0.88), int(h * 0.86)))
    turned = crop.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=True, fillcolor=(255, 255, 255))
    return encode(turned, "JPEG", quality=85)
