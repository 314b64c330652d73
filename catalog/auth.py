"""API-key authentication: ``Authorization: Api-Key <secret>``."""
from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from catalog.models import ApiKey, hash_api_secret

KEYWORD = "Api-Key"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != KEYWORD.lower():
            return None
        secret = secret.strip()
        if not secret:
            raise exceptions.AuthenticationFailed("No API key given after 'Api-Key'.")
        key = ApiKey.objects.select_related("organisation").filter(hashed_secret=hash_api_secret(secret)).first()
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if key.revoked is not None:
            raise exceptions.AuthenticationFailed("This API key has been revoked.")
        now = timezone.now()
        # Bound write traffic: last_used is informative, a minute's precision is enough.
        if key.last_used is None or now - key.last_used > timedelta(minutes=1):
            ApiKey.objects.filter(pk=key.pk).update(last_used=now)
        return AnonymousUser(), key

    def authenticate_header(self, request):
        return KEYWORD


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "catalog.auth.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "header", "name": "Authorization", "description": "`Api-Key <secret>`"}
