"""Integer ids in API query strings and paths: checked before any query, scoped to the caller.

A malformed or out-of-range id (``1e20``, ``9223372036854775808``) is a 400 in the API's
error shape, never a database error. An id filter that names one of the caller's
objects (a collection, a check) accepts only the caller's own: another organisation's
id and an id that does not exist get the same answer, so ids cannot be probed.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import NotFound

from catalog.models import Collection
from catalog.permissions import request_tenant

if TYPE_CHECKING:  # what IdLookupMixin is mixed into
    from rest_framework.views import APIView as _ViewBase
else:
    _ViewBase = object

MAX_ID = 2**63 - 1  # the database's bigint
ID_RANGE = f"Must be a whole number from 1 to {MAX_ID}."


def parse_id(value: object) -> int | None:
    """The id, or None when ``value`` is not a whole number in the database's id range."""
    text = str(value).strip()
    # ASCII digits only (no sign, exponent or other scripts' digits), and never a huge int() to parse.
    if not (text.isascii() and text.isdigit()) or len(text) > len(str(MAX_ID)):
        return None
    number = int(text)
    return number if 1 <= number <= MAX_ID else None


class _OwnIdField(forms.ModelChoiceField):
    def to_python(self, value: Any) -> Any:
        if value in self.empty_values:
            return None
        if parse_id(value) is None:
            raise ValidationError(self.error_messages["invalid_choice"], code="invalid_choice")
        return super().to_python(value)


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_ID})
class OwnObjectFilter(django_filters.ModelChoiceFilter):
    """Filter by the id of one of the caller's objects; ``scope(request)`` is the queryset they may name."""

    field_class = _OwnIdField

    def __init__(self, *, scope: Callable[[Any], QuerySet[Any]], noun: str, **kwargs: Any) -> None:
        kwargs.setdefault("error_messages", {"invalid_choice": f"No such {noun} in your organisation."})
        super().__init__(queryset=scope, **kwargs)


def own_collections(request: Any) -> QuerySet[Collection]:
    return Collection.objects.filter(organisation=request_tenant(request).organisation)


class IdLookupMixin(_ViewBase):
    """For viewsets: a path id (``/images/<pk>/``) that is not a valid id names no resource: 404, as an
    unknown id does, and never reaches the database (where ``2**63`` overflowed into a 500)."""

    def initial(self, request: Any, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if "pk" in kwargs and parse_id(kwargs["pk"]) is None:
            raise NotFound(f"No such object: the id {ID_RANGE[0].lower()}{ID_RANGE[1:]}")


def id_field(**kwargs: Any) -> serializers.IntegerField:
    """A serializer field for an id in a request body."""
    return serializers.IntegerField(min_value=1, max_value=MAX_ID, **kwargs)
