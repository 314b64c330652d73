"""imgprotect settings: one module, configured from the environment (12-factor).

The embedded default needs no external service: SQLite and media files under
IMGPROTECT_DATA_DIR, Celery tasks run in-process, e-mail to the console.
Each production integration switches on when its variable is set:
DATABASE_URL (PostgreSQL), CELERY_BROKER_URL (Redis), AWS_STORAGE_BUCKET_NAME
(S3), EMAIL_HOST (SMTP). `.env.example` lists every variable.
"""
from __future__ import annotations

import sys
from pathlib import Path

import dj_database_url
from celery.schedules import crontab

from datetime import timedelta

from imgprotect.env import (
    ConfigError, cache_from_url, env_bool, env_choice, env_float, env_int, env_list, env_optional_int, env_rate, env_str,
    embedded_secret_key, env_spark_conf, secret_key_problem,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("IMGPROTECT_DATA_DIR", str(BASE_DIR / "var"))).resolve()
TESTING = "pytest" in sys.modules

DEBUG = env_bool("DEBUG", False)
DATABASE_URL = env_str("DATABASE_URL")
# The embedded default (no DATABASE_URL: SQLite and files under the data dir) is one machine's
# service or a command-line run; a deployment names its database. DEBUG=false on a deployment is
# production: it gets a real secret and HTTPS-only defaults (docs/security.md).
EMBEDDED = not DATABASE_URL
PRODUCTION = not DEBUG and not TESTING and not EMBEDDED
SECRET_KEY = env_str("SECRET_KEY")
if (PRODUCTION or (SECRET_KEY and not DEBUG and not TESTING)) and (_secret_problem := secret_key_problem(SECRET_KEY)):
    raise ConfigError(
        f"SECRET_KEY {_secret_problem}: with DEBUG=false imgprotect refuses to start on a guessable key. Set "
        "SECRET_KEY (or SECRET_KEY_FILE) to 50+ random characters, e.g. from "
        "python -c 'import secrets; print(secrets.token_urlsafe(50))', or set DEBUG=true for development.")
if not SECRET_KEY:
    # Never a public key: the embedded default makes a random one, once per data dir, kept beside
    # its database (mode 0600); development and tests use a fixed throw-away one.
    SECRET_KEY = (embedded_secret_key(DATA_DIR) if EMBEDDED and not DEBUG and not TESTING
                  else "insecure-dev-key-set-SECRET_KEY-in-production")
# Previous keys, after a rotation: sessions and signed deletion receipts made with them still verify
# (docs/receipts.md).
SECRET_KEY_FALLBACKS = env_list("SECRET_KEY_FALLBACKS")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")
SITE_URL = env_str("SITE_URL", "http://127.0.0.1:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "catalog",
    "matching",
    "matching.bulk",
    "matching.portal",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "imgprotect.urls"
WSGI_APPLICATION = "imgprotect.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "matching.portal.context_processors.portal",
            ],
        },
    },
]

# --- database: SQLite under the data dir unless DATABASE_URL is set ---------
if DATABASE_URL:
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 60))}
else:
    # The embedded default keeps everything under the data dir; make it on first use.
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "db.sqlite3"),
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
LANGUAGE_CODE = "en-gb"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- files: local media under the data dir, or S3 when a bucket is set ------
STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = DATA_DIR / "media"
# No public MEDIA_URL is routed: image files are served through permission checks.
MEDIA_URL = "/media/"
AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME")
if AWS_STORAGE_BUCKET_NAME:
    default_storage = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env_str("AWS_S3_ENDPOINT_URL") or None,
            "region_name": env_str("AWS_S3_REGION_NAME") or None,
            "access_key": env_str("AWS_ACCESS_KEY_ID") or None,
            "secret_key": env_str("AWS_SECRET_ACCESS_KEY") or None,
            "location": env_str("AWS_LOCATION", "imgprotect"),
            "default_acl": None,
            "querystring_auth": True,
            "file_overwrite": False,
        },
    }
else:
    default_storage = {"BACKEND": "django.core.files.storage.FileSystemStorage"}
