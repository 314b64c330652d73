"""Configuration: typed env helpers fail loudly, and .env.example documents every variable."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from imgprotect.env import ConfigError, env_bool, env_int, env_list, env_str

ROOT = Path(__file__).resolve().parents[1]


def test_env_helpers_parse_and_refuse(monkeypatch, tmp_path):
    monkeypatch.setenv("X_BOOL", "yes")
    monkeypatch.setenv("X_INT", "12")
    monkeypatch.setenv("X_LIST", "a, b,,c")
    assert env_bool("X_BOOL") is True and env_int("X_INT", 0) == 12 and env_list("X_LIST") == ["a", "b", "c"]
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(ConfigError, match="X_BOOL"):
        env_bool("X_BOOL")
    monkeypatch.setenv("X_INT", "twelve")
    with pytest.raises(ConfigError, match="X_INT"):
        env_int("X_INT", 0)
    monkeypatch.setenv("X_INT", "5")
    with pytest.raises(ConfigError, match=">= 100"):
        env_int("X_INT", 0, minimum=100)
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert env_str("X_SECRET") == "s3cr3t"
    monkeypatch.setenv("X_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="X_SECRET_FILE"):
        env_str("X_SECRET")


def test_env_example_lists_every_variable_the_settings_read():
    source = (ROOT / "imgprotect" / "settings.py").read_text()
    used = set(re.findall(r'env_(?:str|bool|int|float|list|optional_int|choice|rate)\("([A-Z0-9_]+)"', source))
    documented = set(re.findall(r"^([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert used, "the settings read no variables?"
    assert used - documented == set()


def test_the_run_uses_the_database_it_asked_for(settings):
    # scripts/test's first run sets DATABASE_URL (PostgreSQL, as production); its SQLite subset leaves it unset.
    from django.db import connection

    from tests.conftest import requested_database_engine

    assert settings.DATABASES["default"]["ENGINE"] == requested_database_engine()
    assert connection.vendor == requested_database_engine().rsplit(".", 1)[1].replace("sqlite3", "sqlite")


def test_embedded_default_needs_no_service(settings):
    assert settings.CELERY_TASK_ALWAYS_EAGER is True
    assert settings.STORAGES["default"]["BACKEND"] == "django.core.files.storage.FileSystemStorage"


def test_phash_candidate_radius_defaults_to_calibrated_or_wider_without_the_cnn(settings):
    from matching.core.matcher import HASHES_ONLY_PHASH_CANDIDATE, Thresholds
    from matching.engine import default_thresholds

    calibrated = Thresholds.load().phash_candidate
    settings.IMGPROTECT_PHASH_CANDIDATE_RADIUS = None
    settings.IMGPROTECT_CNN_ENABLED = True
    assert default_thresholds().phash_candidate == calibrated
    settings.IMGPROTECT_CNN_ENABLED = False
    assert default_thresholds().phash_candidate == HASHES_ONLY_PHASH_CANDIDATE > calibrated
    settings.IMGPROTECT_PHASH_CANDIDATE_RADIUS = 7  # an explicit setting wins either way
    assert default_thresholds().phash_candidate == 7


def test_partial_search_setting_is_checked(monkeypatch):
    from imgprotect.env import ConfigError, env_choice

    monkeypatch.setenv("IMGPROTECT_PARTIAL_SEARCH", "Inline")
    assert env_choice("IMGPROTECT_PARTIAL_SEARCH", "background", ("background", "inline", "off")) == "inline"
    monkeypatch.setenv("IMGPROTECT_PARTIAL_SEARCH", "later")
    with pytest.raises(ConfigError, match="IMGPROTECT_PARTIAL_SEARCH"):
        env_choice("IMGPROTECT_PARTIAL_SEARCH", "background", ("background", "inline", "off"))


def test_spark_conf_is_a_json_object_of_spark_settings(monkeypatch):
    from imgprotect.env import env_spark_conf

    assert env_spark_conf("X_SPARK_CONF") == {}
    monkeypatch.setenv("X_SPARK_CONF", '{"spark.executor.cores": 4, "spark.dynamicAllocation.enabled": false, '
                                       '"spark.yarn.dist.archives": "hdfs:///envs/a.tar.gz#env,hdfs:///b.zip"}')
    assert env_spark_conf("X_SPARK_CONF") == {"spark.executor.cores": "4", "spark.dynamicAllocation.enabled": "false",
                                              "spark.yarn.dist.archives": "hdfs:///envs/a.tar.gz#env,hdfs:///b.zip"}
    for bad, message in [("spark.executor.cores=4", "not JSON"), ('["spark.x"]', "JSON object"),
                         ('{"executor.cores": "4"}', "not a Spark setting"), ('{"spark.x": {"a": 1}}', "string")]:
        monkeypatch.setenv("X_SPARK_CONF", bad)
        with pytest.raises(ConfigError, match=message):
            env_spark_conf("X_SPARK_CONF")
