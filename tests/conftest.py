from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings as hypothesis_settings

pytest.register_assert_rewrite("tests.skipguard")  # imported here before pytest_plugins loads it
from tests.skipguard import is_ci  # noqa: E402

# In CI a skip, an expected failure or a deselected test fails the run (definition of done): tests/skipguard.py.
pytest_plugins = ["tests.skipguard"]

# The backbone's port checks compare with PyTorch's float32 outputs to 1e-4, so this process runs the
# CNN in float32; the service's default (bfloat16 where the CPU has it) is tested in subprocesses
# (tests/matching/core/test_embedder.py) and by the real workers of tests/integration.
os.environ.setdefault("IMGPROTECT_CNN_PRECISION", "float32")

# Hypothesis: "ci" repeats the same examples on every run (a red build is reproducible, never a lucky draw),
# "dev" is Hypothesis's own random default, "nightly" searches much harder. HYPOTHESIS_PROFILE picks one;
# tests that set max_examples themselves keep it. docs/testing.md.
hypothesis_settings.register_profile("ci", derandomize=True, max_examples=100, deadline=None, database=None,
                                     print_blob=True, suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.register_profile("dev", deadline=None)
hypothesis_settings.register_profile("nightly", max_examples=2_000, deadline=None,
                                     suppress_health_check=[HealthCheck.too_slow])
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if is_ci() else "dev"))

def pytest_configure(config):  # type: ignore[no-untyped-def]
    # pytest-django may have read the settings before this file set the variable above; the
    # engine takes its precision from the settings (matching.engine.cnn_config), so pin it there too.
    from django.conf import settings

    if settings.configured:
        settings.IMGPROTECT_CNN_PRECISION = os.environ["IMGPROTECT_CNN_PRECISION"]


ROOT = Path(__file__).resolve().parents[1]
# scripts/test runs the whole suite on PostgreSQL (as production), then these files again on SQLite, the
# embedded default: the API, tenant isolation, commands, the demo and the settings (`-m sqlite_subset`).
SQLITE_SUBSET = ("tests/catalog/test_api.py", "tests/test_tenant_isolation.py", "tests/test_commands.py",
                 "tests/test_demo.py", "tests/test_settings.py")


def requested_database_engine() -> str:
    """The engine this run asked for: PostgreSQL when DATABASE_URL is set (scripts/test's first run), else SQLite."""
    url = os.environ.get("DATABASE_URL", "")
    return "django.db.backends.postgresql" if url.startswith(("postgres://", "postgresql://")) else (
        "django.db.backends.sqlite3" if not url else f"unexpected DATABASE_URL scheme: {url.split(':', 1)[0]}")


# The files that take longest (real worker processes, JVMs, a browser, mypy), longest first: scripts/test
# hands the pytest-xdist workers whole files in collection order (--no-loadscope-reorder), so these
# start at once and the short files fill in around them. xdist's own order (most tests first) ran the
# one-test, three-minute worker-kill test last, alone, while the other worker sat idle. Seconds per file
# from `--durations=0` of the PostgreSQL run (docs/testing.md, "Duration"); only the order matters.
START_FIRST = (
    "tests/integration/test_worker_killed.py",  # ~195 s: waits out the takeover of a killed worker's checks
    "tests/test_api_fuzz.py",  # ~85 s
    "tests/bulk/test_cluster_spark.py",  # ~80 s: a standalone master and three workers
    "tests/bulk/test_scan_spark.py",  # ~65 s
    "tests/bulk/test_worker_integration.py",  # ~55 s
    "tests/bulk/test_resume_spark.py",  # ~40 s
    "tests/bench/test_scan_vs_check.py",  # ~40 s
    "tests/portal/test_browser.py",  # ~35 s
    "tests/bulk/test_index_spark.py",  # ~30 s
    "tests/test_types.py",  # ~30 s: mypy
    "tests/bulk/test_watches.py",  # ~25 s
    "tests/integration/test_postgres_redis_celery.py",  # ~25 s
)


@pytest.hookimpl(tryfirst=True)  # before -m selects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = [name for name in (*SQLITE_SUBSET, *START_FIRST) if not (ROOT / name).is_file()]
    if missing:
        raise pytest.UsageError(f"tests/conftest.py names test files that are gone: {missing}")
    for item in items:
        if item.path.relative_to(ROOT).as_posix() in SQLITE_SUBSET:
            item.add_marker(pytest.mark.sqlite_subset)
    first = {name: n for n, name in enumerate(START_FIRST)}
    # A stable sort: the named files first, in their order; every other test keeps its place.
    items.sort(key=lambda item: first.get(item.path.relative_to(ROOT).as_posix(), len(first)))


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):  # type: ignore[no-untyped-def]
    """On PostgreSQL this session's commits do not wait for the disk (synchronous_commit is per connection:
    the shared server's durability is untouched); the suite commits thousands of times."""
    from django.conf import settings

    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.postgresql":
        options = database.setdefault("OPTIONS", {})
        options["options"] = f"{options.get('options', '')} -c synchronous_commit=off".strip()


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
