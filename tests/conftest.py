from __future__ import annotations

import os
from pathlib import Path

import pytest

# The backbone's port checks compare with PyTorch's float32 outputs to 1e-4, so this process runs the
# CNN in float32; the service's default (bfloat16 where the CPU has it) is tested in subprocesses
# (tests/matching/core/test_embedder.py) and by the real workers of tests/integration.
os.environ.setdefault("IMGPROTECT_CNN_PRECISION", "float32")


def pytest_configure(config):  # type: ignore[no-untyped-def]
    # pytest-django may have read the settings before this file set the variable above; the
    # engine takes its precision from the settings (matching.engine.cnn_config), so pin it there too.
    from django.conf import settings

    if settings.configured:
        settings.IMGPROTECT_CNN_PRECISION = os.environ["IMGPROTECT_CNN_PRECISION"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    """In CI a skipped test is a failure: every real part must be there (definition of done)."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI, which is not allowed: {report.longrepr}"


@pytest.fixture(autouse=True)
def _isolated_data(settings, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Each test gets its own media and index directories and a fresh in-memory index."""
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.IMGPROTECT_INDEX_DIR = tmp_path / "indexes"
    from matching.index_registry import registry

    registry.forget()
    yield
    registry.forget()


@pytest.fixture(autouse=True)
def _no_accidental_throttling(settings):  # type: ignore[no-untyped-def]
    """Rate-limit counters start empty in each test, and limits are far above what a test does;
    the tests of the limits set them low themselves (docs/security.md)."""
    from django.core.cache import cache

    settings.AXES_FAILURE_LIMIT = 1000
    for name in ("IMGPROTECT_LOGIN_RATE_PER_IP", "IMGPROTECT_PASSWORD_RESET_RATE_PER_ADDRESS",
                 "IMGPROTECT_PASSWORD_RESET_RATE_PER_IP", "IMGPROTECT_API_RATE_PER_KEY", "IMGPROTECT_API_RATE_PER_IP"):
        setattr(settings, name, "100000/minute")
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def media_files(settings):  # type: ignore[no-untyped-def]
    """A callable listing every stored file, to prove failed requests leave nothing behind."""

    def files() -> list[Path]:
        root = Path(settings.MEDIA_ROOT)
        return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []

    return files


@pytest.fixture
def org(db):  # type: ignore[no-untyped-def]
    from tests.factories import OrganisationFactory

    return OrganisationFactory(slug="acme", name="Acme")


@pytest.fixture
def api(org):  # type: ignore[no-untyped-def]
    """An APIClient authenticated with an admin API key of ``org``."""
    return client_for(org)


def client_for(organisation, role: str = "admin"):  # type: ignore[no-untyped-def]
    from rest_framework.test import APIClient

    from tests.factories import api_key_for

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key_for(organisation, role)}")
    return client
