"""Plain pytest for ``matching.core``: no Django settings, database or fixtures.

``tests/conftest.py`` is Django-specific (it imports model factories and has
an autouse fixture built on pytest-django's ``settings``). These tests run
with or without Django; without it, stop pytest from loading that file:

    python -m pytest -p no:django --confcutdir=tests/matching/core tests/matching/core
"""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from PIL import Image

from matching.core.cnn.config import configure

# As tests/conftest.py explains, this process runs the CNN in float32 (matching.core reads no
# environment variable, so it is told here; under Django, matching.engine passes the setting).
configure(precision="float32")

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