STORAGES = {
    "default": default_storage,
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG and not TESTING
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- image limits ------------------------------------------------------------
IMGPROTECT_MAX_UPLOAD_BYTES = env_int("IMGPROTECT_MAX_UPLOAD_BYTES", 25 * 1024 * 1024, minimum=1024)
IMGPROTECT_MAX_PIXELS = env_int("IMGPROTECT_MAX_PIXELS", 40_000_000, minimum=10_000)
# Memory per image (docs/architecture.md, "Memory per image"): the decoded raster's limit (a larger
# JPEG decodes scaled down, a larger PNG is refused), the working picture's long side, and how many
# threads of one process decode and match at once.
IMGPROTECT_MAX_DECODE_BYTES = env_int("IMGPROTECT_MAX_DECODE_BYTES", 4 * IMGPROTECT_MAX_PIXELS, minimum=1024 * 1024)
IMGPROTECT_WORK_MAX_SIDE = env_int("IMGPROTECT_WORK_MAX_SIDE", 2048, minimum=256)
IMGPROTECT_HEAVY_WORK_SLOTS = env_int("IMGPROTECT_HEAVY_WORK_SLOTS", 2, minimum=1)
# Uploaded bodies above this go to a temporary file instead of memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = IMGPROTECT_MAX_UPLOAD_BYTES + 1024 * 1024
IMGPROTECT_INDEX_DIR = DATA_DIR / "indexes"

# --- matching thresholds (defaults; collections may tighten them) -----------
# pHash Hamming distance at or under which a copy is a near duplicate. See docs/benchmarks.md.
# Unset: the calibrated value in matching/core/thresholds.json applies.
IMGPROTECT_PHASH_NEAR_DUPLICATE = env_optional_int("IMGPROTECT_PHASH_NEAR_DUPLICATE", minimum=0)
# pHash radius searched for candidates (all flip/rotation variants of the query); unset: the engine's
# default, or HASHES_ONLY_PHASH_CANDIDATE with the CNN off (both in matching/core/matcher.py).
IMGPROTECT_PHASH_CANDIDATE_RADIUS = env_optional_int("IMGPROTECT_PHASH_CANDIDATE_RADIUS", minimum=0)
# The CNN embedding stage (TensorFlow). Off: hashes and geometric verification only.
IMGPROTECT_CNN_ENABLED = env_bool("IMGPROTECT_CNN_ENABLED", True)
# TensorFlow's intra/inter-op threads per process (1: one worker process per core) and the
# convolutions' arithmetic (matching/core/cnn/config.py); matching.engine and bulk jobs pass them on.
IMGPROTECT_TF_THREADS = env_int("IMGPROTECT_TF_THREADS", 1, minimum=1)
IMGPROTECT_CNN_PRECISION = env_choice("IMGPROTECT_CNN_PRECISION", "auto", ("auto", "bfloat16", "float32"))
# The partial-copy pass (CNN on 13 tiles, for logos pasted into pictures and cropped corners), which
# runs when the cheap passes found no copy. "background": the check answers first and the pass adds
# its findings after, in a task of its own; "inline": the check answers once it is done; "off": never.
IMGPROTECT_PARTIAL_SEARCH = env_choice("IMGPROTECT_PARTIAL_SEARCH", "background", ("background", "inline", "off"))

# --- Celery: in-process unless a broker is configured -----------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND") or None
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_DEFAULT_QUEUE", "celery")
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# A check takes seconds (a 40 Mpx picture with the CNN: about 4 s); the limits bound a stuck one, and the
# hard limit sets how soon a dead worker's check is taken over (IMGPROTECT_STALE_AFTER_SECONDS below).
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 60, minimum=1)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 90, minimum=1)
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ACKS_ON_FAILURE_OR_TIMEOUT = True
# A worker killed with its tasks (docs/architecture.md, "When a worker dies"): Redis hands an unacked
# message to another worker after this long. It must outlast the longest a live worker holds one
# (a retry's countdown, at most 60 s, plus the hard time limit), or running tasks would run twice.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", CELERY_TASK_TIME_LIMIT + 120,
                                  minimum=CELERY_TASK_TIME_LIMIT + 60),
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "sweep-stale-work": {"task": "workers.tasks.sweep_stale_work", "schedule": 60.0},
    # Portal: alert digests and webhook retries (workers/portal.py).
    "alert-digest-hourly": {"task": "workers.portal.send_alert_digests", "schedule": crontab(minute=0),
                            "args": ["hourly"]},
    "alert-digest-daily": {"task": "workers.portal.send_alert_digests",
                           "schedule": crontab(minute=0, hour=env_int("IMGPROTECT_DIGEST_HOUR", 8, minimum=0)),
                           "args": ["daily"]},
    "webhook-retries": {"task": "workers.portal.retry_webhook_deliveries", "schedule": 30.0},
    # Suspect signals past each organisation's retention (matching/suspects.py).
    "purge-suspect-signals": {"task": "workers.tasks.purge_suspect_signals", "schedule": crontab(minute=17)},
}
# Work "running" longer than this lost its worker: the hard time limit ends any live attempt sooner
# (prefork pool), so the sweeper or a redelivered task may take it over (docs/architecture.md).
IMGPROTECT_STALE_AFTER_SECONDS = env_int("IMGPROTECT_STALE_AFTER_SECONDS", CELERY_TASK_TIME_LIMIT + 30,
                                         minimum=CELERY_TASK_TIME_LIMIT + 1)
