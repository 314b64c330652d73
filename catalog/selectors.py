"""Reads for the catalogue, always scoped to one organisation."""
from __future__ import annotations

from django.db.models import Count, QuerySet

from catalog.models import Collection, Organisation, ProtectedImage


def collection_list(*, organisation: Organisation) -> QuerySet[Collection]:
    return Collection.objects.filter(organisation=organisation).annotate(image_count=Count("images")).order_by("slug")


def collection_get(*, organisation: Organisation, collection_id: int) -> Collection | None:
    return Collection.objects.filter(organisation=organisation, pk=collection_id).first()


def image_list(*, organisation: Organisation) -> QuerySet[ProtectedImage]:
    return ProtectedImage.objects.filter(organisation=organisation).select_related("collection")
