"""Plain pytest for ``training``: no Django settings, database or fixtures (as tests/matching/core)."""
from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _isolated_data() -> Iterator[None]:
    """Overrides the Django-only autouse fixture of ``tests/conftest.py``: training touches no
    media directory or index registry."""
    yield


@pytest.fixture(scope="session", autouse=True)
def _exact_features() -> None:
    """Training learns and evaluates on float32 features (training/train.py); without this a test
    that runs first on a bfloat16 CPU would let the engine's "auto" precision pick bfloat16 for the
    whole process (once set, it stays)."""
    from matching.core.cnn.embedder import configure_tf_threads

    configure_tf_threads(precision="float32")
