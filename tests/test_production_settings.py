"""Security review finding 13: production defaults. With DEBUG=false (outside the tests) the service refuses a
missing or placeholder SECRET_KEY, and docs/security.md's production configuration passes `check --deploy`.

Both run Django in a subprocess: the settings are read once per process, and this one is the test process.
"""
from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _documented_production_env() -> dict[str, str]:
    """The ```env block under "## Production configuration" in docs/security.md."""
    text = (ROOT / "docs" / "security.md").read_text()
    section = text.split("## Production configuration", 1)[1]
    block = re.search(r"```env\n(.*?)```", section, re.S).group(1)
    env = dict(line.split("=", 1) for line in block.splitlines() if line.strip() and not line.startswith("#"))
    assert env["DEBUG"] == "false" and env["SECRET_KEY"].startswith("<")
    env["SECRET_KEY"] = secrets.token_urlsafe(50)  # the documented placeholder stands for this
    return env


def _run(env: dict[str, str], *args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    # A clean environment: nothing from the test run (DJANGO_SETTINGS_MODULE, CI's DATABASE_URL, ...) leaks in.
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "IMGPROTECT_DATA_DIR": str(tmp_path / "data"),
            "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], env={**base, **env}, cwd=ROOT, capture_output=True, text=True,
                          timeout=240)


def test_finding_13_documented_production_configuration_passes_check_deploy(tmp_path):  # type: ignore[no-untyped-def]
    result = _run(_documented_production_env(), "manage.py", "check", "--deploy", "--fail-level", "WARNING",
                  tmp_path=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues" in output and "WARNINGS:" not in output, output


@pytest.mark.parametrize("secret_key", [None, "", "change-me", "change-me-in-production",
                                        "insecure-dev-key-set-SECRET_KEY-in-production", "short-but-random-Xk29",
                                        "a" * 60])
def test_finding_13_server_refuses_to_start_without_a_real_secret(tmp_path, secret_key):  # type: ignore[no-untyped-def]
    env = _documented_production_env()
    env.pop("SECRET_KEY")
    if secret_key is not None:
        env["SECRET_KEY"] = secret_key
    # What gunicorn does first: load the WSGI application (settings, apps).
    result = _run(env, "-c", "import imgprotect.wsgi", tmp_path=tmp_path)
    assert result.returncode != 0
    assert "ConfigError: SECRET_KEY" in result.stderr and "refuses to start" in result.stderr


def test_finding_13_production_defaults_are_on(tmp_path):  # type: ignore[no-untyped-def]
    env = {"DEBUG": "false", "SECRET_KEY": secrets.token_urlsafe(50),
           "DATABASE_URL": "postgres://imgprotect@127.0.0.1:5432/imgprotect"}
    code = ("import django; django.setup(); from django.conf import settings as s; "
            "print(s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
            "s.SESSION_COOKIE_HTTPONLY, s.CSRF_COOKIE_HTTPONLY, s.SESSION_COOKIE_SAMESITE)")
    result = _run({**env, "DJANGO_SETTINGS_MODULE": "imgprotect.settings"}, "-c", code, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "31536000", "True", "True", "True", "True", "Lax"]
    # Development (DEBUG=true) starts without a secret and without the HTTPS redirect.
    result = _run({"DEBUG": "true", "DJANGO_SETTINGS_MODULE": "imgprotect.settings"}, "-c", code, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[:3] == ["False", "0", "False"]


def test_finding_13_compose_requires_the_secret_from_the_environment():
    compose = (ROOT / "docker" / "compose.yml").read_text()
    assert "SECRET_KEY: ${SECRET_KEY:?set SECRET_KEY}" in compose
    assert "change-me" not in compose and "IMGPROTECT_REQUIRE_SECRET" not in compose


def test_finding_13_embedded_default_never_runs_on_a_public_key(tmp_path):  # type: ignore[no-untyped-def]
    """No DATABASE_URL and no SECRET_KEY (a command-line run on the embedded default): a random key, made once
    per data dir, kept readable by its owner only, never the development placeholder."""
    code = "import django; django.setup(); from django.conf import settings as s; print(s.SECRET_KEY)"
    env = {"DEBUG": "false", "DJANGO_SETTINGS_MODULE": "imgprotect.settings"}
    first = _run(env, "-c", code, tmp_path=tmp_path)
    again = _run(env, "-c", code, tmp_path=tmp_path)
    other = _run({**env, "IMGPROTECT_DATA_DIR": str(tmp_path / "other")}, "-c", code, tmp_path=tmp_path)
    assert first.returncode == again.returncode == other.returncode == 0, first.stderr + other.stderr
    key = first.stdout.strip()
    assert len(key) >= 50 and "insecure" not in key
    assert again.stdout.strip() == key and other.stdout.strip() != key
    assert (tmp_path / "data" / "secret_key").stat().st_mode & 0o077 == 0
