from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _bulk_dirs(settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Each test gets its own bulk work directory; Spark runs on two local cores."""
    settings.IMGPROTECT_BULK_WORK_DIR = tmp_path / "bulk"
    settings.SPARK_MASTER = "local[2]"
    settings.IMGPROTECT_SOURCE_ROOTS = []
    settings.IMGPROTECT_CNN_ENABLED = False  # the stand-in embedder is used where a test needs one
