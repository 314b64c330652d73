"""The progress file a bulk job's driver keeps current, and its reader.

One small JSON object, replaced atomically (write a temporary file, then
rename), so a reader never sees half a file. The driver runs in client deploy
mode, on the machine that submitted it, so the file is local to the Celery
worker that follows it.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = ["read_progress", "write_progress"]


def write_progress(path: str | os.PathLike[str], state: dict[str, Any]) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**state, "updated": time.time()}, sort_keys=True))
    os.replace(tmp, path)


def read_progress(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The last state written, or None when there is none (yet) or it cannot be read."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