# A retroactive re-check (matching/retro.py) waits this long after an image is indexed, so the
# images of one upload are searched for together, in one pass over the kept suspects.
IMGPROTECT_RECHECK_DELAY_SECONDS = env_int("IMGPROTECT_RECHECK_DELAY_SECONDS", 30, minimum=0)
# How long `POST /checks?wait=` may block at most.
IMGPROTECT_MAX_CHECK_WAIT_SECONDS = env_float("IMGPROTECT_MAX_CHECK_WAIT_SECONDS", 30.0)

# --- bulk work on Spark (matching/bulk, spark/; docs/bulk.md) ----------------
SPARK_MASTER = env_str("SPARK_MASTER", "local[*]")  # or spark://host:7077 (driver in client mode here)
SPARK_DRIVER_MEMORY = env_str("SPARK_DRIVER_MEMORY", "1g")
SPARK_EXECUTOR_MEMORY = env_str("SPARK_EXECUTOR_MEMORY")
# Any other spark-submit --conf, as a JSON object, applied last (so it overrides ours): executor cores and
# memory overhead, the Python on YARN/Kubernetes executors, spark.kubernetes.* (docs/bulk.md, "Clusters").
SPARK_CONF = env_spark_conf("SPARK_CONF")
# Bulk sources: each organisation may read only its own roots (catalog/sources.py, docs/bulk.md):
# "acme=/data/acme,s3://bucket/acme;beta=/data/beta", and/or shared roots without "slug=" of which
# each organisation reads only <root>/<org-slug>/. Unset: the command line may read any source, the
# API and the portal none. Groups are split on ";" by catalog.sources, not here.
IMGPROTECT_SOURCE_ROOTS = env_str("IMGPROTECT_SOURCE_ROOTS")
IMGPROTECT_SOURCE_S3_ENDPOINT_URL = env_str("IMGPROTECT_SOURCE_S3_ENDPOINT_URL") or env_str("AWS_S3_ENDPOINT_URL")
IMGPROTECT_BULK_VIA_SPARK = env_bool("IMGPROTECT_BULK_VIA_SPARK", False)  # index_images uses Spark by default
# Spark output and logs; on a cluster this must be a directory every executor mounts at the same path.
IMGPROTECT_BULK_WORK_DIR = Path(env_str("IMGPROTECT_BULK_WORK_DIR", str(DATA_DIR / "bulk"))).resolve()
IMGPROTECT_BULK_PARTITION_SIZE = env_int("IMGPROTECT_BULK_PARTITION_SIZE", 200, minimum=1)
IMGPROTECT_BULK_STALE_AFTER_SECONDS = env_int("IMGPROTECT_BULK_STALE_AFTER_SECONDS", 300, minimum=30)
IMGPROTECT_BULK_TIME_LIMIT_SECONDS = env_int("IMGPROTECT_BULK_TIME_LIMIT_SECONDS", 24 * 3600, minimum=60)
CELERY_BEAT_SCHEDULE["sweep-stale-bulk-jobs"] = {"task": "workers.bulk.sweep_stale_bulk_jobs", "schedule": 60.0}
# Watches (matching/bulk/watches.py): start the runs that are due, each a scan of the keys not seen before.
CELERY_BEAT_SCHEDULE["start-due-watches"] = {"task": "workers.bulk.start_due_watches", "schedule": 60.0}

