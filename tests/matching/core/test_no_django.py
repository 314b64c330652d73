"""matching.core is shipped to Celery workers and Spark executors: no Django."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]

PROBE = """
import importlib, pkgutil, sys
import matching.core.loading, matching.core.signals, matching.core.vptree, matching.core.errors
assert "scipy" not in sys.modules, "scipy must be imported lazily"
import matching.core
# Every module, present and future, subpackages included.
names = [m.name for m in pkgutil.walk_packages(matching.core.__path__, "matching.core.")]
for name in names:
    importlib.import_module(name)
leaked = sorted(m for m in sys.modules if m == "django" or m.startswith("django."))
assert not leaked, leaked
# The benchmarks and training (and their plotting and baseline libraries) are not part of the engine.
offline = sorted(m for m in sys.modules if m.split(".")[0] in {"bench", "training", "matplotlib", "imagehash"})
assert not offline, offline
print(len(names))
"""


def test_core_imports_without_django() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO_ROOT, env=env,
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 5  # errors, loading, signals, vptree, cnn...
