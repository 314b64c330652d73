"""Typed environment helpers that fail loudly on bad values (docs/coding-habits.md, habit 10).

Each helper also honours ``<NAME>_FILE``: when set, the value is read from that
file, so secrets can come from Docker/Kubernetes secret mounts.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path


class ConfigError(Exception):
    """A configuration variable is present but unusable."""


def _raw(name: str) -> str | None:
    file_var = os.environ.get(f"{name}_FILE")
    if file_var:
        try:
            return Path(file_var).read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{name}_FILE={file_var!r} cannot be read: {exc}") from exc
    return os.environ.get(name)


def env_str(name: str, default: str = "") -> str:
    value = _raw(name)
    return default if value is None else value


def env_bool(name: str, default: bool = False) -> bool:
    value = _raw(name)
    if value is None or value == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean (use true/false)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r} is not an integer") from exc
    if minimum is not None and number < minimum:
        raise ConfigError(f"{name}={number} must be >= {minimum}")
    return number


def env_float(name: str, default: float) -> float:
    value = _raw(name)
    if value is None or value == "":
        return default
    try:
        return float(value)
    except ValueError as exc:
        raise ConfigError(f"{name}={value!r} is not a number") from exc


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = (_raw(name) or "").strip().lower() or default
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of {', '.join(choices)}")
    return value


def env_list(name: str, default: list[str] | None = None) -> list[str]:
    value = _raw(name)
    if value is None or value.strip() == "":
        return list(default or [])
    return [item.strip() for item in value.split(",") if item.strip()]


def env_spark_conf(name: str) -> dict[str, str]:
    """Spark settings as a JSON object, ``{"spark.executor.cores": "4", ...}``; every key a ``spark.*`` name.

    JSON, not a separated list: Spark values hold commas (archive lists), spaces (JVM options) and ``=``.
    """
    value = _raw(name)
    if value is None or value.strip() == "":
        return {}
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise ConfigError(f"{name} is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ConfigError(f"{name} must be a JSON object of Spark settings, such as {{\"spark.executor.cores\": \"4\"}}")
    conf: dict[str, str] = {}
    for key, item in parsed.items():
        if not key.startswith("spark.") or any(c.isspace() for c in key):
            raise ConfigError(f"{name}: {key!r} is not a Spark setting (spark.*)")
        if isinstance(item, bool):
            item = "true" if item else "false"
        if not isinstance(item, (str, int, float)):
            raise ConfigError(f"{name}: the value of {key} must be a string or a number")
        conf[key] = str(item)
    return conf


def env_optional_int(name: str, *, minimum: int | None = None) -> int | None:
    """An integer when the variable is set, else None (so a calibrated default applies)."""
    value = _raw(name)
    if value is None or value == "":
        return None
    return env_int(name, 0, minimum=minimum)


_RATE_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"20/h"`` -> (20 requests, 3600 seconds); DRF's format (the unit's first letter counts)."""
    count, _, period = rate.strip().partition("/")
    unit = period.strip()[:1].lower()
    if not count.strip().isdigit() or int(count) < 1 or unit not in _RATE_PERIODS:
        raise ValueError(f"{rate!r} is not a rate like 20/minute (units: second, minute, hour, day)")
    return int(count), _RATE_PERIODS[unit]


def env_rate(name: str, default: str) -> str:
    """A request rate such as ``60/minute`` or ``5/h`` (DRF's format), checked at start-up."""
    value = (_raw(name) or "").strip() or default
    try:
        parse_rate(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return value


def cache_from_url(url: str, *, key_prefix: str = "imgprotect") -> dict:
    """Django's CACHES["default"] from a URL: ``redis://``/``rediss://`` (Redis), ``locmem://``, ``dummy://``."""
    scheme = url.partition("://")[0].lower()
    if scheme in {"redis", "rediss", "unix"}:
        return {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url, "KEY_PREFIX": key_prefix}
    if scheme == "locmem":
        return {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": url.partition("://")[2]
                or "imgprotect", "KEY_PREFIX": key_prefix}
    if scheme == "dummy":
        return {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}
    raise ConfigError(f"cache URL {url.split('@')[-1]!r}: use redis://, rediss://, locmem:// or dummy://")


# Values that documentation, examples or older defaults have used: never a real secret.
PLACEHOLDER_SECRETS = ("change-me", "changeme", "change-me-in-production", "insecure", "django-insecure", "secret",
                       "set-secret_key", "your-secret-key", "replace-me")
MIN_SECRET_KEY_LENGTH = 50


def secret_key_problem(key: str) -> str | None:
    """Why ``key`` is no production SECRET_KEY (None when it will do); Django's own deploy check
    asks for 50+ characters with 5+ distinct ones."""
    if not key:
        return "is not set"
    lowered = key.strip().lower()
    if any(marker in lowered for marker in PLACEHOLDER_SECRETS):
        return "is a placeholder"
    if len(key) < MIN_SECRET_KEY_LENGTH or len(set(key)) < 5:
        return f"is too short or too simple (it needs {MIN_SECRET_KEY_LENGTH}+ random characters)"
    return None


def embedded_secret_key(data_dir: Path) -> str:
    """The embedded default's SECRET_KEY: random, made on first use and kept in ``data_dir/secret_key``
    (readable by its owner only), so two data dirs never share one and none is public."""
    path = data_dir / "secret_key"
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        key = ""
    if secret_key_problem(key) is None:
        return key
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key
