"""One JSON error shape for the whole API: {"error": code, "detail": message, "fields": {...}}."""
from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied, ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, pagination, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from imgprotect.errors import ServiceError
from matching.core.errors import ImageError

log = logging.getLogger(__name__)


def _error(code: str, detail: str, http_status: int, fields: dict | None = None) -> Response:
    body: dict = {"error": code, "detail": detail}
    if fields:
        body["fields"] = fields
    return Response(body, status=http_status)


def exception_handler(exc, context):
    if isinstance(exc, ImageError):
        return _error(exc.code, exc.reason, status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, ServiceError):
        return _error(exc.code, exc.message, exc.status)
    if isinstance(exc, DjangoValidationError):
        fields = exc.message_dict if hasattr(exc, "error_dict") else None
        return _error("invalid", "; ".join(exc.messages), 400, fields)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    if isinstance(exc, exceptions.ValidationError):
        fields = data if isinstance(data, dict) else {"non_field_errors": data}
        first = next(iter(fields.items()), None)
        detail = f"{first[0]}: {first[1][0] if isinstance(first[1], list) else first[1]}" if first else "Invalid input."
        return _error("invalid", detail, response.status_code, fields)
    code = getattr(exc, "default_code", "error")
    detail = data.get("detail", str(exc)) if isinstance(data, dict) else str(data)
    response.data = {"error": code, "detail": str(detail)}
    return response


class Pagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
