"""Reads for checks and matches, always scoped to one organisation."""
from __future__ import annotations

from django.db.models import QuerySet

from catalog.models import Organisation
from matching.models import Check, Match


def check_list(*, organisation: Organisation) -> QuerySet[Check]:
    return Check.objects.filter(organisation=organisation)


def match_list(*, organisation: Organisation) -> QuerySet[Match]:
    return Match.objects.filter(organisation=organisation).select_related(
        "protected_image", "protected_image__collection", "source_check", "hash_list_entry__hash_list"
    )
