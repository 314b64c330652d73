"""Plain pytest for ``bench``: no Django settings, database or fixtures (as tests/matching/core)."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.bench.synthetic import write_dataset


@pytest.fixture(autouse=True)
def _isolated_data() -> Iterator[None]:
    """Overrides the Django-only autouse fixture of ``tests/conftest.py``: bench touches no
    media directory or index registry."""
    yield


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic dataset folder (tests/bench/synthetic.py), one per test module."""
    return write_dataset(tmp_path_factory.mktemp("datasets"))
