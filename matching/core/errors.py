"""Error types shared by the matching core.

Permanent and transient failures are different types (docs/coding-habits.md): a
corrupt upload fails once with a clear reason, a storage hiccup is retried.
"""
from __future__ import annotations

__all__ = [
    "CorruptImage",
    "EmptyFile",
    "FileTooLarge",
    "ImageError",
    "ImageTooSmall",
    "RetryableError",
    "TooManyPixels",
    "UnsupportedFormat",
]


class ImageError(Exception):
    """A permanent problem with an input image; retrying cannot help.

    ``code`` is a short stable machine code (stored and shown in the API),
    ``reason`` a sentence for people; ``str(error) == error.reason``.
    """

    code: str = "image_error"

    def __init__(self, reason: str, *, code: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, reason={self.reason!r})"


class EmptyFile(ImageError):
    code = "empty_file"


class FileTooLarge(ImageError):
    code = "file_too_large"


class UnsupportedFormat(ImageError):
    """Not an image at all, or an image format outside the allowed list."""

    code = "unsupported_format"


class CorruptImage(ImageError):
    """Recognised as an image but the pixels cannot be decoded (e.g. truncated)."""

    code = "corrupt_image"


class TooManyPixels(ImageError):
    """Declared dimensions exceed the pixel budget (decompression-bomb guard)."""

    code = "too_many_pixels"


class ImageTooSmall(ImageError):
    code = "image_too_small"


class RetryableError(Exception):
    """A transient failure (storage or network I/O) that the caller may retry."""
