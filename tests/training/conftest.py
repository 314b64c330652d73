"""Plain pytest for ``training``: no Django settings, database or fixtures (as tests/matching/core)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _isolated_data() -> Iterator[None]:
    """Overrides the Django-only autouse fixture of ``tests/conftest.py``: training touches no
    media directory or index registry."""
    yield
