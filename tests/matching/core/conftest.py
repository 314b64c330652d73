"""Plain pytest for ``matching.core``: no Django settings, database or fixtures.

``tests/conftest.py`` is Django-specific (it imports model factories and has
an autouse fixture built on pytest-django's ``settings``). These tests run
with or without Django; without it, stop pytest from loading that file:

    python -m pytest -p no:django --confcutdir=tests/matching/core tests/matching/core
"""
from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("IMGPROTECT_CNN_PRECISION", "float32")  # as tests/conftest.py explains
from PIL import Image

from .helpers import encode


@pytest.fixture(autouse=True)
def _isolated_data() -> Iterator[None]:
    """Overrides the Django-only autouse fixture of ``tests/conftest.py``: the
    core touches no media directory or index registry."""
    yield


@pytest.fixture(scope="session")
def photo_jpeg() -> bytes:
    """A real photo (scikit-image's astronaut) as a JPEG file."""
    from skimage import data

    return encode(Image.fromarray(data.astronaut()), "JPEG", quality=90)
