"""The API's shared pieces: one JSON error shape for the whole API ({"error": code, "detail": message,
"fields": {...}}), and paging, filters and JSON bodies read as the schema documents them (imgprotect/schema.py)."""
from __future__ import annotations

import logging
from datetime import timezone as dt_timezone
from collections.abc import Mapping

import django_filters
from django.core.exceptions import PermissionDenied, RequestDataTooBig, SuspiciousOperation
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, QueryDict
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, pagination, serializers, status
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
    if isinstance(exc, RequestDataTooBig):
        # Django's limit on the non-file part of a body (DATA_UPLOAD_MAX_MEMORY_SIZE); left alone it is an HTML 400.
        return _error("request_too_large", "The request body is too large.", status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
    if isinstance(exc, SuspiciousOperation):  # too many fields or files in a form
        return _error("invalid", str(exc) or "Malformed request.", status.HTTP_400_BAD_REQUEST)
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
    page_size_query_description = "Results per page (at most 500 are returned)."

    def get_page_size(self, request):
        # DRF ignores a page_size it cannot read; a typo then silently pages by 50. Refuse it.
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if size < 1:
            raise exceptions.ValidationError({self.page_size_query_param: ["Must be a whole number, 1 or more."]})
        return min(size, self.max_page_size)

    def get_page_number(self, request, paginator):
        if request.query_params.get(self.page_query_param) == "":  # DRF reads a blank page as page 1
            raise exceptions.NotFound(self.invalid_page_message)
        return super().get_page_number(request, paginator)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1
        return parameters


class FilterBackend(DjangoFilterBackend):
    """django-filter's backend, refusing a blank value (400) where django-filter ignores it, for filters
    that are not free text: the schema types them (a date-time, an id, a choice), and ``?created_before=``
    is a client's slip, not "no filter"."""

    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is not None:
            blank = sorted(name for name, field in filterset.filters.items()
                           if not isinstance(field, django_filters.CharFilter)
                           and "" in request.query_params.getlist(name))
            if blank:
                raise exceptions.ValidationError({name: ["May not be blank."] for name in blank})
        return super().filter_queryset(request, queryset, view)


class _UtcIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO 8601 date-time read in UTC. PostgreSQL refuses offsets past +-15:59 ("+23:59" would be a
    500 from the database), and an offset can push year 1 or 9999 out of range: both are a 400 here."""

    def clean(self, value):
        cleaned = super().clean(value)
        if cleaned is None:
            return None
        try:
            return cleaned.astimezone(dt_timezone.utc)
        except OverflowError:
            raise DjangoValidationError("Out of range: the date-time must fall within years 1 to 9999 in UTC.",
                                        code="invalid") from None


class IsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """django-filter's ISO 8601 filter, compared in UTC (every list's ``created_after``/``created_before``)."""

    field_class = _UtcIsoDateTimeField


# The schema says what the filter takes: the strings "true" and "false" (drf-spectacular would take the
# model field's type, boolean, and offer an enum of strings under it).
@extend_schema_field({"type": "string", "enum": ["true", "false"]})
class StrictBooleanFilter(django_filters.ChoiceFilter):
    """A yes/no filter taking "true" or "false" only (400 otherwise): django-filter's BooleanFilter reads
    anything else ("null", "maybe") as no filter at all, which answers a typo with every row."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("choices", [("true", "true"), ("false", "false")])
        super().__init__(*args, **kwargs)

    def filter(self, qs, value):
        if value in ("", None):
            return qs
        return super().filter(qs, value == "true")


_JSON_TYPES: list[tuple[type, tuple[type, ...], str]] = [
    (serializers.BooleanField, (bool,), "true or false"),
    (serializers.IntegerField, (int,), "an integer"),
    (serializers.FloatField, (int, float), "a number"),
    (serializers.CharField, (str,), "a string"),
    (serializers.ChoiceField, (str,), "a string"),
]


# A serializer mixin for JSON bodies, so that they are read as the schema documents them: a value of
# another JSON type is refused where DRF would coerce it (5 into "5", "5" into 5, 1 into true), and a
# string's max_length counts what was sent, where DRF counts after stripping spaces. Form bodies carry
# only strings and keep DRF's parsing. (A comment, not a docstring: the schema would show it.)
class StrictJson:
    def to_internal_value(self, data):
        if isinstance(data, Mapping) and not isinstance(data, QueryDict):
            errors = {}
            for name, field in self.fields.items():  # type: ignore[attr-defined]
                value = data.get(name)
                if field.read_only or value is None:
                    continue
                for field_class, types, label in _JSON_TYPES:
                    if isinstance(field, field_class):
                        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
                            errors[name] = [f"Must be {label}."]
                        break
                limit = getattr(field, "max_length", None)
                if name not in errors and isinstance(value, str) and limit is not None and len(value) > limit:
                    errors[name] = [f"Ensure this field has no more than {limit} characters."]
            if errors:
                raise exceptions.ValidationError(errors)
        return super().to_internal_value(data)  # type: ignore[misc]