# --- e-mail: console unless SMTP is configured ------------------------------
EMAIL_HOST = env_str("EMAIL_HOST")
if EMAIL_HOST:
    EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    EMAIL_PORT = env_int("EMAIL_PORT", 587)
    EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
    EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
    EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
    EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 20)
else:
    EMAIL_BACKEND = env_str("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "imgprotect <alerts@imgprotect.localhost>")

# --- REST API ------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "catalog.auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["catalog.permissions.IsOrganisationMember"],
    "DEFAULT_PAGINATION_CLASS": "imgprotect.api.Pagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["imgprotect.api.FilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "imgprotect.schema.AutoSchema",
    "EXCEPTION_HANDLER": "imgprotect.api.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer", "rest_framework.renderers.BrowsableAPIRenderer"],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "imgprotect API",
    "DESCRIPTION": "Register protected images, check suspect images, review match reports.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # A receipt's kind and a bulk job's kind share a field name: each enum keeps a component name of its own
    # (the bulk job's as it was before receipts).
    # One name per choice set where two models' fields share a name (kind, status): stable names for clients.
    "ENUM_NAME_OVERRIDES": {"KindEnum": "matching.bulk.models.BulkJob.Kind",
                            "ReceiptKindEnum": "catalog.models.DeletionReceipt.Kind",
                            "CaseKindEnum": "matching.models.Case.Kind",
                            "CaseStatusEnum": "matching.models.Case.Status",
                            "BulkJobStatusEnum": "matching.bulk.models.BulkJob.Status",
                            "CheckStatusEnum": "matching.models.Check.Status"},  # a self-test's too
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "Authorization",
                           "description": "`Api-Key <secret>`"}
        }
    },
    "SECURITY": [{"ApiKeyAuth": []}],
}

# --- cache: rate-limit counters (and DRF's throttle history) ----------------------
# CACHE_URL (redis://, rediss://, locmem://, dummy://), else Redis at REDIS_URL or the Celery
# broker's Redis, else memory local to each process (the embedded default).
_redis_broker = CELERY_BROKER_URL if CELERY_BROKER_URL.startswith(("redis://", "rediss://")) else ""
CACHE_URL = env_str("CACHE_URL") or env_str("REDIS_URL") or _redis_broker or "locmem://imgprotect"
CACHES = {"default": cache_from_url(CACHE_URL)}

