"""Rate limits: the API's throttles, the portal's login and password-reset limits, and the
lockout answer (docs/security.md).

Counters live in Django's cache (Redis in production, so every web process shares them;
locmem on the embedded default, per process). Rates come from settings, read on every
request so a deployment or a test can change them.
"""
from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from axes.backends import AxesStandaloneBackend
from rest_framework.throttling import SimpleRateThrottle

from imgprotect.env import parse_rate


def client_ip(request: HttpRequest) -> str:
    """The client's address: REMOTE_ADDR, or, behind IMGPROTECT_TRUSTED_PROXIES proxies, the address
    the outermost trusted proxy saw (counted from the right of X-Forwarded-For, which a client
    can only prepend to)."""
    proxies = getattr(settings, "IMGPROTECT_TRUSTED_PROXIES", 0)
    remote = request.META.get("REMOTE_ADDR") or "unknown"
    if proxies:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if forwarded:
            return forwarded[-min(proxies, len(forwarded))]
    return remote


def hit(scope: str, ident: str, rate: str) -> int | None:
    """Count one request of ``ident`` in ``scope``; the seconds to wait when it is over ``rate``, else None.

    A fixed window per rate period: one atomic increment a request, whatever the backend.
    """
    limit, period = parse_rate(rate)
    now = time.time()
    window = int(now // period)
    digest = hashlib.sha256(ident.encode()).hexdigest()[:32]  # no addresses or e-mails in cache keys
    key = f"ratelimit:{scope}:{digest}:{window}"
    cache.add(key, 0, timeout=period + 1)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.set(key, 1, timeout=period + 1)
        count = 1
    if count > limit:
        return max(1, math.ceil((window + 1) * period - now))
    return None


def too_many(request: HttpRequest, wait_seconds: int, *, title: str, message: str) -> HttpResponse:
    """The portal's 429 page, with Retry-After."""
    response = render(request, "portal/account/too_many.html", {
        "title": title, "message": message, "wait_minutes": max(1, math.ceil(wait_seconds / 60)),
    }, status=429)
    response["Retry-After"] = str(int(wait_seconds))
    return response


def lockout_response(request: HttpRequest, original_response: HttpResponse | None = None,
                     credentials: Mapping | None = None) -> HttpResponse:
    """django-axes' answer to a locked-out login (AXES_LOCKOUT_CALLABLE)."""
    cool_off = settings.AXES_COOLOFF_TIME
    seconds = int(cool_off.total_seconds()) if cool_off else 3600
    return too_many(request, seconds, title="Too many failed logins",
                    message="This account is locked on this network after too many wrong passwords.")


class LoginLockoutBackend(AxesStandaloneBackend):
    """django-axes' lockout check, first in AUTHENTICATION_BACKENDS.

    Every login over the network goes through a form that passes the request (the portal's and
    the admin's AuthenticationForm); a call without one (the test client's login(), a shell)
    has no client address to lock out, so it is left to the next backend instead of failing.
    """

    def authenticate(self, request, username=None, password=None, **kwargs):
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Per API key (or per logged-in user for session requests)."""

    scope = "api_key"

    def get_rate(self) -> str:
        return settings.IMGPROTECT_API_RATE_PER_KEY

    def get_cache_key(self, request, view) -> str | None:
        from catalog.models import ApiKey

        if isinstance(request.auth, ApiKey):
            ident = f"key-{request.auth.pk}"
        elif request.user and request.user.is_authenticated:
            ident = f"user-{request.user.pk}"
        else:
            return None
        return self.cache_format % {"scope": self.scope, "ident": ident}


class ApiIpRateThrottle(SimpleRateThrottle):
    """Per client address, whatever the key or user (one network may not take more than this)."""

    scope = "api_ip"

    def get_rate(self) -> str:
        return settings.IMGPROTECT_API_RATE_PER_IP

    def get_cache_key(self, request, view) -> str | None:
        return self.cache_format % {"scope": self.scope, "ident": client_ip(request)}