# --- rate limits (docs/security.md) -----------------------------------------------
# Logins: django-axes locks a user name on one client address after this many wrong passwords
# in a row, for the cool-off (each further try restarts it); a success resets the count.
AUTHENTICATION_BACKENDS = ["imgprotect.ratelimit.LoginLockoutBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = env_int("IMGPROTECT_LOGIN_FAILURE_LIMIT", 5, minimum=1)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("IMGPROTECT_LOGIN_COOLOFF_MINUTES", 15, minimum=1))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
# Lockout counters in the cache (Redis in production), not in database rows: no write per login, and no
# access log whose address column refuses logins made without a request (e.g. force_login).
AXES_HANDLER = "axes.handlers.cache.AxesCacheHandler"
# axes.W001 warns that a local-memory cache counts per process: true on the embedded default (one process,
# docs/security.md); deployments set CACHE_URL to Redis.
SILENCED_SYSTEM_CHECKS = ["axes.W001"]
AXES_VERBOSE = False  # its start-up banner would land in every command's stderr (docs/cli.md: stable output)
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "imgprotect.ratelimit.lockout_response"
AXES_CLIENT_IP_CALLABLE = "imgprotect.ratelimit.client_ip"
# Proxies in front of the service that append to X-Forwarded-For (0: use the socket's address).
IMGPROTECT_TRUSTED_PROXIES = env_int("IMGPROTECT_TRUSTED_PROXIES", 0, minimum=0)
# Login attempts from one address, whatever the user name (bounds password spraying).
IMGPROTECT_LOGIN_RATE_PER_IP = env_rate("IMGPROTECT_LOGIN_RATE_PER_IP", "60/hour")
# Password-reset requests: per e-mail address asked for, and per client address.
IMGPROTECT_PASSWORD_RESET_RATE_PER_ADDRESS = env_rate("IMGPROTECT_PASSWORD_RESET_RATE_PER_ADDRESS", "3/hour")
IMGPROTECT_PASSWORD_RESET_RATE_PER_IP = env_rate("IMGPROTECT_PASSWORD_RESET_RATE_PER_IP", "20/hour")
# The API: per key (or per logged-in user) and per client address; over it, 429 with Retry-After.
IMGPROTECT_API_RATE_PER_KEY = env_rate("IMGPROTECT_API_RATE_PER_KEY", "1200/minute")
IMGPROTECT_API_RATE_PER_IP = env_rate("IMGPROTECT_API_RATE_PER_IP", "3000/minute")
REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] = [
    "imgprotect.ratelimit.ApiKeyRateThrottle", "imgprotect.ratelimit.ApiIpRateThrottle"]

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"

# --- portal ---------------------------------------------------------------------
# Webhooks may not target private, loopback or link-local addresses unless this is on
# (so the service cannot be turned against its own network).
IMGPROTECT_WEBHOOK_ALLOW_PRIVATE = env_bool("IMGPROTECT_WEBHOOK_ALLOW_PRIVATE", False)
IMGPROTECT_WEBHOOK_TIMEOUT_SECONDS = env_float("IMGPROTECT_WEBHOOK_TIMEOUT_SECONDS", 10.0)
# Attempts per delivery; the wait doubles from 30 s after each failure (30 s, 1 min, 2 min, ...).
IMGPROTECT_WEBHOOK_MAX_ATTEMPTS = env_int("IMGPROTECT_WEBHOOK_MAX_ATTEMPTS", 8, minimum=1)
IMGPROTECT_WEBHOOK_RETRY_BASE_SECONDS = env_int("IMGPROTECT_WEBHOOK_RETRY_BASE_SECONDS", 30, minimum=1)
IMGPROTECT_INVITATION_DAYS = env_int("IMGPROTECT_INVITATION_DAYS", 7, minimum=1)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.request": {"level": "ERROR"}},
}

# --- HTTPS, cookies and the browser's defences (docs/security.md) ---------------------
# On by default in production; each can be turned off for a deployment that needs it.
BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", False)
if BEHIND_TLS_PROXY:
    # The header the TLS proxy sets, "Name: value"; the proxy must overwrite it on every request.
    _proxy_header, _, _proxy_value = env_str("SECURE_PROXY_SSL_HEADER", "X-Forwarded-Proto: https").partition(":")
    if not _proxy_header.strip() or not _proxy_value.strip():
        raise ConfigError("SECURE_PROXY_SSL_HEADER must look like 'X-Forwarded-Proto: https'")
    SECURE_PROXY_SSL_HEADER = ("HTTP_" + _proxy_header.strip().upper().replace("-", "_"), _proxy_value.strip())
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # the container's health probe speaks plain HTTP on loopback
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if PRODUCTION else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("SECURE_COOKIES", PRODUCTION or BEHIND_TLS_PROXY)
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True  # the portal's script reads the token from the page (static/portal/portal.js)
SESSION_COOKIE_SAMESITE = CSRF_COOKIE_SAMESITE = "Lax"
# The portal's pages load scripts, styles, images and fonts from this site only, with no inline
# code; the templates and static/portal/*.js are written for it (tests/portal/test_security.py).
# The admin and the Swagger page bring their own inline code, so they are left out; image files
# set their own stricter sandbox policy (matching/portal/views/files.py).
CONTENT_SECURITY_POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/admin/", "/api/docs/"],
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}
